"""Per-channel part of the self-check: what an output-wide SQNR cannot see.

An output's SQNR is dominated by its largest values, so a small branch zeroed inside a Concat with a 10^4
times larger one leaves the output at 60 dB. Here every output of rank >= 2 is cut into channels along axis 1
(the channels of an NCHW map, the anchors of a [N, anchors, 85] detector output) and along the last axis (the
85 box/score attributes, or NHWC channels); both are where CNN outputs join branches. A channel is

- *dead* when the compiled model gives a constant there (all zero, or one value) while the reference varies
  on the samples (by more than 1% of its peak), or is non-zero while the compiled one is all zero;
- *low* when its own SQNR is below ``CHANNEL_SQNR_MIN_DB`` (the error is larger than the signal).

Channels whose reference peak is below ``NEGLIGIBLE`` times the output's peak are not judged: no 8- or 16-bit
format holds them next to the rest, and FP16 outputs underflow there (a sigmoid's 1e-12 becomes 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CHANNEL_SQNR_MIN_DB", "ChannelCheck", "channel_axes", "channel_problems", "check_channels"]

CHANNEL_SQNR_MIN_DB = 0.0
NEGLIGIBLE = 1e-6  # of the output's peak |value|: smaller channels are not judged
VARIES = 1e-2  # of the channel's peak |value|: a smaller spread is not information a constant loses
SHOWN = 8  # channel indices named in a warning


@dataclass(frozen=True)
class ChannelCheck:
    """One output cut along one axis: the dead and the low-SQNR channels, and the worst channel."""

    axis: int
    size: int
    dead: tuple[int, ...] = ()
    low: tuple[int, ...] = ()  # low SQNR and not dead
    low_db: tuple[float, ...] = ()  # the SQNR of each of ``low``
    worst: int = -1  # the judged channel with the lowest SQNR (-1: none judged)
    worst_db: float = math.inf


def channel_axes(rank: int) -> tuple[int, ...]:
    """Axis 1 and the last axis (one axis for rank 2; none below)."""
    return tuple(sorted({1, rank - 1})) if rank >= 2 else ()


def check_channels(reference: np.ndarray, compiled: np.ndarray) -> tuple[ChannelCheck, ...]:
    """Per-channel checks of one output (same shape, finite values) along each of :func:`channel_axes`."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(compiled, dtype=np.float64)
    if ref.size == 0 or not np.any(ref):
        return ()
    squares = _Squares(ref * ref, (ref - out) ** 2)  # computed once, reduced along each axis
    peak = float(np.max(np.abs(ref)))
    return tuple(_along(ref, out, squares, axis, peak) for axis in channel_axes(ref.ndim))


@dataclass(frozen=True)
class _Squares:
    signal: np.ndarray
    noise: np.ndarray


def _along(ref: np.ndarray, out: np.ndarray, squares: _Squares, axis: int, peak: float) -> ChannelCheck:
    """Reduce over every axis but ``axis`` (no copies of the output)."""
    others = tuple(a for a in range(ref.ndim) if a != axis)
    ref_max, ref_min = ref.max(axis=others), ref.min(axis=others)
    out_max, out_min = out.max(axis=others), out.min(axis=others)
    ref_peak = np.maximum(np.abs(ref_max), np.abs(ref_min))
    judged = ref_peak > NEGLIGIBLE * peak
    out_constant = out_max == out_min
    ref_varies = ref_max - ref_min > VARIES * ref_peak
    out_zero = out_constant & (out_max == 0.0)
    dead = judged & out_constant & (ref_varies | out_zero)
    sqnr = _sqnr(squares.signal.sum(axis=others), squares.noise.sum(axis=others))
    low = judged & ~dead & (sqnr < CHANNEL_SQNR_MIN_DB)
    size = ref.shape[axis]
    if not judged.any():
        return ChannelCheck(axis, size)
    worst = int(np.argmin(np.where(judged, sqnr, np.inf)))
    low_idx = np.flatnonzero(low)
    return ChannelCheck(
        axis,
        size,
        tuple(np.flatnonzero(dead).tolist()),
        tuple(low_idx.tolist()),
        tuple(float(sqnr[i]) for i in low_idx),
        worst,
        float(sqnr[worst]),
    )


def _sqnr(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """SQNR in dB per channel: inf when equal, -inf for an all-zero reference channel with an error."""
    with np.errstate(divide="ignore", invalid="ignore"):
        sqnr = 10.0 * np.log10(signal / noise)
    sqnr[noise == 0.0] = np.inf
    return sqnr


def _indices(indices: tuple[int, ...], values: tuple[float, ...] = ()) -> str:
    shown = [f"{i} ({v:.2f} dB)" if values else str(i) for i, v in zip(indices, values or indices)][:SHOWN]
    more = f", ... ({len(indices) - SHOWN} more)" if len(indices) > SHOWN else ""
    return ", ".join(shown) + more


def channel_problems(check: ChannelCheck, label: str) -> list[str]:
    """Sentences for the warning, after "output 'y' " (none when every channel is sound)."""
    where = f"of {check.size} channels along axis {check.axis}"
    problems = []
    if check.dead:
        problems.append(
            f"has {len(check.dead)} {where} constant or zero while the {label}'s vary: {_indices(check.dead)}"
        )
    if check.low:
        problems.append(
            f"has {len(check.low)} {where} with SQNR below {CHANNEL_SQNR_MIN_DB:g} dB: "
            f"{_indices(check.low, check.low_db)}"
        )
    return problems
