"""Flags are edits of pass options, named pipelines take options, and no command copies pipeline text."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from qdq_compiler.accuracy import compare_outputs
from qdq_compiler.accuracy.numerics import run_outputs
from qdq_compiler.calib import open_calibration_data
from qdq_compiler.cli import main
from qdq_compiler.errors import PipelineError
from qdq_compiler.ir import load_model
from qdq_compiler.pm import all_passes, format_pipeline, get_pipeline, parse_pipeline
from qdq_compiler.targets import lint_model

ROOT = Path(__file__).resolve().parents[1]
DETECTOR = ROOT / "qdq_compiler" / "data" / "detector" / "detector.onnx"
DETECTOR_CALIB = ROOT / "qdq_compiler" / "data" / "detector" / "calib"
TRT_INT8_SPELLED_OUT = (
    "upgrade-opset,prepare,equalize,place-qdq,calibrate,unify-scales,fold-scales,cleanup-qdq,"
    "{legalize},verify-trt"
)


def options_of(passes, name: str):
    (found,) = [p.options for p in passes if p.name == name]
    return found


def metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


# ---- 1. flags set only what the text left unset ----


def test_text_only_trt11_compile_of_the_detector_is_a_valid_trt11_model(tmp_path, capsys) -> None:
    """The `--target` flag's default no longer stamps trt10 over `legalize-trt{target=trt11}`."""
    out = tmp_path / "det11.onnx"
    pipeline = TRT_INT8_SPELLED_OUT.format(legalize="legalize-trt{target=trt11}")
    args = ["compile", str(DETECTOR), "-o", str(out), "--calib", str(DETECTOR_CALIB), "--calib-limit", "8"]
    assert main([*args, "--pipeline", pipeline, "--no-check"]) == 0
    stamped = metadata(out)["qdq_compiler.pipeline"]
    assert "legalize-trt{target=trt11}" in stamped and "upgrade-opset{min=19}" in stamped
    compiled = load_model(out)
    assert compiled.opset_imports[""] == 19
    errors = [v for v in lint_model(compiled) if v.severity == "error"]
    assert errors == []
    float_proto = onnx.load(str(DETECTOR))
    batches = list(open_calibration_data(str(DETECTOR_CALIB), float_proto, limit=2))
    reference = run_outputs(float_proto, batches)
    got = run_outputs(onnx.load(str(out)), batches)
    assert {name: value.dtype for name, value in got.items()} == {n: np.dtype(np.float32) for n in reference}
    assert compare_outputs(reference, got).sqnr_db > 25.0


def test_a_flag_that_contradicts_the_text_is_one_line(yolo_path, calib_path, tmp_path, capsys) -> None:
    pipeline = TRT_INT8_SPELLED_OUT.format(legalize="legalize-trt{target=trt11}")
    args = ["compile", str(yolo_path), "-o", str(tmp_path / "o.onnx"), "--calib", str(calib_path)]
    assert main([*args, "--pipeline", pipeline, "--target", "trt10"]) != 0
    err = capsys.readouterr().err.strip()
    assert err == ("qdqc: error: --target trt10 contradicts legalize-trt{target=trt11} in the pipeline")
    assert not (tmp_path / "o.onnx").exists()


def test_a_flag_that_agrees_with_the_text_or_fills_a_gap_is_applied() -> None:
    from qdq_compiler.cli_options import apply_compile_flags

    passes = parse_pipeline("upgrade-opset,legalize-trt{io-fp16=true}")
    apply_compile_flags(passes, {"target": "trt11", "io_fp16": True})
    assert options_of(passes, "legalize-trt").target == "trt11"
    assert options_of(passes, "legalize-trt").io_fp16 is True
    assert options_of(passes, "upgrade-opset").min == 19  # --target trt11 raises the opset as before
    untouched = parse_pipeline("upgrade-opset,legalize-trt{io-fp16=true}")
    apply_compile_flags(untouched, {"target": None, "io_fp16": False, "weights": None})
    assert options_of(untouched, "legalize-trt").io_fp16 is True  # an unset flag sets nothing


def test_trt11_in_the_text_raises_the_opset_where_the_text_left_it() -> None:
    passes = parse_pipeline("upgrade-opset,legalize-trt{target=trt11}")
    assert options_of(passes, "upgrade-opset").min == 19
    higher = parse_pipeline("upgrade-opset{min=20},legalize-trt{target=trt11}")
    assert options_of(higher, "upgrade-opset").min == 20
    with pytest.raises(PipelineError, match=r"upgrade-opset\{min=13\}.*legalize-trt\{target=trt11\}"):
        parse_pipeline("upgrade-opset{min=13},legalize-trt{target=trt11}")


def test_target_and_weights_help_show_their_defaults(capsys) -> None:
    assert main(["compile", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default: trt10" in out and "default: int8" in out and "default: percentile" in out


# ---- 2. named pipelines take options; one table for options and flags ----


def test_named_pipeline_takes_options_and_round_trips() -> None:
    passes = parse_pipeline("trt-int8{target=trt11,method=max,exclude=[head.*],weights=qdq}")
    assert options_of(passes, "legalize-trt").target == "trt11"
    assert options_of(passes, "upgrade-opset").min == 19
    assert options_of(passes, "calibrate").method == "max"
    assert options_of(passes, "place-qdq").exclude == ("head.*",)
    assert options_of(passes, "fold-scales").weights == "qdq"
    text = format_pipeline(passes)
    again = parse_pipeline(text)
    assert [(p.name, p.options) for p in again] == [(p.name, p.options) for p in passes]
    assert format_pipeline(again) == text


def test_named_pipeline_option_errors_list_the_valid_ones() -> None:
    with pytest.raises(PipelineError, match=r"pipeline 'trt-int8' has no option 'traget'.*target"):
        parse_pipeline("trt-int8{traget=trt11}")
    with pytest.raises(PipelineError, match="missing-scales"):
        parse_pipeline("trt-int8{missing-scales=float}")  # trt-int8 imports no scales
    from_qdq = parse_pipeline("trt-int8-from-qdq{missing-scales=float}")
    assert options_of(from_qdq, "import-scales").missing == "float"


def test_a_flag_is_the_named_pipeline_option(yolo_path, calib_path, tmp_path) -> None:
    by_flag, by_text = tmp_path / "flag.onnx", tmp_path / "text.onnx"
    args = ["-q", "compile", str(yolo_path), "--calib", str(calib_path), "--no-check"]
    flags = ["--method", "max", "--exclude", "model.0.*", "--weights", "qdq"]
    assert main([*args, "-o", str(by_flag), *flags]) == 0
    named = "trt-int8{method=max,exclude=[model.0.*],weights=qdq}"
    assert main([*args, "-o", str(by_text), "--pipeline", named]) == 0
    assert by_flag.read_bytes() == by_text.read_bytes()
    float_proto = onnx.load(str(yolo_path))
    batches = [{float_proto.graph.input[0].name: np.load(calib_path)[:1]}]
    compiled = run_outputs(onnx.load(str(by_text)), batches)
    assert compare_outputs(run_outputs(float_proto, batches), compiled).sqnr_db > 10.0
    graph = onnx.load(str(by_text)).graph
    initializers = {init.name: init.data_type for init in graph.initializer}
    dq_codes = [initializers.get(n.input[0]) for n in graph.node if n.op_type == "DequantizeLinear"]
    q_weights = [initializers.get(n.input[0]) for n in graph.node if n.op_type == "QuantizeLinear"]
    assert onnx.TensorProto.INT8 not in dq_codes and onnx.TensorProto.FLOAT in q_weights  # weights=qdq


def test_a_flag_contradicting_a_named_pipeline_option(yolo_path, calib_path, tmp_path, capsys) -> None:
    args = ["compile", str(yolo_path), "-o", str(tmp_path / "o.onnx"), "--calib", str(calib_path)]
    assert main([*args, "--pipeline", "trt-int8{method=max}", "--method", "entropy"]) != 0
    assert capsys.readouterr().err.strip() == (
        "qdqc: error: --method entropy contradicts trt-int8{method=max} in the pipeline"
    )


def test_passes_lists_each_named_pipelines_options(capsys) -> None:
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    section = out.split("trt-int8:", 1)[1].split("trt-int8-from-qdq:", 1)[0]
    for option in ("target", "io-fp16", "method", "exclude", "exclude-ops", "quantize-head", "weights"):
        assert re.search(rf"^\s+{option}: .*\(--", section, re.MULTILINE), option
    assert "missing-scales" not in section
    assert "missing-scales" in out.split("trt-int8-from-qdq:", 1)[1]


# ---- 3. no command, doc or bench copies pipeline text ----


def _copied_pipelines(text: str, names: set[str]) -> list[str]:
    """Runs of three or more pass or pipeline names joined by commas."""
    found = []
    for match in re.finditer(r"[a-z][a-z0-9-]*(?:\{[^}]*\})?(?:, ?[a-z][a-z0-9-]*(?:\{[^}]*\})?){2,}", text):
        parts = [re.sub(r"\{.*", "", part.strip()) for part in match.group(0).split(",")]
        if sum(part in names for part in parts) >= 3:
            found.append(match.group(0))
    return found


def test_no_command_doc_or_bench_copies_pipeline_text() -> None:
    names = set(all_passes())
    named = {get_pipeline(name) for name in ("prepare", "trt-int8", "trt-int8-from-qdq")}
    files = [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "bench").glob("*.py"),
        *(ROOT / "bench").glob("*.md"),
        *(ROOT / "tools").glob("*.py"),
        *(ROOT / "qdq_compiler").glob("cli*.py"),
        *(ROOT / "qdq_compiler").glob("demo.py"),
    ]
    copies = {}
    for path in files:
        for text in _copied_pipelines(path.read_text(), names):
            if path.name == "pipelines.md" and text in named:
                continue  # the table of named pipelines shows their registered text (checked below)
            copies.setdefault(path.name, []).append(text)
    assert copies == {}


def test_the_docs_table_shows_the_registered_named_pipelines() -> None:
    doc = (ROOT / "docs" / "pipelines.md").read_text()
    for name in ("prepare", "trt-int8", "trt-int8-from-qdq"):
        assert f"| `{name}` | `{get_pipeline(name)}`" in doc


# ---- commands offer only options that act ----


def _offered(command: str, capsys) -> set[str]:
    assert main([command, "--help"]) == 0
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", capsys.readouterr().out))


def test_calibrate_offers_only_options_that_change_the_statistics(capsys) -> None:
    """--method/--calib-override/--weights/--target/--io-fp16 act after calibrate (the saved statistics
    were byte-identical with and without them); calibrate ignored --calib-cache."""
    offered = _offered("calibrate", capsys)
    for inert in ("--method", "--calib-override", "--weights", "--target", "--io-fp16", "--calib-cache"):
        assert inert not in offered, inert
    for acting in (
        "--calib",
        "--batch-size",
        "--calib-limit",
        "--two-pass",
        "--exclude",
        "--exclude-op",
        "--quantize-head",
    ):
        assert acting in offered, acting


def test_calibrate_placement_flags_choose_the_calibrated_tensors(yolo_path, calib_path, tmp_path) -> None:
    from qdq_compiler.calib import load_cache, read_cache_key

    counts = []
    for extra in ([], ["--exclude-op", "Conv"]):
        out = tmp_path / f"stats{len(extra)}.qcache"
        args = ["-q", "calibrate", str(yolo_path), "-o", str(out), "--calib", str(calib_path)]
        assert main([*args, *extra]) == 0
        counts.append(len(load_cache(out, read_cache_key(out))))
    assert counts[0] > 0 and counts[1] == 0


def test_sensitivity_offers_only_options_that_act(capsys) -> None:
    """sensitivity refused --io-fp16 and measures the same numbers with --weights qdq as int8."""
    offered = _offered("sensitivity", capsys)
    assert "--io-fp16" not in offered and "--weights" not in offered
    for acting in ("--target", "--method", "--calib-cache", "--exclude", "--two-pass"):
        assert acting in offered, acting


SAMPLE_VALUES = {
    "target": "trt11",
    "io-fp16": "true",
    "opset": "17",
    "method": "percentile{p=99.9}",
    "overrides": "[head.*=max,op:Concat=percentile{p=99.9}]",
    "two-pass": "false",
    "exclude": "[a.*,b]",
    "exclude-ops": "[Concat]",
    "quantize-head": "true",
    "weights": "qdq",
    "missing-scales": "float",
}


@pytest.mark.parametrize("name", sorted(SAMPLE_VALUES))
def test_every_pipeline_option_prints_text_that_parses_back(name: str) -> None:
    from qdq_compiler.pipelines import PIPELINE_OPTIONS

    assert {option.name for option in PIPELINE_OPTIONS} == set(SAMPLE_VALUES)
    pipeline = "trt-int8-from-qdq" if name == "missing-scales" else "trt-int8"
    passes = parse_pipeline(f"{pipeline}{{{name}={SAMPLE_VALUES[name]}}}")
    assert format_pipeline(passes) != format_pipeline(parse_pipeline(pipeline))  # the option did something
    again = parse_pipeline(format_pipeline(passes))
    assert [(p.name, p.options) for p in again] == [(p.name, p.options) for p in passes]
