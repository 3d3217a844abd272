"""collect_statistics on a tiny Conv+Relu model: values against numpy, model untouched, errors, progress."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qdq_compiler.calib.cache import cache_key, load_cache, save_cache
from qdq_compiler.calib.collect import collect_statistics
from qdq_compiler.calib.data import NpyData
from qdq_compiler.calib.errors import CalibrationDataError
from qdq_compiler.calib.methods import compute_amax
from qdq_compiler.calib.progress import Progress

RNG = np.random.default_rng(42)
WEIGHT = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
BIAS = np.array([0.5, -1.0, 0.0], np.float32)


def _model() -> onnx.ModelProto:
    conv = helper.make_node("Conv", ["x", "w", "b"], ["conv_out"], pads=[1, 1, 1, 1], name="conv")
    relu = helper.make_node("Relu", ["conv_out"], ["y"], name="relu")
    graph = helper.make_graph(
        [conv, relu],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5, 5])],
        [onnx.numpy_helper.from_array(WEIGHT, "w"), onnx.numpy_helper.from_array(BIAS, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv_numpy(x: np.ndarray) -> np.ndarray:
    """Direct 3x3 convolution with padding 1, in float64."""
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((x.shape[0], 3, 5, 5)) + BIAS[None, :, None, None]
    for dy in range(3):
        for dx in range(3):
            patch = padded[:, :, dy : dy + 5, dx : dx + 5]
            out += np.einsum("nchw,oc->nohw", patch, WEIGHT[:, :, dy, dx].astype(np.float64))
    return out


def _batches(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 4, size=count)
    return [{"x": rng.standard_normal((int(n), 2, 5, 5)).astype(np.float32)} for n in sizes]


def test_matches_numpy_and_leaves_model_unchanged():
    model = _model()
    before = model.SerializeToString()
    batches = _batches()
    stats = collect_statistics(model, ["conv_out", "y", "x", "conv_out"], batches, num_bins=256)
    assert model.SerializeToString() == before
    assert list(stats) == ["conv_out", "y", "x"]
    x = np.concatenate([b["x"] for b in batches])
    conv = _conv_numpy(x)
    expected = {"conv_out": conv, "y": np.maximum(conv, 0), "x": x}
    for name, values in expected.items():
        got = stats[name]
        assert got.count == values.size and got.num_bins == 256
        assert got.absmax == pytest.approx(np.abs(values).max(), rel=1e-5)
        assert got.min == pytest.approx(values.min(), rel=1e-5, abs=1e-6)
        assert got.max == pytest.approx(values.max(), rel=1e-5)
    assert stats["conv_out"].min < 0 <= stats["y"].min  # the conv output was observed before the Relu


def test_reader_cache_round_trip(tmp_path):
    model = _model()
    np.save(tmp_path / "calib.npy", np.concatenate([b["x"] for b in _batches()]))
    data = NpyData(tmp_path / "calib.npy", model, batch_size=3)
    stats = collect_statistics(model, ["conv_out", "y"], data)
    key = cache_key(model, data, 2048)
    save_cache(tmp_path / "tiny.calib", stats, key)
    loaded = load_cache(tmp_path / "tiny.calib", key, require=["conv_out", "y"])
    for name in stats:
        assert compute_amax(loaded[name], "entropy") == compute_amax(stats[name], "entropy")


def test_errors():
    model = _model()
    with pytest.raises(ValueError, match="'nope' is not produced"):
        collect_statistics(model, ["nope"], _batches())
    with pytest.raises(ValueError, match="'w' is an initializer"):
        collect_statistics(model, ["w"], _batches())
    with pytest.raises(ValueError, match="no tensors"):
        collect_statistics(model, [], _batches())
    with pytest.raises(CalibrationDataError, match="count 0"):
        collect_statistics(model, ["y"], [])
    with pytest.raises(CalibrationDataError, match="unknown input name\\(s\\) 'images'"):
        collect_statistics(model, ["y"], [{"images": np.zeros((1, 2, 5, 5), np.float32)}])


def test_progress_bar():
    stream = io.StringIO()
    with Progress(total=None, stream=stream, force=True, min_interval=0.0) as bar:
        collect_statistics(_model(), ["y"], _batches(3), progress=bar)
    text = stream.getvalue()
    assert "calibrating" in text and "samples/s" in text and text.endswith("\n")
    silent = io.StringIO()  # not a terminal: nothing is drawn
    with Progress(total=10, stream=silent) as bar:
        bar.update(4)
    assert silent.getvalue() == ""
    line = Progress(total=10, stream=silent)
    line.done = 5
    assert "5/10 samples (50%)" in line.line() and "ETA" in line.line()
    assert Progress(stream=stream, force=True, quiet=True).enabled is False


def test_large_model_path_goes_through_a_file(monkeypatch, capsys):
    from qdq_compiler.ir import external

    monkeypatch.setattr(external, "LARGE_MODEL_BYTES", 0)  # as if the model were over 256 MiB
    batches = _batches(2)
    stats = collect_statistics(_model(), ["conv_out"], batches, progress=True)
    conv = _conv_numpy(np.concatenate([b["x"] for b in batches]))
    assert stats["conv_out"].absmax == pytest.approx(np.abs(conv).max(), rel=1e-5)
    assert capsys.readouterr().err == ""  # progress=True stays silent when stderr is not a terminal


def _deeper_model() -> onnx.ModelProto:
    """Conv -> Relu -> Conv (+ residual Add) -> Mul by a constant: fusion candidates for onnxruntime."""
    w2 = RNG.standard_normal((3, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"]),
        helper.make_node("Mul", ["s", "k"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "deeper",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5, 5])],
        [
            onnx.numpy_helper.from_array(WEIGHT, "w"),
            onnx.numpy_helper.from_array(BIAS, "b"),
            onnx.numpy_helper.from_array(w2, "w2"),
            onnx.numpy_helper.from_array(np.float32(0.5), "k"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("make_model", [_model, _deeper_model])
def test_optimized_session_returns_the_unoptimized_values(make_model):
    import onnxruntime as ort

    from qdq_compiler.calib.collect import GRAPH_OPTIMIZATION_LEVEL, _session

    assert GRAPH_OPTIMIZATION_LEVEL != "ORT_DISABLE_ALL"
    model = make_model()
    fetch = [out for node in model.graph.node for out in node.output]
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    for name in fetch[:-1]:
        plain.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1  # as qdqc's sessions: Conv results change with the thread count
    reference = ort.InferenceSession(plain.SerializeToString(), options, providers=["CPUExecutionProvider"])
    with _session(model, fetch) as session:
        for batch in _batches(3):
            for name, got, want in zip(fetch, session.run(fetch, batch), reference.run(fetch, batch)):
                np.testing.assert_array_equal(got, want, err_msg=name)  # bit for bit


def test_one_pass_by_default_and_exact_on_request():
    model = _model()
    batches = _batches()
    runs = []

    class Counted(list):
        """Counts the batches read."""

        def __iter__(self):
            for batch in super().__iter__():
                runs.append(1)
                yield batch

    stats = collect_statistics(model, ["conv_out", "x"], Counted(batches))
    assert len(runs) == len(batches)  # one pass over the data
    for item in stats.values():
        assert item.binning == "grow" and item.hist.size >= 2048
    conv = np.abs(_conv_numpy(np.concatenate([b["x"] for b in batches])))
    assert stats["conv_out"].absmax == pytest.approx(conv.max(), rel=1e-5)
    assert stats["x"].range == float(np.abs(batches[0]["x"]).max())  # the first batch fixes the bins

    runs.clear()
    exact = collect_statistics(model, ["conv_out", "x"], Counted(batches), exact=True)
    assert len(runs) == 2 * len(batches)
    for item in exact.values():
        assert item.binning == "fixed" and item.range == item.absmax and item.hist.size == 2048
    assert exact["conv_out"].absmax == stats["conv_out"].absmax
    x = np.abs(np.concatenate([b["x"] for b in batches]).astype(np.float64))
    expected, _ = np.histogram(x, bins=2048, range=(0.0, x.max()))
    np.testing.assert_array_equal(exact["x"].hist, expected)
    # A one-shot iterable is read once; exact=True refuses it.
    once = collect_statistics(model, ["conv_out"], iter(batches))["conv_out"]
    np.testing.assert_array_equal(once.hist, stats["conv_out"].hist)
    with pytest.raises(ValueError, match="one-shot iterable"):
        collect_statistics(model, ["y"], iter(batches), exact=True)


def test_second_pass_must_see_the_same_data():
    class Drifting:
        """Each iteration scales the data a little more (e.g. random augmentation): not reproducible."""

        def __init__(self):
            self.calls = 0

        def __iter__(self):
            self.calls += 1
            return iter([{"x": b["x"] * self.calls} for b in _batches(2)])

    with pytest.raises(CalibrationDataError, match="second pass differs: tensor 'x': .* exceeds"):
        collect_statistics(_model(), ["y", "x"], Drifting(), exact=True)

    class Shrinking(Drifting):
        def __iter__(self):
            self.calls += 1
            return iter([{"x": b["x"] / self.calls} for b in _batches(2)])

    with pytest.raises(CalibrationDataError, match="differs between the two calibration passes"):
        collect_statistics(_model(), ["x"], Shrinking(), exact=True)


def test_a_reader_may_reuse_its_arrays():
    """Batches are fully used before the next one is read: a generator refilling one buffer is fine."""
    batches = _batches(6)

    def fresh():
        for batch in batches:
            yield {"x": batch["x"].copy()}

    def reused():
        buffer = np.empty((3, 2, 5, 5), dtype=np.float32)
        for batch in batches:
            view = buffer[: batch["x"].shape[0]]
            view[...] = batch["x"]
            yield {"x": view}

    expected = collect_statistics(_model(), ["x", "conv_out", "y"], fresh())
    got = collect_statistics(_model(), ["x", "conv_out", "y"], reused())
    for name, item in expected.items():
        np.testing.assert_array_equal(got[name].hist, item.hist, err_msg=name)
        assert (got[name].min, got[name].max, got[name].range) == (item.min, item.max, item.range)
