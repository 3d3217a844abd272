"""`qdqc opt` with calibration flags, and reproducers whose printed command replays the failure exactly."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import qdq_compiler.pm.registry as registry
from qdq_compiler.accuracy.numerics import compare_outputs, run_outputs
from qdq_compiler.cli import main
from qdq_compiler.examples import image_like_batch
from qdq_compiler.models.yolov7_tiny import build_yolov7_tiny
from qdq_compiler.passes.calibrate import Calibrate
from qdq_compiler.pipelines import TRT_INT8_FROM_QDQ

RESOLUTION = 96
DOCS = Path(__file__).resolve().parent.parent / "docs"
FAILING_PASS = "fail-for-replay-test"
PLUGIN = f'''
import os

from qdq_compiler.pm import Pass, PassResult, register_pass


@register_pass
class FailForReplayTest(Pass):
    name = "{FAILING_PASS}"
    summary = "Raises while QDQC_TEST_FAIL is set (reproducer tests)."

    def run(self, model, ctx):
        if os.environ.get("QDQC_TEST_FAIL"):
            raise RuntimeError("failing as asked")
        return PassResult(modified=False)
'''


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Passes registered by this test's plugin go away with it."""
    registry.load_builtin_passes()
    monkeypatch.setattr(registry, "_PASSES", dict(registry._PASSES))


def _new_process() -> None:
    """What a fresh `qdqc` process starts without: the plugin's pass and module (a replay loads it again)."""
    registry._PASSES.pop(FAILING_PASS, None)
    sys.modules.pop("qdqc_plugin_failing", None)
    registry._PLUGIN_FILES.difference_update({f for f in registry._PLUGIN_FILES if f.name == "failing.py"})


@pytest.fixture
def float_path(tmp_path) -> Path:
    path = tmp_path / "float.onnx"
    onnx.save(build_yolov7_tiny(width=0.125, resolution=RESOLUTION, num_classes=5, seed=3), path)
    return path


@pytest.fixture
def calib_path(tmp_path) -> Path:
    path = tmp_path / "calib.npy"
    np.save(path, image_like_batch(6, RESOLUTION))
    return path


@pytest.fixture
def plugin_dir(tmp_path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "failing.py").write_text(PLUGIN)
    return folder


def _replay_command(folder: Path) -> list[str]:
    """The command the reproducer's README prints, split as a shell would."""
    lines = (folder / "README.txt").read_text().splitlines()
    command = lines[lines.index("replay with:") + 1].strip()
    words = shlex.split(command)
    assert words[:2] == ["qdqc", "opt"], command
    return words[1:]


def _output_of(args: list[str]) -> Path:
    return Path(args[args.index("-o") + 1])


def _same_model(replayed: Path, direct: Path) -> None:
    """The same graph and the same metadata but the pipeline stamp (a replay runs only the rest of it)."""
    first, second = onnx.load(str(replayed)), onnx.load(str(direct))
    assert first.graph.SerializeToString() == second.graph.SerializeToString()

    def metadata(model):
        return {p.key: p.value for p in model.metadata_props if p.key != "qdq_compiler.pipeline"}

    assert metadata(first) == metadata(second)


def _close_to_float(compiled: Path, float_path: Path) -> None:
    feed = [{"images": image_like_batch(1, RESOLUTION, seed=seed)} for seed in (7, 8)]
    reference = run_outputs(onnx.load(str(float_path)), feed)
    assert compare_outputs(reference, run_outputs(onnx.load(str(compiled)), feed)).sqnr_db > 15.0


def test_opt_takes_the_calibration_data_flags(float_path, calib_path, tmp_path, capsys) -> None:
    out, compiled = tmp_path / "opt.onnx", tmp_path / "compiled.onnx"
    args = ["--calib", str(calib_path), "--batch-size", "1", "--calib-limit", "4"]
    assert main(["-q", "compile", str(float_path), "-o", str(compiled), "--no-check", *args]) == 0
    pipeline = onnx.load(str(compiled)).metadata_props
    text = {p.key: p.value for p in pipeline}["qdq_compiler.pipeline"]
    assert (
        main(
            [
                "opt",
                str(float_path),
                "--pipeline",
                text,
                "-o",
                str(out),
                *args,
                "--print-ir-after",
                "calibrate",
            ]
        )
        == 0
    )
    _same_model(out, compiled)
    _close_to_float(out, float_path)
    dumped = capsys.readouterr().err
    assert "// ----- IR after calibrate -----" in dumped and re.search(r"\(amax \d", dumped)
    assert "meta qdq_compiler.layer_decisions = [" in dumped


def test_opt_refuses_calibration_flags_without_calibrate(float_path, calib_path, tmp_path, capsys) -> None:
    code = main(
        [
            "opt",
            str(float_path),
            "--pipeline",
            "prepare",
            "-o",
            str(tmp_path / "o.onnx"),
            "--calib",
            str(calib_path),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "--calib configures calibrate, which this pipeline does not run" in err


def test_opt_refuses_a_cache_of_another_model_in_one_line(float_path, calib_path, tmp_path, capsys) -> None:
    cache, placed = tmp_path / "stats.qdqc", tmp_path / "placed.onnx"
    assert main(["-q", "calibrate", str(float_path), "--calib", str(calib_path), "-o", str(cache)]) == 0
    assert (
        main(
            ["-q", "opt", str(float_path), "--pipeline", "upgrade-opset,prepare,place-qdq", "-o", str(placed)]
        )
        == 0
    )
    code = main(
        [
            "opt",
            str(placed),
            "--pipeline",
            "calibrate",
            "-o",
            str(tmp_path / "o.onnx"),
            "--calib-cache",
            str(cache),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert "stale calibration cache" in err and "computed from another model" in err and "--calib" in err
    # on the float model it was computed from, opt takes the cache
    assert (
        main(
            [
                "-q",
                "opt",
                str(float_path),
                "--pipeline",
                "trt-int8",
                "-o",
                str(tmp_path / "c.onnx"),
                "--calib-cache",
                str(cache),
            ]
        )
        == 0
    )


def test_a_reproducer_saved_after_strip_qdq_replays(
    float_path, calib_path, plugin_dir, tmp_path, monkeypatch, capsys
) -> None:
    source, direct, folder = tmp_path / "qdq.onnx", tmp_path / "direct.onnx", tmp_path / "repro"
    assert main(["-q", "compile", str(float_path), "-o", str(source), "--calib", str(calib_path)]) == 0
    pipeline = TRT_INT8_FROM_QDQ.replace("strip-qdq,", f"strip-qdq,{FAILING_PASS},")
    monkeypatch.chdir(plugin_dir)  # the plugin is named by a relative path: the replay must not depend on it
    run = ["opt", str(source), "--pipeline", pipeline, "--load-pass-plugin", "failing.py", "--verify-each"]
    assert main(["-q", *run, "-o", str(direct)]) == 0
    _new_process()
    monkeypatch.setenv("QDQC_TEST_FAIL", "1")
    assert main([*run, "-o", str(tmp_path / "failed.onnx"), "--reproducer-dir", str(folder)]) != 0
    assert "failing as asked" in capsys.readouterr().err

    replay = _replay_command(folder)
    assert str((plugin_dir / "failing.py").resolve()) in replay and "--verify-each" in replay
    monkeypatch.chdir(tmp_path)
    _new_process()
    assert main(replay) != 0  # the same failure
    assert "failing as asked" in capsys.readouterr().err and not _output_of(replay).exists()
    _new_process()
    monkeypatch.delenv("QDQC_TEST_FAIL")
    assert main(replay) == 0  # the failure fixed, the rest of the pipeline gives the direct run's model
    _same_model(_output_of(replay), direct)
    _close_to_float(_output_of(replay), float_path)


@pytest.mark.parametrize("data", ["calib", "calib-cache"])
def test_a_reproducer_saved_before_calibrate_replays(
    data, float_path, calib_path, plugin_dir, tmp_path, monkeypatch, capsys
) -> None:
    direct, folder, cache = tmp_path / "direct.onnx", tmp_path / "repro", tmp_path / "stats.qdqc"
    assert (
        main(
            [
                "-q",
                "calibrate",
                str(float_path),
                "--calib",
                str(calib_path),
                "-o",
                str(cache),
                "--batch-size",
                "1",
            ]
        )
        == 0
    )
    monkeypatch.chdir(tmp_path)  # relative data paths: the replay must not depend on them
    given = (
        ["--calib", "calib.npy", "--batch-size", "1", "--calib-limit", "6"]
        if data == "calib"
        else ["--calib-cache", "stats.qdqc"]
    )
    run = [
        "compile",
        "float.onnx",
        "--method",
        "max",
        "--target",
        "trt11",
        "--no-check",
        *given,
        "--load-pass-plugin",
        str(plugin_dir / "failing.py"),
    ]
    assert main(["-q", *run, "-o", str(direct)]) == 0
    _new_process()

    def calibration_fails(self, model, ctx):
        raise RuntimeError("calibration broke")

    with monkeypatch.context() as patched:
        patched.setattr(Calibrate, "run", calibration_fails)
        assert main([*run, "-o", "failed.onnx", "--reproducer-dir", "repro"]) != 0
    assert "calibration broke" in capsys.readouterr().err

    replay = _replay_command(folder)
    pipeline = replay[replay.index("--pipeline") + 1]
    assert pipeline.startswith("calibrate{method=max},") and "legalize-trt{target=trt11}" in pipeline
    if data == "calib":
        assert str(calib_path) in replay and replay[replay.index("--calib-limit") + 1] == "6"
    else:  # the cache is keyed by the float model: the reproducer carries its statistics keyed by its own
        assert Path(replay[replay.index("--calib-cache") + 1]).parent == folder
    assert str((plugin_dir / "failing.py").resolve()) in replay
    monkeypatch.chdir(plugin_dir)
    _new_process()
    assert main(replay) == 0
    _same_model(_output_of(replay), direct)
    _close_to_float(_output_of(replay), float_path)


def test_the_calibrating_example_in_docs_pipelines_runs(float_path, calib_path, tmp_path, monkeypatch):
    text = (DOCS / "pipelines.md").read_text()
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("qdqc opt ")]
    calibrating = [c for c in commands if "calibrate" in c]
    assert calibrating, "docs/pipelines.md shows no calibrating `qdqc opt` command"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").write_bytes(float_path.read_bytes())
    for command in calibrating:
        args = shlex.split(command)[1:]
        assert main(args) == 0, command
        _close_to_float(_output_of(args), float_path)


def test_a_reproducer_whose_replay_flags_fail_still_reports_the_pass_failure(float_path, tmp_path) -> None:
    from qdq_compiler.errors import PassFailure
    from qdq_compiler.ir import load_model
    from qdq_compiler.pm import PassContext, PassManager
    from qdq_compiler.pm.instruments import Reproducer

    def broken_flags(index, folder):
        raise OSError("cache unreadable")

    manager = PassManager("prepare,place-qdq,calibrate")
    manager.instruments.append(Reproducer(tmp_path / "repro", manager.remaining_pipeline, broken_flags))
    with pytest.raises(PassFailure, match="calibrate"):
        manager.run(load_model(float_path), PassContext())  # calibrate without data
    readme = (tmp_path / "repro" / "README.txt").read_text()
    assert "pass 'calibrate' failed" in readme and "could not be prepared: cache unreadable" in readme


def test_a_reproducer_saved_after_calibrate_replays_without_calibration_flags(
    float_path, calib_path, tmp_path, monkeypatch, capsys
) -> None:
    from qdq_compiler.passes.unify_scales import UnifyScales

    direct, folder = tmp_path / "direct.onnx", tmp_path / "repro"
    run = ["compile", str(float_path), "--calib", str(calib_path), "--no-check"]
    assert main(["-q", *run, "-o", str(direct)]) == 0

    def unify_fails(self, model, ctx):
        raise RuntimeError("unify broke")

    with monkeypatch.context() as patched:
        patched.setattr(UnifyScales, "run", unify_fails)
        assert main([*run, "-o", str(tmp_path / "failed.onnx"), "--reproducer-dir", str(folder)]) != 0
    assert "unify broke" in capsys.readouterr().err
    replay = _replay_command(folder)
    assert replay[replay.index("--pipeline") + 1].startswith("unify-scales,")
    assert "--calib" not in replay  # calibrate ran already: its scales are in reproducer.onnx
    assert main(replay) == 0
    _same_model(_output_of(replay), direct)
