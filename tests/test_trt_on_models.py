"""Lint and fusion prediction on whole models: our compiled YOLOv7-tiny vs onnxruntime's quantize_static."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from qdq_compiler.cli import main
from qdq_compiler.examples import image_like_batch
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.models import build_yolov7_tiny
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.targets import lint_model, predict_fusions

RESOLUTION = 64
HEAD = {"detect.0.conv", "detect.1.conv", "detect.2.conv"}


@pytest.fixture(scope="module")
def float_model() -> onnx.ModelProto:
    return build_yolov7_tiny(width=0.25, resolution=RESOLUTION)


@pytest.fixture(scope="module")
def samples() -> list[dict[str, np.ndarray]]:
    images = image_like_batch(8, RESOLUTION)
    return [{"images": images[i : i + 1]} for i in range(len(images))]


@pytest.fixture(scope="module")
def ours(float_model, samples) -> onnx.ModelProto:
    model = load_model(float_model)
    PassManager("trt-int8").run(model, PassContext(calibration_data=samples))
    return to_proto(model)


@pytest.fixture(scope="module")
def onnxruntime_quantized(float_model, samples, tmp_path_factory) -> onnx.ModelProto:
    folder = tmp_path_factory.mktemp("ort")
    source, target = folder / "float.onnx", folder / "int8.onnx"
    onnx.save_model(float_model, source)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(samples)

        def get_next(self):
            return next(self._items, None)

    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return onnx.load(str(target))


def test_our_model_lints_clean(ours) -> None:
    assert [v for v in lint_model(load_model(ours)) if v.severity == "error"] == []


def test_our_model_is_predicted_fully_fused(ours) -> None:
    report = predict_fusions(load_model(ours))
    float_layers = {layer.name for layer in report.layers if layer.precision != "int8"}
    assert float_layers == HEAD  # every Conv INT8 (the RGB stem included) except the head we keep float
    assert report.requantizations == []
    # The only standalone Q is the graph input's (unavoidable: float pixels enter the INT8 stem).
    assert [r.node for r in report.reformats] == ["images_Q"]
    float_macs = sum(layer.macs or 0 for layer in report.layers if layer.name in HEAD)
    assert report.int8_macs == report.total_macs - float_macs


def test_onnxruntime_model_shows_its_problems(onnxruntime_quantized) -> None:
    model = load_model(onnxruntime_quantized)
    report = predict_fusions(model)
    assert len(report.requantizations) > 0  # Concat/MaxPool scale mismatches
    assert any(r.kind in ("Q", "DQ") for r in report.reformats)
    assert any(v.severity == "error" for v in lint_model(model))


def test_cli_lint_and_explain(ours, onnxruntime_quantized, tmp_path, capsys) -> None:
    good, bad = tmp_path / "ours.onnx", tmp_path / "ort.onnx"
    onnx.save_model(ours, good)
    onnx.save_model(onnxruntime_quantized, bad)
    assert main(["lint", str(good)]) == 0
    assert main(["lint", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "error" in out and "zero-point" in out or "quant-type" in out
    assert main(["explain", str(good), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["requantizations"] == []


def test_cli_build_without_tensorrt_prints_trtexec(ours, tmp_path, capsys) -> None:
    pytest.importorskip("onnx")  # always present; the TensorRT-present path is tested in test_targets_engine
    path = tmp_path / "ours.onnx"
    onnx.save_model(ours, path)
    assert main(["build", str(path), "--target", "orin", "--trt", "10", "--print-trtexec"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trtexec --onnx=") and "--int8 --fp16" in out and "--exportLayerInfo=" in out
    assert main(["build", str(path), "--target", "thor", "--trt", "11", "--print-trtexec"]) == 0
    out = capsys.readouterr().out
    assert "--stronglyTyped" in out and "--int8" not in out
    assert main(["build", str(path), "--target", "x86", "--dla", "0"]) != 0
    assert "DLA" in capsys.readouterr().err
