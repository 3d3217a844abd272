"""The example plugin package (examples/qdqc-example-passes), installed by the README's install command.

Its entry point makes `qdqc passes` list clip-to-relu, and any pipeline text can use it; CI (`.ci/run`)
installs it exactly as the README says, and its own tests run from the README's test command (testpaths).
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import onnx
import pytest

from qdq_compiler.accuracy.numerics import compare_outputs, run_outputs
from qdq_compiler.cli import main
from qdq_compiler.models.builder import GraphBuilder
from qdq_compiler.pm.registry import ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "qdqc-example-passes"
NOT_INSTALLED = (
    "the example plugin is not installed: run the README's install command "
    "(python -m pip install -e '.[dev]' -e ./examples/qdqc-example-passes)"
)


def clip_cnn() -> onnx.ModelProto:
    """conv -> Clip(0, +inf) -> conv -> Clip(0, 6) -> conv: one Clip the plugin rewrites, one it keeps."""
    b = GraphBuilder("clip_cnn", seed=3)
    x = b.add_input("images", (1, 3, 32, 32))
    x = b.clip(b.conv(x, 8, 3, 1, name="conv1"), 0.0, float("inf"), name="clip_open")
    x = b.clip(b.conv(x, 8, 3, 2, name="conv2"), 0.0, 6.0, name="relu6")
    b.add_output(b.rename_tensor(b.conv(x, 4, 1, 1, name="conv3"), "out"))
    return b.build()


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "clip_cnn.onnx"
    onnx.save_model(clip_cnn(), path)
    return path


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def float_outputs(batch: np.ndarray) -> dict[str, np.ndarray]:
    return run_outputs(clip_cnn(), [{"images": batch}])


def test_the_example_is_installed_with_its_entry_point() -> None:
    names = {entry.name: entry.value for entry in entry_points(group=ENTRY_POINT_GROUP)}
    assert names.get("clip-to-relu") == "qdqc_example_passes.clip_to_relu", NOT_INSTALLED


def test_qdqc_passes_lists_the_example_pass(capsys) -> None:
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    assert "clip-to-relu: Replace Clip(x, 0, +inf) by Relu(x) (example plugin)." in out, NOT_INSTALLED


def test_opt_runs_the_example_pass_inside_a_pipeline_string(model_path, tmp_path) -> None:
    out = tmp_path / "opt.onnx"
    assert main(["opt", str(model_path), "--pipeline", "clip-to-relu,infer-shapes", "-o", str(out)]) == 0
    optimized = onnx.load(out)
    assert ops(optimized) == ["Conv", "Relu", "Conv", "Clip", "Conv"]
    batch = np.random.default_rng(0).standard_normal((2, 1, 3, 32, 32)).astype(np.float32)
    for sample in batch:  # exactly the float model's numbers
        reference = float_outputs(sample)
        actual = run_outputs(optimized, [{"images": sample}])
        np.testing.assert_array_equal(actual["out"], reference["out"])


def test_compile_runs_the_example_pass_before_trt_int8(model_path, tmp_path) -> None:
    calib = tmp_path / "calib.npy"
    samples = np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)
    np.save(calib, samples)
    out = tmp_path / "int8.onnx"
    argv = ["compile", str(model_path), "--calib", str(calib), "--pipeline", "clip-to-relu,trt-int8"]
    assert main([*argv, "--quantize-head", "-o", str(out)]) == 0
    compiled = onnx.load(out)
    assert "Relu" in ops(compiled) and ops(compiled).count("Clip") == 1  # relu6 stays a Clip
    assert ops(compiled).count("QuantizeLinear") >= 3  # every conv runs INT8
    metadata = {prop.key: prop.value for prop in compiled.metadata_props}
    assert metadata["qdq_compiler.pipeline"].startswith("clip-to-relu,")
    batches = [{"images": sample[None]} for sample in samples[:4]]
    sqnr = compare_outputs(run_outputs(clip_cnn(), batches), run_outputs(compiled, batches)).sqnr_db
    assert sqnr > 25.0, f"INT8 output is {sqnr:.1f} dB from the float model"


def test_ci_installs_and_tests_exactly_as_the_readme_says() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Run the tests", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    readme_commands = [part.strip() for part in block.strip().split("&&")]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    ci_commands = [line for line in ci_lines if line.startswith("python ")]
    assert ci_commands == readme_commands
    assert any(re.search(r"-e \./examples/qdqc-example-passes\b", c) for c in readme_commands)
    assert (EXAMPLE / "pyproject.toml").is_file()
