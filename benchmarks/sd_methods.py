"""Seconds per image of the Stable Diffusion based methods, side by side, with random weights.

    python benchmarks/sd_methods.py --device cuda [--dtype float32|float16|bfloat16] [--steps N]
    python benchmarks/sd_methods.py              # CPU: a reduced config, said in the first line
    # either: [--boxes 2,4,8] [--repeats 1] [--methods gligen,migc,instancediffusion,roictrl,multidiffusion]

`gligen` (SD 1.4 UNet with gated attention), `migc` (SD 1.4 + the MIGC controller on the layers
the released checkpoint holds), `instancediffusion` (SD 1.5 + UniFusion, gated fusers, ScaleU,
multi-instance sampler), `roictrl` (SD 1.4 + the ROICtrl adapter in every transformer block)
and `multidiffusion` (SD 2 base) run through their generators' own
`generate()`, at the generators' `defaults` (steps, guidance, resolution, MIS fraction, MIGC
steps, bootstrapping: read from the classes, not retyped), on layouts of 2, 4 and 8 boxes.
Nothing is downloaded: each method's files are written with random weights, in the released
format, to a temporary folder (diffusers pipeline folders from the real configs below; the
MIGC controller checkpoint under its LDM key names; the InstanceDiffusion `.pth` under the
official key names; the ROICtrl adapter `.safetensors` under its UNet paths), and the generator's model options point there, so the real loading path
runs and checks every key. Plain Stable Diffusion of each base (diffusers'
`StableDiffusionPipeline` on the same folder, DDIM: one UNet forward per step, the same steps,
guidance and size) gives the ratios.

Per method and box count it prints: UNet forwards per image (each forward is one batched call:
both guidance branches, and MultiDiffusion's regions), seconds per forward (median over the
measured images, CUDA events on the GPU), UNet seconds per denoising step (their sum over the
steps: MIS and bootstrapping steps cost more, so a mean), seconds per image (the `generate()`
call, after one warm-up image per method), the memory the loaded method holds and its peak
with one image (the image's peak over all loaded models, plus the method's own), and the ratio
of its seconds per image to plain SD of its base. Images are timed in rounds, one of every
method and of plain SD each, so that a varying load on a shared machine hits all alike; the
ratio is the median over rounds of each image's time over plain SD's of the same round, with
the range, and the load average is printed before and after.
With `--steps` below a method's default the image time at the default step count is an
estimate, said in its column: the time outside the UNet plus default steps x the UNet seconds
per step of the reduced run (whose share of MIS, grounding, MIGC and bootstrapping steps is the
reduced run's, not the default's).

On CUDA it builds the full-size models (float32 unless `--dtype`, as the reference code runs;
this also overrides `auto` of `gligen` and `multidiffusion`). On CPU it runs a reduced config
(narrow UNet, VAE and text encoder with the real block structure, 256x256, 10 steps unless
`--steps`) so that it ends in minutes; its figures say how the methods compare on a CPU, not
what they cost.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import cpu_name, load_average, ratio_summary

from eligen_bench.api.generator import Generator
from eligen_bench.generators.instancediffusion.checkpoint import SD15_UNET_CONFIG
from eligen_bench.generators.instancediffusion.generator import InstanceDiffusionGenerator
from eligen_bench.generators.instancediffusion.unifusion import UniFusionConfig
from eligen_bench.generators.migc.generator import MigcGenerator
from eligen_bench.generators.roictrl.generator import RoiCtrlGenerator
from eligen_bench.generators.stable_diffusion.gligen import GligenGenerator
from eligen_bench.generators.stable_diffusion.multidiffusion import MultiDiffusionGenerator
from eligen_bench.layout import Entity, Layout
from eligen_bench.requests import GenerationRequest

# ----- real configs ---------------------------------------------------------------------------
# SD 1.4 and SD 1.5 share the UNet (CompVis/stable-diffusion-v1-4 and v1-5 unet/config.json):
# InstanceDiffusion's config without its gated fusers.
SD1_UNET: dict[str, Any] = {k: v for k, v in SD15_UNET_CONFIG.items() if k != "attention_type"}
# stabilityai/stable-diffusion-2-base unet/config.json: per-level heads of dim 64, OpenCLIP-H context.
SD2_UNET: dict[str, Any] = dict(SD1_UNET, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
                                use_linear_projection=True)
# CLIP ViT-L/14 text tower (SD 1.x text_encoder/config.json); token ids of the real CLIP BPE.
CLIP_L: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)  # fmt: skip
# OpenCLIP ViT-H/14 text tower as SD 2 uses it (text_encoder/config.json: 23 of its 24 layers).
OPENCLIP_H: dict[str, Any] = dict(CLIP_L, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                  num_hidden_layers=23, hidden_act="gelu", projection_dim=512)
# The SD VAE (vae/config.json of SD 1.4, 1.5 and 2 base).
SD_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4, norm_num_groups=32, sample_size=512,
)  # fmt: skip
# SD 1.x / 2 base scheduler/scheduler_config.json (PNDM; the generators build their own samplers from it).
SD_SCHEDULER: dict[str, Any] = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False,
)  # fmt: skip

BOX_COUNTS = (2, 4, 8)
SEED = 0
BASES = {"sd1": "SD 1.4/1.5", "sd2": "SD 2 base"}


@dataclass(frozen=True)
class Scale:
    """Model widths and image size of one setting; empty overrides are the real configs."""

    name: str
    size: int | None
    """Image side; None keeps each generator's default resolution."""
    steps: int | None = None
    """Denoising steps unless `--steps`; None keeps each generator's default."""
    unet: dict[str, Any] = field(default_factory=dict)
    sd1_heads: Any = None
    sd2_heads: Any = None
    text: dict[str, Any] = field(default_factory=dict)
    vae: dict[str, Any] = field(default_factory=dict)
    unifusion: UniFusionConfig = field(default_factory=UniFusionConfig)
    """The released UniFusion (768 -> 768, ConvNeXt-T mask branch) unless reduced."""

    @property
    def full(self) -> bool:
        return not self.unet


FULL = Scale("full", None)
# Same block structure as the real UNet (4 levels, 2 layers each: MIGC's LDM block indices
# hold), narrow enough for a CPU; SD 1.x keeps a fixed head count (2 here), SD 2 a fixed head
# width (32 here), as the real ones do (8 heads; width 64).
REDUCED = Scale(
    "reduced", 256, 10, unet={"block_out_channels": (32, 64, 128, 128), "norm_num_groups": 16}, sd1_heads=2,
    sd2_heads=(1, 2, 4, 4), text=dict(hidden_size=64, intermediate_size=256, num_attention_heads=4,
                                      num_hidden_layers=2, projection_dim=64),
    vae={"block_out_channels": (32, 32, 64, 64), "layers_per_block": 1, "norm_num_groups": 16},
    unifusion=UniFusionConfig(in_dim=64, out_dim=64, mid_dim=256, convnext_depths=(1, 1, 1, 1),
                              convnext_dims=(8, 8, 16, 32)),
)  # fmt: skip
TINY = Scale(
    "tiny", 64, 2, unet={"block_out_channels": (8, 8, 16, 16), "norm_num_groups": 4}, sd1_heads=8,
    sd2_heads=(1, 2, 2, 2), text=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                      num_hidden_layers=2, projection_dim=32),
    vae={"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4},
    unifusion=UniFusionConfig(in_dim=32, out_dim=32, mid_dim=16, convnext_depths=(1, 1, 1, 1),
                              convnext_dims=(4, 4, 4, 8), seg_resize=128),
)  # fmt: skip
SCALES = {s.name: s for s in (FULL, REDUCED, TINY)}


def unet_config(base: str, scale: Scale) -> dict[str, Any]:
    config = dict(SD2_UNET if base == "sd2" else SD1_UNET)
    if not scale.full:
        config.update(scale.unet, attention_head_dim=scale.sd2_heads if base == "sd2" else scale.sd1_heads,
                      cross_attention_dim=scale.text["hidden_size"])
    return config


def text_config(base: str, scale: Scale) -> dict[str, Any]:
    return dict(OPENCLIP_H if base == "sd2" else CLIP_L, **scale.text)


# ----- random checkpoints in the released formats ------------------------------------------------
def _random_modules(build: Callable[[], Any], device: str) -> Any:
    """`build()` seeded, on `device` (fast random init on a GPU), returned on the CPU for saving."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        with torch.device(device):
            module = build()
    return module.to("cpu")


def write_sd_folder(directory: Path, base: str, scale: Scale, device: str, *, gated: bool = False) -> Path:
    """A diffusers pipeline folder (GLIGEN's when `gated`) with random weights and the real CLIP BPE."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionGLIGENPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from eligen_bench.tiny import clip_tokenizer

    config = dict(unet_config(base, scale), attention_type="gated" if gated else "default")
    cls = StableDiffusionGLIGENPipeline if gated else StableDiffusionPipeline
    pipe = cls(
        vae=_random_modules(lambda: AutoencoderKL(**dict(SD_VAE, **scale.vae)), device),
        text_encoder=_random_modules(lambda: CLIPTextModel(CLIPTextConfig(**text_config(base, scale))), device),
        tokenizer=clip_tokenizer(),
        unet=_random_modules(lambda: UNet2DConditionModel(**config), device),
        scheduler=PNDMScheduler(**SD_SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(directory)
    return directory


def write_migc_checkpoint(path: Path, scale: Scale, device: str) -> Path:
    """A random MIGC controller for each layer the released file holds, as `{"state_dict": ...}`
    under its LDM names; widths from the UNet's own layers, as the loader checks them."""
    import torch
    from diffusers import UNet2DConditionModel

    from eligen_bench.generators.migc.checkpoint import attention_path, ldm_key
    from eligen_bench.generators.migc.controller import MIGCLayer
    from eligen_bench.generators.migc.generator import TINY_LAYERS

    config = unet_config("sd1", scale)
    with torch.device("meta"):
        modules = dict(UNet2DConditionModel(**config).named_modules())
    state = {}
    for kind, index in TINY_LAYERS:  # the released checkpoint's blocks: mid block and up_blocks.1
        attn = modules[attention_path(ldm_key(kind, index, "norm.bias"), config["layers_per_block"])[0]]
        layer = _random_modules(lambda a=attn: MIGCLayer(channels=a.to_q.in_features, context_dim=a.to_k.in_features),
                                device)  # fmt: skip
        state.update({ldm_key(kind, index, k): v for k, v in layer.state_dict().items()})
    torch.save({"state_dict": state}, path)
    return path


def write_instdiff_checkpoint(path: Path, scale: Scale, device: str) -> Path:
    """A random InstanceDiffusion UNet (gated fusers, UniFusion, ScaleU) as `{"model": ...}` under
    the official LDM key names, the layout of `instancediffusion_sd15.pth`."""
    import torch

    from eligen_bench.generators.instancediffusion.checkpoint import build_unet
    from eligen_bench.generators.instancediffusion.tiny import ldm_key

    config = instdiff_unet_config(scale)
    unet = _random_modules(lambda: build_unet(config, scale.unifusion), device)
    torch.save({"model": {ldm_key(k, config): v for k, v in unet.state_dict().items()}}, path)
    return path


def write_roictrl_checkpoint(path: Path, scale: Scale, device: str) -> Path:
    """A random ROICtrl adapter (gates open) for the SD 1.x UNet, as the released `.safetensors`."""
    from diffusers import UNet2DConditionModel

    from eligen_bench.generators.roictrl.tiny import write_tiny_checkpoint

    unet = _random_modules(lambda: UNet2DConditionModel(**unet_config("sd1", scale)), device)
    return write_tiny_checkpoint(unet, path, SEED)


def instdiff_unet_config(scale: Scale) -> dict[str, Any]:
    return SD15_UNET_CONFIG if scale.full else dict(unet_config("sd1", scale), attention_type="gated")


class ReducedInstanceDiffusion(InstanceDiffusionGenerator):
    """The generator unchanged but for the UNet config its checkpoint is read with (a reduced scale)."""

    def __init__(self, unet_config: dict[str, Any], **options: Any):
        super().__init__(**options)
        self._reduced_unet_config = unet_config

    def _unet_config(self) -> dict[str, Any]:
        return self._reduced_unet_config


# ----- methods ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    base: str
    cls: type[Generator]
    files: Callable[[Path, Scale, str], dict[str, Any]]
    """Writes the method's random files into a folder; returns the generator options naming them."""


def _gligen_files(directory: Path, scale: Scale, device: str) -> dict[str, Any]:
    return {"model": str(write_sd_folder(directory / "gligen", "sd1", scale, device, gated=True))}


def _sd1_folder(directory: Path, scale: Scale, device: str) -> Path:
    folder = directory / "sd1"
    return folder if folder.is_dir() else write_sd_folder(folder, "sd1", scale, device)


def _migc_files(directory: Path, scale: Scale, device: str) -> dict[str, Any]:
    return {"model": str(_sd1_folder(directory, scale, device)),
            "migc_checkpoint": str(write_migc_checkpoint(directory / "migc.ckpt", scale, device))}


def _instdiff_files(directory: Path, scale: Scale, device: str) -> dict[str, Any]:
    checkpoint = write_instdiff_checkpoint(directory / "instancediffusion.pth", scale, device)
    return {"base_model": str(_sd1_folder(directory, scale, device)), "checkpoint": str(checkpoint)}


def _roictrl_files(directory: Path, scale: Scale, device: str) -> dict[str, Any]:
    checkpoint = write_roictrl_checkpoint(directory / "roictrl.safetensors", scale, device)
    return {"model": str(_sd1_folder(directory, scale, device)), "checkpoint": str(checkpoint)}


def _multidiffusion_files(directory: Path, scale: Scale, device: str) -> dict[str, Any]:
    return {"model": str(write_sd_folder(directory / "sd2", "sd2", scale, device))}


METHODS = {
    m.name: m
    for m in (
        Method("gligen", "sd1", GligenGenerator, _gligen_files),
        Method("migc", "sd1", MigcGenerator, _migc_files),
        Method("instancediffusion", "sd1", InstanceDiffusionGenerator, _instdiff_files),
        Method("roictrl", "sd1", RoiCtrlGenerator, _roictrl_files),
        Method("multidiffusion", "sd2", MultiDiffusionGenerator, _multidiffusion_files),
    )
}


def build_generator(method: str, scale: Scale, directory: Path, device: str, dtype: str = "float32",
                    steps: int | None = None) -> Generator:
    """The method's generator (profile `full`) on random files written to `directory`, at its
    defaults but for dtype, steps when given, and the image size of a reduced scale."""
    spec = METHODS[method]
    options = spec.files(directory, scale, device)
    options["dtype"] = dtype
    if steps is not None:
        options["steps"] = steps
    if scale.size is not None:
        options.update(width=scale.size, height=scale.size)
    if spec.cls is InstanceDiffusionGenerator and not scale.full:
        return ReducedInstanceDiffusion(instdiff_unet_config(scale), profile="full", device=device, **options)
    return spec.cls(profile="full", device=device, **options)


class PlainSD:
    """Plain Stable Diffusion on a written folder (DDIM), with the `generate()` of a generator."""

    def __init__(self, folder: str, device: str, dtype: str, settings: dict[str, Any]):
        self.folder, self.device, self.dtype = folder, device, dtype
        self.settings = dict(settings)
        self.name = "plain SD"
        self.pipe: Any = None

    def ensure_loaded(self) -> None:
        import torch
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        if self.pipe is None:
            pipe = StableDiffusionPipeline.from_pretrained(
                self.folder, torch_dtype=getattr(torch, self.dtype), safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)  # fmt: skip
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            self.pipe = pipe.to(self.device)

    def adapt(self, layout: Layout) -> tuple[Layout, list[str]]:
        return layout, []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Any]:
        import torch

        s = self.settings
        return [self.pipe(prompt=r.layout.prompt, num_inference_steps=s["steps"], guidance_scale=s["guidance_scale"],
                          height=s["height"], width=s["width"],
                          generator=torch.Generator("cpu").manual_seed(r.seed)).images[0]
                for r in requests]  # fmt: skip

    def close(self) -> None:
        self.pipe = None


def generator_unet(generator: Any) -> Any:
    """The UNet module a generator denoises with (timed through its forward hooks)."""
    for attribute in ("_pipe", "pipe"):  # GligenGenerator, PlainSD
        pipe = getattr(generator, attribute, None)
        if pipe is not None:
            return pipe.unet
    return generator._parts["unet"]


# ----- layouts and timing ---------------------------------------------------------------------
def box_layout(boxes: int, size: int) -> Layout:
    """`boxes` partly overlapping boxes on a grid (fixed), one phrase each."""
    cols = 2 if boxes <= 4 else 4
    rows = -(-boxes // cols)
    entities = []
    for i in range(boxes):
        x, y = (i % cols) / cols, (i // cols) / rows
        entities.append(Entity(f"a red object number {i}", (x, y, min(1.0, x + 1.3 / cols), min(1.0, y + 1.3 / rows))))
    return Layout(f"boxes-{boxes}", "a photo of several objects on a table", tuple(entities), size, size)


class UnetTimer:
    """Seconds of every UNet forward, from hooks: CUDA events on the GPU, wall clock on the CPU."""

    def __init__(self, unet: Any, device: str):
        self.cuda = device.startswith("cuda")
        self.pending: list[Any] = []
        self.seconds: list[float] = []
        self.handles = [unet.register_forward_pre_hook(self._start), unet.register_forward_hook(self._end)]

    def _start(self, module: Any, args: Any) -> None:
        import torch

        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.pending.append(event)
        else:
            self.pending.append(time.perf_counter())

    def _end(self, module: Any, args: Any, output: Any) -> None:
        import torch

        start = self.pending.pop()
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.pending.append((start, end))
        else:
            self.seconds.append(time.perf_counter() - start)

    def collect(self) -> list[float]:
        """The forwards since the last call, in seconds (waits for the GPU)."""
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.seconds += [s.elapsed_time(e) / 1000.0 for s, e in self.pending]
            self.pending = []
        out, self.seconds = self.seconds, []
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _status_kib(name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise OSError(f"{name} missing from /proc/self/status")


def memory_mib(device: str) -> float:
    """GPU memory allocated, or the process's resident set on the CPU (NaN without /proc)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated() / 2**20
    try:
        return _status_kib("VmRSS") / 1024
    except OSError:
        return float("nan")


def reset_peak(device: str) -> float:
    """Starts a peak measurement; returns the memory in use now."""
    import torch

    now = memory_mib(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return now
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets the peak resident set to the current one
    except OSError:
        pass
    return now


def peak_added_mib(device: str, before: float) -> float:
    """Peak memory since `reset_peak` over what was in use then (every loaded model excluded)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20 - before
    try:
        return _status_kib("VmHWM") / 1024 - before
    except OSError:
        return float("nan")


@dataclass
class Sample:
    """One timed image."""

    image_s: float
    forwards: list[float]
    peak: float
    """MiB the image adds at its peak over the loaded models."""


@dataclass
class Row:
    method: str
    base: str
    boxes: int
    steps: int
    default_steps: int
    loaded: float
    """MiB the loaded model holds (allocated on the GPU; on the CPU resident set growth while loading)."""
    samples: list[Sample] = field(default_factory=list)
    baseline: list[Sample] = field(default_factory=list)
    """Plain SD's image of the same round (and box count), one per sample: the per-round ratios."""

    @property
    def forwards(self) -> float:
        return statistics.mean(len(s.forwards) for s in self.samples)

    @property
    def forward_s(self) -> float:
        return statistics.median(t for s in self.samples for t in s.forwards)

    @property
    def unet_s(self) -> float:
        return statistics.median(sum(s.forwards) for s in self.samples)

    @property
    def image_s(self) -> float:
        return statistics.median(s.image_s for s in self.samples)

    @property
    def peak(self) -> float:
        """Peak MiB of the method alone: its loaded model plus the most one image added."""
        return self.loaded + max(s.peak for s in self.samples)

    @property
    def step_s(self) -> float:
        return self.unet_s / self.steps

    @property
    def measured(self) -> bool:
        return self.steps == self.default_steps

    @property
    def default_image_s(self) -> float:
        """Seconds per image at the default step count: measured, or estimated (see the module docstring)."""
        if self.measured:
            return self.image_s
        return self.image_s - self.unet_s + self.default_steps * self.step_s

    def sample_default_s(self, sample: Sample) -> float:
        """`default_image_s` of one sample."""
        unet = sum(sample.forwards)
        return sample.image_s if self.measured else sample.image_s - unet + self.default_steps * unet / self.steps

    def ratios(self, plain: Row) -> list[float]:
        """Per round: this method's image over plain SD's image of the same round, at default steps."""
        return [self.sample_default_s(s) / plain.sample_default_s(b) for s, b in zip(self.samples, self.baseline,
                                                                                     strict=True)]


def time_image(model: Any, layout: Layout, seed: int, device: str) -> Sample:
    """One image of `layout` through the model's `generate()`, its UNet forwards timed by hooks."""
    import torch

    model.ensure_loaded()
    timer = UnetTimer(generator_unet(model), device)
    layout, _ = model.adapt(layout)
    request = GenerationRequest(layout, 0, seed, {"name": model.name})
    try:
        before = reset_peak(device)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # random weights may decode to NaN pixels
            model.generate([request])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return Sample(seconds, timer.collect(), peak_added_mib(device, before))
    finally:
        timer.remove()


def warm_up(model: Any, device: str) -> None:
    """One image of the smallest layout: first-call allocations and kernel selection."""
    time_image(model, box_layout(min(BOX_COUNTS), model.settings["width"]), SEED, device)


# ----- the run --------------------------------------------------------------------------------
def run(methods: Sequence[str], scale: Scale, device: str, dtype: str, steps: int | None, boxes: Sequence[int],
        repeats: int, workdir: str | None) -> list[Row]:
    """Per base: every method's random files written and loaded, then images timed in turn
    (each round one image of every method and of plain SD, so a varying load hits all alike),
    and the folder removed before the next base (full-size folders take several GB each)."""
    rows: list[Row] = []
    for base in BASES:
        todo = [m for m in methods if METHODS[m].base == base]
        if todo:
            directory = Path(tempfile.mkdtemp(prefix=f"sd-methods-{base}-", dir=workdir))
            try:
                rows += run_base(base, todo, scale, device, dtype, steps, boxes, repeats, directory)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
    return rows


def load_models(base: str, methods: Sequence[str], scale: Scale, device: str, dtype: str, steps: int | None,
                directory: Path) -> dict[str, Any]:
    """The methods' generators, loaded and warmed up, and plain SD of the base at the first one's settings."""
    models: dict[str, Any] = {}
    for name in methods:
        t0 = time.perf_counter()
        models[name] = build_generator(name, scale, directory, device, dtype, steps)
        models[name].loaded_mib = _load(models[name], device)
        print(f"  {name}: random files written and loaded in {time.perf_counter() - t0:.0f} s", flush=True)
    folder = directory / base
    if not folder.is_dir():
        write_sd_folder(folder, base, scale, device)
    settings = models[methods[0]].settings
    models["plain SD"] = PlainSD(str(folder), device, dtype,
                                 {k: settings[k] for k in ("steps", "guidance_scale", "width", "height")})
    models["plain SD"].loaded_mib = _load(models["plain SD"], device)
    for model in models.values():
        warm_up(model, device)
    return models


def _load(model: Any, device: str) -> float:
    """Loads the model; returns the MiB it holds."""
    import gc

    gc.collect()
    before = memory_mib(device)
    model.ensure_loaded()
    gc.collect()
    return memory_mib(device) - before


def run_base(base: str, methods: Sequence[str], scale: Scale, device: str, dtype: str, steps: int | None,
             boxes: Sequence[int], repeats: int, directory: Path) -> list[Row]:
    models = load_models(base, methods, scale, device, dtype, steps, directory)
    first_default = METHODS[methods[0]].cls.defaults["steps"]
    plain = Row("plain SD", base, 0, models["plain SD"].settings["steps"], first_default,
                models["plain SD"].loaded_mib)
    rows = {(name, n): Row(name, base, n, models[name].settings["steps"], METHODS[name].cls.defaults["steps"],
                           models[name].loaded_mib)
            for n in boxes for name in methods}  # fmt: skip
    for r in range(repeats):
        for n in boxes:
            for name, model in models.items():
                layout = box_layout(0 if name == "plain SD" else n, model.settings["width"])
                sample = time_image(model, layout, SEED + r, device)
                (plain if name == "plain SD" else rows[(name, n)]).samples.append(sample)
            for name in methods:  # plain SD's image of this round, timed beside them
                rows[(name, n)].baseline.append(plain.samples[-1])
        print(f"  {base}: round {r + 1} of {repeats} done", flush=True)
    for model in models.values():
        model.close()
    return [plain] + [rows[(name, n)] for name in methods for n in boxes]


def setting(device: str, scale: Scale, dtype: str, steps: int | None) -> str:
    """The first output line: what is built, on what."""
    import torch

    step_note = ("the generators' default steps" if steps is None
                 else f"{steps} steps (seconds per image at the default steps estimated)")
    if scale.full:
        where = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name()
        return (f"sd_methods: FULL-SIZE configs (SD 1.4/1.5 UNet 320-1280, CLIP ViT-L; SD 2 base UNet, "
                f"OpenCLIP-H; SD VAE; released MIGC and UniFusion widths), random {dtype} weights, "
                f"generator default resolutions, {step_note}, on {where}")  # fmt: skip
    return (f"sd_methods: REDUCED config on CPU ({scale.name}: UNet widths {scale.unet['block_out_channels']} with "
            f"the real block structure, text encoder width {scale.text['hidden_size']} x "
            f"{scale.text['num_hidden_layers']} layers, VAE {scale.vae['block_out_channels']}), random {dtype} "
            f"weights, {scale.size}x{scale.size}, {step_note}: not the methods' real cost; CPU: {cpu_name()}, "
            f"{torch.get_num_threads()} threads")  # fmt: skip




def print_rows(rows: list[Row]) -> None:
    print("\n| method | base | boxes | steps | UNet forwards | s / forward | UNet s / step | s / image "
          "| s / image at default steps | model MiB | peak MiB | x plain SD |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    plain = {r.base: r for r in rows if r.method == "plain SD"}
    for r in rows:
        print(_row_line(r, plain[r.base]))


def _row_line(r: Row, base: Row) -> str:
    default = f"{r.default_image_s:.2f}" + ("" if r.measured else f" (est., {r.default_steps} steps)")
    return (f"| {r.method} | {BASES[r.base]} | {r.boxes} | {r.steps} | {r.forwards:.0f} | {r.forward_s:.3f} "
            f"| {r.step_s:.3f} | {r.image_s:.2f} | {default} | {r.loaded:.0f} | {r.peak:.0f} "
            f"| {'1.00' if r is base else ratio_summary(r.ratios(base))} |")  # fmt: skip


def _quiet() -> None:
    """No loading bars or casting notices between the lines of the table."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--scale", choices=sorted(SCALES), help="default: full on CUDA, reduced elsewhere")
    parser.add_argument("--steps", type=int, help="denoising steps for every method (default: each generator's)")
    parser.add_argument("--boxes", default=",".join(map(str, BOX_COUNTS)))
    parser.add_argument("--repeats", type=int, default=3, help="rounds: measured images per method and box count")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", help="where the random files are written (default: the system's temp folder)")
    args = parser.parse_args(argv)
    _quiet()
    scale = SCALES[args.scale or ("full" if args.device.startswith("cuda") else "reduced")]
    steps = args.steps if args.steps is not None else scale.steps
    print(setting(args.device, scale, args.dtype, steps), flush=True)
    print(f"before: {load_average()}", flush=True)
    torch.set_grad_enabled(False)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    boxes = [int(n) for n in args.boxes.split(",")]
    t0 = time.perf_counter()
    rows = run(methods, scale, args.device, args.dtype, steps, boxes, args.repeats, args.workdir)
    print_rows(rows)
    steps = {m: METHODS[m].cls.defaults["steps"] for m in methods}
    memory = "GPU memory allocated" if args.device.startswith("cuda") else "resident set growth while loading"
    measured = "measured" if all(r.measured for r in rows) else "estimated where marked (reduced --steps)"
    print(f"\nDefault steps (generator defaults): {steps}; s / image at default steps: {measured}. "
          f"Plain SD: diffusers StableDiffusionPipeline, DDIM, same folder, steps, guidance and size. "
          f"Model MiB: what the loaded method holds ({memory}); peak MiB: that plus the most one image "
          f"added. "
          f"Total {time.perf_counter() - t0:.0f} s. x plain SD: median [min-max] over rounds of the "
          f"per-round ratios.\nafter: {load_average()}")


if __name__ == "__main__":
    main()
