"""The Qwen-Image EliGen LoRAs: read in DiffSynth-Studio's naming, merged as DiffSynth merges them.

DiffSynth-Studio trains them with PEFT on its `QwenImageDiT` (rank 32, ``lora_alpha`` = rank, so
PEFT's scale is 1) on the modules ``to_q, to_k, to_v, add_q_proj, add_k_proj, add_v_proj,
to_out.0, to_add_out, img_mlp.net.2, img_mod.1, txt_mlp.net.2, txt_mod.1``
(examples/qwen_image/model_training/lora/Qwen-Image-EliGen.sh at afd101f) and saves the
trainable parameters with the ``pipe.dit.`` prefix removed, so a key reads::

    transformer_blocks.{i}.attn.to_q.lora_A.default.weight      (rank x in)
    transformer_blocks.{i}.attn.to_q.lora_B.default.weight      (out x rank)

DiffSynth's `QwenImageDiT` loads diffusers' Qwen-Image weights without renaming (its state-dict
converter is the identity), so its module names are diffusers' `QwenImageTransformer2DModel`
names and the conversion only drops PEFT's adapter name and an optional ``diffusion_model.``
prefix. Fused layers do not exist in Qwen-Image: every LoRA maps to one Linear.

Merge (diffsynth/lora/__init__.py, `GeneralLoRALoader.load`, ``alpha=1`` as the examples call
`pipe.load_lora`): both factors are cast to the model's dtype, ``W + alpha * (B @ A)`` is
computed in that dtype (bfloat16 at the reference's setting) and stored. Alpha keys are never
read there; a file whose alpha differs from its rank is refused unless ``alpha_mode`` says what
to do (as for the FLUX EliGen LoRA).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    import torch

LORA_FILE = "model.safetensors"
"""The file the examples download from each LoRA repository (``allow_file_pattern``)."""
LORA_RANK = 32
TARGETS = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
    "attn.to_out.0", "attn.to_add_out", "img_mlp.net.2", "img_mod.1", "txt_mlp.net.2", "txt_mod.1",
)  # fmt: skip
"""The modules of each block the released LoRAs train (``--lora_target_modules``)."""


@dataclass(frozen=True, eq=False)
class QwenLoraDelta:
    """One low-rank update ``W += scale * up @ down`` of a diffusers Qwen-Image Linear."""

    module: str
    down: torch.Tensor
    up: torch.Tensor
    scale: float


def convert_lora(state: Mapping[str, torch.Tensor], alpha_mode: str | None = None) -> list[QwenLoraDelta]:
    """DiffSynth-named Qwen-Image LoRA -> one delta per diffusers module (sorted by name)."""
    from eligen_bench.generators.flux.lora import pair_lora_keys

    pairs = pair_lora_keys(state, alpha_mode)
    return [QwenLoraDelta(module, down, up, scale) for module, (down, up, scale) in sorted(pairs.items())]


def merge_lora(transformer: torch.nn.Module, deltas: list[QwenLoraDelta], alpha: float = 1.0) -> list[str]:
    """Merge every delta into its Linear as DiffSynth does; returns the modules updated.

    Unknown modules and shapes that do not fit raise InputError before any weight changes.
    """
    import torch

    modules = dict(transformer.named_modules())
    for delta in deltas:
        layer = modules.get(delta.module)
        if not isinstance(layer, torch.nn.Linear):
            raise InputError(f"LoRA module {delta.module!r} is not a Linear of this Qwen-Image transformer",
                             field="lora")
        rank = delta.down.shape[0]
        if tuple(delta.up.shape) != (layer.out_features, rank) or tuple(delta.down.shape) != (rank, layer.in_features):
            raise InputError(
                f"{delta.module}: LoRA shapes B{tuple(delta.up.shape)} A{tuple(delta.down.shape)} do not fit "
                f"weight {tuple(layer.weight.shape)}", field="lora")
    touched = []
    with torch.no_grad():
        for delta in deltas:
            weight = modules[delta.module].weight
            dtype = weight.dtype
            up = delta.up.to(weight.device, dtype)
            down = delta.down.to(weight.device, dtype)
            update = (alpha * delta.scale) * torch.mm(up, down)
            weight.copy_(weight.to(dtype) + update)
            touched.append(delta.module)
    return touched


def load_lora(transformer: torch.nn.Module, lora: str, lora_file: str = LORA_FILE, *, alpha: float = 1.0,
              revision: str | None = None, alpha_mode: str | None = None) -> list[str]:
    """Resolve (local file, folder or hub id), read, convert and merge a Qwen-Image EliGen LoRA."""
    from eligen_bench.generators.flux.lora import read_lora, resolve_lora_file

    path = resolve_lora_file(lora, lora_file, revision)
    deltas = convert_lora(read_lora(path), alpha_mode)
    if not deltas:
        raise InputError(f"{str(path)!r} holds no LoRA weights", field="lora")
    return merge_lora(transformer, deltas, alpha)


def random_lora(num_layers: int, dim: int, rank: int = 4, seed: int = 0, std: float = 0.05) -> dict[str, torch.Tensor]:
    """A seeded random LoRA on every released target module, in DiffSynth's naming (tiny profile, tests).

    Both factors are random (a trained B is not zero), so the LoRA changes the output.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    shapes = {"img_mod.1": (6 * dim, dim), "txt_mod.1": (6 * dim, dim),
              "img_mlp.net.2": (dim, 4 * dim), "txt_mlp.net.2": (dim, 4 * dim)}
    state: dict[str, torch.Tensor] = {}
    for i in range(num_layers):
        for target in TARGETS:
            out_dim, in_dim = shapes.get(target, (dim, dim))
            key = f"transformer_blocks.{i}.{target}"
            state[f"{key}.lora_A.default.weight"] = torch.randn(rank, in_dim, generator=gen) * std
            state[f"{key}.lora_B.default.weight"] = torch.randn(out_dim, rank, generator=gen) * std
    return state
