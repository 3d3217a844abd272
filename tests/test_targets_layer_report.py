"""Reading TensorRT layer reports (10.x and 11.x JSON, names-only) and comparing them with the prediction."""

from __future__ import annotations

import json

import pytest

from qdq_compiler.targets.fusion import FusionReport, LayerPrediction, Reformat
from qdq_compiler.targets.layer_report import (
    LayerReportError,
    compare_with_prediction,
    format_comparison,
    format_layer_report,
    precision_of,
    read_layer_report,
)

INT8_CHW32 = "Thirty-two wide channel vectorized row major Int8 format"
TRT10_DETAILED = {
    "Layers": [
        {
            "Name": "Reformatting CopyNode for Input Tensor 0 to x_Q + conv1 + relu1",
            "LayerType": "Reformat",
            "Inputs": [
                {"Name": "x", "Dimensions": [1, 3, 64, 64], "Format/Datatype": "Row major linear FP32 format"}
            ],
            "Outputs": [
                {
                    "Name": "x_r",
                    "Dimensions": [1, 3, 64, 64],
                    "Format/Datatype": "Channel major FP32 format where channel % 4 == 0",
                }
            ],
        },
        {
            "Name": "x_Q + conv1 + relu1",
            "LayerType": "CaskConvolution",
            "Inputs": [{"Name": "x_r", "Format/Datatype": INT8_CHW32}],
            "Outputs": [{"Name": "y", "Format/Datatype": INT8_CHW32}],
            "Weights": {"Type": "Int8", "Count": 432},
            "Metadata": "[ONNX Layer: conv1]\x1e[ONNX Layer: relu1]",
            "TacticName": "sm87_xmma_fprop_implicit_gemm_i8i8_i8i32_f32",
        },
        {
            "Name": "conv2",
            "LayerType": "CaskConvolution",
            "Inputs": [{"Name": "y2", "Format/Datatype": "Channel major FP16 format (k = 8)"}],
            "Outputs": [{"Name": "z", "Format/Datatype": "Channel major FP16 format (k = 8)"}],
            "Metadata": "[ONNX Layer: conv2]",
        },
        {
            "Name": "PWN(sig, mul)",
            "LayerType": "PointWiseV2",
            "Inputs": [{"Name": "z", "Format/Datatype": "Half"}],
            "Outputs": [{"Name": "out", "Format/Datatype": "Float"}],
        },
    ],
    "Bindings": ["x", "out"],
}

TRT11_DETAILED = {
    "Layers": [
        {
            "Name": "conv1",
            "LayerType": "CaskConvolution",
            "Inputs": [
                {"Name": "x", "DataType": "Int8", "Format": "Thirty-two wide channel vectorized row major"}
            ],
            "Outputs": [{"Name": "y", "DataType": "Half", "Format": "Channel major (k = 8)"}],
        },
    ],
    "I/O Tensors": [
        {"Name": "x", "IOMode": "Input", "DataType": "Int8"},
        {"Name": "y", "IOMode": "Output", "DataType": "Half"},
    ],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Row major linear INT8 format", "INT8"),
        ("Thirty-two wide channel vectorized row major Int8 format.", "INT8"),
        ("Channel major FP16 format (k = 8)", "FP16"),
        ("Half", "FP16"),
        ("Float", "FP32"),
        ("Row major linear FP32 format", "FP32"),
        ("Row major linear Int32 format", "INT32"),
        ("BFloat16", "BF16"),
        ("N/A due to dynamic shapes", "unknown"),
        ("", "unknown"),
    ],
)
def test_precision_of_format_strings(text, expected):
    assert precision_of(text) == expected


def test_read_trt10_detailed_report(tmp_path):
    path = tmp_path / "layers.json"
    path.write_text(json.dumps(TRT10_DETAILED))
    report = read_layer_report(path)
    assert report.detailed and report.io_tensors == ["x", "out"]
    reformat, conv1, conv2, pwn = report.layers
    assert reformat.is_reformat and reformat.fused == []
    assert [r.name for r in report.reformats] == [reformat.name]
    assert (conv1.precision, conv1.fused, conv1.onnx_nodes) == (
        "INT8",
        ["x_Q", "conv1", "relu1"],
        ["conv1", "relu1"],
    )
    assert conv1.tactic.startswith("sm87")
    assert conv2.precision == "FP16"
    assert (pwn.precision, pwn.fused, pwn.output_precisions) == ("FP16", ["sig", "mul"], ["FP32"])
    assert (report.count("INT8"), report.count("FP16")) == (1, 2)
    text = format_layer_report(report)
    assert "REFORMAT" in text and "reformat layers: 1" in text


def test_read_trt11_report_with_split_datatype_and_io_tensors():
    report = read_layer_report(TRT11_DETAILED)
    (conv,) = report.layers
    assert (conv.precision, conv.input_precisions, conv.output_precisions) == ("INT8", ["INT8"], ["FP16"])
    assert report.io_tensors == ["x", "y"]


def test_names_only_report():
    report = read_layer_report(
        {"Layers": ["x_Q + conv1 + relu1", "Reformatting CopyNode for Output 0"], "Bindings": ["x", "y"]}
    )
    assert not report.detailed
    assert [layer.precision for layer in report.layers] == ["unknown", "unknown"]
    assert report.layers[0].fused == ["x_Q", "conv1", "relu1"] and report.layers[1].is_reformat


def test_profile_times_are_merged(tmp_path):
    profile = [{"count": 10}, {"name": "conv2", "timeMs": 1.5, "averageMs": 0.15, "percentage": 40.0}]
    (tmp_path / "p.json").write_text(json.dumps(profile))
    report = read_layer_report(TRT10_DETAILED, profile=tmp_path / "p.json")
    times = {layer.name: layer.avg_ms for layer in report.layers}
    assert times["conv2"] == pytest.approx(0.15) and times["PWN(sig, mul)"] is None
    assert "0.150 ms" in format_layer_report(report)


def test_bad_reports_raise(tmp_path):
    with pytest.raises(LayerReportError, match="Layers"):
        read_layer_report({"Bindings": []})
    with pytest.raises(LayerReportError, match="not found"):
        read_layer_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LayerReportError, match="not JSON"):
        read_layer_report(tmp_path / "bad.json")


def test_compare_with_prediction_side_by_side():
    prediction = FusionReport(
        layers=[
            LayerPrediction("conv1", "Conv", 100, "int8", "int8"),
            LayerPrediction("conv2", "Conv", 100, "int8", "float"),  # the engine ran it in FP16: disagreement
            LayerPrediction("head", "Conv", 10, "float", "float", "excluded"),  # not in the engine report
        ],
        requantizations=[],
        reformats=[Reformat("x_Q", "Q", "quantizes graph input")],
        int8_ops=[],
        split_fusions=[],
        cancelled_pairs=0,
        moves=[],
        total_macs=210,
        int8_macs=200,
    )
    comparison = compare_with_prediction(read_layer_report(TRT10_DETAILED), prediction)
    rows = {row.layer: row for row in comparison.rows}
    assert (rows["conv1"].engine_precision, rows["conv1"].agree) == ("INT8", True)
    assert rows["conv1"].engine_layer == "x_Q + conv1 + relu1"
    assert (rows["conv2"].engine_precision, rows["conv2"].agree) == ("FP16", False)
    assert (rows["head"].engine_precision, rows["head"].agree) == ("not found", None)
    assert [row.layer for row in comparison.disagreements] == ["conv2"]
    assert (comparison.predicted_reformats, comparison.engine_reformats) == (1, 1)
    text = format_comparison(comparison)
    assert "NO" in text and "Disagreements: 1" in text
