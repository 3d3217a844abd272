"""IR facade: lossless round trip over every test model, edits, printer, verifier."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from helpers import random_feeds, run_onnx

from qdq_compiler.errors import ModelLoadError, VerificationError
from qdq_compiler.ir import (
    add_constant,
    dump,
    eliminate_dead_code,
    insert_qdq_pair,
    load_model,
    save_model,
    to_networkx,
    to_proto,
    verify,
)
from qdq_compiler.ir.analysis import nodes_reaching
from qdq_compiler.models import TEST_MODELS

MODEL_NAMES = sorted(TEST_MODELS)


@pytest.fixture(scope="module")
def protos() -> dict[str, onnx.ModelProto]:
    return {name: build() for name, build in TEST_MODELS.items()}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_round_trip_is_lossless(name: str, protos, tmp_path) -> None:
    original = protos[name]
    original.metadata_props.add(key="origin", value="test")
    path = tmp_path / "model.onnx"
    save_model(load_model(original), path)
    reloaded = onnx.load(str(path))
    onnx.checker.check_model(reloaded, full_check=True)
    assert {o.domain: o.version for o in reloaded.opset_import} == {
        o.domain: o.version for o in original.opset_import
    }
    assert {p.key: p.value for p in reloaded.metadata_props}["origin"] == "test"
    assert [n.name for n in reloaded.graph.node] == [n.name for n in original.graph.node]
    assert {v.name for v in reloaded.graph.value_info} >= {v.name for v in original.graph.value_info}
    assert [i.name for i in reloaded.graph.input] == [i.name for i in original.graph.input]
    feeds = random_feeds(original)
    for expected, actual in zip(run_onnx(original, feeds), run_onnx(reloaded, feeds)):
        np.testing.assert_array_equal(expected, actual)  # bit-identical


def test_value_info_survives() -> None:
    proto = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y) { a = Relu(x)  y = Neg(a) }"""
    )
    proto.graph.value_info.append(onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, 4]))
    back = to_proto(load_model(proto))
    assert [v.name for v in back.graph.value_info] == ["a"]


def test_external_data_is_loaded(tmp_path) -> None:
    proto = TEST_MODELS["resnet_blocks"]()
    onnx.save_model(
        TEST_MODELS["resnet_blocks"](),
        tmp_path / "ext.onnx",
        save_as_external_data=True,
        location="ext.data",
        size_threshold=0,
    )
    model = load_model(tmp_path / "ext.onnx")
    save_model(model, tmp_path / "copy.onnx")
    feeds = random_feeds(proto)
    np.testing.assert_array_equal(
        run_onnx(proto, feeds)[0], run_onnx(onnx.load(str(tmp_path / "copy.onnx")), feeds)[0]
    )


def test_load_errors_are_one_line(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_model(tmp_path / "bad.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="no ONNX graph"):
        load_model(tmp_path / "empty.onnx")


def test_load_does_not_modify_input_proto() -> None:
    proto = TEST_MODELS["resnet_blocks"]()
    before = proto.SerializeToString()
    model = load_model(proto)
    model.graph.remove(next(iter(model.graph)))
    assert proto.SerializeToString() == before


def test_save_is_atomic_and_deterministic(tmp_path) -> None:
    model = load_model(TEST_MODELS["yolov7_tiny"]())
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    save_model(model, first)
    save_model(load_model(first), second)
    assert first.read_bytes() == second.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def _chain():
    return load_model(
        onnx.parser.parse_model(
            """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y, float[1, 4] z) {
            a = Relu(x)  y = Neg(a)  z = Abs(a)  d = Sigmoid(x)
        }"""
        )
    )


def test_insert_qdq_for_some_consumers() -> None:
    model = _chain()
    a = next(n for n in model.graph if n.op_type == "Relu").outputs[0]
    neg = next(n for n in model.graph if n.op_type == "Neg")
    q, dq = insert_qdq_pair(a, np.float32(0.1), consumers=[neg])
    assert neg.inputs[0] is dq.outputs[0]
    assert next(n for n in model.graph if n.op_type == "Abs").inputs[0] is a
    verify(model)
    assert q.inputs[0] is a and dq.inputs[0] is q.outputs[0]


def test_dead_code_and_sort() -> None:
    model = _chain()
    assert eliminate_dead_code(model.graph) == 1
    assert "Sigmoid" not in [n.op_type for n in model.graph]
    nodes = list(model.graph)
    model.graph.remove(nodes[0])
    model.graph.append(nodes[0])  # Relu now after its users
    with pytest.raises(VerificationError, match="before it is defined"):
        verify(model, check_onnx=False)
    model.graph.sort()
    verify(model)
    assert [n.op_type for n in model.graph][0] == "Relu"


def test_networkx_view() -> None:
    view = to_networkx(_chain().graph)
    relu = next(n for n in view.nodes if n.op_type == "Relu")
    assert sorted(s.op_type for s in view.successors(relu)) == ["Abs", "Neg"]


def test_nodes_reaching_a_target() -> None:
    graph = _chain().graph
    graph.sort()
    by_id = {id(n): n.op_type for n in graph}
    assert {by_id[i] for i in nodes_reaching(graph, lambda n: n.op_type == "Neg")} == {"Relu"}
    assert nodes_reaching(graph, lambda n: n.op_type == "Sigmoid") == set()  # reads only the graph input


def test_add_constant_names_are_unique() -> None:
    model = _chain()
    first = add_constant(model.graph, np.zeros(2, np.float32), "c")
    second = add_constant(model.graph, np.ones(2, np.float32), "c")
    assert first.name == "c" and second.name != "c"


def test_dump_is_stable_and_has_no_addresses() -> None:
    text = dump(load_model(TEST_MODELS["yolov7_tiny"]()))
    assert text == dump(load_model(TEST_MODELS["yolov7_tiny"]()))
    assert not re.search(r"\b0x[0-9a-f]{6,}", text) and " object at " not in text
    assert "sha256:" in text


def test_dump_prints_scales_exactly_and_names_new_values() -> None:
    node_value = ir.Value(name=None)
    model = load_model(
        onnx.parser.parse_model(
            """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y) { y = Relu(x) }"""
        )
    )
    relu = next(iter(model.graph))
    extra = ir.Node("", "Neg", [relu.outputs[0]], outputs=[node_value])
    model.graph.append(extra)
    add_constant(model.graph, np.array(0.0123456789, np.float32), "s")
    text = dump(model)
    assert "%val_0: ? = Neg(%y)  # node_Neg_0" in text  # onnx-ir names new values and nodes by counter
    assert "const %s = float<scalar> 0.012345679" in text


def test_round_trip_of_the_pytorch_exported_detector(tmp_path) -> None:
    from qdq_compiler.detect import bundled

    original = onnx.load(str(bundled.model_path()))
    save_model(load_model(original), tmp_path / "detector.onnx")
    reloaded = onnx.load(str(tmp_path / "detector.onnx"))
    onnx.checker.check_model(reloaded, full_check=True)
    assert [n.name for n in reloaded.graph.node] == [n.name for n in original.graph.node]
    feeds = random_feeds(original)
    for expected, actual in zip(run_onnx(original, feeds), run_onnx(reloaded, feeds)):
        np.testing.assert_array_equal(expected, actual)
