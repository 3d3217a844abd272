"""Paths of the bundled sample detector and its data (``qdq_compiler/data/detector``)."""

from __future__ import annotations

from pathlib import Path

import onnx

DETECTOR_DIR = Path(__file__).resolve().parent.parent / "data" / "detector"


def model_path() -> Path:
    """The trained FP32 detector (``detector.onnx``, input ``images`` [1,3,160,160] RGB in [0, 1])."""
    return DETECTOR_DIR / "detector.onnx"


def calib_dir() -> Path:
    """Calibration images (unlabelled JPEGs from the synthetic ``calib`` split)."""
    return DETECTOR_DIR / "calib"


def val_dir() -> Path:
    """Validation images (JPEGs from the synthetic ``val`` split)."""
    return DETECTOR_DIR / "val"


def val_json() -> Path:
    """COCO annotations of :func:`val_dir`."""
    return DETECTOR_DIR / "val.json"


def available() -> bool:
    """True when the model and all data are present."""
    return all(p.exists() for p in (model_path(), calib_dir(), val_dir(), val_json()))


def evaluate_bundled(model: str | Path | onnx.ModelProto, limit: int | None = None) -> dict:
    """COCO mAP (``map50``, ``map50_95``) of ``model`` on the bundled validation images."""
    from qdq_compiler.detect.evaluate import evaluate_onnx

    return evaluate_onnx(model, val_dir(), val_json(), limit=limit)
