"""Run the FP32 and the INT8 model on the same data and measure how far apart they are."""

from __future__ import annotations

import onnx

from qdq_compiler.accuracy.numerics import compare_outputs, run_outputs
from qdq_compiler.errors import QdqcError
from qdq_compiler.evaluation.data import check_same_inputs, open_eval_data
from qdq_compiler.evaluation.kind import KINDS, kind_from_metadata, kind_from_outputs, task_output
from qdq_compiler.evaluation.metrics import cosine_similarity
from qdq_compiler.evaluation.report import EvalReport, OutputStats
from qdq_compiler.evaluation.tasks import classifier_metrics, detector_metrics, segmentation_metrics


def evaluate_models(
    fp32: onnx.ModelProto,
    int8: onnx.ModelProto,
    data: str,
    labels: str | None = None,
    kind: str = "auto",
    batch_size: int | None = None,
    limit: int | None = None,
    threshold: float = 0.5,
    reference_conf: float = 0.25,
) -> EvalReport:
    """Per-output SQNR and cosine of ``int8`` against ``fp32`` over ``data``, and the task metric.

    ``kind`` "auto" reads the model's ``qdq_compiler.model_kind`` metadata, else the output shapes.
    ``threshold`` binarises segmentation maps; FP32 detections scored above ``reference_conf`` are the
    ground truth INT8's are scored against.
    """
    if kind != "auto" and kind not in KINDS:
        raise QdqcError(f"unknown model kind {kind!r}: one of auto, {', '.join(KINDS)}")
    if labels is not None and not labels:
        raise QdqcError("--labels is empty")
    check_same_inputs(fp32, int8)
    fp32_names = [out.name for out in fp32.graph.output]
    int8_names = [out.name for out in int8.graph.output]
    if sorted(fp32_names) != sorted(int8_names):
        raise QdqcError(f"the two models' outputs differ: FP32 has {fp32_names}; INT8 has {int8_names}")
    samples = open_eval_data(data, fp32, batch_size=batch_size, limit=limit)
    reference = run_outputs(fp32, samples.batches)
    quantized = run_outputs(int8, samples.batches)
    comparison = compare_outputs(reference, quantized)  # refuses differing shapes, NaN in FP32
    outputs = [
        OutputStats(
            name, tuple(ref.shape), comparison.per_output[name], cosine_similarity(ref, quantized[name])
        )
        for name, ref in reference.items()
    ]
    if kind != "auto":
        source = "--kind"
    else:
        recorded = kind_from_metadata(fp32, int8)
        kind, source = (recorded, "metadata") if recorded else (kind_from_outputs(reference), "output shapes")
    name = task_output(kind, reference)
    ref, out = reference[name], quantized[name]
    if kind == "classifier":
        metrics, notes = classifier_metrics(ref, out, samples, labels)
    elif kind == "segmentation":
        metrics, notes = segmentation_metrics(ref, out, samples, labels, threshold)
    else:
        metrics, notes = detector_metrics(ref, out, samples, labels, reference_conf)
    return EvalReport(len(samples.names), kind, source, name, outputs, metrics, notes)
