"""InstDiff-Bench scored as InstanceDiffusion's evaluation scores it (the DEIG paper's Table 3)."""
