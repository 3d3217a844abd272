"""Decode the exported YOLO head ``[B, N, 5 + nc]`` (xywh pixels, objectness, class scores)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdq_compiler.detect.nms import batched_nms


@dataclass
class Detections:
    """Detections of one image: ``boxes`` [n,4] xyxy pixels, ``scores`` [n], ``classes`` [n] (0-based)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """Centre/size boxes to corner boxes."""
    out = np.empty_like(xywh)
    half = xywh[..., 2:4] / 2
    out[..., 0:2] = xywh[..., 0:2] - half
    out[..., 2:4] = xywh[..., 0:2] + half
    return out


def candidates(pred: np.ndarray, conf_thres: float, multi_label: bool = True) -> Detections:
    """Scored boxes of one image's ``[N, 5 + nc]`` rows: score = obj * cls, kept when > ``conf_thres``.

    With ``multi_label`` a row yields one box per class above the threshold (as COCO evaluation expects),
    otherwise only its best class.
    """
    pred = np.asarray(pred, np.float32)
    pred = pred[pred[:, 4] > conf_thres]
    scores = pred[:, 5:] * pred[:, 4:5]
    boxes = xywh_to_xyxy(pred[:, :4])
    if multi_label:
        rows, cls = np.nonzero(scores > conf_thres)
        return Detections(boxes[rows], scores[rows, cls], cls.astype(np.int64))
    cls = scores.argmax(axis=1) if scores.size else np.zeros(0, np.int64)
    best = scores[np.arange(scores.shape[0]), cls]
    keep = best > conf_thres
    return Detections(boxes[keep], best[keep], cls[keep].astype(np.int64))


def decode(
    output: np.ndarray,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 300,
    max_nms: int = 6000,
    multi_label: bool = True,
) -> list[Detections]:
    """Threshold, per-class NMS and top-``max_det`` for every image of a ``[B, N, 5 + nc]`` output."""
    output = np.asarray(output)
    if output.ndim != 3 or output.shape[2] < 6:
        raise ValueError(f"expected a [B, N, 5 + nc] detector output, got shape {output.shape}")
    results = []
    for pred in output:
        det = candidates(pred, conf_thres, multi_label)
        if len(det) > max_nms:  # bound NMS work on near-empty low-threshold outputs
            top = np.argsort(-det.scores, kind="stable")[:max_nms]
            det = Detections(det.boxes[top], det.scores[top], det.classes[top])
        keep = batched_nms(det.boxes, det.scores, det.classes, iou_thres)[:max_det]
        results.append(Detections(det.boxes[keep], det.scores[keep], det.classes[keep]))
    return results
