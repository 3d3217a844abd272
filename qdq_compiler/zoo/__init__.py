"""Bundled trained models of other CNN families (issue 15): a MobileNetV3-small-style shape classifier and a
DB-style text segmenter, with their deterministic synthetic data generators (numpy + Pillow, no torch)."""
