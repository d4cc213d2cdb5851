"""Per-item seeds: each (layout, seed index) gets its own seed, derived from the run's base seed.

Deriving from the layout id (not the layout's position) keeps a layout's images the same when
the suite is filtered or reordered, and gives different layouts different noise.
"""

from __future__ import annotations

import hashlib


def derive_seed(base_seed: int, layout_id: str, seed_index: int) -> int:
    """A 63-bit seed from sha256(base_seed, layout_id, seed_index); stable across platforms."""
    text = f"{int(base_seed)}/{layout_id}/{int(seed_index)}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") & ((1 << 63) - 1)
