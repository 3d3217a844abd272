"""The report's pictures as PNG bytes, drawn with matplotlib (the optional extra ``report``).

Only matplotlib's object API is used (Figure + the Agg canvas): no pyplot, no global state, no window.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import FixedLocator, FuncFormatter

from qdq_compiler.report.data import FallbackCurve, GraphPicture, RankedLayer, TensorHistogram, WeightRanges
from qdq_compiler.report.palette import METHOD_COLOURS, NODE_COLOURS, USED_COLOUR

DPI = 90
RANKING_BARS = 30  # the most sensitive layers drawn (the page's table lists all)
MAX_BARS = 160  # histogram bins drawn (the calibration histogram is merged down to this many)


def _figure(width: float, height: float, left: float = 0.11, bottom: float = 0.2) -> Figure:
    """A figure with fixed margins (a layout engine would measure every label again: slow)."""
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=left, right=0.98, bottom=bottom, top=0.88)
    return figure


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _merged(counts: np.ndarray, bin_width: float, top: float) -> tuple[np.ndarray, float]:
    """The counts up to ``top`` merged into at most MAX_BARS bins, and the new bin width."""
    used = min(counts.size, max(1, math.ceil(top / bin_width)))
    factor = max(1, math.ceil(used / MAX_BARS))
    padded = np.zeros(math.ceil(used / factor) * factor, dtype=np.float64)
    padded[:used] = counts[:used]
    return padded.reshape(-1, factor).sum(axis=1), bin_width * factor


class HistogramPainter:
    """Draws histograms one after the other on one figure, changing only the data of its artists: a new
    figure per picture would build its axes and ticks again, three times the drawing time."""

    def __init__(self) -> None:
        self.figure = _figure(5.2, 2.1, left=0.1)
        self.axes = self.figure.add_subplot()
        self.bars = self.axes.stairs(np.zeros(1), np.arange(2.0), fill=True, color="#8aa9c9")
        self.lines: dict[str, Line2D] = {}  # a candidate method's dashed line, made when first needed
        self.used = self.axes.axvline(0.0, color=USED_COLOUR, linewidth=2.0, zorder=3)
        self.axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"1e{int(round(value))}"))
        self.axes.set_xlabel("|x|", fontsize=8, labelpad=1)
        self.axes.tick_params(labelsize=7)
        self.title = self.axes.set_title("", fontsize=8)

    def _line(self, method: str) -> Line2D:
        if method not in self.lines:
            colour = METHOD_COLOURS.get(method, "#555555")
            self.lines[method] = self.axes.axvline(0.0, color=colour, linestyle="--", linewidth=1.2)
        return self.lines[method]

    def png(self, item: TensorHistogram) -> bytes:
        """|x| counts on a log scale, the amax used (solid red) and each method's candidate (dashed,
        coloured as METHOD_COLOURS; the page's caption names them). log10 of the counts is drawn on a
        linear axis with 10^k labels: matplotlib's log axis takes most of a picture's drawing time."""
        nonzero = np.flatnonzero(item.counts)
        reach = (nonzero[-1] + 1) * item.bin_width if nonzero.size else item.amax
        top = 1.05 * max([reach, item.amax, *item.candidates.values()])
        counts, width = _merged(item.counts, item.bin_width, top)
        heights = np.log10(np.maximum(counts, 1.0))
        edges = np.arange(counts.size + 1) * width
        self.bars.set_data(heights, edges)
        for line in self.lines.values():
            line.set_visible(False)
        for method, amax in item.candidates.items():
            line = self._line(method)
            line.set_xdata([amax, amax])
            line.set_visible(True)
        self.used.set_xdata([item.amax, item.amax])
        highest = max(1, math.ceil(float(heights.max(initial=0.0))))
        self.axes.set_ylim(0.0, highest + 0.2)
        self.axes.yaxis.set_major_locator(FixedLocator(list(range(highest + 1))))
        self.axes.set_xlim(0.0, float(edges[-1]))
        self.title.set_text(_short(item.tensor, 70))
        return _png(self.figure)


def histogram_png(item: TensorHistogram) -> bytes:
    """One histogram picture (HistogramPainter draws many faster)."""
    return HistogramPainter().png(item)


class WeightRangesPainter:
    """Draws per-channel weight ranges one after the other on one figure (as HistogramPainter)."""

    def __init__(self) -> None:
        self.figure = _figure(5.2, 2.3)
        self.axes = self.figure.add_subplot()
        self.bars = self.axes.vlines([0.0], [0.0], [0.0], color="#4c72b0", linewidth=2.0)
        self.axes.axhline(0.0, color="#999999", linewidth=0.6)
        self.axes.set_xlabel("output channel", fontsize=8)
        self.axes.set_ylabel("weight", fontsize=8)
        self.axes.tick_params(labelsize=7)
        self.title = self.axes.set_title("", fontsize=8)

    def png(self, item: WeightRanges) -> bytes:
        """Each output channel's weight range as a vertical bar."""
        count = item.minimum.size
        self.bars.set_segments(
            [[(c, low), (c, high)] for c, low, high in zip(range(count), item.minimum, item.maximum)]
        )
        low, high = float(min(item.minimum.min(), 0.0)), float(max(item.maximum.max(), 0.0))
        margin = 0.05 * (high - low) or 1.0
        self.axes.set_xlim(-1.0, float(count))
        self.axes.set_ylim(low - margin, high + margin)
        self.title.set_text(f"{_short(item.layer, 60)} (spread {item.spread:.1f}x)")
        return _png(self.figure)


def weight_ranges_png(item: WeightRanges) -> bytes:
    """One weight-range picture (WeightRangesPainter draws many faster)."""
    return WeightRangesPainter().png(item)


def ranking_png(ranking: list[RankedLayer]) -> bytes:
    """Horizontal bars: the SQNR each layer gains when it alone stays float, the RANKING_BARS most sensitive,
    most sensitive on top."""
    shown = [item for item in ranking if math.isfinite(item.gain_db)][:RANKING_BARS]
    height = 0.8 + 0.2 * max(1, len(shown))
    figure = _figure(6.4, height, left=0.36, bottom=0.45 / height)
    figure.subplots_adjust(top=1.0 - 0.15 / height)
    axes = figure.add_subplot()
    positions = np.arange(len(shown))[::-1]
    axes.barh(positions, [item.gain_db for item in shown], color="#dd8452")
    axes.set_ylim(-0.6, len(shown) - 0.4)
    axes.set_yticks(positions, [_short(item.layer, 40) for item in shown], fontsize=7)
    axes.axvline(0.0, color="#999999", linewidth=0.6)
    axes.set_xlabel("SQNR gain when float (dB)", fontsize=8)
    axes.tick_params(axis="x", labelsize=7)
    return _png(figure)


def fallback_png(curve: FallbackCurve) -> bytes:
    """The metric against the INT8 MAC share, one point per step, the all-INT8 start on the right."""
    steps = [step for step in curve.steps if math.isfinite(step.metric)]
    figure = _figure(6.4, 3.0, left=0.1, bottom=0.15)
    axes = figure.add_subplot()
    shares = [100.0 * step.int8_mac_share for step in steps]
    axes.plot(shares, [step.metric for step in steps], marker="o", color="#4c72b0")
    for index, (share, step) in enumerate(zip(shares, steps)):
        axes.annotate(str(index), (share, step.metric), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.invert_xaxis()
    axes.set_xlabel("predicted INT8 MAC share (%)", fontsize=8)
    axes.set_ylabel(curve.metric_name, fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    return _png(figure)


def _depths(picture: GraphPicture) -> dict[str, int]:
    """Each node's longest distance from a node without inputs in the picture (edges go downwards)."""
    preds: dict[str, list[str]] = defaultdict(list)
    for source, target in picture.edges:
        preds[target].append(source)
    depth: dict[str, int] = {}

    def visit(key: str, seen: frozenset[str]) -> int:
        if key not in depth:
            parents = [p for p in preds[key] if p not in seen]  # a cycle cannot occur in ONNX; guard anyway
            depth[key] = 1 + max((visit(p, seen | {key}) for p in parents), default=-1)
        return depth[key]

    for node in picture.nodes:
        visit(node.key, frozenset())
    return depth


def graph_png(picture: GraphPicture) -> bytes:
    """The nodes as coloured boxes in rows by depth, edges as arrows; the focus nodes outlined in red."""
    depth = _depths(picture)
    rows: dict[int, list[str]] = defaultdict(list)
    for node in picture.nodes:
        rows[depth[node.key]].append(node.key)
    widest = max(len(row) for row in rows.values())
    position = {
        key: (index - (len(row) - 1) / 2.0, -level)
        for level, row in rows.items()
        for index, key in enumerate(row)
    }
    figure = Figure(figsize=(max(3.0, 2.0 * widest), 0.2 + 0.62 * len(rows)))
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_axis_off()
    axes.set_xlim(-widest / 2.0 - 0.1, widest / 2.0 + 0.1)
    axes.set_ylim(-len(rows) + 0.5, 0.5)
    for source, target in picture.edges:
        (x0, y0), (x1, y1) = position[source], position[target]
        axes.annotate(
            "",
            xy=(x1, y1 + 0.2),
            xytext=(x0, y0 - 0.2),
            arrowprops={"arrowstyle": "->", "color": "#666666", "linewidth": 0.8},
        )
    for node in picture.nodes:
        x, y = position[node.key]
        box = FancyBboxPatch(
            (x - 0.45, y - 0.19),
            0.9,
            0.38,
            boxstyle="round,pad=0.0,rounding_size=0.06",
            facecolor=NODE_COLOURS.get(node.kind, "#eeeeee"),
            edgecolor="#d62728" if node.focus else "#555555",
            linewidth=2.0 if node.focus else 0.7,
        )
        axes.add_patch(box)
        axes.text(x, y, _short(node.label, 26), ha="center", va="center", fontsize=7)
    return _png(figure)


def _short(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters from the left, keeping its end (node names end in the op)."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]
