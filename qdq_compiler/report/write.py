"""Write a report: ``index.html`` and its pictures in ``img/``, each file atomically."""

from __future__ import annotations

import os
from pathlib import Path

import qdq_compiler
from qdq_compiler.errors import QdqcError
from qdq_compiler.paths import write_atomic
from qdq_compiler.report.data import ReportData

IMAGE_FOLDER = "img"
IMAGE_PREFIXES = ("hist-", "weights-", "graph-", "ranking", "fallback")  # stale ones of these are removed


def require_matplotlib() -> None:
    """Refuse ``--report`` in one line when matplotlib (the extra ``report``) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise QdqcError(
            "--report draws its pictures with matplotlib, which is not installed: "
            "pip install 'qdq-compiler[report]'"
        ) from None


def write_report(out_dir: str | os.PathLike[str], data: ReportData) -> Path:
    """Render ``data`` into ``out_dir`` (created if missing); return the path of its ``index.html``."""
    require_matplotlib()
    from qdq_compiler.report import plots

    folder = Path(out_dir)
    images = folder / IMAGE_FOLDER
    images.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {
        "histograms": [],
        "weights": [],
        "ranking": [],
        "fallback": [],
        "graphs": [],
    }

    def save(kind: str, name: str, payload: bytes) -> None:
        write_atomic(images / name, payload)
        written[kind].append(f"{IMAGE_FOLDER}/{name}")

    painter = plots.HistogramPainter()
    for index, item in enumerate(data.histograms):
        save("histograms", f"hist-{index:03d}.png", painter.png(item))
    weight_painter = plots.WeightRangesPainter()
    for index, weights in enumerate(data.weight_ranges):
        save("weights", f"weights-{index:03d}.png", weight_painter.png(weights))
    if data.ranking:
        save("ranking", "ranking.png", plots.ranking_png(data.ranking))
    if data.fallback is not None:
        save("fallback", "fallback.png", plots.fallback_png(data.fallback))
    for index, picture in enumerate(data.graphs):
        save("graphs", f"graph-{index:03d}.png", plots.graph_png(picture))
    _remove_stale(images, {Path(name).name for names in written.values() for name in names})
    from qdq_compiler.report.html import render_page

    index_path = folder / "index.html"
    write_atomic(index_path, render_page(data, written, qdq_compiler.__version__).encode("utf-8"))
    return index_path


def _remove_stale(images: Path, keep: set[str]) -> None:
    """Pictures an earlier report left in ``images`` that this one does not show."""
    for path in images.glob("*.png"):
        if path.name.startswith(IMAGE_PREFIXES) and path.name not in keep:
            path.unlink()
