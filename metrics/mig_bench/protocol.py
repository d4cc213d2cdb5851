"""MIG-Bench's scoring protocol as data: thresholds, the HSV colour table, the instance phrase.

Every value is read from the benchmark's own scorer, LeyRio/MIG_Bench@063ec45 (`eval_mig.py`,
and the GroundingDINO / segment_anything code vendored in the same commit); the line numbers
are those of that commit. Between 723d10e and 063ec45 the script changed its HSV table (red,
blue, green, yellow and black ranges) and its label format ("red dog" -> "a red dog", so the
colour moved from word 0 to word 1): this module follows 063ec45.
"""

from __future__ import annotations

from dataclasses import dataclass

from eligen_bench.errors import InputError

REPO = "LeyRio/MIG_Bench"
COMMIT = "063ec45"
REFERENCE = f"{REPO}@{COMMIT}: eval_mig.py"

DETECTOR_ID = "IDEA-Research/grounding-dino-tiny"
"""transformers' GroundingDINO Swin-T OGC: huggingface/transformers@fc2251e:
src/transformers/models/grounding_dino/convert_grounding_dino_to_hf.py maps 'grounding-dino-tiny'
to groundingdino_swint_ogc.pth, the checkpoint eval_mig.py:37 loads."""
SEGMENTER_ID = "facebook/sam-vit-huge"
"""transformers' SAM ViT-H (1280 wide, 32 layers, global attention at 7/15/23/31), converted
from sam_vit_h_4b8939.pth (huggingface/transformers@95c32a6:
src/transformers/models/sam/convert_sam_to_hf.py), the checkpoint eval_mig.py:46-47 loads."""

IMAGE_SIZE = 512
"""eval_mig.py:449-450 resizes every image to 512x512 (cv2.resize, bilinear); the masks and the
grey background are hard-coded 512x512 (:304, :313, :341)."""
BOX_THRESHOLD = 0.25
"""eval_mig.py:182 (box_t=0.25), :218-219; a box is kept when its best token's sigmoid logit is
above it (GroundingDINO/groundingdino/util/inference.py:72)."""
TEXT_THRESHOLD = 0.25
"""eval_mig.py:182 (text_t=0.25): names each kept box's phrase (util/inference.py:79-83); no box
is dropped by it and the class it names is never read, so it changes no score."""
NMS_THRESHOLD = 0.8
"""eval_mig.py:221, class-agnostic torchvision NMS at :238-242."""
IOU_THRESHOLD = 0.5
"""eval_mig.py:371 (--miou_threshold 0.5); the position fails when the best IoU is `<` it (:260),
so exactly 0.5 passes."""
COLOUR_RATIO = 0.2
"""eval_mig.py:322: the colour fails when the mask is empty or in-range / mask pixels `< 0.2`."""
GREY = 127
"""eval_mig.py:313: pixels outside the SAM mask become (127, 127, 127) before the HSV test."""
DETECTOR_MIN_SIZE, DETECTOR_MAX_SIZE = 800, 1333
"""GroundingDINO/groundingdino/util/inference.py:216 (T.RandomResize([800], max_size=1333))."""
DETECTOR_MEAN, DETECTOR_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
"""GroundingDINO/groundingdino/util/inference.py:218."""
SAM_PIXEL_MEAN, SAM_PIXEL_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
"""segment_anything/segment_anything/build_sam.py:99-100."""
SAM_MASK_THRESHOLD = 0.0
"""segment_anything/segment_anything/modeling/sam.py:19."""

HSV_RANGES: dict[str, tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]] = {
    "red": (((0, 50, 70), (9, 255, 255)), ((159, 50, 70), (180, 255, 255))),
    "blue": (((90, 50, 70), (128, 255, 255)),),
    "yellow": (((25, 50, 70), (35, 255, 255)),),
    "green": (((36, 50, 70), (89, 255, 255)),),
    "black": (((0, 0, 0), (180, 255, 30)),),
    "white": (((0, 0, 221), (180, 43, 255)),),
    "brown": (((6, 43, 35), (25, 255, 255)),),
}
"""eval_mig.py:206-214: inclusive (lower, upper) OpenCV HSV bounds (H in 0-179), several ranges
OR-ed. Its quirks follow from the numbers: pink (H ~165) lies in red's second range, orange
(H ~10-20) in brown, purple (H ~130-158) in none; brown and red overlap at H 6-9 (S >= 50,
V >= 70) and brown and yellow at H 25; black and white overlap nowhere."""


@dataclass(frozen=True)
class Instance:
    """What eval_mig.py reads from one instance label: the colour and the noun."""

    colour: str
    noun: str

    @property
    def caption(self) -> str:
        """GroundingDINO's caption: the noun alone, lower-cased, with a final '.' (eval_mig.py:216,
        util/inference.py:193 joins one class, :22-26 lower-cases, strips and adds '.')."""
        text = self.noun.lower().strip()
        return text if text.endswith(".") else text + "."


def parse_instance(label: str) -> Instance:
    """'a red fire hydrant' -> colour 'red', noun 'fire hydrant' (eval_mig.py:465-466: word 1 is the
    colour, words 2.. the noun, split on single spaces). InputError when the label has fewer than
    three words or its colour is not in the HSV table (the script would stop with a KeyError)."""
    words = label.split(" ")
    if len(words) < 3 or not " ".join(words[2:]).strip():
        raise InputError(f"{label!r} is not '<article> <colour> <noun>'", field="entity prompt")
    colour = words[1]
    if colour not in HSV_RANGES:
        raise InputError(f"colour {colour!r} of {label!r} is not one of the scorer's {sorted(HSV_RANGES)}",
                         field="entity prompt")
    return Instance(colour, " ".join(words[2:]))
