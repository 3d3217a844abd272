"""Models past protobuf's 2 GB limit, tested small: the limits are lowered so a ~25 KB model takes every
large-model path (external data in and out, onnxruntime sessions from files, streamed hashes, shape
inference without weights), and protobuf's refusal to serialize a too-large message is emulated.

The real > 2 GB run is ``bench/bench_large.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf.message import EncodeError
from onnx import TensorProto, helper

import qdq_compiler.ir.external as external
import qdq_compiler.ir.io as io
from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.calib import model_sha256
from qdq_compiler.cli import main
from qdq_compiler.ir import load_model, save_model

LIMIT = 10_000  # LARGE_MODEL_BYTES in tests: every tensor of the model below is smaller, all together larger
PROTOBUF_LIMIT = 20_000  # emulated protobuf limit (the real pair: 256 MiB and 2 GiB)


def _small_cnn() -> onnx.ModelProto:
    """Conv-Relu x3, Flatten, MatMul+Add+Relu, MatMul+Add: ~23 KB of weights, no tensor over 10 KB. Opset 12,
    so upgrade-opset converts it too."""
    rng = np.random.default_rng(7)
    inits, nodes = [], []

    def weight(name: str, shape: tuple[int, ...], scale: float) -> str:
        array = (rng.standard_normal(shape) * scale).astype(np.float32)
        inits.append(onnx.numpy_helper.from_array(array, name))
        return name

    x = "x"
    for index, (cin, cout, stride) in enumerate([(3, 8, 1), (8, 16, 2), (16, 16, 2)]):
        w = weight(f"conv{index}.w", (cout, cin, 3, 3), 0.4)
        b = weight(f"conv{index}.b", (cout,), 0.1)
        nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [f"c{index}"], f"conv{index}", pads=[1, 1, 1, 1], strides=[stride, stride]
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"], f"relu{index}"))
        x = f"r{index}"
    nodes.append(helper.make_node("Flatten", [x], ["flat"], "flatten"))
    nodes += [
        helper.make_node("MatMul", ["flat", weight("fc0.w", (256, 8), 0.1)], ["m0"], "fc0"),
        helper.make_node("Add", ["m0", weight("fc0.b", (8,), 0.1)], ["a0"], "fc0_bias"),
        helper.make_node("Relu", ["a0"], ["h0"], "fc0_relu"),
        helper.make_node("MatMul", ["h0", weight("fc1.w", (8, 10), 0.3)], ["m1"], "fc1"),
        helper.make_node("Add", ["m1", weight("fc1.b", (10,), 0.1)], ["y"], "fc1_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    return model


def _lower_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower the large-model size and the external-data threshold; emulate protobuf refusing big messages."""
    monkeypatch.setattr(external, "LARGE_MODEL_BYTES", LIMIT)
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD_BYTES", 1000)
    for cls in (onnx.ModelProto, onnx.GraphProto):
        original = cls.SerializeToString

        def serialize(self, *args, _original=original, **kwargs):
            if self.ByteSize() > PROTOBUF_LIMIT:
                raise EncodeError("Failed to serialize proto (emulated 2 GB limit)")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "SerializeToString", serialize)


@pytest.fixture
def tiny_limits(monkeypatch):
    _lower_limits(monkeypatch)


def _save_external(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=0,
    )
    return path


@pytest.fixture
def large_input(tmp_path) -> tuple[Path, Path]:
    """The small CNN as model.onnx + model.onnx.data, and 8 calibration samples."""
    (tmp_path / "in").mkdir()
    model = _save_external(_small_cnn(), tmp_path / "in" / "model.onnx")
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(3).random((8, 3, 16, 16), dtype=np.float32))
    return model, calib


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _outputs(path: Path, calib: Path) -> dict[str, np.ndarray]:
    samples = np.load(calib)
    return run_outputs(onnx.load(str(path)), [{"x": sample[None]} for sample in samples])


def test_emulated_limit_refuses_the_model(tiny_limits) -> None:
    """The emulation is real: the small CNN cannot be serialized whole under the lowered limit."""
    with pytest.raises(EncodeError):
        _small_cnn().SerializeToString()
    assert external.proto_is_large(_small_cnn())


def test_compile_large_model_end_to_end(tiny_limits, large_input, tmp_path) -> None:
    model, calib = large_input
    before = _digest(model.parent)
    out = tmp_path / "out" / "compiled.onnx"
    args = ["-q", "compile", str(model), "-o", str(out), "--calib", str(calib), "--verify-each"]
    assert main(args) == 0  # --verify-each: the onnx checker after every pass, on a weightless copy
    assert _digest(model.parent) == before  # the input and its external data are untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["compiled.onnx", "compiled.onnx.data"]
    skeleton = onnx.load(str(out), load_external_data=False)
    external_tensors = [t.name for t in skeleton.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert "fc0.w_quantized" in external_tensors or len(external_tensors) >= 4
    assert all(
        entry.value == "compiled.onnx.data"
        for t in skeleton.graph.initializer
        for entry in t.external_data
        if entry.key == "location"
    )
    onnx.checker.check_model(str(out), full_check=True)
    assert sum(node.op_type == "QuantizeLinear" for node in skeleton.graph.node) >= 4

    reference = _outputs(model, calib)["y"]
    compiled = _outputs(out, calib)["y"]
    assert sqnr_db(reference, compiled) > 25.0


def test_large_and_small_routes_give_the_same_model(large_input, tmp_path, monkeypatch) -> None:
    """Compiling with the lowered limits writes the same tensors and graph as the ordinary route."""
    model, calib = large_input
    small = tmp_path / "small.onnx"
    assert main(["-q", "compile", str(model), "-o", str(small), "--calib", str(calib)]) == 0
    assert not (tmp_path / "small.onnx.data").exists()
    with monkeypatch.context() as patch:
        _lower_limits(patch)
        large = tmp_path / "large.onnx"
        assert main(["-q", "compile", str(model), "-o", str(large), "--calib", str(calib)]) == 0
    assert (tmp_path / "large.onnx.data").exists()
    small_proto, large_proto = onnx.load(str(small)), onnx.load(str(large))
    small_weights = {t.name: onnx.numpy_helper.to_array(t) for t in small_proto.graph.initializer}
    large_weights = {t.name: onnx.numpy_helper.to_array(t) for t in large_proto.graph.initializer}
    assert small_weights.keys() == large_weights.keys()
    for name, array in small_weights.items():
        np.testing.assert_array_equal(large_weights[name], array, err_msg=name)
    assert small_proto.graph.node == large_proto.graph.node
    np.testing.assert_array_equal(_outputs(small, calib)["y"], _outputs(large, calib)["y"])


def test_large_output_is_byte_identical_and_replaces_stale_data(tiny_limits, large_input, tmp_path) -> None:
    model, calib = large_input
    first, second = tmp_path / "a" / "m.onnx", tmp_path / "b" / "m.onnx"
    second.parent.mkdir()
    (second.parent / "m.onnx.data").write_bytes(b"stale data from an older run" * 1000)
    for out in (first, second):
        assert main(["-q", "compile", str(model), "-o", str(out), "--calib", str(calib)]) == 0
    assert _digest(first.parent) == _digest(second.parent)
    assert sorted(_digest(second.parent)) == ["m.onnx", "m.onnx.data"]  # no temporary files left


def test_failed_large_save_leaves_the_old_pair(tiny_limits, tmp_path, monkeypatch) -> None:
    model = load_model(_small_cnn())
    out = save_model(model, tmp_path / "m.onnx")
    old = _digest(tmp_path)
    assert sorted(old) == ["m.onnx", "m.onnx.data"]

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.ir, "save", full_disk)
    with pytest.raises(OSError):
        save_model(model, out)
    assert _digest(tmp_path) == old


def test_output_may_not_overwrite_the_inputs_external_data(tiny_limits, tmp_path, capsys) -> None:
    """Input a.onnx keeps its weights in b.onnx.data; writing b.onnx would replace that file."""
    _save_external(_small_cnn(), tmp_path / "b.onnx")
    (tmp_path / "b.onnx").rename(tmp_path / "a.onnx")
    before = (tmp_path / "b.onnx.data").read_bytes()
    np.save(tmp_path / "calib.npy", np.zeros((2, 3, 16, 16), np.float32) + 0.5)
    code = main(
        [
            "compile",
            str(tmp_path / "a.onnx"),
            "-o",
            str(tmp_path / "b.onnx"),
            "--calib",
            str(tmp_path / "calib.npy"),
        ]
    )
    err = capsys.readouterr().err
    assert code not in (0, 3)
    assert "b.onnx.data" in err and "Traceback" not in err
    assert (tmp_path / "b.onnx.data").read_bytes() == before


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_missing_external_data_is_one_line(large_input, capsys, damage) -> None:
    model, calib = large_input
    data = model.with_name("model.onnx.data")
    if damage == "missing":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[:100])
    code = main(["compile", str(model), "-o", str(model.parent / "o.onnx"), "--calib", str(calib)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code not in (0, 3)
    assert len(err) == 1 and err[0].startswith("qdqc: error:") and "model.onnx.data" in err[0]
    assert ("not found" if damage == "missing" else "truncated") in err[0]


def test_model_hash_is_the_same_streamed(monkeypatch) -> None:
    """Hashes of models within the limit are unchanged; past it the graph is hashed in pieces, same bytes."""
    proto = _small_cnn()
    whole_bytes, whole_hash = proto.graph.SerializeToString(deterministic=True), model_sha256(proto)
    with monkeypatch.context() as patch:
        _lower_limits(patch)
        pieces = list(external.serialized_chunks(proto.graph))
        assert len(pieces) > 1
        assert b"".join(pieces) == whole_bytes
        assert model_sha256(proto) == whole_hash


def test_run_outputs_from_a_file_matches_bytes(large_input, monkeypatch) -> None:
    model, calib = large_input
    ordinary = _outputs(model, calib)["y"]
    written = []
    original = external.write_with_external_data
    monkeypatch.setattr(
        external,
        "write_with_external_data",
        lambda *args, **kwargs: written.append(args[1]) or original(*args, **kwargs),
    )
    monkeypatch.setattr(external, "LARGE_MODEL_BYTES", LIMIT)
    np.testing.assert_array_equal(_outputs(model, calib)["y"], ordinary)
    assert written and not Path(written[0]).exists()  # the temporary files are gone
