"""Metrics comparing two arrays of model outputs: cosine similarity, IoU of binary maps, top-1 agreement."""

from __future__ import annotations

import math

import numpy as np


def cosine_similarity(reference: np.ndarray, test: np.ndarray) -> float:
    """Cosine of the angle between the two arrays flattened, in float64.

    1.0 when they are equal (also both all zeros); 0.0 when exactly one is all zeros; ``nan`` when either
    holds NaN or Inf.
    """
    ref = np.asarray(reference, dtype=np.float64).ravel()
    out = np.asarray(test, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(out))):
        return math.nan
    if np.array_equal(ref, out):
        return 1.0
    norms = float(np.linalg.norm(ref)) * float(np.linalg.norm(out))
    if norms == 0.0:
        return 0.0
    return float(np.clip(np.dot(ref, out) / norms, -1.0, 1.0))


def binary_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean arrays of one shape, pooled over every element.

    1.0 when both are empty (they agree that nothing is there).
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def top1(scores: np.ndarray) -> np.ndarray:
    """The best class of every sample of ``[N, C]`` scores (ties: the lowest index)."""
    return np.asarray(scores).argmax(axis=1)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of samples where two class-index arrays agree."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.mean(a == b)) if a.size else math.nan
