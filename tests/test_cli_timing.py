"""`--timing`: one table of wall time per pass (with each pass's share and the self-check's time), printed
once; without `--timing` no time table at all (the summary stays free of times)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from qdq_compiler.cli import main
from qdq_compiler.ir import load_model
from qdq_compiler.models import build_yolov7_tiny

ROW = re.compile(r"^\s+(\d+\.\d) ms\s+(\d+\.\d)%\s+(\S.*)$", re.MULTILINE)
TABLE_HEADINGS = ("pass timing", "time per pass")


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("timing")
    model, data = root / "m.onnx", root / "calib.npy"
    onnx.save_model(build_yolov7_tiny(width=0.125, resolution=64, num_classes=3, seed=0), model)
    np.save(data, np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32))
    return model, data


def _compile(model_and_data, tmp_path, capsys, *extra: str) -> tuple[str, str]:
    model, data = model_and_data
    out = tmp_path / "out.onnx"
    assert main(["compile", str(model), "--calib", str(data), "-o", str(out), *extra]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_compile_timing_prints_one_table_with_shares_and_the_self_check(model_and_data, tmp_path, capsys):
    out, err = _compile(model_and_data, tmp_path, capsys, "--timing")
    both = out + err
    assert sum(both.count(heading) for heading in TABLE_HEADINGS) == 1, both
    rows = [(float(ms), float(share), name.strip()) for ms, share, name in ROW.findall(both)]
    names = [name for _, _, name in rows]
    pipeline = load_model(tmp_path / "out.onnx").metadata_props["qdq_compiler.pipeline"]
    passes = [re.sub(r"\{.*", "", part) for part in re.split(r",(?![^{]*\})", pipeline)]
    assert names == [*passes, "(self-check)", "total"], names
    total_ms, total_share = rows[-1][0], rows[-1][1]
    assert total_share == 100.0
    assert sum(ms for ms, _, _ in rows[:-1]) == pytest.approx(total_ms, abs=0.1 * len(rows))
    assert sum(share for _, share, _ in rows[:-1]) == pytest.approx(100.0, abs=0.1 * len(rows))
    assert rows[-2][0] > 0  # the self-check ran the float and the compiled model in onnxruntime


def test_compile_without_timing_prints_no_time_table(model_and_data, tmp_path, capsys):
    out, err = _compile(model_and_data, tmp_path, capsys)
    assert not any(heading in out + err for heading in TABLE_HEADINGS), out + err
    assert not ROW.search(out + err) and " ms " not in out


def test_opt_timing_prints_one_table(model_and_data, tmp_path, capsys):
    model, _ = model_and_data
    out = str(tmp_path / "o.onnx")
    args = ["opt", str(model), "--pipeline", "canonicalize,fold-bn", "-o", out, "--timing"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert sum((captured.out + captured.err).count(h) for h in TABLE_HEADINGS) == 1
    assert [name.strip() for *_, name in ROW.findall(captured.err)] == ["canonicalize", "fold-bn", "total"]
