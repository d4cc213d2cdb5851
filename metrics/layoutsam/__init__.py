"""LayoutSAM-Eval (CreatiLayout): MiniCPM-V judged spatial, colour, texture and shape scores."""
