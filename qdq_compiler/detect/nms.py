"""Greedy non-maximum suppression in numpy (class-agnostic and per class)."""

from __future__ import annotations

import numpy as np

MATRIX_LIMIT = 3000  # up to this many boxes NMS precomputes the full IoU matrix


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` [n, 4] and ``b`` [m, 4] -> [n, m]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first (ties keep the earlier box)."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    keep: list[int] = []
    if len(order) <= MATRIX_LIMIT:
        over = box_iou(boxes, boxes) > iou_thres
        suppressed = np.zeros(len(order), bool)
        for i in range(len(order)):
            if not suppressed[i]:
                keep.append(i)
                suppressed |= over[i]
    else:
        rest = np.arange(len(order))
        while rest.size:
            i = int(rest[0])
            keep.append(i)
            rest = rest[1:][box_iou(boxes[i : i + 1], boxes[rest[1:]])[0] <= iou_thres]
    return order[np.asarray(keep, np.int64)]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_thres: float) -> np.ndarray:
    """Per-class NMS: boxes of different classes never suppress each other. Returns kept indices by score."""
    kept = [
        np.flatnonzero(classes == c)[nms(boxes[classes == c], scores[classes == c], iou_thres)]
        for c in np.unique(classes)
    ]
    if not kept:
        return np.zeros(0, np.int64)
    idx = np.concatenate(kept)
    return idx[np.argsort(-scores[idx], kind="stable")]
