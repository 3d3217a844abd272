"""Deterministic image-like inputs for tests and benchmarks (no data set needed)."""

from __future__ import annotations

import numpy as np


def image_like_batch(count: int, resolution: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB fields in [0, 1], NCHW float32: closer to photos than white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 3, resolution // 8, resolution // 8), dtype=np.float32)
    smooth = coarse.repeat(8, axis=2).repeat(8, axis=3)
    detail = rng.normal(0.0, 0.05, size=smooth.shape).astype(np.float32)
    return np.clip(smooth + detail, 0.0, 1.0)
