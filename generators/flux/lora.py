"""The EliGen LoRA: read it in DiffSynth-Studio naming, convert it to diffusers FLUX modules, fuse it.

EliGen is published as ``modelscope/EliGen`` (file ``model_bf16.safetensors``), trained with
DiffSynth-Studio on its own FLUX DiT. Its keys name DiffSynth modules, with PEFT's adapter
name in between::

    blocks.{i}.attn.a_to_qkv.lora_A.default.weight      (rank x in)
    blocks.{i}.attn.a_to_qkv.lora_B.default.weight      (out x rank)

DiffSynth fuses projections that diffusers keeps apart: ``a_to_qkv`` is diffusers'
``to_q``/``to_k``/``to_v`` stacked by rows, ``b_to_qkv`` the ``add_*_proj`` of the text
stream, and a single block's ``to_qkv_mlp`` stacks ``to_q``, ``to_k``, ``to_v`` (dim rows
each) and ``proj_mlp`` (4 x dim rows). A LoRA on a fused layer, ``dW = B @ A``, splits exactly
by rows of B: the slice of ``dW`` that belongs to ``to_k`` is ``B[d:2d] @ A``. The adaptive
norms keep the same chunk order in both code bases (shift, scale, gate, ...), so their LoRAs
map one to one.

The reference loader merges ``W + lora_alpha * B @ A`` with ``lora_alpha=1`` and never reads
alpha keys (modelscope/DiffSynth-Studio@2e59733, diffsynth/models/lora.py, `convert_state_dict`;
examples/EntityControl/entity_control.py loads EliGen with ``lora_alpha=1``); `fuse_lora` does
the same with ``scale`` (``lora_scale``). A file whose alpha keys differ from its rank would be
scaled by PEFT-style loaders (alpha / rank, e.g. 1/64): such a file is refused unless
``alpha_mode`` says what to do ("ignore": the reference's merge; "apply": alpha / rank).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from eligen_bench.errors import InputError

if TYPE_CHECKING:
    import torch

ELIGEN_LORA_REPO = "modelscope/EliGen"
ELIGEN_LORA_FILE = "model_bf16.safetensors"
ALPHA_MODES = ("ignore", "apply")

_KEY = re.compile(
    r"^(?:(?:diffusion_model|dit|pipe\.dit|model)\.)?(?P<module>.+?)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$"
)
_ALPHA = re.compile(r"^(?:(?:diffusion_model|dit|pipe\.dit|model)\.)?(?P<module>.+?)\.alpha$")

# DiffSynth module (inside a double block) -> diffusers modules, with the share of output rows
# each takes, in units of the block's hidden size.
_DOUBLE = {
    "attn.a_to_qkv": (("attn.to_q", 1), ("attn.to_k", 1), ("attn.to_v", 1)),
    "attn.b_to_qkv": (("attn.add_q_proj", 1), ("attn.add_k_proj", 1), ("attn.add_v_proj", 1)),
    "attn.a_to_out": (("attn.to_out.0", None),),
    "attn.b_to_out": (("attn.to_add_out", None),),
    "ff_a.0": (("ff.net.0.proj", None),),
    "ff_a.2": (("ff.net.2", None),),
    "ff_b.0": (("ff_context.net.0.proj", None),),
    "ff_b.2": (("ff_context.net.2", None),),
    "norm1_a.linear": (("norm1.linear", None),),
    "norm1_b.linear": (("norm1_context.linear", None),),
    # unfused names some DiffSynth checkpoints carry
    "attn.a_to_q": (("attn.to_q", None),),
    "attn.a_to_k": (("attn.to_k", None),),
    "attn.a_to_v": (("attn.to_v", None),),
    "attn.b_to_q": (("attn.add_q_proj", None),),
    "attn.b_to_k": (("attn.add_k_proj", None),),
    "attn.b_to_v": (("attn.add_v_proj", None),),
}
_SINGLE = {
    "to_qkv_mlp": (("attn.to_q", 1), ("attn.to_k", 1), ("attn.to_v", 1), ("proj_mlp", 4)),
    "proj_out": (("proj_out", None),),
    "norm.linear": (("norm.linear", None),),
    "a_to_q": (("attn.to_q", None),),
    "a_to_k": (("attn.to_k", None),),
    "a_to_v": (("attn.to_v", None),),
    "proj_in_besides_attn": (("proj_mlp", None),),
}
_GLOBAL = {
    "context_embedder": "context_embedder",
    "x_embedder": "x_embedder",
    "time_embedder.timestep_embedder.0": "time_text_embed.timestep_embedder.linear_1",
    "time_embedder.timestep_embedder.2": "time_text_embed.timestep_embedder.linear_2",
    "guidance_embedder.timestep_embedder.0": "time_text_embed.guidance_embedder.linear_1",
    "guidance_embedder.timestep_embedder.2": "time_text_embed.guidance_embedder.linear_2",
    "pooled_text_embedder.0": "time_text_embed.text_embedder.linear_1",
    "pooled_text_embedder.2": "time_text_embed.text_embedder.linear_2",
    "final_norm_out.linear": "norm_out.linear",
    "final_proj_out": "proj_out",
}


# The kohya / BFL naming of FLUX LoRAs (what most community tools write), as DiffSynth modules:
# the same fused layers under other names, so one conversion serves both.
_KOHYA = re.compile(
    r"^lora_unet_(?P<kind>double|single)_blocks_(?P<index>\d+)_(?P<part>[a-z0-9_]+?)"
    r"(?P<suffix>\.lora_(?:down|up)\.weight|\.alpha)$"
)
_KOHYA_PARTS = {
    "double": {
        "img_mod_lin": "norm1_a.linear", "txt_mod_lin": "norm1_b.linear",
        "img_attn_qkv": "attn.a_to_qkv", "txt_attn_qkv": "attn.b_to_qkv",
        "img_attn_proj": "attn.a_to_out", "txt_attn_proj": "attn.b_to_out",
        "img_mlp_0": "ff_a.0", "img_mlp_2": "ff_a.2", "txt_mlp_0": "ff_b.0", "txt_mlp_2": "ff_b.2",
    },
    "single": {"modulation_lin": "norm.linear", "linear1": "to_qkv_mlp", "linear2": "proj_out"},
}  # fmt: skip


def _from_kohya(key: str) -> str:
    """A kohya/BFL LoRA key in DiffSynth naming; other keys unchanged."""
    match = _KOHYA.match(key)
    if not match or match["part"] not in _KOHYA_PARTS[match["kind"]]:
        return key
    block = "blocks" if match["kind"] == "double" else "single_blocks"
    suffix = {".lora_down.weight": ".lora_A.weight", ".lora_up.weight": ".lora_B.weight"}.get(
        match["suffix"], ".alpha")
    return f"{block}.{match['index']}.{_KOHYA_PARTS[match['kind']][match['part']]}{suffix}"


@dataclass(frozen=True, eq=False)
class LoraDelta:
    """One low-rank update of a diffusers module: ``W[rows] += scale * up @ down``."""

    module: str
    """The diffusers module name, e.g. 'transformer_blocks.0.attn.to_k'."""
    down: torch.Tensor
    """A (rank x in_features)."""
    up: torch.Tensor
    """The rows of B that belong to this module (out_features x rank)."""
    scale: float
    """alpha / rank where the file gives alpha, else 1."""
    source: str
    """The DiffSynth module the update came from (for messages and provenance)."""


def resolve_lora_file(lora: str, lora_file: str = ELIGEN_LORA_FILE, revision: str | None = None) -> Path:
    """A local file, a directory holding `lora_file`, or a hub repo id (downloaded via the HF cache)."""
    path = Path(lora).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / lora_file
        if not candidate.is_file():
            raise InputError(f"no {lora_file!r} in directory {str(path)!r}", field="lora_file")
        return candidate
    if lora.startswith((".", "/", "~")) or lora.count("/") != 1:
        raise InputError(f"{lora!r} is neither a file, a directory nor a hub repo id (owner/name)", field="lora")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=lora, filename=lora_file, revision=revision))


def read_lora(path: str | Path) -> dict[str, torch.Tensor]:
    """The raw state dict of a .safetensors (or torch .bin/.pt) LoRA file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise InputError(f"{str(path)!r} does not hold a state dict", field="lora")
    return dict(state)


def pair_lora_keys(
    state: Mapping[str, torch.Tensor], alpha_mode: str | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """DiffSynth module name -> (A, B, scale). Unknown or unpaired keys raise InputError.

    The scale is 1 unless `alpha_mode` is "apply" (then alpha / rank where the file gives
    alpha). With `alpha_mode` None, an alpha key that differs from its module's rank raises
    InputError: the two conventions would give different weights. Keys in kohya/BFL naming
    (`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`) are read as their DiffSynth
    equivalents.
    """
    if alpha_mode not in (None, *ALPHA_MODES):
        raise InputError(f"lora_alpha_mode must be one of {ALPHA_MODES} or unset, got {alpha_mode!r}",
                         field="lora_alpha_mode")
    downs: dict[str, torch.Tensor] = {}
    ups: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    for original, tensor in state.items():
        key = _from_kohya(original)
        match = _KEY.match(key)
        if match:
            (downs if match["ab"] == "A" else ups)[match["module"]] = tensor
            continue
        alpha = _ALPHA.match(key)
        if alpha:
            alphas[alpha["module"]] = float(tensor)
            continue
        raise InputError(f"unexpected key {original!r}; expected '<module>.lora_A[.default].weight' / lora_B "
                         "(DiffSynth naming) or kohya 'lora_unet_...lora_down.weight'", field="lora")
    if set(downs) != set(ups):
        missing = sorted(set(downs) ^ set(ups))
        raise InputError(f"LoRA A/B pairs incomplete for {missing[:5]}", field="lora")
    rescaled = sorted(m for m, down in downs.items() if m in alphas and alphas[m] != down.shape[0])
    if rescaled and alpha_mode is None:
        first = rescaled[0]
        raise InputError(
            f"{len(rescaled)} modules carry an alpha that differs from their rank (e.g. {first}: alpha "
            f"{alphas[first]:g}, rank {downs[first].shape[0]}), which would rescale the LoRA; set "
            "lora_alpha_mode=ignore (DiffSynth's merge, alpha unused) or lora_alpha_mode=apply (alpha / rank)",
            field="lora_alpha_mode",
        )
    pairs = {}
    for module, down in downs.items():
        rank = down.shape[0]
        scale = alphas[module] / rank if alpha_mode == "apply" and module in alphas else 1.0
        pairs[module] = (down, ups[module], scale)
    return pairs


def convert_diffsynth_lora(
    state: Mapping[str, torch.Tensor], hidden_size: int, alpha_mode: str | None = None
) -> list[LoraDelta]:
    """Map a DiffSynth-named FLUX LoRA onto diffusers `FluxTransformer2DModel` module names.

    `hidden_size` is the transformer's inner dim (3072 for FLUX.1-dev): the row split of fused
    projections is in units of it.
    """
    deltas: list[LoraDelta] = []
    for module, (down, up, scale) in sorted(pair_lora_keys(state, alpha_mode).items()):
        for target, rows in _targets(module):
            if rows is None:
                piece = up
            else:
                start, stop = rows[0] * hidden_size, rows[1] * hidden_size
                if up.shape[0] < stop:
                    raise InputError(
                        f"{module}: lora_B has {up.shape[0]} rows, the split needs {stop}", field="lora"
                    )
                piece = up[start:stop]
            deltas.append(LoraDelta(target, down, piece, scale, module))
    return deltas


def _targets(module: str) -> list[tuple[str, tuple[int, int] | None]]:
    """diffusers targets of one DiffSynth module, with row ranges (in hidden-size units) or None."""
    parts = module.split(".")
    if parts[0] in ("blocks", "single_blocks") and len(parts) > 2 and parts[1].isdigit():
        table = _DOUBLE if parts[0] == "blocks" else _SINGLE
        prefix = f"{'transformer_blocks' if parts[0] == 'blocks' else 'single_transformer_blocks'}.{parts[1]}."
        rest = ".".join(parts[2:])
        if rest not in table:
            raise InputError(f"unknown DiffSynth FLUX module {module!r}", field="lora")
        out: list[tuple[str, tuple[int, int] | None]] = []
        offset = 0
        for name, share in table[rest]:
            if share is None:
                out.append((prefix + name, None))
            else:
                out.append((prefix + name, (offset, offset + share)))
                offset += share
        return out
    if module in _GLOBAL:
        return [(_GLOBAL[module], None)]
    raise InputError(f"unknown DiffSynth FLUX module {module!r}", field="lora")


def fuse_lora(transformer: torch.nn.Module, deltas: list[LoraDelta], scale: float = 1.0) -> list[str]:
    """Merge every delta into its Linear weight in place (in float32, cast back); returns the modules touched."""
    import torch

    modules = dict(transformer.named_modules())
    touched: list[str] = []
    with torch.no_grad():
        for delta in deltas:
            layer = modules.get(delta.module)
            if not isinstance(layer, torch.nn.Linear):
                raise InputError(f"{delta.source} maps to {delta.module!r}, which is not a Linear of this model", field="lora")
            weight = layer.weight
            expected = (weight.shape[0], delta.down.shape[0]), (delta.down.shape[0], weight.shape[1])
            got = tuple(delta.up.shape), tuple(delta.down.shape)
            if got != expected:
                raise InputError(
                    f"{delta.source} -> {delta.module}: LoRA shapes B{got[0]} A{got[1]} do not fit weight {tuple(weight.shape)}",
                    field="lora",
                )
            update = delta.up.to(weight.device, torch.float32) @ delta.down.to(weight.device, torch.float32)
            merged = weight.float() + (scale * delta.scale) * update
            weight.copy_(merged.to(weight.dtype))
            touched.append(delta.module)
    return touched


def load_eligen_lora(
    transformer: torch.nn.Module,
    lora: str = ELIGEN_LORA_REPO,
    lora_file: str = ELIGEN_LORA_FILE,
    scale: float = 1.0,
    revision: str | None = None,
    alpha_mode: str | None = None,
) -> list[str]:
    """Resolve, read, convert and fuse the EliGen LoRA into a diffusers FLUX transformer.

    Returns the diffusers modules updated (one entry per module).
    """
    path = resolve_lora_file(lora, lora_file, revision)
    hidden = int(transformer.config.num_attention_heads * transformer.config.attention_head_dim)
    deltas = convert_diffsynth_lora(read_lora(path), hidden, alpha_mode)
    if not deltas:
        raise InputError(f"{str(path)!r} holds no LoRA weights", field="lora")
    return fuse_lora(transformer, deltas, scale)


def random_diffsynth_lora(
    num_layers: int, num_single_layers: int, hidden_size: int, rank: int = 4, seed: int = 0, std: float = 0.05
) -> dict[str, torch.Tensor]:
    """A seeded random LoRA over every module EliGen trains, in DiffSynth naming (tiny profile, tests).

    Both A and B are random (a trained LoRA's B is not zero), so the LoRA changes the output.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    d = hidden_size
    double = {
        "attn.a_to_qkv": (3 * d, d), "attn.b_to_qkv": (3 * d, d),
        "attn.a_to_out": (d, d), "attn.b_to_out": (d, d),
        "ff_a.0": (4 * d, d), "ff_a.2": (d, 4 * d), "ff_b.0": (4 * d, d), "ff_b.2": (d, 4 * d),
        "norm1_a.linear": (6 * d, d), "norm1_b.linear": (6 * d, d),
    }  # fmt: skip
    single = {"to_qkv_mlp": (7 * d, d), "proj_out": (d, 5 * d), "norm.linear": (3 * d, d)}
    modules = [(f"blocks.{i}.{name}", shape) for i in range(num_layers) for name, shape in double.items()]
    modules += [(f"single_blocks.{i}.{name}", shape) for i in range(num_single_layers) for name, shape in single.items()]
    state: dict[str, torch.Tensor] = {}
    for name, (out_features, in_features) in modules:
        state[f"{name}.lora_A.default.weight"] = torch.randn(rank, in_features, generator=gen) * std
        state[f"{name}.lora_B.default.weight"] = torch.randn(out_features, rank, generator=gen) * std
    return state
