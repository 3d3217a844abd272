"""The qdqc command line: commands work, user errors are one line with a non-zero exit."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from qdq_compiler.cli import main
from qdq_compiler.detect import bundled
from qdq_compiler.ir import load_model, op_counts
from qdq_compiler.models import TEST_MODELS


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert "qdqc, version" in capsys.readouterr().out


def test_passes_lists_passes_with_options(capsys) -> None:
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in ("canonicalize", "fold-bn", "fold-constants", "infer-shapes"):
        assert f"\n{name}: " in "\n" + out
    assert "max-elements: int = 1048576" in out and "prepare:" in out


def test_compile_writes_model_and_leaves_input_alone(yolo_path, calib_path, tmp_path, capsys) -> None:
    before = yolo_path.read_bytes()
    out = tmp_path / "out.onnx"
    args = ["compile", str(yolo_path), "-o", str(out), "--calib", str(calib_path), "--method", "max"]
    assert main([*args, "--timing", "--pass-stats", "--verify-each"]) == 0
    assert yolo_path.read_bytes() == before
    compiled = onnx.load(str(out))
    onnx.checker.check_model(compiled, full_check=True)
    counts = op_counts(load_model(out).graph)
    assert counts["BatchNormalization"] == 0 and counts["QuantizeLinear"] > 0
    metadata = {p.key: p.value for p in compiled.metadata_props}
    assert "calibrate{method=max}" in metadata["qdq_compiler.pipeline"]
    captured = capsys.readouterr()
    assert "pass timing" in captured.err and "num-bn-folded" in captured.err
    assert "weighted layers: " in captured.out and "detection-head output layer" in captured.out
    assert "self-check: SQNR against the float model on 4 sample(s)" in captured.out


def test_compile_is_byte_identical_across_runs(yolo_path, calib_path, tmp_path) -> None:
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert main(["-q", "compile", str(yolo_path), "-o", str(first), "--calib", str(calib_path)]) == 0
    assert main(["-q", "compile", str(yolo_path), "-o", str(second), "--calib", str(calib_path)]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_two_pass_is_the_default_and_one_pass_reads_the_data_once(yolo_path, calib_path, tmp_path) -> None:
    one, two, flagged = tmp_path / "one.onnx", tmp_path / "two.onnx", tmp_path / "flagged.onnx"
    args = ["-q", "compile", str(yolo_path), "--calib", str(calib_path), "--method", "entropy"]
    assert main([*args, "-o", str(one), "--one-pass"]) == 0
    assert main([*args, "-o", str(two)]) == 0
    assert main([*args, "-o", str(flagged), "--two-pass"]) == 0
    pipelines = [
        {p.key: p.value for p in onnx.load(str(path)).metadata_props}["qdq_compiler.pipeline"]
        for path in (one, two)
    ]
    assert "calibrate{method=entropy,exact=false}" in pipelines[0] and "exact=" not in pipelines[1]
    assert one.read_bytes() != two.read_bytes()  # other histograms: the first sample is not the whole range
    assert two.read_bytes() == flagged.read_bytes()  # --two-pass asks for the default


def test_two_pass_needs_a_two_pass_cache(yolo_path, calib_path, tmp_path, capsys) -> None:
    """A one-pass cache serves the default (two passes not asked for) as it is, and is refused by an explicit
    --two-pass; `calibrate` saves two-pass statistics by default."""
    one_pass, two_pass = tmp_path / "one.stats", tmp_path / "two.stats"
    calibrate = ["-q", "calibrate", str(yolo_path), "--calib", str(calib_path), "-o"]
    assert main([*calibrate, str(one_pass), "--one-pass"]) == 0
    args = ["-q", "compile", str(yolo_path), "-o", str(tmp_path / "o.onnx"), "--calib-cache"]
    assert main([*args, str(one_pass)]) == 0
    assert main([*args, str(one_pass), "--two-pass"]) != 0
    assert "holds one-pass statistics" in capsys.readouterr().err
    assert main([*calibrate, str(two_pass)]) == 0
    assert main([*args, str(two_pass), "--two-pass"]) == 0


def test_calibrate_then_compile_from_cache(yolo_path, calib_path, tmp_path) -> None:
    cache = tmp_path / "stats.qdqc"
    assert main(["-q", "calibrate", str(yolo_path), "--calib", str(calib_path), "-o", str(cache)]) == 0
    direct, cached = tmp_path / "direct.onnx", tmp_path / "cached.onnx"
    for method in ("max", "percentile{p=99.9}"):
        assert (
            main(
                [
                    "-q",
                    "compile",
                    str(yolo_path),
                    "-o",
                    str(direct),
                    "--calib",
                    str(calib_path),
                    "--method",
                    method,
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "-q",
                    "compile",
                    str(yolo_path),
                    "-o",
                    str(cached),
                    "--calib-cache",
                    str(cache),
                    "--method",
                    method,
                ]
            )
            == 0
        )
        assert direct.read_bytes() == cached.read_bytes()


def test_stale_cache_is_refused(yolo_path, calib_path, tmp_path, capsys) -> None:
    cache = tmp_path / "stats.qdqc"
    assert main(["-q", "calibrate", str(yolo_path), "--calib", str(calib_path), "-o", str(cache)]) == 0
    other = tmp_path / "other.onnx"
    onnx.save_model(TEST_MODELS["yolov7_tiny_silu"](), other)
    code = main(["compile", str(other), "-o", str(tmp_path / "o.onnx"), "--calib-cache", str(cache)])
    err = capsys.readouterr().err
    assert code != 0 and "stale calibration cache" in err and "model hash" in err


def test_opt_prints_ir(yolo_path, capsys) -> None:
    assert main(["opt", str(yolo_path), "--pipeline", "canonicalize,fold-bn", "-o", "-"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model ir_version=") and "BatchNormalization" not in out


def test_print_ir_after_and_dump_dir(yolo_path, tmp_path, capsys) -> None:
    dumps = tmp_path / "dumps"
    code = main(
        [
            "opt",
            str(yolo_path),
            "--pipeline",
            "canonicalize,fold-bn",
            "-o",
            str(tmp_path / "o.onnx"),
            "--print-ir-after",
            "fold-bn",
            "--ir-dump-dir",
            str(dumps),
        ]
    )
    assert code == 0
    assert "IR after fold-bn" in capsys.readouterr().err
    assert sorted(p.name for p in dumps.iterdir()) == [
        "000_input.txt",
        "001_canonicalize.txt",
        "002_fold-bn.txt",
    ]


def test_inspect(yolo_path, capsys) -> None:
    assert main(["inspect", str(yolo_path)]) == 0
    out = capsys.readouterr().out
    assert "input  images: float[1,3,160,160]" in out and "QuantizeLinear: 0" in out and "Conv" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "missing.onnx"], "model file not found"),
        (["compile", "missing.onnx", "-o", "x.onnx"], "model file not found"),
        (["opt", "{model}", "-o", "x.onnx", "--pipeline", "fold-bm"], "unknown pass 'fold-bm'"),
        (["opt", "{model}", "-o", "x.onnx", "--pipeline", "fold-bn{{x=1}}"], "no option 'x'"),
        (["compile", "{model}", "-o", "{model}", "--calib", "{calib}"], "input is never overwritten"),
        (["compile", "{model}", "-o", "x.onnx"], "calibration data is required"),
        (["compile", "{model}", "-o", "x.onnx", "--calib", "{model}"], "unsupported calibration data"),
        (
            ["compile", "{model}", "-o", "x.onnx", "--calib", "{calib}", "--method", "kl"],
            "unknown calibration",
        ),
        (["compile", "{model}", "-o", "x.onnx", "--calib", "{empty}"], "no calibration samples"),
        (["compile", "{model}"], "Missing option"),
        (
            ["compile", "{model}", "-o", "x.onnx", "--calib", "{calib}", "--summary-json", "{model}"],
            "is the input model",
        ),
        (
            ["compile", "{model}", "-o", "x.onnx", "--calib", "{calib}", "--check-data", "{model}"],
            "self-check data (--check-data): ",
        ),
        (
            [
                "compile",
                "{model}",
                "-o",
                "x.onnx",
                "--calib",
                "{calib}",
                "--no-check",
                "--check-samples",
                "2",
            ],
            "--check-samples configure the self-check",
        ),
        (
            ["compile", "{model}", "-o", "x.onnx", "--calib", "{calib}", "--check-sqnr-min", "nan"],
            "--check-sqnr-min must be a finite number",
        ),
        (["frobnicate"], "No such command"),
        (["opt", "{corrupt}", "-o", "x.onnx", "--pipeline", "canonicalize"], "cannot read"),
    ],
)
def test_user_errors_are_one_line(args, message, yolo_path, calib_path, tmp_path, capsys) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx file at all")
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 3, 160, 160), np.float32))
    filled = [a.format(model=yolo_path, corrupt=corrupt, calib=calib_path, empty=empty) for a in args]
    code = main(filled)
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err


def test_demo_runs_end_to_end(tmp_path, capsys) -> None:
    """The README's main command on the bundled detector (evaluation on 10 images to stay fast)."""
    assert main(["demo", "--out-dir", str(tmp_path), "--limit", "10"]) == 0
    compiled = load_model(tmp_path / "detector.int8.onnx")
    assert op_counts(compiled.graph)["DequantizeLinear"] > 0
    out = capsys.readouterr().out
    assert "weighted layers:" in out and "INT8 MAC share" in out
    sqnr = re.search(r"self-check: SQNR against the float model on 4 sample.*: output ([0-9.]+) dB", out)
    assert sqnr and float(sqnr.group(1)) > 30.0, out  # 39.1 dB on the trained detector
    assert "accuracy on the validation images: qdqc eval " in out and "--limit 10" in out
    # `qdqc eval`'s table: metric, INT8 vs FP32 detections, FP32 vs labels, INT8 vs labels
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines() if line.startswith("mAP@")}
    map50, map50_95 = (tuple(map(float, rows[k])) for k in ("mAP@0.5", "mAP@0.5:0.95"))
    assert 0.5 < map50[1] <= 1.0 and 0.0 < map50_95[1] <= map50[1]
    assert map50[2] > map50[1] - 0.1  # INT8 loses little on the trained detector
    assert map50[0] > 0.9  # and finds what FP32 finds
    # the same figures the bundled evaluation (the demo's before `qdqc eval`) gives, FP32 and INT8
    for column, model in ((1, bundled.model_path()), (2, tmp_path / "detector.int8.onnx")):
        before = bundled.evaluate_bundled(model, limit=10)
        assert (
            abs(map50[column] - before["map50"]) < 5e-4 and abs(map50_95[column] - before["map50_95"]) < 5e-4
        )


def test_compile_for_trt11(yolo_path, calib_path, tmp_path, capsys) -> None:
    out = tmp_path / "trt11.onnx"
    args = ["compile", str(yolo_path), "-o", str(out), "--calib", str(calib_path), "--target", "trt11"]
    assert main(args) == 0
    compiled = onnx.load(str(out))
    onnx.checker.check_model(compiled, full_check=True)
    assert {o.domain: o.version for o in compiled.opset_import}[""] == 19
    pipeline = {p.key: p.value for p in compiled.metadata_props}["qdq_compiler.pipeline"]
    assert pipeline.startswith("upgrade-opset{min=19},") and pipeline.endswith(
        "legalize-trt{target=trt11},verify-trt"
    )


@pytest.mark.parametrize("module", ["qdq_compiler", "qdq_compiler.cli"])
def test_runs_as_a_module(module):
    import subprocess
    import sys

    command = [sys.executable, "-m", module, "--version"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "qdqc, version" in done.stdout, done.stderr


@pytest.mark.parametrize(
    "pipeline, flags, message",
    [
        ("trt-int8-from-qdq", ["--calib-cache", "x.stats"], "--calib-cache configures calibrate"),
        ("trt-int8", ["--missing-scales", "float"], "--missing-scales configures import-scales"),
        ("prepare", ["--exclude", "conv*"], "--exclude configures place-qdq"),
    ],
)
def test_a_flag_whose_pass_is_not_in_the_pipeline_is_refused(tmp_path, capsys, pipeline, flags, message):
    from qdq_compiler.detect import bundled

    out = tmp_path / "out.onnx"
    args = ["compile", str(bundled.model_path()), "--pipeline", pipeline, *flags, "-o", str(out)]
    assert main(args) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=oct)
def test_outputs_get_the_permissions_the_umask_allows(yolo_path, calib_path, tmp_path, umask) -> None:
    """mkstemp makes 0600 files; compiled models and caches get 0666 minus the umask, like any new file."""
    import os

    previous = os.umask(umask)
    try:
        model, cache = tmp_path / "out.onnx", tmp_path / "stats.qdqc"
        assert main(["-q", "calibrate", str(yolo_path), "--calib", str(calib_path), "-o", str(cache)]) == 0
        assert main(["-q", "compile", str(yolo_path), "--calib-cache", str(cache), "-o", str(model)]) == 0
    finally:
        os.umask(previous)
    for path in (model, cache):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, (path, oct(path.stat().st_mode))


def _no_space(*args, **kwargs):
    import errno
    import os

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullDiskFile:
    """A writable file object on a disk that fills up at the first write (closes its descriptor)."""

    def __init__(self, fd_or_path, mode="wb", *args, **kwargs):
        import io

        self._file = io.open(fd_or_path, mode, *args, **kwargs)  # noqa: UP020, SIM115 (the real open)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def write(self, data):
        _no_space()

    def __getattr__(self, name):
        return getattr(self._file, name)


def test_disk_full_during_the_final_write_is_one_line(yolo_path, calib_path, tmp_path, capsys, monkeypatch):
    """The output folder passed the preflight, then the disk fills up while the model is written: one line,
    exit 2, no temporary file left, the previous output untouched."""
    import os

    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    out.write_bytes(b"previous output")
    monkeypatch.setattr(os, "fdopen", _FullDiskFile)
    code = main(["compile", str(yolo_path), "--calib", str(calib_path), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == f"qdqc: error: cannot write {out}: No space left on device"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]
    assert out.read_bytes() == b"previous output"


def test_disk_full_while_saving_the_cache_is_one_line(yolo_path, calib_path, tmp_path, capsys, monkeypatch):
    import os

    out = tmp_path / "out" / "stats.qdqc"
    out.parent.mkdir()
    monkeypatch.setattr(os, "fdopen", _FullDiskFile)
    code = main(["calibrate", str(yolo_path), "--calib", str(calib_path), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == f"qdqc: error: cannot write {out}: No space left on device"
    assert list(out.parent.iterdir()) == []


def test_output_paths_are_checked_before_calibration(yolo_path, calib_path, capsys, monkeypatch) -> None:
    """An unwritable -o is refused before the pipeline (and its calibration) is even set up."""
    import qdq_compiler.cli as cli_module

    def calibration_started(*args, **kwargs):
        raise AssertionError("calibration started")

    monkeypatch.setattr(cli_module, "prepare_pipeline", calibration_started)
    for command in ("compile", "calibrate"):
        code = main([command, str(yolo_path), "--calib", str(calib_path), "-o", "/proc/qdqc/out"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("qdqc: error: cannot write -o /proc/qdqc/out"), err


# Ctrl-C during start-up: importing the command line takes a second or more (onnx, onnxruntime, numpy).
_INTERRUPT_IMPORT = """
import sys

class InterruptOnnxImport:  # Ctrl-C exactly while the CLI imports onnx
    def find_spec(self, name, path=None, target=None):
        if name == "onnx":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, InterruptOnnxImport())
sys.argv = ["qdqc", "--version"]
"""
_ENTRIES = {
    "python -m qdq_compiler": "import runpy\nrunpy.run_module('qdq_compiler', run_name='__main__')\n",
    "console script": "from qdq_compiler.console import run\nrun()\n",
}


@pytest.mark.parametrize("entry", sorted(_ENTRIES))
def test_ctrl_c_while_importing_the_cli_prints_aborted(entry) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_IMPORT + _ENTRIES[entry]],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 130 and done.stderr.strip() == "qdqc: aborted", done.stderr


@pytest.mark.parametrize("delay", [0.0, 1.0, 2.5])
def test_sigint_soon_after_start_prints_aborted(delay, tmp_path) -> None:
    """A real SIGINT `delay` seconds after `python -m qdq_compiler compile` began running our code.

    The clock starts when the child reports (`-X importtime`, on stderr) a first import made inside
    `__main__`'s try, not when the process was spawned: before that the interpreter itself starts (site,
    .pth files, runpy finding `__main__`), a window no program can guard and that grows without bound on a
    loaded machine. A delay of 0 lands in the CLI's imports, the others while it loads or calibrates: the
    bundled detector calibrated on its 64 images copied eight times (512 images) takes about 9 s on an idle
    machine, so the signal always lands while qdqc works.
    """
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import qdq_compiler

    detector = Path(qdq_compiler.__file__).parent / "data" / "detector"
    calib = tmp_path / "calib"
    calib.mkdir()
    for copy in range(8):
        for image in sorted((detector / "calib").glob("*.jpg")):
            (calib / f"{copy}_{image.name}").write_bytes(image.read_bytes())
    args = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "qdq_compiler",
        "compile",
        str(detector / "detector.onnx"),
        "--calib",
        str(calib),
        "-o",
        str(tmp_path / "out.onnx"),
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    startup: list[str] = []
    for line in process.stderr:  # the first import reported after the package's is one made inside the try
        startup.append(line)
        if len(startup) > 1 and startup[-2].rstrip().endswith("| qdq_compiler"):
            break
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    err = "".join(startup) + rest
    assert "Traceback" not in err, err
    assert process.returncode == 130 and err.strip().endswith("qdqc: aborted"), err[-2000:]
    assert not (tmp_path / "out.onnx").exists()


def test_build_checks_its_outputs_and_reports_write_errors_in_one_line(
    yolo_path, tmp_path, capsys, monkeypatch
):
    """build: the engine and --timing-cache paths are checked before TensorRT runs; an OSError while it
    writes the engine files (disk full) is one line, not an internal error."""
    import errno
    import os
    from types import SimpleNamespace

    import qdq_compiler.targets.engine as engine_module

    def build_started(*args, **kwargs):
        raise AssertionError("build started")

    monkeypatch.setattr(engine_module, "build_engine", build_started)
    engine = str(tmp_path / "m.engine")
    for args in (["-o", "/proc/qdqc/m.engine"], ["-o", engine, "--timing-cache", str(tmp_path)]):
        code = main(["build", str(yolo_path), *args])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("qdqc: error: ") and len(err.splitlines()) == 1, err

    def disk_full(model_path, engine_path, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(engine_path))

    monkeypatch.setattr(engine_module, "build_engine", disk_full)
    monkeypatch.setattr(engine_module, "import_tensorrt", lambda: SimpleNamespace(__version__="10.3.0"))
    code = main(["build", str(yolo_path), "-o", engine])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == f"qdqc: error: cannot write {engine}: No space left on device"


def test_an_installed_plugin_that_fails_to_load_is_one_line(monkeypatch, capsys) -> None:
    """An entry-point plugin (group qdq_compiler.passes) whose module raises at import names itself."""
    from types import SimpleNamespace

    import qdq_compiler.pm.registry as registry

    def broken_load():
        raise ImportError("No module named 'numpy_v0'")

    entry = SimpleNamespace(name="broken-passes", value="broken_passes.module", load=broken_load)
    monkeypatch.setattr(registry, "entry_points", lambda group: [entry])
    monkeypatch.setattr(registry, "_LOADED", False)
    code = main(["passes"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == (
        "qdqc: error: installed pass plugin 'broken-passes' (broken_passes.module) "
        "failed to load: ImportError: No module named 'numpy_v0'"
    )
