"""What a report shows, as plain data: no IR, no matplotlib, no HTML.

``collect.py`` fills these from a compile, a sensitivity run or an eval; ``write.py`` renders them. A caller
with its own numbers (the fallback search's steps, say) builds them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LayerRow:
    """One weighted layer in the per-layer table (None: not known or not measured)."""

    layer: str
    op: str
    precision: str  # 'int8' | 'float'
    reason: str = ""
    mac_share: float | None = None  # of all weighted-layer MACs
    scale_group: str = ""  # the label of its input's scale group ('' when the input is in none)
    input_tensor: str = ""
    method: str = ""  # calibration method of the input tensor
    amax: float | None = None  # the amax the input is quantized with (its scale x 127)
    clipped: float | None = None  # fraction of calibration values of the input above amax
    sqnr_gain_db: float | None = None  # SQNR gained when this layer alone stays float (sensitivity)


@dataclass(frozen=True)
class TensorHistogram:
    """The calibration histogram of |x| of one quantized tensor and the amax marks drawn on it."""

    tensor: str
    counts: np.ndarray  # counts of |x| per bin, bins of equal width from 0
    bin_width: float
    amax: float  # the amax the tensor is quantized with
    method: str = ""
    candidates: dict[str, float] = field(default_factory=dict)  # method -> the amax it would choose
    scale_group: str = ""

    @property
    def clipped(self) -> float:
        """Fraction of the counted values above ``amax``."""
        return clipped_fraction(self.counts, self.bin_width, self.amax)


def clipped_fraction(counts: np.ndarray, bin_width: float, amax: float) -> float:
    """Fraction of histogram values above ``amax`` (a bin straddling amax counts by its share above it)."""
    total = float(np.sum(counts))
    if total <= 0.0 or bin_width <= 0.0:
        return 0.0
    position = amax / bin_width
    whole = int(np.floor(position))
    if whole >= counts.size:
        return 0.0
    above = float(np.sum(counts[whole + 1 :])) + float(counts[whole]) * (1.0 - (position - whole))
    return above / total


@dataclass(frozen=True)
class WeightRanges:
    """The per-output-channel minimum and maximum of one layer's weights."""

    layer: str
    minimum: np.ndarray
    maximum: np.ndarray

    @property
    def spread(self) -> float:
        """Largest channel abs-max over the median one: how much a per-tensor scale would waste."""
        absmax = np.maximum(np.abs(self.minimum), np.abs(self.maximum))
        median = float(np.median(absmax)) if absmax.size else 0.0
        return float(absmax.max()) / median if median > 0.0 else 0.0


@dataclass(frozen=True)
class RankedLayer:
    """One layer of a sensitivity ranking: the metric gained when it alone stays float."""

    layer: str
    gain_db: float
    mac_share: float | None = None


@dataclass(frozen=True)
class FallbackStep:
    """One point of a fallback curve: which layers (or scale groups) are float, the metric, the INT8 share.

    A fallback search (or sensitivity's cumulative steps) gives a list of these, the all-INT8 start first.
    """

    label: str  # what this step keeps float, e.g. '/detect/m.0/Conv' or '3 layers'
    metric: float
    int8_mac_share: float


@dataclass(frozen=True)
class FallbackCurve:
    """The metric against the INT8 MAC share, one point per step."""

    metric_name: str  # e.g. 'SQNR dB'
    steps: list[FallbackStep]


@dataclass(frozen=True)
class GraphNode:
    """A node of a graph picture; ``kind`` colours it: 'int8', 'float', 'q', 'dq', 'op', 'io'."""

    key: str
    label: str
    kind: str
    focus: bool = False


@dataclass(frozen=True)
class GraphPicture:
    """A small graph around one float layer or one requantization."""

    title: str
    caption: str
    nodes: list[GraphNode]
    edges: list[tuple[str, str]]  # (from key, to key)


@dataclass(frozen=True)
class Table:
    """A plain extra table (eval's outputs and metrics, say)."""

    title: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class ReportData:
    """Everything one report shows; empty parts are left out of the page."""

    title: str
    summary: list[tuple[str, str]]
    layers: list[LayerRow] = field(default_factory=list)
    histograms: list[TensorHistogram] = field(default_factory=list)
    weight_ranges: list[WeightRanges] = field(default_factory=list)
    ranking: list[RankedLayer] = field(default_factory=list)
    fallback: FallbackCurve | None = None
    graphs: list[GraphPicture] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
