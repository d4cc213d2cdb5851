"""Generator plugins: every method behind one interface (see `base.Generator`)."""
