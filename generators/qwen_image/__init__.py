"""EliGen on Qwen-Image: DiffSynth-Studio's EliGen LoRAs (V1, V2, Poster) on diffusers'
`QwenImageTransformer2DModel` with the project's regional attention."""
