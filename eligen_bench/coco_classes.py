"""The 80 COCO object ("thing") class names, in COCO category-id order.

One list for the suite builders (which classes become entities), `validate` (which categories
the detector metrics can score) and the detector metrics (YOLO's contiguous class ids follow the
same order), with the one rule that maps other spellings onto these names.
"""

COCO_THING_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# Other spellings of COCO classes found in layout datasets (Pascal VOC names, LVIS-style).
CATEGORY_ALIASES = {
    "aeroplane": "airplane",
    "motorbike": "motorcycle",
    "sofa": "couch",
    "tvmonitor": "tv",
    "tv monitor": "tv",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "mobile phone": "cell phone",
    "hair dryer": "hair drier",
    "ball": "sports ball",
}


def normalize_category(name: str | None) -> str | None:
    """Lower-case, single-spaced, underscores as spaces, common aliases mapped to COCO names."""
    if name is None:
        return None
    text = " ".join(name.replace("_", " ").lower().split())
    return CATEGORY_ALIASES.get(text, text)
