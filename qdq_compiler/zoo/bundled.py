"""Paths and FP32 task metrics of the bundled classifier and text segmenter (``qdq_compiler/data/...``).

Both models take ``images`` [1,3,H,W] RGB in [0, 1] (qdqc's default image preprocessing, so ``--calib DIR``
works on the shipped JPEGs). The classifier writes ``logits`` [1,4]; the segmenter a text probability map
``prob`` [1,1,H,W]. Metrics run in onnxruntime (numpy + Pillow, no torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class BundledModel:
    """One bundled model: its folder holds ``<name>.onnx``, ``calib/`` and ``val/`` JPEGs and labels."""

    name: str
    kind: str  # the model's ``qdq_compiler.model_kind``: "classifier" or "segmentation"
    file: str = ""  # the ONNX file's stem when not ``name`` (a second model sharing a folder's data)

    @property
    def folder(self) -> Path:
        return DATA_DIR / self.name

    def model_path(self) -> Path:
        return self.folder / f"{self.file or self.name}.onnx"

    def calib_dir(self) -> Path:
        """64 unlabelled calibration JPEGs from the generator's ``calib`` split."""
        return self.folder / "calib"

    def val_dir(self) -> Path:
        """Validation JPEGs from the generator's ``val`` split."""
        return self.folder / "val"

    def labels_path(self) -> Path:
        """Classifier: ``val.json`` (class names, file -> class); segmenter: ``val_masks/`` (1-bit PNGs)."""
        return self.folder / ("val.json" if self.kind == "classifier" else "val_masks")

    def available(self) -> bool:
        return all(
            p.exists() for p in (self.model_path(), self.calib_dir(), self.val_dir(), self.labels_path())
        )

    def val_images(self, limit: int | None = None) -> list[Path]:
        files = sorted(self.val_dir().glob("*.jpg"))
        return files[:limit] if limit is not None else files


CLASSIFIER = BundledModel("classifier", "classifier")
SEGMENTER = BundledModel("segmenter", "segmentation")
# The same DB-style topology trained with --recipe wide (long-trained activation ranges; docs/models.md):
# it shares the segmenter's calib/val/val_masks.
SEGMENTER_WIDE = BundledModel("segmenter", "segmentation", file="segmenter_wide")
BUNDLED = {"classifier": CLASSIFIER, "segmenter": SEGMENTER, "segmenter_wide": SEGMENTER_WIDE}


def load_images(paths: list[Path]) -> np.ndarray:
    """JPEGs (already at the model's size) as NCHW float32 RGB in [0, 1]."""
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0 for p in paths]
    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))


def run_model(model: str | Path | onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """The first output of ``model`` for each image (batch 1 runs), concatenated on axis 0."""
    from qdq_compiler.accuracy.numerics import run_outputs

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    name = proto.graph.input[0].name
    outputs = run_outputs(proto, ({name: images[i : i + 1]} for i in range(len(images))))
    return outputs[proto.graph.output[0].name]


def class_labels(paths: list[Path]) -> np.ndarray:
    """The classifier's ground-truth class indices of ``paths`` (from ``val.json``)."""
    table = json.loads(CLASSIFIER.labels_path().read_text())["labels"]
    return np.asarray([table[p.name] for p in paths], np.int64)


def text_masks(paths: list[Path]) -> np.ndarray:
    """The segmenter's ground-truth word masks of ``paths`` as [N,H,W] bool."""
    from qdq_compiler.zoo.text_seg import read_mask

    folder = SEGMENTER.labels_path()
    return np.stack([read_mask(folder / f"{p.stem}.png") for p in paths]).astype(bool)


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max equals the label (also top-1 agreement when labels are arg-maxes)."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def binary_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean maps over all their pixels (1.0 when both are empty)."""
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 1.0


def evaluate_classifier(model: str | Path | onnx.ModelProto, limit: int | None = None) -> float:
    """Top-1 accuracy of ``model`` on the bundled classifier's validation images."""
    paths = CLASSIFIER.val_images(limit)
    return top1_accuracy(run_model(model, load_images(paths)), class_labels(paths))


def evaluate_segmenter(
    model: str | Path | onnx.ModelProto, limit: int | None = None, threshold: float = 0.5
) -> float:
    """IoU of ``model``'s map binarised at ``threshold`` vs the word masks, over all val pixels."""
    paths = SEGMENTER.val_images(limit)
    prob = run_model(model, load_images(paths))[:, 0]
    return binary_iou(prob > threshold, text_masks(paths))
