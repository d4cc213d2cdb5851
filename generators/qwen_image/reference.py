"""The reference code of Qwen-Image EliGen, pinned once for every module of this family.

DiffSynth-Studio added EliGen for Qwen-Image in commit 6452edb (2025-08-05, "qwen_image eligen"),
V2 in 5e6f9f8 and Poster in 73ced7a; release v1.1.9 (afd101f) holds all three example scripts
and is the last release before the 2.0 rewrite. The LoRAs were trained and published with that
1.x code (its timestep embedding is the one they saw; 2.0 changed it).
"""

DIFFSYNTH = "modelscope/DiffSynth-Studio@afd101f (v1.1.9)"
DIT = f"{DIFFSYNTH}: diffsynth/models/qwen_image_dit.py"
PIPELINE = f"{DIFFSYNTH}: diffsynth/pipelines/qwen_image.py"
SCHEDULER = f"{DIFFSYNTH}: diffsynth/schedulers/flow_match.py"
LORA_LOADER = f"{DIFFSYNTH}: diffsynth/lora/__init__.py"
EXAMPLES = f"{DIFFSYNTH}: examples/qwen_image/model_inference/Qwen-Image-EliGen{{,-V2,-Poster}}.py"
