"""Metrics comparing model outputs, accumulated batch by batch: SQNR and cosine similarity of two outputs,
IoU of binary maps, top-1 agreement."""

from __future__ import annotations

import math

import numpy as np

from qdq_compiler.accuracy.numerics import sqnr_from_powers
from qdq_compiler.errors import QdqcError


class Closeness:
    """SQNR and cosine similarity of a test output against a reference, over every batch added (float64).

    SQNR is ``10 log10(sum(ref^2) / sum((ref - test)^2))``: ``inf`` when equal, ``-inf`` when the reference is
    all zeros and the test is not. Cosine is 1.0 when equal (also both all zeros), 0.0 when exactly one is all
    zeros. Both are ``nan`` when the test holds NaN or Inf; a reference holding them is refused.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.signal = self.noise = self.dot = self.test_power = 0.0
        self.equal, self.finite = True, True
        self.shape: tuple[int, ...] | None = None

    def add(self, reference: np.ndarray, test: np.ndarray) -> None:
        """Account for one batch (axis 0 is the batch axis)."""
        if reference.shape != test.shape:
            raise QdqcError(
                f"output {self.name!r} has shape {list(test.shape)} in the INT8 model; FP32 gives "
                f"{list(reference.shape)}"
            )
        if not np.all(np.isfinite(reference)):
            raise QdqcError(f"the FP32 model's output {self.name!r} holds NaN or Inf on these inputs")
        ref, out = reference.astype(np.float64).ravel(), test.astype(np.float64).ravel()
        self.finite = self.finite and bool(np.all(np.isfinite(out)))
        self.equal = self.equal and bool(np.array_equal(ref, out))
        if self.finite:  # numpy's pairwise sums, not BLAS: OpenBLAS splits a dot by thread (other last bits)
            self.signal += float(np.sum(ref * ref))
            self.noise += float(np.sum((ref - out) ** 2))
            self.dot += float(np.sum(ref * out))
            self.test_power += float(np.sum(out * out))
        rows = reference.shape[0] if reference.ndim else 1
        if self.shape is None:
            self.shape = tuple(reference.shape)
        else:
            self.shape = (self.shape[0] + rows, *self.shape[1:])

    @property
    def sqnr_db(self) -> float:
        if not self.finite:
            return math.nan
        return math.inf if self.equal else sqnr_from_powers(self.signal, self.noise)

    @property
    def cosine(self) -> float:
        if not self.finite:
            return math.nan
        if self.equal:
            return 1.0
        norms = math.sqrt(self.signal) * math.sqrt(self.test_power)
        return 0.0 if norms == 0.0 else float(np.clip(self.dot / norms, -1.0, 1.0))


def cosine_similarity(reference: np.ndarray, test: np.ndarray) -> float:
    """Cosine of the angle between two arrays flattened (see :class:`Closeness`)."""
    closeness = Closeness("output")
    closeness.add(np.asarray(reference), np.asarray(test))
    return closeness.cosine


class IoUCount:
    """Intersection over union of boolean arrays, pooled over every element of every batch added; 1.0 when
    both are empty throughout (they agree that nothing is there)."""

    def __init__(self) -> None:
        self.intersection = self.union = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
        self.intersection += int(np.count_nonzero(a & b))
        self.union += int(np.count_nonzero(a | b))

    @property
    def iou(self) -> float:
        return 1.0 if self.union == 0 else self.intersection / self.union


def binary_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean arrays of one shape (see :class:`IoUCount`)."""
    count = IoUCount()
    count.add(a, b)
    return count.iou


def top1(scores: np.ndarray) -> np.ndarray:
    """The best class of every sample of ``[N, C]`` scores (ties: the lowest index)."""
    return np.asarray(scores).argmax(axis=1)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of samples where two class-index arrays agree."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.mean(a == b)) if a.size else math.nan
