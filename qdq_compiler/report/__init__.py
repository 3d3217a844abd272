"""``--report DIR``: an HTML page with plots of where ranges, scales and accuracy went.

Data first (``data.py``: plain dataclasses, filled by ``collect.py`` from a compile, a sensitivity run or an
eval), then rendering (``plots.py``: matplotlib PNGs; ``html.py``: the page; ``write.py``: the files).
A caller with its own numbers builds a :class:`ReportData` (a fallback search's steps as
:class:`FallbackStep`) and calls :func:`write_report`. matplotlib is the optional extra ``report``.
"""

from qdq_compiler.report.data import (
    FallbackCurve,
    FallbackStep,
    GraphPicture,
    LayerRow,
    RankedLayer,
    ReportData,
    Table,
    TensorHistogram,
    WeightRanges,
)
from qdq_compiler.report.write import require_matplotlib, write_report

__all__ = [
    "FallbackCurve",
    "FallbackStep",
    "GraphPicture",
    "LayerRow",
    "RankedLayer",
    "ReportData",
    "Table",
    "TensorHistogram",
    "WeightRanges",
    "require_matplotlib",
    "write_report",
]
