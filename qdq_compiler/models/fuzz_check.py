"""Push one random CNN through every quantization path and check each output (shared by test and bench).

Paths: ``trt-int8`` (qdqc's PTQ) and onnxruntime's ``quantize_static`` (QDQ format, symmetric INT8
activations and per-channel weights; and its defaults: UINT8 asymmetric activations, per-tensor weights)
followed by ``trt-int8-from-qdq``. Every output must pass ``onnx.checker`` (full check) and ``qdqc lint``
without errors, run in onnxruntime with graph optimizations off and on, and reach the SQNR floor that
:mod:`qdq_compiler.accuracy.noise_budget` derives from its own quantization grid.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from qdq_compiler.accuracy.noise_budget import noise_budget, noise_gain, sqnr_floor_db, with_weights_of
from qdq_compiler.accuracy.numerics import sqnr_db
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.models.random_cnn import RandomCnn
from qdq_compiler.pipelines import TRT_INT8_FROM_QDQ
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.targets.lint import lint_model

__all__ = [
    "CALIBRATION_SAMPLES",
    "EVALUATION_SAMPLES",
    "FuzzFailure",
    "PathResult",
    "Rejected",
    "check_random_cnn",
    "run_session",
]

CALIBRATION_SAMPLES = 8
EVALUATION_SAMPLES = 4  # the first calibration samples, as the compile self-check uses
PATHS = ("trt-int8", "ort-symmetric", "ort-defaults")
Batches = Sequence[Mapping[str, np.ndarray]]


def _quiet_onnxruntime() -> None:
    """Failures are reported by their exception; onnxruntime's own log would repeat them on stderr."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)


class Rejected(Exception):
    """The float model is no usable reference (its output is all zero on the data): draw another."""


class FuzzFailure(Exception):
    """A check failed: which path, which stage, and the message (its first line)."""

    def __init__(self, path: str, stage: str, message: str):
        self.path, self.stage = path, stage
        self.message = message.strip().splitlines()[0] if message.strip() else "(no message)"
        super().__init__(f"[{path}] {stage}: {self.message}")

    @property
    def signature(self) -> str:
        """Path, stage and the message without numbers: failures with one cause share it."""
        if self.stage.startswith("sqnr"):  # one class, whatever the numbers
            return f"{self.path}|{self.stage}"
        text = re.sub(r"\d+", "#", re.sub(r"\(op_type:[^)]*\)", "(node _)", self.message))
        return f"{self.path}|{self.stage}|{text[:120]}"


@dataclass(frozen=True)
class PathResult:
    """One path's output: SQNR (dB) at both optimization levels against the derived floor."""

    path: str
    sqnr_unoptimized: float
    sqnr_optimized: float
    floor_db: float
    predicted_db: float  # the incoherent prediction -10 log10(sum r_i)
    quantized_tensors: int
    note: str = ""


def run_session(model: onnx.ModelProto, batches: Batches, optimized: bool) -> np.ndarray:
    """The first output of ``model`` over ``batches`` in onnxruntime (CPU, one thread), concatenated."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_outputs()[0].name
    return np.concatenate([session.run([name], dict(batch))[0] for batch in batches])


def check_random_cnn(cnn: RandomCnn, paths: Sequence[str] = PATHS) -> list[PathResult]:
    """Check every path for ``cnn``; raise :class:`FuzzFailure` at the first failed check.

    Raises :class:`Rejected` when the float model's output is all zero on the evaluation data.
    """
    _quiet_onnxruntime()
    calibration = cnn.calibration_batches(CALIBRATION_SAMPLES)
    evaluation = calibration[:EVALUATION_SAMPLES]
    _check_valid("float", cnn.model)
    try:
        reference = run_session(cnn.model, evaluation, optimized=False)
    except Exception as exc:
        raise FuzzFailure("float", "onnxruntime", str(exc)) from exc
    if not np.all(np.isfinite(reference)):
        raise Rejected("the float output holds NaN or Inf")
    if not np.any(reference.astype(np.float64) ** 2 > 0.0):
        raise Rejected("the float output is all zero")
    constant = _constant_tensors(cnn.model, calibration)
    gain = noise_gain(cnn.model, evaluation)
    results = []
    with tempfile.TemporaryDirectory(prefix="qdqc-fuzz-") as folder:
        for path in paths:
            if path != "trt-int8" and constant:
                # onnxruntime gives a constant tensor scale 1, so the INT32 bias of the next layer is rounded
                # to steps of the weight scale: the imported model is wrong before qdqc reads it
                note = f"skipped: constant tensor {constant[0]!r} on the calibration data"
                results.append(PathResult(path, math.nan, math.nan, math.nan, math.nan, 0, note))
                continue
            compiled, note, source = _COMPILERS[path](cnn.model, calibration, Path(folder))
            if compiled is None:
                results.append(PathResult(path, math.nan, math.nan, math.nan, math.nan, 0, note))
                continue
            results.append(_check_output(path, compiled, evaluation, reference, note, source, gain))
    return results


def _constant_tensors(model: onnx.ModelProto, batches: Batches) -> list[str]:
    """Node outputs of ``model`` that hold one value over all of ``batches`` (a dead Relu, ...)."""
    from qdq_compiler.accuracy.noise_budget import tensor_values

    names = [name for node in model.graph.node for name in node.output if name]
    values = tensor_values(model, names, batches)
    return [name for name in names if values[name].size and np.ptp(values[name].astype(np.float64)) == 0.0]


def _check_valid(path: str, model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise FuzzFailure(path, "onnx.checker", str(exc)) from exc


def _check_output(
    path: str,
    compiled: onnx.ModelProto,
    evaluation: Batches,
    reference: np.ndarray,
    note: str,
    source: onnx.ModelProto | None,
    gain: float,
) -> PathResult:
    _check_valid(path, compiled)
    errors = [v for v in lint_model(load_model(compiled)) if v.severity == "error"]
    if errors:
        raise FuzzFailure(path, "lint", f"{len(errors)} error(s), first: {errors[0]}")
    try:
        budget = noise_budget(compiled, evaluation)
        if source is not None:  # an imported model: its weights' INT8 rounding stays, DQ or not
            budget = with_weights_of(budget, source)
    except Exception as exc:
        raise FuzzFailure(path, "onnxruntime-unoptimized", str(exc)) from exc
    floor = sqnr_floor_db(budget, gain)
    sqnr = {}
    for optimized in (False, True):
        stage = "onnxruntime-optimized" if optimized else "onnxruntime-unoptimized"
        try:
            output = run_session(compiled, evaluation, optimized)
        except Exception as exc:
            raise FuzzFailure(path, stage, str(exc)) from exc
        if output.shape != reference.shape:
            raise FuzzFailure(path, stage, f"output shape {output.shape}, float {reference.shape}")
        sqnr[optimized] = sqnr_db(reference, output)
        if optimized and not sqnr[optimized] >= floor and sqnr[False] >= floor:
            seven_bit = _seven_bit_weights(compiled)  # optimized == unoptimized once weights cannot saturate
            unoptimized = run_session(seven_bit, evaluation, optimized=False)
            if sqnr_db(unoptimized, run_session(seven_bit, evaluation, optimized=True)) >= floor:
                note = (f"{note}; " if note else "") + (
                    f"optimized onnxruntime {sqnr[True]:.1f} dB: its x86 u8s8 kernels saturate with 8-bit "
                    f"weights; passes with 7-bit weights"
                )
                continue
        if not sqnr[optimized] >= floor:  # also catches NaN
            raise FuzzFailure(
                path,
                f"sqnr-{stage}",
                f"SQNR {sqnr[optimized]:.1f} dB below the derived floor {floor:.1f} dB "
                f"({budget.count} quantized tensors, noise gain {gain:.1f}, "
                f"predicted {budget.incoherent_db():.1f} dB)",
            )
    return PathResult(path, sqnr[False], sqnr[True], floor, budget.incoherent_db(), budget.count, note)


def _seven_bit_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every INT8 weight halved (rounded) and its scale doubled: 7-bit weights.

    onnxruntime's x86 INT8 kernels without VNNI multiply u8 x s8 pairs with 16-bit saturating adds, which
    8-bit weights can overflow (onnxruntime's documentation advises reduce_range there). A model whose
    optimized run is off only through that passes with 7-bit weights; TensorRT does not saturate.
    """
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    constants = {init.name: init for init in copy.graph.initializer}
    for dq in copy.graph.node:
        data = constants.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if data is None or data.data_type != onnx.TensorProto.INT8 or dq.input[1] not in constants:
            continue
        scale = constants[dq.input[1]]
        halved = np.round(numpy_helper.to_array(data) / 2.0).astype(np.int8)
        data.CopyFrom(numpy_helper.from_array(halved, data.name))
        doubled = numpy_helper.to_array(scale) * 2
        scale.CopyFrom(numpy_helper.from_array(doubled.astype(doubled.dtype), scale.name))
    return copy


def _compile_trt_int8(
    model: onnx.ModelProto, calibration: Batches, folder: Path
) -> tuple[onnx.ModelProto, str, None]:
    ir_model = load_model(model)
    try:
        PassManager("trt-int8").run(ir_model, PassContext(calibration_data=list(calibration)))
    except QdqcError as exc:
        raise FuzzFailure("trt-int8", "compile refused", str(exc)) from exc
    except Exception as exc:
        raise FuzzFailure("trt-int8", "compile crashed", f"{type(exc).__name__}: {exc}") from exc
    return to_proto(ir_model), "", None


def _from_qdq(path: str, quantized: onnx.ModelProto) -> tuple[onnx.ModelProto, str, onnx.ModelProto]:
    """``trt-int8-from-qdq``; when scales are missing, again with ``import-scales{missing=float}`` (the
    refusal's own advice), noted in the result."""
    note = ""
    keep_float = TRT_INT8_FROM_QDQ.replace("import-scales", "import-scales{missing=float}")
    for pipeline in (TRT_INT8_FROM_QDQ, keep_float):
        ir_model = load_model(quantized)
        try:
            PassManager(pipeline).run(ir_model, PassContext())
            return to_proto(ir_model), note, quantized
        except QdqcError as exc:
            if "missing" not in str(exc) or note:
                raise FuzzFailure(path, "compile refused", str(exc)) from exc
            note = "missing scales: layers left float"
        except Exception as exc:
            raise FuzzFailure(path, "compile crashed", f"{type(exc).__name__}: {exc}") from exc
    raise AssertionError("unreachable")


# float model, calibration, scratch folder -> (output or None when skipped, note, imported Q/DQ model or None)
Compiler = Callable[
    [onnx.ModelProto, Batches, Path], tuple[onnx.ModelProto | None, str, onnx.ModelProto | None]
]


def _ort_path(symmetric: bool) -> Compiler:
    path = "ort-symmetric" if symmetric else "ort-defaults"

    def compile_(model: onnx.ModelProto, calibration: Batches, folder: Path):
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(calibration)

            def get_next(self):
                return next(self.batches, None)

        float_path, qdq_path = folder / f"{path}-float.onnx", folder / f"{path}-qdq.onnx"
        onnx.save(model, float_path)
        options = {"quant_format": QuantFormat.QDQ}
        if symmetric:
            options.update(
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
        try:
            quantize_static(str(float_path), str(qdq_path), Reader(), **options)
        except Exception as exc:  # onnxruntime's own limits are not ours to check
            reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
            return None, f"quantize_static refused: {reason}", None
        quantized = onnx.load(qdq_path)
        try:  # e.g. float16 scales on DequantizeLinear below opset 19: its model, not ours, is invalid
            onnx.checker.check_model(quantized, full_check=True)
        except Exception as exc:
            reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
            return None, f"quantize_static wrote an invalid model: {reason}", None
        return _from_qdq(path, quantized)

    return compile_


_COMPILERS: dict[str, Compiler] = {
    "trt-int8": _compile_trt_int8,
    "ort-symmetric": _ort_path(True),
    "ort-defaults": _ort_path(False),
}
