"""Gather a report's data from what a command has at hand: the compiled model (its layer decisions, Q/DQ
scales and recorded recipe), the calibration statistics, the self-check, sensitivity and eval results."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from qdq_compiler.accuracy.selfcheck import SelfCheck
from qdq_compiler.calib.histogram import TensorStats
from qdq_compiler.calib.methods import MethodPlan, compute_amax
from qdq_compiler.ir import count_qdq
from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.op_facts import is_activation_quantizer, qdq_axis, weighted_op
from qdq_compiler.ir.qdq import is_dequantize, is_quantize, scale_of, zero_point_of
from qdq_compiler.quant.decisions import LayerDecision, layer_decisions
from qdq_compiler.quant.float_view import dequantize
from qdq_compiler.quant.grid import INT8_MAX
from qdq_compiler.quant.scale_groups import scale_groups, underlying_tensor
from qdq_compiler.report.data import (
    FallbackCurve,
    FallbackStep,
    LayerRow,
    RankedLayer,
    ReportData,
    Table,
    TensorHistogram,
    WeightRanges,
    clipped_fraction,
)
from qdq_compiler.report.graphs import float_layer_pictures, requantization_pictures
from qdq_compiler.targets import predict_fusions
from qdq_compiler.targets.fusion import FusionReport
from qdq_compiler.targets.recipe import read_recipe

CANDIDATE_METHODS = ("max", "percentile", "entropy", "mse")  # marked on every histogram
WORST_SPREAD_LAYERS = 8  # weight-range pictures: the layers whose channels differ most
MAX_GRAPH_PICTURES = 24


def _fmt_db(value: float) -> str:
    return f"{value:.2f} dB" if math.isfinite(value) else str(value)


# --------------------------------------------------------------------------------------------- tensors
def activation_amax(model: ir.Model) -> dict[str, float]:
    """The amax each quantized activation tensor runs with: its Q's scale x 127 (the largest if several)."""
    found: dict[str, float] = {}
    for node in model.graph:
        if not is_activation_quantizer(node):
            continue
        scale = scale_of(node)
        tensor = node.inputs[0]
        if scale is None or scale.size != 1 or tensor is None or not tensor.name:
            continue
        amax = float(np.asarray(scale, dtype=np.float64).reshape(())) * INT8_MAX
        found[tensor.name] = max(amax, found.get(tensor.name, 0.0))
    return found


def _op_types(model: ir.Model) -> dict[str, tuple[str, ...]]:
    """Each quantized tensor's producer and reader op types (what ``--calib-override op:...`` matches)."""
    found: dict[str, tuple[str, ...]] = {}
    for node in model.graph:
        if not is_activation_quantizer(node) or node.inputs[0] is None:
            continue
        tensor = node.inputs[0]
        producer = tensor.producer()
        ops = [producer.op_type] if producer is not None else []
        for dq, _ in node.outputs[0].uses():
            ops.extend(user.op_type for value in dq.outputs for user, _ in value.uses())
        found[tensor.name or ""] = tuple(dict.fromkeys(ops))
    return found


def group_labels(model: ir.Model, amax: Mapping[str, float]) -> dict[str, str]:
    """Each quantized tensor of a scale group (two or more quantized members): 'group N (k tensors)', plus
    ', own scale' for a member unify-scales left untied (its amax differs from the group's largest)."""
    labels: dict[str, str] = {}
    number = 0
    for group in scale_groups(model.graph):
        members = [value.name or "" for value in group if value.name in amax]
        if len(members) < 2:
            continue
        number += 1
        shared = max(amax[name] for name in members)
        for name in members:
            own = ", own scale" if amax[name] != shared else ""
            labels[name] = f"group {number} ({len(members)} tensors){own}"
    return labels


def tensor_histograms(
    model: ir.Model, stats: Mapping[str, TensorStats], plan: MethodPlan | None
) -> list[TensorHistogram]:
    """One histogram per quantized activation with statistics, grouped by scale group, in graph order."""
    used = activation_amax(model)
    groups = group_labels(model, used)
    ops = _op_types(model)
    found = []
    for name, amax in used.items():
        item = stats.get(name)
        if item is None or item.binning == "none" or item.hist_width <= 0.0:
            continue
        candidates = {method: float(compute_amax(item, method)) for method in CANDIDATE_METHODS}
        method = str(plan.method_for(name, ops.get(name, ()))) if plan is not None else ""
        found.append(
            TensorHistogram(name, item.hist, item.hist_width, amax, method, candidates, groups.get(name, ""))
        )
    order = {label: index for index, label in enumerate(dict.fromkeys(h.scale_group for h in found))}
    return sorted(found, key=lambda h: (h.scale_group == "", order[h.scale_group]))


# --------------------------------------------------------------------------------------------- layers
def _nodes_by_name(model: ir.Model) -> dict[str, ir.Node]:
    return {node.name: node for node in model.graph if node.name}


def layer_rows(
    model: ir.Model,
    fusion: FusionReport,
    stats: Mapping[str, TensorStats],
    plan: MethodPlan | None,
    gains: Mapping[str, float] | None = None,
) -> list[LayerRow]:
    """One row per weighted layer: predicted precision and why, its input's group, method, amax, clipping."""
    decisions = layer_decisions(model)
    nodes = _nodes_by_name(model)
    used = activation_amax(model)
    groups = group_labels(model, used)
    ops = _op_types(model)
    rows = []
    for layer in fusion.layers:
        decision = decisions.get(layer.name)
        node = nodes.get(layer.name)
        tensor = underlying_tensor(node.inputs[0]).name or "" if node is not None and node.inputs[0] else ""
        amax = used.get(tensor)
        item = stats.get(tensor)
        clipped = None
        if amax is not None and item is not None and item.hist_width > 0.0:
            clipped = clipped_fraction(item.hist, item.hist_width, amax)
        reason = decision.reason if decision is not None and decision.reason else layer.reason
        rows.append(
            LayerRow(
                layer=layer.name,
                op=layer.op,
                precision=layer.precision,
                reason=reason,
                mac_share=layer.macs / fusion.total_macs
                if layer.macs is not None and fusion.total_macs
                else None,
                scale_group=groups.get(tensor, ""),
                input_tensor=tensor if amax is not None else "",
                method=str(plan.method_for(tensor, ops.get(tensor, ()))) if plan and amax is not None else "",
                amax=amax,
                clipped=clipped,
                sqnr_gain_db=(gains or {}).get(layer.name),
            )
        )
    return rows


def _weight_values(node: ir.Node) -> np.ndarray | None:
    """The weights ``node`` computes with, as floats: behind a DQ (INT8 x scale, or float Q->DQ) or plain."""
    facts = weighted_op(node)
    value = (
        node.inputs[facts.weight_input]
        if facts is not None and len(node.inputs) > facts.weight_input
        else None
    )
    if value is None:
        return None
    producer = value.producer()
    if not is_dequantize(producer):
        array = constant_array(value)
        return None if array is None else np.asarray(array, dtype=np.float64)
    data = producer.inputs[0]
    before = data.producer() if data is not None else None
    if is_quantize(before) and before.inputs[0] is not None:
        array = constant_array(before.inputs[0])
        return None if array is None else np.asarray(array, dtype=np.float64)
    stored, scale = (constant_array(data) if data is not None else None), scale_of(producer)
    if stored is None or scale is None:
        return None
    values = dequantize(stored, np.asarray(scale), zero_point_of(producer), qdq_axis(producer))
    return values.astype(np.float64)


def weight_ranges(model: ir.Model, count: int = WORST_SPREAD_LAYERS) -> list[WeightRanges]:
    """Per-output-channel weight ranges of the ``count`` weighted layers with the widest channel spread."""
    found = []
    for node in model.graph:
        facts = weighted_op(node)
        weights = _weight_values(node) if facts is not None else None
        if facts is None or weights is None or weights.ndim < 1:
            continue
        axis = facts.output_channel_axis(node, weights.ndim)
        if axis is None:
            continue
        channels = np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1)
        found.append(WeightRanges(node.name or node.op_type, channels.min(axis=1), channels.max(axis=1)))
    found.sort(key=lambda item: -item.spread)
    return found[:count]


# --------------------------------------------------------------------------------------------- summary
def _model_summary(model: ir.Model, fusion: FusionReport) -> list[tuple[str, str]]:
    q, dq = count_qdq(model.graph)
    decisions = list(layer_decisions(model).values())
    int8 = sum(d.int8 for d in decisions)
    return [
        *read_recipe(model).lines(),
        ("Q/DQ", f"{q} QuantizeLinear, {dq} DequantizeLinear"),
        ("weighted layers", f"{int8} INT8, {len(decisions) - int8} float"),
        ("predicted INT8 MAC share", f"{100 * fusion.int8_mac_share:.1f}%"),
        ("predicted requantizations", str(len(fusion.requantizations))),
        ("predicted reformat layers", str(len(fusion.reformats))),
    ]


def _selfcheck_summary(check: SelfCheck | None) -> list[tuple[str, str]]:
    if check is None:
        return [("self-check", "off (--no-check)")]
    if check.skipped:
        return [("self-check", f"skipped: {check.skipped}")]
    if check.error:
        return [("self-check", check.error)]
    outputs = ", ".join(f"{out.name} {_fmt_db(out.sqnr_db)}" for out in check.outputs)
    return [("self-check SQNR", f"{outputs} against the {check.reference}, {check.samples} sample(s)")]


def _float_decisions(model: ir.Model) -> list[LayerDecision]:
    return [d for d in layer_decisions(model).values() if not d.int8]


def _pictures(model: ir.Model, fusion: FusionReport) -> tuple[list, list[str]]:
    pictures = float_layer_pictures(model, _float_decisions(model)) + requantization_pictures(
        model, fusion.requantizations
    )
    notes = []
    if len(pictures) > MAX_GRAPH_PICTURES:
        notes.append(f"{len(pictures) - MAX_GRAPH_PICTURES} more graph pictures left out")
    return pictures[:MAX_GRAPH_PICTURES], notes


# --------------------------------------------------------------------------------------------- commands
def compile_report(
    model_path: str,
    output: str,
    compiled: ir.Model,
    stats: Mapping[str, TensorStats],
    plan: MethodPlan | None,
    check: SelfCheck | None,
    title: str | None = None,
    gains: Mapping[str, float] | None = None,
) -> ReportData:
    """The report of one compile: summary, layer table, histograms, weight ranges, graph pictures."""
    fusion = predict_fusions(compiled)
    pictures, notes = _pictures(compiled, fusion)
    if not stats:
        notes.append("no calibration statistics (scales imported or read from the model): no histograms")
    return ReportData(
        title=title or f"qdqc compile: {model_path}",
        summary=[
            ("model", model_path),
            ("output", output),
            *_model_summary(compiled, fusion),
            *_selfcheck_summary(check),
        ],
        layers=layer_rows(compiled, fusion, stats, plan, gains),
        histograms=tensor_histograms(compiled, stats, plan),
        weight_ranges=weight_ranges(compiled),
        graphs=pictures,
        notes=notes,
    )


def fallback_from_search(result) -> FallbackCurve:
    """A fallback search's steps (``qdq_compiler.search.fallback.FallbackResult``) as a fallback curve:
    the goal's measure (SQNR, or the task metric) at each step, the all-INT8 baseline first."""
    goal = result.goal
    name = "SQNR dB" if goal.kind == "sqnr" else (goal.metric_name or "metric")
    steps = []
    for step in result.steps:
        value = step.sqnr_db if goal.kind == "sqnr" else step.metric
        label = "all INT8" if step.phase == "baseline" else f"{step.phase} {step.unit}"
        steps.append(FallbackStep(label, float("nan") if value is None else value, step.int8_mac_share))
    return FallbackCurve(name, steps)


def fallback_from_sensitivity(report) -> FallbackCurve:
    """Sensitivity's cumulative steps as a fallback curve, the all-INT8 baseline first."""
    steps = [FallbackStep("all INT8", report.baseline.sqnr_db, report.baseline_int8_mac_share)]
    steps += [
        FallbackStep(f"+ {step.float_layers[-1]}", step.sqnr_db, step.int8_mac_share)
        for step in report.cumulative
    ]
    return FallbackCurve("SQNR dB", steps)


def sensitivity_report(
    model_path: str, compiled: ir.Model, stats: Mapping[str, TensorStats], plan, report
) -> ReportData:
    """The compile report of the all-INT8 model plus sensitivity's ranking and cumulative fallback curve."""
    gains = {item.name: item.gain_db for item in report.layers}
    data = compile_report(
        model_path, "(not written)", compiled, stats, plan, None, f"qdqc sensitivity: {model_path}", gains
    )
    data.summary = [item for item in data.summary if item[0] not in ("output", "self-check")]
    data.summary.append(
        ("all-INT8 SQNR", f"{_fmt_db(report.baseline.sqnr_db)} on {report.samples} sample(s)")
    )
    data.ranking = [RankedLayer(item.name, item.gain_db, item.mac_share) for item in report.layers]
    data.fallback = fallback_from_sensitivity(report)
    data.notes += [f"already float: {name} ({reason})" for name, reason in report.already_float]
    data.notes += [f"not measured: {name} ({reason})" for name, reason in report.skipped]
    return data


def _cell(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def eval_report(fp32_path: str, int8_path: str, int8: ir.Model, report) -> ReportData:
    """`qdqc eval`'s numbers as tables, plus the INT8 model's layers, weight ranges and graph pictures."""
    fusion = predict_fusions(int8)
    pictures, notes = _pictures(int8, fusion)
    outputs = Table(
        "outputs, INT8 against FP32",
        ["output", "shape", "SQNR dB", "cosine"],
        [
            [o.name, "[" + ",".join(map(str, o.shape)) + "]", _cell(o.sqnr_db, 2), _cell(o.cosine, 6)]
            for o in report.outputs
        ],
    )
    metrics = Table(
        f"task metrics ({report.kind}, output {report.task_output})",
        ["metric", "INT8 vs FP32", "FP32 vs labels", "INT8 vs labels"],
        [
            [m.name, _cell(m.int8_vs_fp32), _cell(m.fp32_vs_labels), _cell(m.int8_vs_labels)]
            for m in report.metrics
        ],
    )
    summary = [
        ("FP32 model", fp32_path),
        ("INT8 model", int8_path),
        ("task", f"{report.kind} (from {report.kind_source}), {report.samples} samples"),
        *_model_summary(int8, fusion),
    ]
    notes += list(report.notes)
    notes.append("eval reads no calibration statistics: no histograms (compile --report shows them)")
    return ReportData(
        title=f"qdqc eval: {int8_path}",
        summary=summary,
        tables=[outputs, metrics],
        layers=layer_rows(int8, fusion, {}, None),
        weight_ranges=weight_ranges(int8),
        graphs=pictures,
        notes=notes,
    )


def calibration_plan(passes: Sequence) -> MethodPlan | None:
    """The method plan of the pipeline's calibrate pass (None when it has none)."""
    for item in passes:
        if item.name == "calibrate":
            return MethodPlan(item.options.method, tuple(item.options.overrides))
    return None
