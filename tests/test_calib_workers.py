"""The worker threads of a calibration pass: the statistics do not depend on the workers or their timing."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qdq_compiler.calib.collect import collect_statistics
from qdq_compiler.calib.data import InputSpec
from qdq_compiler.calib.histogram import TensorStats
from qdq_compiler.calib.progress import Progress
from qdq_compiler.calib.workers import run_pass

SPECS = (InputSpec("x", (None, 4), np.dtype(np.float32)),)


class _FakeSession:
    """Stands in for onnxruntime: ``y = x * 3``; batch ``slow`` takes longer than the others."""

    def __init__(self, slow: int = 0, fail: int = -1) -> None:
        self.slow, self.fail = slow, fail
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def run(self, fetch: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feed["x"]
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if float(x[0, 0]) == self.slow:
                time.sleep(0.2)
            if float(x[0, 0]) == self.fail:
                raise RuntimeError("the model failed on this batch")
            return [x * np.float32(3)]
        finally:
            with self.lock:
                self.running -= 1


def _model() -> onnx.ModelProto:
    """x [N,2,5,5] -> Conv 3x3 (3 channels) -> conv_out -> Relu -> y."""
    weight = np.random.default_rng(1).standard_normal((3, 2, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["conv_out"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv_out"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5, 5])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _batches(count: int) -> list[dict[str, np.ndarray]]:
    """Batch k starts with the value k (to recognise it); later batches hold larger values (ranges grow)."""
    rng = np.random.default_rng(7)
    batches = []
    for k in range(count):
        x = (rng.standard_normal((3, 4)) * (1 + k)).astype(np.float32)
        x[0, 0] = k
        batches.append({"x": x})
    return batches


Batches = list[dict[str, np.ndarray]]


def _pass(workers: int, session: _FakeSession, batches: Batches) -> dict[str, TensorStats]:
    stats = {"x": TensorStats(16, name="x", max_bins=32), "y": TensorStats(16, name="y", max_bins=32)}
    assert run_pass(session, batches, SPECS, ["y"], stats, None, workers) == len(batches)
    return stats


def _same(a: TensorStats, b: TensorStats) -> None:
    np.testing.assert_array_equal(a.hist, b.hist)
    assert (a.range, a.base, a.min, a.max, a.count) == (b.range, b.base, b.min, b.max, b.count)


def test_a_slow_first_batch_still_fixes_the_bins():
    batches = _batches(9)
    serial = _pass(1, _FakeSession(slow=-1), batches)
    session = _FakeSession(slow=0)  # batch 0 finishes its run last
    parallel = _pass(3, session, batches)
    assert session.most_at_once >= 2  # the workers did overlap
    for name in serial:
        _same(parallel[name], serial[name])
    assert parallel["y"].range == float(np.abs(batches[0]["x"] * 3).max())
    assert parallel["y"].base < 16  # the data grew past max_bins: bins were merged


def test_at_most_workers_batches_in_flight_and_the_reader_waits():
    session = _FakeSession(slow=-1)
    read = []

    def reader():
        for index, batch in enumerate(_batches(8)):
            read.append((index, session.running))
            yield batch

    _pass(2, session, list(reader()))
    assert session.most_at_once <= 2
    read.clear()
    stats = {"y": TensorStats(16, name="y")}
    run_pass(session, reader(), SPECS, ["y"], stats, None, 2)
    assert all(running <= 1 for _, running in read)  # a batch is read only when a worker is free


def test_a_failing_batch_raises_and_stops_reading():
    batches = _batches(12)
    consumed = []

    def reader():
        for index, batch in enumerate(batches):
            consumed.append(index)
            yield batch

    stats = {"y": TensorStats(16, name="y")}
    with pytest.raises(RuntimeError, match="the model failed"):
        run_pass(_FakeSession(fail=3), reader(), SPECS, ["y"], stats, None, 2)
    assert len(consumed) < len(batches)

    with pytest.raises(RuntimeError, match="the model failed"):  # the first batch fails: nobody waits forever
        run_pass(_FakeSession(fail=0), reader(), SPECS, ["y"], {"y": TensorStats(16, name="y")}, None, 3)


def test_a_failing_reader_raises_after_the_batches_in_flight():
    def reader():
        yield from _batches(3)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        run_pass(_FakeSession(), reader(), SPECS, ["y"], {"y": TensorStats(16, name="y")}, None, 2)


@pytest.mark.parametrize("exact", [False, True])
def test_collect_statistics_does_not_depend_on_workers(exact):
    rng = np.random.default_rng(3)
    batches = [{"x": (rng.standard_normal((2, 2, 5, 5)) * (1 + k % 3)).astype(np.float32)} for k in range(7)]
    names = ["x", "conv_out", "y"]
    one = collect_statistics(_model(), names, batches, exact=exact, workers=1)
    for workers in (2, 3):
        many = collect_statistics(_model(), names, batches, exact=exact, workers=workers)
        for name in names:
            _same(many[name], one[name])
    with pytest.raises(ValueError, match="workers must be >= 1"):
        collect_statistics(_model(), names, batches, workers=0)


def test_batches_stay_in_order_until_every_range_is_set():
    """Batch 0 is all zeros: batch 1 (slow here) must still set the bins before batches 2.. are binned."""
    batches = _batches(8)
    batches[0] = {"x": np.zeros((3, 4), np.float32)}
    serial = _pass(1, _FakeSession(slow=-1), batches)
    assert serial["y"].range == float(np.abs(batches[1]["x"] * 3).max())
    for slow in (1, 2):
        parallel = _pass(3, _FakeSession(slow=slow), batches)
        for name in serial:
            _same(parallel[name], serial[name])


def test_an_integer_tensor_fails_with_several_workers():
    class _IntSession(_FakeSession):
        def run(self, fetch, feed):
            return [feed["x"].astype(np.int32)]

    stats = {"y": TensorStats(16, name="y")}
    with pytest.raises(ValueError, match="'y' is int32: only float tensors calibrate"):
        run_pass(_IntSession(), _batches(6), SPECS, ["y"], stats, None, 3)


def test_progress_counts_every_sample_once_with_several_workers():
    batches = _batches(7)
    bar = Progress(total=21, quiet=True)
    stats = {"y": TensorStats(16, name="y")}
    assert run_pass(_FakeSession(slow=2), batches, SPECS, ["y"], stats, bar, 3) == 7
    assert bar.done == 21
