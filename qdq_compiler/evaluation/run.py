"""Run the FP32 and the INT8 model on the same data, batch by batch, and measure how far apart they are."""

from __future__ import annotations

import onnx

from qdq_compiler.accuracy.numerics import ModelRunner
from qdq_compiler.calib.progress import Progress
from qdq_compiler.errors import QdqcError
from qdq_compiler.evaluation.data import check_same_inputs, open_eval_data
from qdq_compiler.evaluation.kind import KINDS, kind_from_metadata, kind_from_outputs, task_output
from qdq_compiler.evaluation.metrics import Closeness
from qdq_compiler.evaluation.report import EvalReport, OutputStats
from qdq_compiler.evaluation.tasks import Task, make_task


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
    progress: bool = False,
) -> EvalReport:
    """Per-output SQNR and cosine of ``int8`` against ``fp32`` over ``data``, and the task metric.

    ``kind`` "auto" reads the model's ``qdq_compiler.model_kind`` metadata, else the output shapes (of the
    first batch). ``threshold`` binarises segmentation maps; FP32 detections scored above ``reference_conf``
    are the ground truth INT8's are scored against. Memory stays at a batch of outputs (detections and
    top-1 classes are kept), whatever the number of samples. ``progress`` draws a progress line on stderr
    (when it is a terminal).
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
    source = "--kind"
    if kind == "auto":
        recorded = kind_from_metadata(fp32, int8)
        kind, source = (recorded, "metadata") if recorded else ("auto", "output shapes")
    task: Task | None = None
    if kind != "auto":
        task = make_task(kind, samples, labels, threshold, reference_conf)  # labels read before any run
    reference_run, quantized_run = ModelRunner(fp32), ModelRunner(int8)
    closeness = {name: Closeness(name) for name in reference_run.names}
    name = ""
    with Progress(len(samples.names), desc="evaluating", quiet=not progress) as bar:
        for batch in samples.batches():
            reference, quantized = reference_run(batch), quantized_run(batch)
            for output, stats in closeness.items():
                stats.add(reference[output], quantized[output])
            if task is None:
                kind = kind_from_outputs(reference)
                task = make_task(kind, samples, labels, threshold, reference_conf)
            name = name or task_output(kind, reference)
            task.add(reference[name], quantized[name])
            bar.update(len(reference[name]))
    if task is None:
        raise QdqcError(f"--data {data}: no samples")
    metrics, notes = task.finish()
    outputs = [
        OutputStats(output, stats.shape or (), stats.sqnr_db, stats.cosine)
        for output, stats in closeness.items()
    ]
    return EvalReport(len(samples.names), kind, source, name, outputs, metrics, notes)
