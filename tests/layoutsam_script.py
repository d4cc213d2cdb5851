"""An independent transcription of the LayoutSAM-Eval reference scorers, for parity tests.

`score_image` follows HuiZhang0812/CreatiLayout@860d8bd: score_layoutsam_benchmark.py:34-146
line by line (boxes as the DataLoader hands them over: a float32 torch tensor per box; the image
read back from a `.jpg` file as the generation scripts saved it; `model.chat` replaced by the
`chat(cropped_img, question)` a test passes in); `aggregate` follows :161-189. `contextgen_box`
is ContextGen's crop (nenhang/ContextGen@f22fa90: bench/sample_scripts/layoutsam/layoutsam_eval.py:
282-322). Nothing here imports the project's own LayoutSAM code.
"""

from __future__ import annotations

import os

import numpy as np


def dataloader_boxes(normalised: list[list[float]]):
    """`np.array(boxes, dtype=np.float32)` (dataset/layoutsam_benchmark.py:45), collated by the
    DataLoader into a torch tensor and indexed `[0]` (score_layoutsam_benchmark.py:38)."""
    import torch

    return torch.from_numpy(np.array(normalised, dtype=np.float32))


def score_image(generated_img: str, normalised_boxes, region_caption_list, detial_region_caption_list,
                chat, resolution: int, temp_save_root: str) -> dict:
    from PIL import Image

    region_bboxes_list = dataloader_boxes(normalised_boxes)
    bbox_count = len(region_caption_list)
    img_score_spatial = 0
    img_score_color = 0
    img_score_texture = 0
    img_score_shape = 0
    # the script zips equal-length lists; strict=False keeps its behaviour
    for bbox, detial_region_caption, region_caption in zip(region_bboxes_list, detial_region_caption_list, region_caption_list, strict=False):
        x1, y1, x2, y2 = bbox
        x1 = int(x1 * resolution)
        y1 = int(y1 * resolution)
        x2 = int(x2 * resolution)
        y2 = int(y2 * resolution)
        img = Image.open(generated_img)
        cropped_img = img.crop((x1, y1, x2, y2))
        description = region_caption.replace('/', '')
        detail_description = detial_region_caption.replace('/', '')
        cropped_img.save(os.path.join(temp_save_root, f'{description}.jpg'))
        question = f'Is the subject "{description}" present in the image? Strictly answer with "Yes" or "No", without any irrelevant words.'
        res = chat(cropped_img, question)
        if "Yes" in res or "yes" in res:  # noqa: SIM108 (verbatim)
            score_spatial = 1.0
        else:
            score_spatial = 0.0
        score_color, score_texture, score_shape = 0.0, 0.0, 0.0
        if score_spatial == 1.0:
            question_color = f'Is the subject in "{description}" in the image consistent with the color described in the detailed description: "{detail_description}"? Strictly answer with "Yes" or "No", without any irrelevant words. If the color is not mentioned in the detailed description, the answer is "Yes".'
            color_attribute = chat(cropped_img, question_color)
            if "Yes" in color_attribute or "yes" in color_attribute:
                score_color = 1.0
        if score_spatial == 1.0:
            question_texture = f'Is the subject in "{description}" in the image consistent with the texture described in the detailed description: "{detail_description}"? Strictly answer with "Yes" or "No", without any irrelevant words. If the texture is not mentioned in the detailed description, the answer is "Yes".'
            texture_attribute = chat(cropped_img, question_texture)
            if "Yes" in texture_attribute or "yes" in texture_attribute:
                score_texture = 1.0
        if score_spatial == 1.0:
            question_shape = f'Is the subject in "{description}" in the image consistent with the shape described in the detailed description: "{detail_description}"? Strictly answer with "Yes" or "No", without any irrelevant words. If the shape is not mentioned in the detailed description, the answer is "Yes".'
            shape_attribute = chat(cropped_img, question_shape)
            if "Yes" in shape_attribute or "yes" in shape_attribute:
                score_shape = 1.0
        img_score_spatial += score_spatial
        img_score_color += score_color
        img_score_texture += score_texture
        img_score_shape += score_shape
    return {"bbox_count": bbox_count, "score_spatial": img_score_spatial, "score_color": img_score_color,
            "score_texture": img_score_texture, "score_shape": img_score_shape}


def aggregate(image_stats: dict) -> dict:
    """The averages the script writes (unrounded here; it prints them rounded to 4 places)."""
    total_num = 0
    total_score_spatial = 0
    total_score_color = 0
    total_score_texture = 0
    total_score_shape = 0
    for _key, value in image_stats.items():
        total_num += value["bbox_count"]
        total_score_spatial += value["score_spatial"]
        total_score_color += value["score_color"]
        total_score_texture += value["score_texture"]
        total_score_shape += value["score_shape"]
    return {"spatial": total_score_spatial / total_num, "color": total_score_color / total_num,
            "texture": total_score_texture / total_num, "shape": total_score_shape / total_num}


def contextgen_box(normalised_box: list[float], image_width: int) -> tuple[int, int, int, int]:
    """ContextGen: float32 box -> `float(...)` (`_to_bbox_list`), times `img.size[0]`, `int()`."""
    value = np.array([normalised_box], dtype=np.float32)
    x1, y1, x2, y2 = [float(v) for v in value.tolist()[0]]
    resolution = image_width
    return int(x1 * resolution), int(y1 * resolution), int(x2 * resolution), int(y2 * resolution)
