"""Metric plugins: each scores images of a run into per-entity or per-image rows (see `base.Metric`)."""
