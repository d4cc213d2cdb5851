"""CLIP models are built with the activation their weights were trained with (issue 8.11).

Reference: mlfoundations/open_clip@3057361 (v3.3.0), src/open_clip/pretrained.py marks every
OpenAI checkpoint ``quick_gelu=True`` while model_configs/ViT-L-14.json has no ``quick_gelu``
(GELU); factory.py ``create_model`` only warns when the two disagree. Random weights (no
download): the tag's table decides the activation, the built modules are checked.
"""

from __future__ import annotations

import open_clip
import pytest
from open_clip.transformer import QuickGELU
from torch import nn

from eligen_bench.errors import InputError
from eligen_bench.metrics.clip import scores as cs
from eligen_bench.metrics.clip.scores import ClipEntity, ClipGlobal
from eligen_bench.metrics.preference.aesthetic import Aesthetic


def _trained_activation(model: str, tag: str) -> str:
    # Independent reading of open_clip's table: the tag's own flag, nothing else.
    return "quick_gelu" if open_clip.get_pretrained_cfg(model, tag).get("quick_gelu", False) else "gelu"


def test_openai_weights_need_quick_gelu_and_the_default_metrics_say_so() -> None:
    assert _trained_activation("ViT-L-14", "openai") == "quick_gelu"
    assert open_clip.get_model_config("ViT-L-14").get("quick_gelu", False) is False  # the config alone says GELU
    assert cs.clip_activation("ViT-L-14", "openai") == "quick_gelu"
    assert cs.clip_activation("ViT-L-14", "laion2b_s32b_b82k") == _trained_activation("ViT-L-14", "laion2b_s32b_b82k")
    assert cs.clip_activation("ViT-B-32", None) == "gelu"
    for cls in (ClipGlobal, ClipEntity, Aesthetic):
        metric = cls()
        assert metric.model_ids()["clip_activation"] == "quick_gelu"
    assert ClipGlobal().key != ClipGlobal(clip_pretrained="laion2b_s32b_b82k").key


@pytest.mark.parametrize(("model", "tag", "requested"), [
    ("ViT-L-14", "openai", "gelu"),                       # OpenAI weights with GELU
    ("ViT-L-14", "laion2b_s32b_b82k", "quick_gelu"),      # GELU weights with QuickGELU
    ("ViT-L-14-quickgelu", "laion2b_s32b_b82k", "auto"),  # a -quickgelu architecture cannot take GELU weights
])
def test_activation_mismatch_is_an_input_error(model: str, tag: str, requested: str) -> None:
    with pytest.raises(InputError):
        cs.clip_activation(model, tag, requested)
    with pytest.raises(InputError):
        ClipGlobal(clip_model=model, clip_pretrained=tag, clip_activation=requested)


def _activations(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (QuickGELU, nn.GELU))}


def test_tiny_model_built_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """`load_clip` on ViT-B-32 with the 'openai' tag builds QuickGELU modules; without a tag, GELU.
    The weights are replaced by random ones (nothing to download); the activation flag is not."""
    real = open_clip.create_model_and_transforms
    seen: list[bool] = []

    def random_weights(name: str, pretrained: str | None = None, **kwargs):  # noqa: ANN202 - open_clip's
        seen.append(bool(kwargs.get("force_quick_gelu")))
        kwargs.pop("weights_only", None)
        return real(name, pretrained=None, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", random_weights)
    quick = cs.load_clip("ViT-B-32", "openai", "cpu")
    plain = cs.load_clip("ViT-B-32", None, "cpu")
    assert _activations(quick.model) == {QuickGELU} and _activations(plain.model) == {nn.GELU}
    assert seen == [True, False]
    assert cs.built_activation(quick.model) == "quick_gelu" and cs.built_activation(plain.model) == "gelu"
    assert quick.key != plain.key  # the shared cache and embedding memo tell them apart


def test_every_built_in_metric_names_the_code_its_defaults_follow() -> None:
    from eligen_bench import registry

    names = ["miou", "mask_iou", "coco_ap", "vlm_success", "clip_entity", "clip_global", "aesthetic",
             "pickscore", "mps", "background_psnr"]
    for name in names:
        reference = registry.metric_class(name).reference
        assert reference and (":" in reference), name
