"""eligen-bench: a benchmark suite for entity-level controlled text-to-image generation."""

__version__ = "0.1.0"
