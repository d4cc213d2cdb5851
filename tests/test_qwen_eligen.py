"""`qwen-eligen` (EliGen on Qwen-Image) against transcriptions of DiffSynth-Studio written here.

Reference: modelscope/DiffSynth-Studio@afd101f (v1.1.9): diffsynth/models/qwen_image_dit.py
(`process_entity_masks`, `QwenEmbedRope`, `ApproximateGELU`), diffsynth/pipelines/qwen_image.py
(`QwenImageUnit_EntityControl`, `encode_prompt`, `__call__`), diffsynth/schedulers/flow_match.py,
diffsynth/lora/__init__.py, diffsynth/models/svd_unet.py (`get_timestep_embedding`). Each test
uses inputs on which the plausible mistake gives another answer.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eligen_bench.cli import main
from eligen_bench.errors import InputError
from eligen_bench.generators.flux.attention import build_plan, dense_mask
from eligen_bench.generators.flux.regions import eligen_token_masks
from eligen_bench.generators.qwen_image import attention as qattn
from eligen_bench.generators.qwen_image.generator import (
    SHARED_NEGATIVE_PROMPT,
    VERSIONS,
    QwenEliGenGenerator,
)
from eligen_bench.generators.qwen_image.lora import TARGETS, convert_lora, merge_lora, random_lora
from eligen_bench.generators.qwen_image.numerics import SigmoidGELU, follow_diffsynth
from eligen_bench.generators.qwen_image.sampling import (
    Branch,
    denoise,
    initial_noise,
    model_timestep,
    pack,
    qwen_sigmas,
    unpack,
)
from eligen_bench.generators.qwen_image.text import (
    DROP_IDX,
    ENTITY_MAX_TOKENS,
    GLOBAL_MAX_TOKENS,
    TEMPLATE,
    TemplatedTokenizer,
    encode,
)
from eligen_bench.generators.qwen_image.tiny import TINY_TRANSFORMER, tiny_text_encoder
from eligen_bench.layout import Entity, Layout
from eligen_bench.tiny import qwen_tokenizer
from eligen_bench.truncation import check_prompts

from fixtures import request_for

W, H = 64, 48  # 4 x 3 tokens of 2 x 2 latent cells (8 x 6 cells)
# box edges fall inside tokens: a token is covered by some of its cells, not all
LAYOUT = Layout(id="q", prompt="a red cat next to a blue dog", width=W, height=H, entities=(
    Entity("cat", (0.0, 0.0, 0.375, 1.0)),             # cells 0-2 of 8 wide: token 1 half covered
    Entity("a very blue dog with a tail", (0.5, 0.25, 1.0, 0.75)),
))  # fmt: skip


@pytest.fixture(scope="module")
def gen() -> QwenEliGenGenerator:
    g = QwenEliGenGenerator(profile="tiny", device="cpu", width=W, height=H)
    g.ensure_loaded()
    yield g
    g.close()


def _tiny_transformer(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    return QwenImageTransformer2DModel(**TINY_TRANSFORMER).to(dtype).eval()


# ----- 1. the attention mask -----------------------------------------------------------------
def _diffsynth_mask(images: list[Image.Image], entity_lengths: list[int], global_length: int,
                    height: int, width: int, cells: str = "any") -> np.ndarray:
    """`preprocess_masks` + `process_entity_masks`: bool (L, L) over [entities; global; image]."""
    tokens = []
    for image in images:
        pixels = np.asarray(image.resize((width // 8, height // 8), Image.NEAREST), dtype=np.float32)
        on = (pixels * (2 / 255) - 1).mean(axis=2) > 0  # preprocess_image, mean over RGB, > 0
        h, w = on.shape
        patches = on.reshape(h // 2, 2, w // 2, 2).transpose(0, 2, 1, 3).reshape(-1, 4)  # (H W) (P Q)
        tokens.append(patches.sum(-1) > 0 if cells == "any" else patches.all(-1))
    n_image = tokens[0].size
    tokens.append(np.ones(n_image, bool))  # the global prompt's mask
    lengths = [*entity_lengths, global_length]
    starts = np.cumsum([0, *lengths])
    total = starts[-1] + n_image
    mask = np.ones((total, total), bool)
    image = slice(starts[-1], total)
    for i, region in enumerate(tokens):
        rows = slice(starts[i], starts[i + 1])
        mask[rows, image] = region
        mask[image, rows] = region[:, None]
    for i in range(len(lengths)):
        for j in range(len(lengths)):
            if i != j:
                mask[starts[i]:starts[i + 1], starts[j]:starts[j + 1]] = False
    return mask


def _to_our_order(mask: np.ndarray, entity_lengths: list[int], global_length: int) -> np.ndarray:
    """DiffSynth's [entities; global; image] -> ours [global; entities; image]."""
    starts = np.cumsum([0, *entity_lengths])
    order = list(range(starts[-1], starts[-1] + global_length))
    for i in range(len(entity_lengths)):
        order += list(range(starts[i], starts[i + 1]))
    order += list(range(starts[-1] + global_length, mask.shape[0]))
    return mask[np.ix_(order, order)]


def test_attention_mask_matches_diffsynth_rule() -> None:
    entity_lengths, global_length = [3, 7], 5  # each prompt its own length
    masks = eligen_token_masks(LAYOUT, H, W)
    ours = dense_mask(build_plan([global_length, *entity_lengths], masks)).numpy()
    images = [Image.fromarray(np.where(e.source_region(H, W), 255, 0).astype(np.uint8)).convert("RGB")
              for e in LAYOUT.entities]
    ref = _to_our_order(_diffsynth_mask(images, entity_lengths, global_length, H, W), entity_lengths, global_length)
    np.testing.assert_array_equal(ours, ref)
    all_cells = _to_our_order(_diffsynth_mask(images, entity_lengths, global_length, H, W, cells="all"),
                              entity_lengths, global_length)
    assert (all_cells != ref).any()  # the layout tells the two rules apart


# ----- 2. the processor: restarted text RoPE + mask, against float64 ------------------------
def _rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """`apply_rotary_emb_qwen` in complex128: (B, L, heads, D) by (L, D/2) complex."""
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(pairs * freqs.to(torch.complex128)[None, :, None]).flatten(3)


def _reference_attention(attn, image, text, img_freqs, txt_freqs, allowed):
    """`QwenDoubleStreamAttention.forward` with `process_entity_masks`' mask, in float64."""
    heads, d = attn.heads, attn.inner_dim // attn.heads

    def proj(x, to_q, to_k, to_v, nq, nk, freqs):
        q, k, v = (f(x).unflatten(-1, (heads, d)) for f in (to_q, to_k, to_v))
        return _rotate(nq(q), freqs), _rotate(nk(k), freqs), v

    iq, ik, iv = proj(image, attn.to_q, attn.to_k, attn.to_v, attn.norm_q, attn.norm_k, img_freqs)
    tq, tk, tv = proj(text, attn.add_q_proj, attn.add_k_proj, attn.add_v_proj, attn.norm_added_q,
                      attn.norm_added_k, txt_freqs)
    q, k, v = (torch.cat(p, dim=1).transpose(1, 2) for p in ((tq, iq), (tk, ik), (tv, iv)))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    out = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
    out = out.transpose(1, 2).flatten(2)
    n = text.shape[1]
    return attn.to_out[0](out[:, n:]), attn.to_add_out(out[:, :n])


@pytest.mark.parametrize("method", ["dense", "groups", "merge"])
def test_processor_matches_float64_reference_with_restarted_text_rope(method: str) -> None:
    transformer = _tiny_transformer(torch.float64)
    attn = transformer.transformer_blocks[0].attn
    lengths = [5, 3, 7]  # [global, entity 1, entity 2]
    masks = eligen_token_masks(LAYOUT, H, W)
    plan = build_plan(lengths, masks)
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(1, plan.n_latent, 32, generator=gen, dtype=torch.float64)
    text = torch.randn(1, plan.n_prompt, 32, generator=gen, dtype=torch.float64)
    shape = [(1, H // 16, W // 16)]
    rotary = transformer.pos_embed(shape, max_txt_seq_len=plan.n_prompt, device=torch.device("cpu"))
    processor = qattn.EliGenQwenProcessor()
    with torch.no_grad():  # as in sampling ("merge" needs it)
        got = processor(attn, image, text, image_rotary_emb=rotary,
                        regional=qattn.EliGenQwenControl(plan, method=method))
    # DiffSynth: one pos_embed call per prompt, each numbering its tokens from the same start
    per_prompt = torch.cat([transformer.pos_embed(shape, max_txt_seq_len=n, device=torch.device("cpu"))[1]
                            for n in lengths])
    with torch.no_grad():
        ref = _reference_attention(attn, image, text, rotary[0], per_prompt, dense_mask(plan))
        shared = _reference_attention(attn, image, text, rotary[0], rotary[1], dense_mask(plan))
    for ours, theirs, other in zip(got, ref, shared, strict=True):
        np.testing.assert_allclose(ours.detach().numpy(), theirs.numpy(), atol=2e-7, rtol=0)
        assert (other - theirs).abs().max() > 0.05  # one shared numbering: 0.12 and 0.28 here


def test_processor_without_control_is_the_stock_one() -> None:
    from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

    transformer = _tiny_transformer()
    attn = transformer.transformer_blocks[0].attn
    image, text = torch.randn(1, 12, 32), torch.randn(1, 6, 32)
    rotary = transformer.pos_embed([(1, 3, 4)], max_txt_seq_len=6, device=torch.device("cpu"))
    ours = qattn.EliGenQwenProcessor()(attn, image, text, image_rotary_emb=rotary)
    stock = QwenDoubleStreamAttnProcessor2_0()(attn, image, text, image_rotary_emb=rotary)
    assert all(torch.equal(a, b) for a, b in zip(ours, stock, strict=True))


# ----- 3. DiffSynth numerics: GELU and the timestep ------------------------------------------
def _bf16(x: float) -> float:
    """Round a float to bfloat16 (nearest, ties to even) through its float32 bits."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def test_model_timestep_is_rounded_as_diffsynth_feeds_it() -> None:
    # cast, then divide: 901.7 -> bf16 900 -> 0.9 -> bf16 0.8984375 (dividing first: 0.90234375)
    t = model_timestep(torch.tensor(901.7), torch.bfloat16, "cpu")
    assert t.dtype == torch.bfloat16 and t.tolist() == [0.8984375] == [_bf16(_bf16(901.7) / 1000)]
    assert _bf16(901.7 / 1000) == 0.90234375
    assert model_timestep(torch.tensor(900.0), torch.float32, "cpu").tolist() == [pytest.approx(0.9)]


def test_timestep_embedding_rounds_frequencies_to_the_timestep_dtype() -> None:
    transformer = _tiny_transformer()
    follow_diffsynth(transformer)
    t = torch.tensor([0.89453125], dtype=torch.bfloat16)
    got = transformer.time_text_embed.time_proj(t)[0]
    for k in (1, 37, 127):
        freq = _bf16(math.exp(-math.log(10000) * k / 128))
        angle = 1000 * (0.89453125 * freq)
        assert got[k].item() == pytest.approx(math.cos(angle), abs=2e-4)  # cos first (flip_sin_to_cos)
        assert got[128 + k].item() == pytest.approx(math.sin(angle), abs=2e-4)
    from diffusers.models.embeddings import Timesteps

    stock = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0, scale=1000)(t)[0]
    assert (stock - got).abs().max() > 0.1  # float32 frequencies give other angles
    exact = torch.tensor([0.9])
    assert torch.allclose(transformer.time_text_embed.time_proj(exact), Timesteps(256, True, 0, scale=1000)(exact))


def test_feed_forward_uses_diffsynth_sigmoid_gelu() -> None:
    transformer = _tiny_transformer()
    block = transformer.transformer_blocks[1]
    x = torch.randn(2, 5, 32) * 3
    tanh_out = block.txt_mlp(x)
    changed = follow_diffsynth(transformer)
    assert len(changed) == 2 * TINY_TRANSFORMER["num_layers"] + 1 and follow_diffsynth(transformer) == []
    assert isinstance(block.txt_mlp.net[0], SigmoidGELU)
    h = block.txt_mlp.net[0].proj(x)
    expected = block.txt_mlp.net[2](h * torch.sigmoid(1.702 * h))
    assert torch.allclose(block.txt_mlp(x), expected, atol=1e-6)
    assert (block.txt_mlp(x) - tanh_out).abs().max() > 1e-3


def test_vae_rms_norm_normalises_in_the_input_dtype() -> None:
    from diffusers import AutoencoderKLQwenImage
    from diffusers.models.autoencoders.autoencoder_kl_qwenimage import QwenImageRMS_norm

    from eligen_bench.generators.qwen_image.numerics import InputDtypeRMSNorm, follow_diffsynth_vae

    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    keys = list(vae.state_dict())
    replaced = follow_diffsynth_vae(vae)
    assert replaced and follow_diffsynth_vae(vae) == [] and list(vae.state_dict()) == keys
    assert not any(isinstance(m, QwenImageRMS_norm) for m in vae.modules())
    stock = QwenImageRMS_norm(8, images=False).to(torch.bfloat16)
    ours = InputDtypeRMSNorm(stock)
    x = torch.randn(2, 8, 3, 5, 5).to(torch.bfloat16) * 7
    expected = F.normalize(x, dim=1) * (8 ** 0.5) * stock.gamma  # RMS_norm.forward, all in bf16
    assert torch.equal(ours(x), expected)
    assert not torch.equal(stock(x), expected)  # diffusers normalises bf16 in float32


# ----- 4. schedule, guidance, noise ----------------------------------------------------------
def _reference_sigmas(n: int, height: int, width: int) -> list[float]:
    """FlowMatchScheduler(sigma_min=0, sigma_max=1, extra_one_step=True, exponential_shift=True,
    shift_terminal=0.02).set_timesteps(n, dynamic_shift_len=(H//16)*(W//16))."""
    linear = [1.0 - i / n for i in range(n)]
    seq = (height // 16) * (width // 16)
    m = (0.9 - 0.5) / (8192 - 256)
    mu = seq * m + (0.5 - m * 256)
    shifted = [math.exp(mu) / (math.exp(mu) + (1 / s - 1)) for s in linear]
    scale = (1 - shifted[-1]) / (1 - 0.02)
    return [1 - (1 - s) / scale for s in shifted]


@pytest.mark.parametrize(("steps", "height", "width"), [(30, 1024, 1024), (40, 784, 1280), (4, 96, 128)])
def test_schedule_matches_diffsynth(steps: int, height: int, width: int) -> None:
    ours = qwen_sigmas(steps, height, width).tolist()
    ref = _reference_sigmas(steps, height, width)
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=1e-7)
    assert ours[0] == pytest.approx(1.0) and ours[-1] == pytest.approx(0.02, abs=1e-6)
    # mu at diffusers' default max_image_seq_len=4096 would give another schedule
    seq = (height // 16) * (width // 16)
    mu_4096 = seq * (0.4 / 3840) + (0.5 - 0.4 / 3840 * 256)
    assert abs(math.exp(mu_4096) / (math.exp(mu_4096) + 1) - ref[steps // 2]) > 1e-3 or steps < 30


class _EchoTransformer(torch.nn.Module):
    """Velocity = the mean of the prompt embedding (so positive and negative differ)."""

    def forward(self, hidden_states, encoder_hidden_states, timestep, **_):
        value = encoder_hidden_states.mean() * (1 + torch.arange(hidden_states.shape[-1]))
        return (torch.ones_like(hidden_states) * value,)


def test_plain_cfg_and_euler_steps() -> None:
    noise = torch.zeros(1, 4, 8)
    pos, neg = Branch(torch.full((1, 3, 4), 2.0)), Branch(torch.full((1, 2, 4), -1.0))
    out = denoise(_EchoTransformer(), noise, pos, neg, steps=2, cfg_scale=4.0, height=32, width=32)
    base = 1 + torch.arange(8.0)
    guided = -1.0 * base + 4.0 * (2.0 * base - -1.0 * base)  # neg + cfg (pos - neg), no rescale
    sigmas = qwen_sigmas(2, 32, 32)
    expected = noise + guided * (sigmas[1] - sigmas[0]) + guided * (0 - sigmas[1])
    assert torch.allclose(out, expected.expand_as(out), atol=1e-5)
    rescaled = guided * (2.0 * base).norm() / guided.norm()  # diffusers' norm rescale
    assert not torch.allclose(rescaled, guided)


def test_noise_is_drawn_in_the_model_dtype_on_cpu_and_packed_as_diffsynth() -> None:
    noise = initial_noise(5, 48, 64, torch.bfloat16)
    gen = torch.Generator("cpu").manual_seed(5)
    assert torch.equal(noise, torch.randn((1, 16, 6, 8), generator=gen, dtype=torch.bfloat16))
    packed = pack(noise)
    # "B C (H P) (W Q) -> B (H W) (C P Q)": token (h, w), feature c * 4 + p * 2 + q
    for h, w, c, p, q in [(0, 0, 0, 0, 0), (2, 3, 15, 1, 1), (1, 2, 7, 0, 1), (2, 0, 3, 1, 0)]:
        assert packed[0, h * 4 + w, c * 4 + p * 2 + q] == noise[0, c, 2 * h + p, 2 * w + q]
    assert torch.equal(unpack(packed, 48, 64), noise)


# ----- 5. prompt encoding --------------------------------------------------------------------
def test_prompt_encoding_template_drop_and_limits() -> None:
    tokenizer = qwen_tokenizer()
    torch.manual_seed(0)
    encoder = tiny_text_encoder(len(tokenizer)).eval()
    got = encode(encoder, tokenizer, "a red cat", ENTITY_MAX_TOKENS, "cpu", torch.float32)
    ids = tokenizer(TEMPLATE.format("a red cat"), return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = encoder(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states[-1]
    assert torch.equal(got, hidden[:, 34:]) and DROP_IDX == 34
    assert (GLOBAL_MAX_TOKENS, ENTITY_MAX_TOKENS) == (4096 + 34, 1024 + 34)
    long_prompt = "x" * 1100  # one byte-level token per character
    assert encode(encoder, tokenizer, long_prompt, ENTITY_MAX_TOKENS, "cpu", torch.float32).shape[1] == 1024
    assert encode(encoder, tokenizer, long_prompt, GLOBAL_MAX_TOKENS, "cpu", torch.float32).shape[1] > 1100

    class Holder:
        pass

    holder = Holder()
    check_prompts(holder, "entity", TemplatedTokenizer(tokenizer), [long_prompt, "short"], ENTITY_MAX_TOKENS)
    assert holder.prompt_truncation["entity"]["truncated"] == {long_prompt}


# ----- 6. the LoRA ---------------------------------------------------------------------------
def _diffsynth_merge(model: torch.nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """`GeneralLoRALoader(torch_dtype=dtype).load(model, state, alpha=1)`."""
    names = {}
    for key in state:
        if ".lora_B." not in key:
            continue
        keys = key.split(".")
        if len(keys) > keys.index("lora_B") + 2:
            keys.pop(keys.index("lora_B") + 1)
        keys.pop(keys.index("lora_B"))
        if keys[0] == "diffusion_model":
            keys.pop(0)
        keys.pop(-1)
        names[".".join(keys)] = (key, key.replace(".lora_B.", ".lora_A."))
    for name, module in model.named_modules():
        if name in names:
            up, down = (state[k].to(dtype=dtype) for k in names[name])
            weights = module.state_dict()
            weights["weight"] = weights["weight"].to(dtype=dtype) + 1 * torch.mm(up, down)
            module.load_state_dict(weights)


def test_lora_names_and_merge_follow_diffsynth() -> None:
    state = random_lora(TINY_TRANSFORMER["num_layers"], 32, rank=32, seed=3, std=0.3)
    ours, theirs, float_merge = (_tiny_transformer(torch.bfloat16) for _ in range(3))
    touched = merge_lora(ours, convert_lora(state))
    assert sorted(touched) == sorted(f"transformer_blocks.{i}.{t}" for i in range(2) for t in TARGETS)
    _diffsynth_merge(theirs, state, torch.bfloat16)
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # merging in float32 and casting once (the FLUX family's merge) rounds otherwise
    with torch.no_grad():
        layer = float_merge.transformer_blocks[0].img_mod[1]
        key = "transformer_blocks.0.img_mod.1"
        update = state[f"{key}.lora_B.default.weight"] @ state[f"{key}.lora_A.default.weight"]
        merged = (layer.weight.float() + update).to(torch.bfloat16)
    assert not torch.equal(merged, ours.transformer_blocks[0].img_mod[1].weight)
    prefixed = {f"diffusion_model.{k}": v for k, v in state.items()}
    again = _tiny_transformer(torch.bfloat16)
    merge_lora(again, convert_lora(prefixed))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values(), strict=True))


def test_bad_lora_files_are_refused() -> None:
    model = _tiny_transformer()
    good = random_lora(2, 32)
    unknown = {"transformer_blocks.0.attn.to_qkv.lora_A.default.weight": torch.zeros(4, 32),
               "transformer_blocks.0.attn.to_qkv.lora_B.default.weight": torch.zeros(96, 4)}
    with pytest.raises(InputError, match="not a Linear"):
        merge_lora(model, convert_lora(unknown))
    wrong = dict(good)
    wrong["transformer_blocks.0.attn.to_q.lora_B.default.weight"] = torch.zeros(16, 4)
    with pytest.raises(InputError, match="do not fit"):
        merge_lora(model, convert_lora(wrong))
    with pytest.raises(InputError, match="alpha"):
        convert_lora({**good, "transformer_blocks.0.attn.to_q.alpha": torch.tensor(1.0)})
    with pytest.raises(InputError, match="unexpected key"):
        convert_lora({"lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight": torch.zeros(4, 32)})


# ----- 7. the generator ----------------------------------------------------------------------
def test_version_defaults_and_explicit_options() -> None:
    v1, v2, poster = (QwenEliGenGenerator(version=v).settings for v in ("v1", "v2", "poster"))
    assert (v1["steps"], v1["negative_prompt"], v1["lora"]) == (30, "", "DiffSynth-Studio/Qwen-Image-EliGen")
    assert (v2["steps"], v2["negative_prompt"], v2["lora"]) == (40, SHARED_NEGATIVE_PROMPT,
                                                               "DiffSynth-Studio/Qwen-Image-EliGen-V2")
    assert (poster["width"], poster["height"], poster["lora"]) == (1280, 784, "DiffSynth-Studio/Qwen-Image-EliGen-Poster")
    for s in (v1, v2, poster):
        assert (s["cfg_scale"], s["dtype"], s["model"], s["lora_file"]) == (4.0, "bfloat16", "Qwen/Qwen-Image",
                                                                          "model.safetensors")
        assert s["cfg_entity_control"] is False
    assert QwenEliGenGenerator(version="poster", steps=12).settings["steps"] == 12
    assert QwenEliGenGenerator(version="poster", profile="tiny").settings["width"] == 64
    assert set(VERSIONS) == {"v1", "v2", "poster"}
    for bad in ({"version": "v3"}, {"steps": 1}, {"width": 100}, {"attention_method": "fast"}, {"numerics": "x"}):
        with pytest.raises(InputError):
            QwenEliGenGenerator(**bad)
    assert QwenEliGenGenerator.capabilities.inpainting is False
    assert QwenEliGenGenerator.capabilities.max_entities == 64


def test_no_entities_is_qwen_image_with_the_lora(gen: QwenEliGenGenerator) -> None:
    from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

    plain = Layout(id="p", prompt="a quiet lake", width=W, height=H)
    req = request_for(gen, plain, seed=4)
    ours = gen._sample(req)
    transformer = gen._pipe.transformer
    transformer.set_attn_processor(QwenDoubleStreamAttnProcessor2_0())
    try:
        stock = gen._sample(req)
    finally:
        qattn.install(transformer)
    assert torch.equal(ours, stock)
    assert gen.load_notes == ["EliGen LoRA (v1): 24 modules updated"]


# Final packed latents [0, 3:5, :3] of a 2-step tiny run (seed 11) recorded from this code on
# CPU / float32; a change means the sampler, the conditioning, the numerics or the tiny models changed.
EXPECTED_SLICE = [-0.03715, -0.90778, -1.22056, 0.01587, 2.56132, 0.19807]


def test_two_step_run_matches_stored_slice_and_entities_matter(gen: QwenEliGenGenerator) -> None:
    req = request_for(gen, LAYOUT, seed=11)
    latents = gen._sample(req)
    np.testing.assert_allclose(latents[0, 3:5, :3].flatten().tolist(), EXPECTED_SLICE, atol=2e-4)
    assert torch.equal(gen._sample(req), latents)
    # with each prompt's positions restarting, entity order is a permutation: the same image
    reordered = Layout(id="r", prompt=LAYOUT.prompt, width=W, height=H,
                       entities=(LAYOUT.entities[1], LAYOUT.entities[0]))
    assert torch.allclose(gen._sample(request_for(gen, reordered, seed=11)), latents, atol=1e-5)
    # the same boxes with their prompts exchanged: another image
    a, b = LAYOUT.entities
    exchanged = Layout(id="x", prompt=LAYOUT.prompt, width=W, height=H,
                       entities=(Entity(b.prompt, a.bbox), Entity(a.prompt, b.bbox)))
    assert (gen._sample(request_for(gen, exchanged, seed=11)) - latents).abs().max() > 1e-3
    image = gen.generate([req])[0]
    assert image.size == (W, H) and image.mode == "RGB"


def test_decode_denormalises_and_truncates_as_diffsynth(gen: QwenEliGenGenerator) -> None:
    latents = torch.randn(1, (H // 16) * (W // 16), 64, generator=torch.Generator().manual_seed(2))
    vae = gen._pipe.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    inv_std = 1 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():  # QwenImageVAE.decode, then vae_output_to_image
        out = vae.decode(unpack(latents, H, W)[:, :, None] / inv_std + mean, return_dict=False)[0][0, :, 0]
    expected = ((out + 1) * (255 / 2)).clip(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    assert not torch.allclose(mean, torch.zeros(1)) and not torch.allclose(inv_std, torch.ones(1))
    got = np.asarray(gen._decode(latents))
    np.testing.assert_array_equal(got, expected)
    rounded = np.round(((out / 2 + 0.5).clamp(0, 1) * 255).permute(1, 2, 0).numpy())  # diffusers' postprocess
    assert (rounded != got).any()


def test_tiny_generate_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["generate", "--profile", "tiny", "--limit", "1", "--generators", "v2=qwen-eligen[version=v2]",
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    images = list((out / "images" / "v2").glob("*.png"))
    assert len(images) == 1 and Image.open(images[0]).size == (64, 64)


@pytest.mark.weights
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_real_qwen_eligen(version: str) -> None:
    g = QwenEliGenGenerator(version=version, device="cuda", steps=8)
    try:
        lay = Layout(id="real", prompt="a cat and a dog sitting on a sofa", entities=(
            Entity("a ginger cat", (0.05, 0.3, 0.45, 0.9)), Entity("a black dog", (0.55, 0.2, 0.95, 0.9))))
        image = g.generate([request_for(g, lay, seed=0)])[0]
    finally:
        g.close()
    assert image.size == (g.settings["width"], g.settings["height"])
    assert np.asarray(image).std() > 10
