"""The Python engine-build path: the real TensorRT build (skipped where TensorRT is absent), the clear error
when it is absent, and the builder settings checked against a recording stand-in for the tensorrt module.

The stand-in proves which calls build_engine makes for each target/version; it cannot prove that TensorRT
accepts them. Only the importorskip tests (run on a Jetson or GPU host) do that.
"""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.errors import QdqcError
from qdq_compiler.targets.engine import EngineBuildError, TensorRTUnavailable, build_engine, import_tensorrt
from qdq_compiler.targets.layer_report import read_layer_report

TRT_SKIP_REASON = "TensorRT is not installable on this machine (no GPU, not on the package index)"


def qdq_conv_onnx(path, batch: int | str = 1) -> None:
    """x -> Q/DQ -> Conv(int8 weights via DQ) -> Relu -> Q/DQ -> y, opset 17."""
    w = np.clip(np.round(np.random.default_rng(0).normal(0, 40, (8, 4, 3, 3))), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(w, "wq"),
        numpy_helper.from_array(np.full(8, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="w_DQ", axis=0),
        helper.make_node("Conv", ["xd", "w", "b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"], name="r_Q"),
        helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["y"], name="r_DQ"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8, 16, 16])
    graph = helper.make_graph(nodes, "qdq_conv", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


# --------------------------------------------------------------------------------------------------------
# Real TensorRT (skipped here)
# --------------------------------------------------------------------------------------------------------


def test_real_build_runs_the_qdq_conv_in_int8(tmp_path):
    pytest.importorskip("tensorrt", reason=TRT_SKIP_REASON)
    qdq_conv_onnx(tmp_path / "m.onnx")
    result = build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", timing_cache=tmp_path / "cache.bin")
    assert result.engine_path.stat().st_size > 0 and (tmp_path / "cache.bin").exists()
    report = read_layer_report(result.layer_info_path)
    convs = [layer for layer in report.layers if "conv" in layer.fused + layer.onnx_nodes]
    assert convs and convs[0].precision == "INT8"


def test_real_build_with_dynamic_batch(tmp_path):
    pytest.importorskip("tensorrt", reason=TRT_SKIP_REASON)
    qdq_conv_onnx(tmp_path / "m.onnx", batch="N")
    with pytest.raises(EngineBuildError, match="dynamic"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine")
    result = build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", shapes="x:1..4x4x16x16")
    assert result.layer_info and result.layer_info.get("Layers")


# --------------------------------------------------------------------------------------------------------
# Without TensorRT
# --------------------------------------------------------------------------------------------------------


def test_missing_tensorrt_raises_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not available") as info:
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine")
    assert isinstance(info.value, QdqcError)
    with pytest.raises(TensorRTUnavailable):
        import_tensorrt()


class _Recorder:
    """A minimal stand-in of the tensorrt module that records what build_engine asks of it."""

    def __init__(self, version: str, dynamic: bool = False, parse_ok: bool = True):
        self.calls: dict[str, object] = {"flags": [], "profiles": []}
        self.module = self._module(version, dynamic, parse_ok)

    def _module(self, version: str, dynamic: bool, parse_ok: bool) -> types.ModuleType:
        calls = self.calls
        trt = types.ModuleType("tensorrt")
        trt.__version__ = version
        trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
        trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
        trt.BuilderFlag = SimpleNamespace(INT8="INT8", FP16="FP16", GPU_FALLBACK="GPU_FALLBACK")
        trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        trt.ProfilingVerbosity = SimpleNamespace(DETAILED="DETAILED")
        trt.DeviceType = SimpleNamespace(DLA="DLA")
        trt.LayerInformationFormat = SimpleNamespace(JSON="JSON")
        tensor = SimpleNamespace(name="x", shape=(-1 if dynamic else 1, 4, 16, 16))
        network = SimpleNamespace(num_inputs=1, get_input=lambda i: tensor)

        class Config:
            def set_flag(self, flag):
                calls["flags"].append(flag)

            def set_memory_pool_limit(self, pool, size):
                calls["workspace"] = (pool, size)

            def create_timing_cache(self, data):
                calls["cache_in"] = data
                return SimpleNamespace(serialize=lambda: b"cache-out")

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache

            def get_timing_cache(self):
                return self.cache

            def add_optimization_profile(self, profile):
                calls["profiles"].append(profile.shapes)

        class Builder:
            def __init__(self, logger):
                self.config = Config()

            def create_network(self, flags):
                calls["network_flags"] = flags
                return network

            def create_builder_config(self):
                return self.config

            def create_optimization_profile(self):
                profile = SimpleNamespace(shapes={})
                profile.set_shape = lambda name, lo, opt, hi: profile.shapes.__setitem__(name, (lo, opt, hi))
                return profile

            def build_serialized_network(self, net, config):
                calls["config"] = config
                return b"engine-bytes"

        error = SimpleNamespace(desc=lambda: "unsupported op", node_name=lambda: "bad_node")
        trt.Builder = Builder
        trt.OnnxParser = lambda net, logger: SimpleNamespace(
            parse_from_file=lambda path: parse_ok, num_errors=1, get_error=lambda i: error
        )
        inspector = SimpleNamespace(get_engine_information=lambda fmt: json.dumps({"Layers": ["conv"]}))
        engine = SimpleNamespace(create_engine_inspector=lambda: inspector)
        trt.Runtime = lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda data: engine)
        return trt


def _build(monkeypatch, tmp_path, version="10.3.0", dynamic=False, parse_ok=True, **kwargs):
    recorder = _Recorder(version, dynamic, parse_ok)
    monkeypatch.setitem(sys.modules, "tensorrt", recorder.module)
    result = build_engine(tmp_path / "m.onnx", tmp_path / "out" / "m.engine", **kwargs)
    return recorder.calls, result


def test_trt10_weakly_typed_settings(monkeypatch, tmp_path):
    (tmp_path / "cache.bin").write_bytes(b"cache-in")
    calls, result = _build(
        monkeypatch, tmp_path, target="orin", workspace_mib=512, timing_cache=tmp_path / "cache.bin"
    )
    assert calls["network_flags"] == 0 and calls["flags"] == ["INT8", "FP16"]
    assert calls["workspace"] == ("WORKSPACE", 512 << 20)
    assert calls["config"].profiling_verbosity == "DETAILED"
    assert calls["cache_in"] == b"cache-in" and (tmp_path / "cache.bin").read_bytes() == b"cache-out"
    assert result.engine_path.read_bytes() == b"engine-bytes"
    assert json.loads(result.layer_info_path.read_text()) == {"Layers": ["conv"]}
    assert result.layer_info_path.name == "m.layers.json" and not result.plan.strongly_typed


def test_trt10_strongly_typed_and_dla(monkeypatch, tmp_path):
    calls, _ = _build(monkeypatch, tmp_path, target="orin", strongly_typed=True, dla_core=1)
    assert calls["network_flags"] == 1 << 1  # 1 << int(STRONGLY_TYPED)
    assert calls["flags"] == ["GPU_FALLBACK"]
    assert calls["config"].default_device_type == "DLA" and calls["config"].DLA_core == 1


def test_trt11_sets_no_precision_or_typing_flags(monkeypatch, tmp_path):
    calls, result = _build(monkeypatch, tmp_path, version="11.4.1", target="thor")
    assert calls["network_flags"] == 0 and calls["flags"] == [] and result.plan.strongly_typed


def test_dynamic_inputs_need_a_profile(monkeypatch, tmp_path):
    with pytest.raises(EngineBuildError, match="dynamic dimensions need shapes: x"):
        _build(monkeypatch, tmp_path, dynamic=True)
    calls, _ = _build(monkeypatch, tmp_path, dynamic=True, shapes="x:1..8x4x16x16")
    assert calls["profiles"] == [{"x": ((1, 4, 16, 16), (8, 4, 16, 16), (8, 4, 16, 16))}]


def test_parser_errors_and_version_mismatch(monkeypatch, tmp_path):
    with pytest.raises(EngineBuildError, match="bad_node: unsupported op"):
        _build(monkeypatch, tmp_path, parse_ok=False)
    with pytest.raises(EngineBuildError, match="asked for TensorRT 11"):
        _build(monkeypatch, tmp_path, trt_major=11)


def test_cli_build_success_path_with_the_recording_stand_in(monkeypatch, tmp_path, capsys):
    """`qdqc build` through cli.main with the stand-in tensorrt: exit 0, the engine and layer report written,
    and the message names them, the TensorRT version and the report-engine step."""
    from qdq_compiler.cli import main

    recorder = _Recorder("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", recorder.module)
    qdq_conv_onnx(tmp_path / "m.onnx")
    engine = tmp_path / "out.engine"
    assert main(["build", str(tmp_path / "m.onnx"), "-o", str(engine)]) == 0
    out = capsys.readouterr().out.strip()
    layers = tmp_path / "out.layers.json"
    assert engine.read_bytes() == b"engine-bytes" and json.loads(layers.read_text()) == {"Layers": ["conv"]}
    assert out == (
        f"wrote {engine} and layer report {layers} (TensorRT 10.3.0); "
        f"next: qdqc report-engine {layers} --model {tmp_path / 'm.onnx'}"
    )
    assert recorder.calls["flags"] == ["INT8", "FP16"]  # an unrecorded model: TensorRT 10 weakly typed


def test_cli_build_without_trt_flag_uses_the_installed_tensorrt(monkeypatch, tmp_path, capsys):
    """Without --trt the build runs on the installed TensorRT (11 here) instead of refusing 'asked for 10';
    a model recorded as trt11 built on TensorRT 10 is strongly typed (no INT8/FP16 flags)."""
    from qdq_compiler.cli import main
    from qdq_compiler.ir import load_model, save_model
    from qdq_compiler.targets.recipe import record_target

    qdq_conv_onnx(tmp_path / "m.onnx")
    recorder = _Recorder("11.4.1")
    monkeypatch.setitem(sys.modules, "tensorrt", recorder.module)
    assert main(["build", str(tmp_path / "m.onnx")]) == 0, capsys.readouterr().err
    assert recorder.calls["flags"] == [] and "(TensorRT 11.4.1)" in capsys.readouterr().out

    model = load_model(tmp_path / "m.onnx")
    record_target(model, "trt11", False)
    save_model(model, tmp_path / "m11.onnx")
    recorder = _Recorder("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", recorder.module)
    assert main(["build", str(tmp_path / "m11.onnx")]) == 0, capsys.readouterr().err
    assert recorder.calls["network_flags"] == 1 << 1 and recorder.calls["flags"] == []
    assert "compiled for trt11" in capsys.readouterr().err


def test_cli_build_without_tensorrt_prints_the_line_and_exits_4(monkeypatch, tmp_path, capsys):
    from qdq_compiler.cli import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    qdq_conv_onnx(tmp_path / "m.onnx")
    assert main(["build", str(tmp_path / "m.onnx")]) == 4
    captured = capsys.readouterr()
    assert captured.out.startswith("trtexec --onnx=") and "TensorRT is not available" in captured.err
    assert not (tmp_path / "m.engine").exists()
