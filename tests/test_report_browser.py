"""The bundled detector's report opened in headless Chromium (Debian's `chromium`, which .ci/run installs):
every picture loads, the layer table sorts when its header is clicked, nothing is logged as an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdq_compiler.cli import main
from qdq_compiler.zoo.bundled import DATA_DIR

pytest.importorskip("matplotlib", reason="--report draws with matplotlib (the report extra, also in dev)")
pytest.importorskip("websocket", reason="websocket-client (dev extra) drives the browser")

from headless_chromium import Page, find_chromium  # noqa: E402  (after the skips: it imports websocket)

CHROMIUM = find_chromium()
MAX_REPORT_BYTES = 5 * 1024 * 1024

BROKEN_IMAGES = "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
HEADER_CENTRE = """(() => {
  const th = Array.from(document.querySelectorAll('#layers th')).find(h => h.textContent === %s);
  th.scrollIntoView({block: 'center'});
  const box = th.getBoundingClientRect();
  return [box.left + box.width / 2, box.top + box.height / 2];
})()"""
ROWS = "Array.from(document.querySelectorAll('#layers tbody tr'))"
COLUMN = ROWS + ".map(r => r.cells[%d].getAttribute('data-sort'))"
LAYERS = ROWS + ".map(r => r.cells[0].textContent)"


def build_detector_report(folder: Path, calib_limit: int | None = None) -> Path:
    """Compile the bundled detector with ``--report folder``; return its index.html."""
    data = DATA_DIR / "detector"
    args = ["-q", "compile", str(data / "detector.onnx"), "--calib", str(data / "calib")]
    args += ["-o", str(folder.parent / "detector.int8.onnx"), "--report", str(folder)]
    if calib_limit is not None:
        args += ["--calib-limit", str(calib_limit), "--check-samples", "1"]
    assert main(args) == 0
    return folder / "index.html"


def check_in_browser(index: Path, screenshot: Path) -> dict:
    """Open ``index`` and check it; return what was seen (for the test's asserts and the docs)."""
    with Page(CHROMIUM) as page:
        page.open(index)
        seen = {"images": page.evaluate("document.images.length"), "broken": page.evaluate(BROKEN_IMAGES)}
        before = page.evaluate(LAYERS)
        x, y = page.evaluate(HEADER_CENTRE % json.dumps("amax"))
        page.click(x, y)
        amax_column = 8
        seen["ascending"] = [float(v) for v in page.evaluate(COLUMN % amax_column)]
        seen["sorted_layers"] = page.evaluate(LAYERS)
        page.click(x, y)
        seen["descending"] = [float(v) for v in page.evaluate(COLUMN % amax_column)]
        seen["before"] = before
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(screenshot)
        seen["errors"] = list(page.errors)
    return seen


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)")
def test_detector_report_in_headless_chromium(tmp_path) -> None:
    index = build_detector_report(tmp_path / "report", calib_limit=8)
    size = sum(path.stat().st_size for path in index.parent.rglob("*") if path.is_file())
    assert size < MAX_REPORT_BYTES, size
    seen = check_in_browser(index, tmp_path / "screenshot.png")
    assert seen["images"] >= 46 + 3  # a histogram per quantized tensor and the 3 float head layers at least
    assert seen["broken"] == []
    assert seen["errors"] == []
    assert seen["sorted_layers"] != seen["before"]  # the click re-ordered the rows
    assert seen["ascending"] == sorted(seen["ascending"]) and seen["ascending"][0] < seen["ascending"][-2]
    assert seen["descending"] == sorted(seen["descending"], reverse=True)
    assert (tmp_path / "screenshot.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
