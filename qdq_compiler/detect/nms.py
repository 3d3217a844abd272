"""Greedy non-maximum suppression in numpy (class-agnostic and per class)."""

from __future__ import annotations

import numpy as np


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy ``box`` [4] against ``boxes`` [n, 4]."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first (ties keep the earlier box)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest]) <= iou_thres]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_thres: float) -> np.ndarray:
    """Per-class NMS: boxes of different classes never suppress each other. Returns kept indices by score."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    # Shift each class into its own region of the plane so one NMS pass handles all classes.
    span = float(np.max(boxes)) - min(float(np.min(boxes)), 0.0) + 1.0
    shifted = boxes + (classes.astype(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_thres)
