"""The report of each bundled model: its size, the time it adds to a compile, and the docs screenshot.

python tools/report_screenshot.py --out /tmp/reports     # compiles each bundled model with and without
                                                         # --report; docs/report-screenshot.png from the
                                                         # detector's report in headless Chromium
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # headless_chromium.py, the browser driver the report test uses

from headless_chromium import Page, find_chromium  # noqa: E402

from qdq_compiler.cli import main  # noqa: E402
from qdq_compiler.zoo.bundled import DATA_DIR  # noqa: E402

MODELS = ("detector", "classifier", "segmenter")


def compile_seconds(model: str, out: Path, report: Path | None) -> tuple[float, float]:
    """(wall, CPU) seconds of `qdqc compile` of a bundled model, run from the repository root (the report
    shows paths relative to it)."""
    data = (DATA_DIR / model).relative_to(ROOT)
    args = ["-q", "compile", str(data / f"{model}.onnx"), "--calib", str(data / "calib"), "-o", str(out)]
    if report is not None:
        args += ["--report", str(report)]
    started, cpu = time.perf_counter(), time.process_time()
    assert main(args) == 0
    return time.perf_counter() - started, time.process_time() - cpu


def main_tool() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=lambda text: Path(text).resolve(),
        required=True,
        help="Folder for the compiled models and reports.",
    )
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "report-screenshot.png")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    print("model        report size  files  compile wall/CPU s  with --report wall/CPU s  added wall/CPU s")
    for model in MODELS:
        plain = compile_seconds(model, args.out / f"{model}.int8.onnx", None)
        report = args.out / f"{model}-report"
        with_report = compile_seconds(model, args.out / f"{model}.int8.onnx", report)
        files = [path for path in report.rglob("*") if path.is_file()]
        size = sum(path.stat().st_size for path in files)
        added = (with_report[0] - plain[0], with_report[1] - plain[1])
        print(
            f"{model:<12} {size / 1024:7.0f} KiB  {len(files):5d}  {plain[0]:8.1f} / {plain[1]:5.1f}  "
            f"{with_report[0]:14.1f} / {with_report[1]:5.1f}  {added[0]:9.1f} / {added[1]:5.1f}"
        )
    chromium = find_chromium()
    if chromium is None:
        sys.exit("no chromium: no screenshot")
    with Page(chromium, width=1440, height=1300) as page:
        page.open(args.out / "detector-report" / "index.html")
        page.screenshot(args.screenshot)
        page.evaluate("document.getElementById('histograms').scrollIntoView()")
        page.screenshot(args.screenshot.with_name(args.screenshot.stem + "-histograms.png"))
        if page.errors:
            sys.exit(f"the page reported errors: {page.errors}")
    print(f"wrote {args.screenshot}")


if __name__ == "__main__":
    main_tool()
