"""Pass-to-pass state lives in the model: it survives save/load, shows in IR dumps, stays deterministic."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qdq_compiler.accuracy.numerics import compare_outputs, run_outputs
from qdq_compiler.errors import QdqcError
from qdq_compiler.examples import image_like_batch
from qdq_compiler.ir import dump, load_model, to_proto
from qdq_compiler.ir.qdq import scale_of
from qdq_compiler.models.yolov7_tiny import build_yolov7_tiny
from qdq_compiler.pipelines import PREPARE, TRT_INT8_FROM_QDQ
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.quant.activation_scales import activation_quantizers
from qdq_compiler.quant.decisions import layer_decisions
from qdq_compiler.quant.imported import imported_amax

RESOLUTION = 96
AMAX = "qdq_compiler.amax"


def _float_model() -> onnx.ModelProto:
    return build_yolov7_tiny(width=0.125, resolution=RESOLUTION, num_classes=5, seed=3)


def _calibrated_context() -> PassContext:
    ctx = PassContext()
    ctx.calibration_data = image_like_batch(4, RESOLUTION)
    return ctx


def _reloaded(model) -> object:
    """The model after a save and a load (what a reproducer or `qdqc opt` on an intermediate sees)."""
    return load_model(to_proto(model).SerializeToString())


def _quantized_by_qdqc() -> onnx.ModelProto:
    model = load_model(_float_model())
    PassManager("trt-int8").run(model, _calibrated_context())
    return to_proto(model)


def _feed() -> list[dict[str, np.ndarray]]:
    return [{"images": image_like_batch(1, RESOLUTION, seed=seed)} for seed in (5, 6)]


def test_imported_ranges_survive_a_save_and_load_between_strip_qdq_and_import_scales() -> None:
    """A reproducer saved after strip-qdq failed: 'import-scales needs strip-qdq earlier' (state lost)."""
    source = _quantized_by_qdqc()
    passes = PassManager(TRT_INT8_FROM_QDQ).passes
    split = [p.name for p in passes].index("strip-qdq") + 1

    direct = load_model(source)
    PassManager(TRT_INT8_FROM_QDQ).run(direct, PassContext(), stamp=False)

    first = load_model(source)
    PassManager(passes[:split]).run(first, PassContext(), stamp=False)
    assert imported_amax(_reloaded(first))  # the ranges are in the saved model
    replayed = _reloaded(first)
    PassManager(PassManager(TRT_INT8_FROM_QDQ).passes[split:]).run(replayed, PassContext(), stamp=False)

    assert dump(replayed) == dump(direct)
    float_outputs = run_outputs(_float_model(), _feed())
    assert compare_outputs(float_outputs, run_outputs(to_proto(replayed), _feed())).sqnr_db > 15.0


def test_layer_decisions_with_reasons_survive_a_save_and_load() -> None:
    model = load_model(_float_model())
    PassManager(f"{PREPARE},place-qdq").run(model, PassContext(), stamp=False)
    decisions = layer_decisions(model)
    assert any(d.int8 for d in decisions.values())
    assert any(not d.int8 and d.reason for d in decisions.values())
    assert layer_decisions(_reloaded(model)) == decisions
    assert list(layer_decisions(_reloaded(model))) == list(decisions)  # graph order kept


def test_calibrated_amax_is_kept_on_each_activation_and_shown_in_the_dump() -> None:
    model = load_model(_float_model())
    PassManager(f"{PREPARE},place-qdq,calibrate{{method=max}}").run(model, _calibrated_context(), stamp=False)
    reloaded = _reloaded(model)
    quantizers = activation_quantizers(reloaded.graph)
    assert quantizers
    text = dump(reloaded)
    for quantize in quantizers:
        amax = float(quantize.inputs[0].metadata_props[AMAX])
        assert amax > 0
        assert np.float32(amax / 127.0) == np.float32(scale_of(quantize))
        assert f"%{quantize.inputs[0].name}: " in text
    shown = [line for line in text.splitlines() if "(amax " in line]
    assert len(shown) == len({q.inputs[0].name for q in quantizers})


def test_the_compiled_model_keeps_its_state_and_is_valid() -> None:
    compiled = _quantized_by_qdqc()
    onnx.checker.check_model(compiled, full_check=True)
    ort.InferenceSession(compiled.SerializeToString(), providers=["CPUExecutionProvider"])
    model = load_model(compiled)
    assert layer_decisions(model)
    assert all(AMAX in q.inputs[0].metadata_props for q in activation_quantizers(model.graph))

    recompiled = load_model(compiled)
    PassManager(TRT_INT8_FROM_QDQ).run(recompiled, PassContext())
    imported = imported_amax(load_model(to_proto(recompiled)))
    assert imported and layer_decisions(recompiled)
    for quantize in activation_quantizers(recompiled.graph):  # import-scales kept each imported amax
        assert float(quantize.inputs[0].metadata_props[AMAX]) == imported[quantize.inputs[0].name]
    onnx.checker.check_model(to_proto(recompiled), full_check=True)


def test_strip_qdq_forgets_the_previous_compile_state() -> None:
    model = load_model(_quantized_by_qdqc())
    PassManager("strip-qdq").run(model, PassContext(), stamp=False)
    assert layer_decisions(model) == {}
    assert not [v for node in model.graph for v in node.outputs if AMAX in v.metadata_props]
    assert not [v for v in model.graph.inputs if AMAX in v.metadata_props]
    assert imported_amax(model)


def test_state_is_deterministic_json_with_sorted_keys_and_round_trip_floats() -> None:
    from qdq_compiler.ir.state import model_state, set_model_state, set_value_state, value_state

    model = load_model(_float_model())
    set_model_state(model, "example", {"b": 0.1 + 0.2, "a": [1, "x"], "c": 1e-10})
    text = model.metadata_props["qdq_compiler.example"]
    assert text == '{"a":[1,"x"],"b":0.30000000000000004,"c":1e-10}'
    assert model_state(_reloaded(model), "example") == {"a": [1, "x"], "b": 0.30000000000000004, "c": 1e-10}
    value = model.graph.inputs[0]
    set_value_state(value, "amax", np.float32(0.1))
    assert value.metadata_props["qdq_compiler.amax"] == "0.10000000149011612"
    assert value_state(_reloaded(model).graph.inputs[0], "amax") == float(np.float32(0.1))
    set_value_state(value, "amax", None)
    assert "qdq_compiler.amax" not in value.metadata_props
    with pytest.raises(ValueError):
        set_model_state(model, "bad", float("nan"))


def test_corrupt_state_is_a_one_line_error() -> None:
    model = load_model(_float_model())
    model.metadata_props["qdq_compiler.layer_decisions"] = "{not json"
    with pytest.raises(QdqcError, match="qdq_compiler.layer_decisions") as info:
        layer_decisions(model)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("ir_version", [7, 8, 9, 10])
def test_value_state_is_serialized_for_inputs_initializers_intermediates_and_outputs(ir_version) -> None:
    """onnx-ir writes value metadata_props into input/value_info/output entries and reads them back; the
    onnx checker (full) and onnxruntime accept them at every IR version qdqc writes."""
    from qdq_compiler.ir.state import set_value_state, value_state

    text = f"""<ir_version: {ir_version}, opset_import: ["" : 13]>
    g (float[1, 4] x) => (float[1, 4] y) <float[4] w = {{1.0, 2.0, 3.0, 4.0}}>
    {{ t = Add(x, w)  y = Relu(t) }}"""
    model = load_model(onnx.parser.parse_model(text))
    values = {
        "x": model.graph.inputs[0],
        "w": model.graph.initializers["w"],
        "t": model.graph.node(0).outputs[0],
        "y": model.graph.outputs[0],
    }
    for index, value in enumerate(values.values()):
        set_value_state(value, "amax", 0.5 + index)
    proto = to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    back = load_model(proto.SerializeToString())
    found = {
        "x": back.graph.inputs[0],
        "w": back.graph.initializers["w"],
        "t": back.graph.node(0).outputs[0],
        "y": back.graph.outputs[0],
    }
    assert {name: value_state(value, "amax") for name, value in found.items()} == {
        "x": 0.5,
        "w": 1.5,
        "t": 2.5,
        "y": 3.5,
    }


def test_a_graphsurgeon_pass_keeps_the_tensors_state() -> None:
    from qdq_compiler.ir.state import value_state
    from qdq_compiler.pm.graphsurgeon import graphsurgeon_pass

    @graphsurgeon_pass("rename-graph-for-state-test", "Renames the graph (test).")
    def rename(graph) -> None:
        graph.name = "renamed"

    model = load_model(_float_model())
    PassManager(f"{PREPARE},place-qdq,calibrate{{method=max}}").run(model, _calibrated_context(), stamp=False)
    before = {q.inputs[0].name: value_state(q.inputs[0], "amax") for q in activation_quantizers(model.graph)}
    assert rename().run(model, PassContext()).modified
    after = {q.inputs[0].name: value_state(q.inputs[0], "amax") for q in activation_quantizers(model.graph)}
    assert after == before and layer_decisions(model)


def test_inspect_summarizes_the_state_in_one_short_line_each(tmp_path, capsys) -> None:
    from qdq_compiler.cli import main

    path = tmp_path / "compiled.onnx"
    onnx.save(_quantized_by_qdqc(), path)
    assert main(["inspect", str(path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("qdq_compiler.")]
    decisions = next(line for line in lines if line.startswith("qdq_compiler.layer_decisions: "))
    count = len(layer_decisions(load_model(path)))
    assert (
        decisions == f"qdq_compiler.layer_decisions: {count} entries (shown by `qdqc opt {path} "
        "--pipeline '' -o -`)"
    )
    assert all(len(line) <= 300 for line in lines)
