"""CLIP scores and the aesthetic predictor on open_clip ViT-B-32 with random weights (no download):
the score formula, the crop, the shared model and embedding memo, and the real loading paths
(open_clip from a local checkpoint, the aesthetic MLP from a state dict written here)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from eligen_bench.api.metric import ModelCache, ScoreItem
from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256
from eligen_bench.layout import Entity, Layout
from eligen_bench.metrics.clip.scores import ClipEntity, ClipGlobal, Embedder, clip_score, crop_box
from eligen_bench.metrics.preference import aesthetic as aes


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


@pytest.fixture(scope="module")
def split_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Left half smooth red-to-yellow, right half blue noise: the two crops differ."""
    from PIL import Image

    rng = np.random.default_rng(0)
    array = np.zeros((96, 192, 3), dtype=np.uint8)
    array[:, :96, 0] = 220
    array[:, :96, 1] = np.linspace(0, 255, 96, dtype=np.uint8)[None, :]
    array[:, 96:, 2] = (rng.random((96, 96)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("clip") / "split.png"
    Image.fromarray(array).save(path)
    return path


def _item(layout: Layout, path: Path) -> ScoreItem:
    return ScoreItem("g", layout, 0, 0, path, file_sha256(path))


def _manual(bundle, image, prompt: str) -> float:
    """100 * max(cos, 0) computed directly with the open_clip model."""
    with torch.no_grad():
        i = bundle.model.encode_image(bundle.preprocess(image)[None])
        t = bundle.model.encode_text(bundle.tokenizer([prompt]))
    cos = torch.nn.functional.cosine_similarity(i, t).item()
    return 100.0 * max(cos, 0.0)


def test_clip_score_is_100_cos_clamped_at_zero() -> None:
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[0.6, 0.8], [-1.0, 0.0], [0.6, 0.8]])
    assert clip_score(image, text).tolist() == pytest.approx([60.0, 0.0, 100.0])


def test_crop_box_maps_normalised_boxes_to_pixels() -> None:
    assert crop_box((200, 100), (0.0, 0.0, 0.5, 1.0)) == (0, 0, 100, 100)
    assert crop_box((200, 100), (0.101, 0.2, 0.502, 0.3)) == (20, 20, 101, 30)
    assert crop_box((10, 10), (0.99, 0.99, 1.0, 1.0)) == (9, 9, 10, 10)  # at least one pixel


def test_clip_global_end_to_end(cache: ModelCache, split_image: Path) -> None:
    from PIL import Image

    layout = Layout("l0", "a red square next to blue noise", width=64, height=32)
    metric = ClipGlobal(profile="tiny", cache=cache, device="cpu")
    rows = metric.score([_item(layout, split_image)])
    assert len(rows) == 1 and rows[0].entity_index == -1
    expected = _manual(metric.model, Image.open(split_image).convert("RGB"), layout.prompt)
    assert rows[0].value == pytest.approx(expected, abs=1e-3)
    assert metric.model_ids()["clip"] == "open_clip:ViT-B-32/random-seed0"
    assert ClipGlobal().model_ids()["clip"] == "open_clip:ViT-L-14/openai"


def test_clip_entity_scores_the_crop(cache: ModelCache, split_image: Path) -> None:
    from PIL import Image

    prompt = "a red square"
    layout = Layout("l1", "global", (
        Entity(prompt, (0.0, 0.0, 0.5, 1.0)),
        Entity(prompt, (0.5, 0.0, 1.0, 1.0)),
        Entity(prompt, (0.0, 0.0, 1.0, 1.0)),
    ), width=64, height=32)
    metric = ClipEntity(profile="tiny", cache=cache, device="cpu")
    rows = metric.score([_item(layout, split_image)])
    assert [r.entity_index for r in rows] == [0, 1, 2]
    image = Image.open(split_image).convert("RGB")
    bundle = metric.model
    left, right = image.crop((0, 0, 96, 96)), image.crop((96, 0, 192, 96))
    assert rows[0].value == pytest.approx(_manual(bundle, left, prompt), abs=1e-3)
    assert rows[1].value == pytest.approx(_manual(bundle, right, prompt), abs=1e-3)
    assert rows[2].value == pytest.approx(_manual(bundle, image, prompt), abs=1e-3)
    # same prompt, different region, different embedding
    e_left, e_right = Embedder(bundle, ModelCache(), "cpu").images([left, right])
    assert torch.dot(e_left, e_right).item() < 0.999

    squash = ClipEntity(profile="tiny", cache=cache, device="cpu", crop_fit="squash")
    wide = Layout("l2", "global", (Entity(prompt, (0.0, 0.0, 1.0, 1.0)),), width=64, height=32)
    squashed = squash.score([_item(wide, split_image)])[0].value
    assert squashed == pytest.approx(_manual(bundle, image.resize((224, 224), Image.BICUBIC), prompt), abs=1e-3)
    with pytest.raises(InputError, match="crop_fit"):
        ClipEntity(profile="tiny", crop_fit="pad")


def _reference_mlp(input_size: int) -> torch.nn.Module:
    """The reference repository's MLP, written out independently of the metric's builder."""

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.Sequential(
                torch.nn.Linear(input_size, 1024), torch.nn.Dropout(0.2),
                torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
                torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
                torch.nn.Linear(64, 16), torch.nn.Linear(16, 1),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    torch.manual_seed(1)
    return MLP().eval()


def test_aesthetic_mlp_loads_the_reference_state_dict(tmp_path: Path) -> None:
    reference = _reference_mlp(768)
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(reference.state_dict(), path)
    mlp = aes.load_aesthetic_mlp(str(path), expected_dim=768)
    assert list(mlp.state_dict()) == list(reference.state_dict())
    x = torch.nn.functional.normalize(torch.randn(4, 768), dim=-1)
    assert torch.allclose(mlp(x), reference(x))
    with pytest.raises(InputError, match="768-d"):
        aes.load_aesthetic_mlp(str(path), expected_dim=512)
    with pytest.raises(InputError, match="no such file"):
        aes.load_aesthetic_mlp(str(tmp_path / "missing.pth"))
    # A file that needs full unpickling loads only with the opt-in.
    unsafe = tmp_path / "unsafe.pth"
    torch.save({**reference.state_dict(), "meta": _Opaque()}, unsafe)
    with pytest.raises(InputError, match="allow_pickle"):
        aes.read_state_dict(str(unsafe))
    assert "meta" in aes.read_state_dict(str(unsafe), allow_pickle=True)
    assert isinstance(pickle.dumps(_Opaque()), bytes)


class _Opaque:
    """Stored in a checkpoint to make it need full unpickling."""


def test_aesthetic_shares_clip_and_image_embeddings(cache: ModelCache, split_image: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout("l3", "anything", width=64, height=32)
    items = [_item(layout, split_image)]
    clip = ClipGlobal(profile="tiny", cache=cache, device="cpu")
    clip.score(items)
    calls = []
    original = Embedder.images
    monkeypatch.setattr(Embedder, "images", lambda self, ims: calls.append(len(ims)) or original(self, ims))
    metric = aes.Aesthetic(profile="tiny", cache=cache, device="cpu")
    rows = metric.score(items)
    assert metric.model.clip is clip.model  # one CLIP model for both metrics
    assert calls == []  # the whole-image embedding was reused, not recomputed
    embed = Embedder(clip.model, ModelCache(), "cpu").images([items[0].load_image()])
    assert rows[0].value == pytest.approx(metric.model.mlp(embed).item(), abs=1e-5)
    assert metric.model_ids()["aesthetic_mlp"] == "random-seed0"


def test_full_profile_loads_local_checkpoints(cache: ModelCache, tmp_path: Path, split_image: Path) -> None:
    """The real loading code (open_clip `pretrained=<file>`, MLP from a file) on tiny weights."""
    tiny = ClipGlobal(profile="tiny", cache=cache, device="cpu")
    tiny.ensure_loaded()
    clip_path = tmp_path / "clip.pt"
    torch.save(tiny.model.model.state_dict(), clip_path)
    mlp_path = tmp_path / "mlp.pth"
    torch.save(_reference_mlp(512).state_dict(), mlp_path)

    run_cache = ModelCache()
    options = {"clip_model": "ViT-B-32", "clip_pretrained": str(clip_path)}
    full_clip = ClipGlobal(cache=run_cache, device="cpu", **options)
    full_aes = aes.Aesthetic(cache=run_cache, device="cpu", weights=str(mlp_path), **options)
    layout = Layout("l4", "a red square next to blue noise", width=64, height=32)
    items = [_item(layout, split_image)]
    assert full_clip.score(items)[0].value == pytest.approx(tiny.score(items)[0].value, abs=1e-4)
    value = full_aes.score(items)[0].value
    embed = Embedder(full_clip.model, ModelCache(), "cpu").images([items[0].load_image()])
    assert value == pytest.approx(_reference_mlp(512)(embed).item(), abs=1e-4)
    assert full_aes.model.clip is full_clip.model
    assert full_aes.model_ids()["aesthetic_mlp"] == str(mlp_path)
    assert aes.Aesthetic().options["weights"].endswith("sac%2Blogos%2Bava1-l14-linearMSE.pth")


def test_clip_checkpoint_needing_pickle_is_refused_without_opt_in(cache: ModelCache, tmp_path: Path) -> None:
    tiny = ClipGlobal(profile="tiny", cache=cache, device="cpu")
    tiny.ensure_loaded()
    path = tmp_path / "clip_unsafe.pt"
    torch.save({"state_dict": tiny.model.model.state_dict(), "meta": _Opaque()}, path)
    metric = ClipGlobal(cache=ModelCache(), device="cpu", clip_model="ViT-B-32", clip_pretrained=str(path))
    with pytest.raises(InputError, match="allow_pickle"):
        metric.ensure_loaded()
