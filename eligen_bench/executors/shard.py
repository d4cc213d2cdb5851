"""`--shard i/n`: a deterministic part of a run's work items, for clusters without Ray.

An item belongs to shard `int(sha256(name)) % n`, where the name is the item's own (image:
`<generator>/<layout>_<seed index>`, score shard: its file name), so the partition does not
depend on what is already done or on which other shards have run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from eligen_bench.errors import InputError

_SHARD = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def owns(self, name: str) -> bool:
        return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None) -> Shard | None:
    """`i/n` with 0 <= i < n; None when not given. Anything else is an InputError."""
    if text is None:
        return None
    match = _SHARD.match(text.strip())
    if not match:
        raise InputError(f"must be i/n (this process's index and the number of processes), got {text!r}",
                         field="--shard")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise InputError(f"needs 0 <= i < n, got {text!r}", field="--shard")
    return Shard(index, count)
