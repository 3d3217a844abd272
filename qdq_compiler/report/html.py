"""The report page: plain HTML and CSS, the pictures as <img> files beside it, a few lines of JavaScript
that sort a table when its header is clicked. Nothing is fetched from the network when it is viewed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from qdq_compiler.report.data import LayerRow, RankedLayer, ReportData, Table, TensorHistogram
from qdq_compiler.report.palette import METHOD_COLOURS, USED_COLOUR

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; margin-bottom: 0.3em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
th { background: #f2f4f7; white-space: nowrap; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th.asc::after { content: " \\25B2"; } table.sortable th.desc::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
#layers td:nth-child(6) { white-space: nowrap; }
tr.float td { background: #fdeeee; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
figure { margin: 0; border: 1px solid #eee; padding: 4px; }
figcaption { font-size: 0.8em; color: #444; max-width: 380px; }
nav a { margin-right: 1em; } .note { color: #555; font-size: 0.9em; }
"""

# Click a header of a table.sortable: its rows sort by that column (data-sort when given, numbers as numbers).
SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var ascending = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (other) { other.classList.remove("asc", "desc"); });
      th.classList.add(ascending ? "asc" : "desc");
      function key(row) {
        var cell = row.cells[column], text = cell.getAttribute("data-sort");
        if (text === null) { text = cell.textContent; }
        var number = parseFloat(text);
        return isNaN(number) ? text : number;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), order;
        if (typeof x === typeof y) { order = x < y ? -1 : x > y ? 1 : 0; }
        else { order = typeof x === "number" ? -1 : 1; }
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


Cell = str | tuple[str, str]  # text, or (text, sort key) of a number
Row = tuple[str, list[Cell]]  # (CSS class, cells)


def _number(value: float | None, digits: int = 4) -> tuple[str, str]:
    """(shown text, sort key) of a number; missing values sort last in ascending order."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-", "1e308"
    if math.isinf(value):
        return ("inf" if value > 0 else "-inf"), ("1e307" if value > 0 else "-1e307")
    return f"{value:.{digits}g}", repr(float(value))


def _percent(value: float | None) -> tuple[str, str]:
    if value is None:
        return "-", "1e308"
    return f"{100.0 * value:.2f}%", repr(float(value))


def _cells(cells: Sequence[Cell]) -> str:
    parts = []
    for cell in cells:
        if isinstance(cell, tuple):
            parts.append(f'<td class="num" data-sort="{escape(cell[1])}">{escape(cell[0])}</td>')
        else:
            parts.append(f"<td>{escape(cell)}</td>")
    return "".join(parts)


def _table(header: Sequence[str], rows: Sequence[Row], table_id: str) -> str:
    """A sortable table; each row is (its CSS class, its cells)."""
    head = "".join(f"<th>{escape(name)}</th>" for name in header)
    body = "\n".join(f'<tr class="{cls}">{_cells(cells)}</tr>' for cls, cells in rows)
    opening = f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
    return f"{opening}<tbody>\n{body}\n</tbody></table>"


def _layers_table(layers: list[LayerRow]) -> str:
    header = [
        "layer",
        "op",
        "precision",
        "reason",
        "MACs",
        "scale group",
        "input",
        "method",
        "amax",
        "clipped",
        "SQNR gain dB",
    ]
    rows: list[Row] = [
        (
            "float" if row.precision != "int8" else "",
            [
                row.layer,
                row.op,
                row.precision,
                row.reason,
                _percent(row.mac_share),
                row.scale_group,
                row.input_tensor,
                row.method,
                _number(row.amax),
                _percent(row.clipped),
                _number(row.sqnr_gain_db, 3),
            ],
        )
        for row in layers
    ]
    return _table(header, rows, "layers")


def _ranking_table(ranking: list[RankedLayer]) -> str:
    rows: list[Row] = [
        ("", [(str(rank), str(rank)), item.layer, _number(item.gain_db, 3), _percent(item.mac_share)])
        for rank, item in enumerate(ranking, start=1)
    ]
    return _table(["rank", "layer", "SQNR gain dB", "MACs"], rows, "ranking")


def _extra_table(table: Table, index: int) -> str:
    rows: list[Row] = [("", list(row)) for row in table.rows]
    return f"<h3>{escape(table.title)}</h3>" + _table(table.header, rows, f"table-{index}")


def _figure(src: str, caption: str, alt: str, caption_html: str = "") -> str:
    """A picture with its caption (plain text, then ``caption_html`` as is)."""
    return (
        f'<figure><img src="{escape(src)}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}{caption_html}</figcaption></figure>"
    )


def _marks(item: TensorHistogram) -> str:
    """The histogram's amax marks in words, each in its line's colour."""
    parts = [f'<span style="color:{USED_COLOUR}">&#9473; used {item.amax:.4g}</span>']
    for method, amax in sorted(item.candidates.items()):
        colour = METHOD_COLOURS.get(method, "#555555")
        parts.append(f'<span style="color:{colour}">&#9476; {escape(method)} {amax:.4g}</span>')
    return "<br>" + " ".join(parts)


def render_page(data: ReportData, images: dict[str, list[str]], version: str) -> str:
    """The page; ``images`` holds the file names written for each picture list, in the data's order:
    'histograms', 'weights', 'ranking', 'fallback', 'graphs'."""
    sections: list[tuple[str, str, str]] = []  # (anchor, heading, html)
    summary = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in data.summary)
    sections.append(("summary", "Summary", f"<table>{summary}</table>"))
    for index, table in enumerate(data.tables):
        sections.append((f"t{index}", table.title, _extra_table(table, index)))
    if data.layers:
        text = "<p class=note>Click a column header to sort. Float layers are shaded.</p>"
        sections.append(("layers", "Layers", text + _layers_table(data.layers)))
    if data.ranking or data.fallback:
        parts = []
        if data.ranking:
            caption = "SQNR gained when each layer alone stays float (the most sensitive; all in the table)"
            parts.append(_figure(images["ranking"][0], caption, "ranking"))
        if data.fallback is not None:
            steps = "; ".join(f"{i}: {step.label}" for i, step in enumerate(data.fallback.steps))
            parts.append(
                _figure(images["fallback"][0], f"cumulative fallback, steps {steps}", "fallback curve")
            )
        html = '<div class="grid">' + "".join(parts) + "</div>"
        if data.ranking:
            html += _ranking_table(data.ranking)
        sections.append(("sensitivity", "Sensitivity", html))
    if data.histograms:
        groups: dict[str, list[str]] = {}
        for item, src in zip(data.histograms, images["histograms"]):
            caption = (
                f"{item.tensor}: {item.method or 'amax'} {item.amax:.4g}, clipped {100 * item.clipped:.3f}%"
            )
            groups.setdefault(item.scale_group or "no scale group", []).append(
                _figure(src, caption, item.tensor)
            )
        html = (
            "<p class=note>Calibration histograms of |x| (log counts); solid red: the amax used (after scale "
            "groups are tied), dashed: what each method would choose (colours in each caption).</p>"
        )
        for group, figures in groups.items():
            heading = f"scale group {group[len('group ') :]}" if group.startswith("group ") else group
            html += f"<h3>{escape(heading)}</h3><div class=grid>{''.join(figures)}</div>"
        sections.append(("histograms", "Activation histograms", html))
    if data.weight_ranges:
        figures = [
            _figure(src, f"{item.layer}: {item.minimum.size} channels, spread {item.spread:.1f}x", item.layer)
            for item, src in zip(data.weight_ranges, images["weights"])
        ]
        html = (
            "<p class=note>Per-output-channel weight ranges of the layers with the widest spread (largest "
            "channel abs-max over the median one).</p>"
        )
        sections.append(("weights", "Weight ranges", html + f"<div class=grid>{''.join(figures)}</div>"))
    if data.graphs:
        figures = [
            _figure(src, f"{picture.title}: {picture.caption}", picture.title)
            for picture, src in zip(data.graphs, images["graphs"])
        ]
        html = (
            "<p class=note>Green: INT8 layer, red: float layer, yellow: Q/DQ, grey: other ops; the "
            "subject is outlined in red.</p>"
        )
        sections.append(
            ("graphs", "Float layers and requantizations", html + f"<div class=grid>{''.join(figures)}</div>")
        )
    if data.notes:
        notes = "".join(f"<li>{escape(note)}</li>" for note in data.notes)
        sections.append(("notes", "Notes", f"<ul>{notes}</ul>"))
    nav = "".join(f'<a href="#{anchor}">{escape(heading)}</a>' for anchor, heading, _ in sections)
    body = "\n".join(f'<section id="{a}"><h2>{escape(h)}</h2>\n{html}</section>' for a, h, html in sections)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(data.title)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>{escape(data.title)}</h1><p class=note>qdqc {escape(version)}</p><nav>{nav}</nav>\n{body}\n"
        f"<script>{SORT_JS}</script>\n</body></html>\n"
    )
