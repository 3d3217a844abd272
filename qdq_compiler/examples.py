"""The bundled example: a YOLOv7-tiny-structured model and deterministic image-like calibration data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from qdq_compiler.models import build_yolov7_tiny

EXAMPLE_RESOLUTION = 160
EXAMPLE_SAMPLES = 32


def image_like_batch(count: int, resolution: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB fields in [0, 1], NCHW float32: closer to photos than white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 3, resolution // 8, resolution // 8), dtype=np.float32)
    smooth = coarse.repeat(8, axis=2).repeat(8, axis=3)
    detail = rng.normal(0.0, 0.05, size=smooth.shape).astype(np.float32)
    return np.clip(smooth + detail, 0.0, 1.0)


def write_example(folder: Path) -> tuple[Path, Path]:
    """Write `example.fp32.onnx` and `example.calib.npy` into `folder`; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / "example.fp32.onnx"
    calib_path = folder / "example.calib.npy"
    onnx.save_model(build_yolov7_tiny(resolution=EXAMPLE_RESOLUTION), model_path)
    np.save(calib_path, image_like_batch(EXAMPLE_SAMPLES, EXAMPLE_RESOLUTION))
    return model_path, calib_path
