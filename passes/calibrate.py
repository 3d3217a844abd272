"""calibrate: run the float model over calibration data and set every activation Q/DQ scale to amax/127."""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass

import onnx_ir as ir

from qdq_compiler.calib import DEFAULT_NUM_BINS, MethodPlan, collect_statistics, open_calibration_data
from qdq_compiler.calib.methods import AMAX_FLOOR, parse_method_spec
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir.access import input_of
from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.op_facts import GATE_OPS
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.activation_scales import activation_quantizers, apply_amax
from qdq_compiler.quant.activation_scales import quantized_tensor_name as _tensor_name
from qdq_compiler.quant.auto_method import (
    AutoOptions,
    auto_tensors,
    choose_auto,
    format_auto_table,
    lead_auto_spec,
    record_auto,
)
from qdq_compiler.quant.float_view import float_view
from qdq_compiler.quant.grid import INT8_MAX
from qdq_compiler.quant.notices import first_names, warn_once
from qdq_compiler.quant.scale_groups import underlying_tensor
from qdq_compiler.rewrite import Rewriter
from qdq_compiler.targets.recipe import record_calibration

DROWNED_RATIO = 16.0  # the ratio unify-scales unties members at (docs/placement.md)
# amax of an activation that was zero on every calibration sample (scale 1/127; zero quantizes exactly)
ZERO_TENSOR_AMAX = 1.0


@register_pass
class Calibrate(Pass):
    """Streams statistics of every tensor an activation Q reads, then applies the chosen method.

    Statistics come from `ctx.calibration_stats` when they cover every tensor (a calibration cache),
    else they are collected from `ctx.calibration_data` and left in `ctx.calibration_stats`.

    The data are read twice (`exact=true`, the default): abs-max first, then exactly `num-bins` bins over
    [0, abs-max], so every method reads a histogram that does not depend on which batch comes first, and
    entropy and mse find the exact minimum of their objective (a one-pass histogram moved them by more than
    one bin on flat minima: bench/README.md, bench_onepass.py). `exact=false` (`--one-pass`) reads the data
    once: each tensor's histogram of |x| starts as `num-bins` bins over the first batch's abs-max and grows
    with bins of the same width as larger values arrive (pytorch-quantization's calibration histogram).
    Data that can be read only once (a one-shot iterable), and a cache of one-pass statistics, give one-pass
    histograms unless `exact=true` was asked for explicitly (then the first warns and the second is refused).

    A tensor that was zero on every sample gets amax 1.0 (scale 1/127) rather than the methods' floor, with a
    warning naming it; override patterns that match no tensor are warned about (docs/calibration-data.md).

    `method=auto` chooses per scale group among its candidates (max, percentile 99.999/99.99/99.9, mse,
    entropy) by the expected quantization SQNR on each tensor's own histogram; the evaluation engine has
    compiled that mix and each candidate alone and measured each on the model's outputs against float (the
    first `samples` samples of `--eval` data, else of the calibration data; `ctx.auto_validation`), and
    the best is kept; it logs a per-method table at info
    level and records its choice in the model (`qdq_compiler.calibration_auto`), docs/calibration-cache.md.

    The default method is `percentile` (p=99.99) on the exact histogram: on the three bundled models it met
    every accuracy target of issue 15 (output SQNR and task metric at or above Model Optimizer's and
    onnxruntime's, classifier top-1 agreement >= 0.99), where `mse` on the exact histogram left the detector's
    SQNR below Model Optimizer's and the classifier's agreement at 0.98 (bench/README.md, bench_accuracy.py).
    On YOLOv7 NVIDIA's QAT study found histogram-MSE best: `--method mse` stays one flag away.

    `gate-method` (default `max`) calibrates the outputs of Sigmoid and HardSigmoid (gates in [0, 1] that
    multiply a feature map, e.g. squeeze-excitation) whatever `method` says; `default` leaves them to it, and
    a `--calib-override` naming such a tensor wins. HardSigmoid saturates at exactly 1, so the top of a gate's
    histogram is a spike, not a tail: a method that clips it (entropy put the bundled classifier's SE gates at
    0.16-0.28) scales every saturated activation down, a bias no later layer corrects (classifier entropy:
    0.49 dB without the rule, bench/README.md).
    """

    name = "calibrate"
    summary = "Set activation Q/DQ scales from calibration data (max, percentile, entropy, mse)."

    @dataclass(frozen=True)
    class Options:
        method: str = "percentile"
        overrides: tuple[str, ...] = ()
        num_bins: int = DEFAULT_NUM_BINS
        exact: bool = True
        gate_method: str = "max"

        def __post_init__(self) -> None:
            spec = parse_method_spec(self.method)  # a malformed method fails when the pipeline is read
            if spec.name == "auto":
                AutoOptions.of(spec)  # and so does a bad candidate of auto
            if self.gate_method != "default" and parse_method_spec(self.gate_method).name == "auto":
                raise QdqcError("gate-method takes a single method (or 'default'), not auto")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        quantizers = activation_quantizers(model.graph)
        result = PassResult(modified=False)
        if not quantizers:
            return result
        names = sorted({_tensor_name(q) for q in quantizers})
        members = _concat_members(quantizers)
        stats = self._statistics(model, names, sorted(set(members) - set(names)), ctx)
        op_types = {name: _op_types(q) for q in quantizers for name in [_tensor_name(q)]}
        user_plan = MethodPlan(self.options.method, tuple(self.options.overrides))
        plan = MethodPlan(user_plan.default, (*user_plan.overrides, *self._gate_overrides(quantizers)))
        for pattern in user_plan.unmatched_patterns(names, op_types):
            warn_once(
                ctx,
                "--calib-override %r matches no calibrated tensor (%s)",
                pattern,
                "op types: " + ", ".join(sorted({o for v in op_types.values() for o in v}))
                if pattern.startswith("op:")
                else f"tensors: {first_names(names)}",
            )
        auto = auto_tensors(plan, names, op_types)
        amax = plan.compute({name: stats[name] for name in names if name not in set(auto)}, op_types)
        if auto:
            outcome = choose_auto(
                model,
                stats,
                amax,
                auto,
                AutoOptions.of(lead_auto_spec(plan, auto, op_types)),
                ctx.auto_validation,
                ctx.logger,
                guard=lambda variant: _zero_tensors_amax(stats, variant),
            )
            amax = outcome.amax
            ctx.logger.info("%s", format_auto_table(outcome))
            for method, count in outcome.counts().items():
                result.statistics[f"auto-tensors:{method}"] = count
            result.modified |= record_auto(model, outcome)
        _guard_degenerate(model, {name: stats[name] for name in names}, amax, ctx)
        _warn_drowned_members(members, stats, amax, ctx)
        rewriter = Rewriter(model.graph)  # one naming scope for every scale constant made below
        for quantize in quantizers:
            if apply_amax(quantize, float(amax[_tensor_name(quantize)]), rewriter):
                result.statistics["num-scales-set"] += 1
        result.statistics["num-tensors-calibrated"] = len(names)
        recorded = record_calibration(model, plan_text(self.options.method, self.options.overrides))
        result.modified = result.modified or result.statistics["num-scales-set"] > 0 or recorded
        return result

    def _gate_overrides(self, quantizers: list[ir.Node]) -> tuple[tuple[str, str], ...]:
        """``(exact-name pattern, gate-method)`` per quantized gate output, to follow the user overrides."""
        if self.options.gate_method == "default":
            return ()
        gates = set()
        for quantize in quantizers:
            producer = input_of(quantize, 0).producer()
            if producer is not None and producer.op_type in GATE_OPS:
                gates.add(_tensor_name(quantize))
        return tuple((glob.escape(name), self.options.gate_method) for name in sorted(gates))

    def _statistics(self, model: ir.Model, names: list[str], optional: list[str], ctx: PassContext) -> dict:
        """Statistics of ``names`` (and of ``optional`` when collected here, or cached)."""
        cached = ctx.calibration_stats
        if cached and all(name in cached for name in names):
            one_pass = [name for name in names if cached[name].binning != "fixed"]
            if self.options.exact and one_pass and "exact" in self.explicit_options:
                raise QdqcError(
                    f"exact=true (--two-pass) asks for two-pass statistics, but the calibration cache holds "
                    f"one-pass statistics of {len(one_pass)} tensor(s): rebuild it with `qdqc calibrate "
                    "--two-pass`, or drop --two-pass"
                )
            return cached
        if ctx.calibration_data is None:
            raise QdqcError(
                "calibrate needs calibration data (--calib DATA) or a calibration cache (--calib-cache); "
                "random data is never used silently"
            )
        proto = float_view(model)
        data = open_calibration_data(ctx.calibration_data, proto)
        exact = self.options.exact and data.reiterable
        if self.options.exact and not exact and "exact" in self.explicit_options:
            ctx.logger.warning("calibration data can be read only once: one-pass histograms (exact=false)")
        collect = ctx.statistics_collector or collect_statistics
        collected = collect(
            proto,
            names + optional,
            data,
            num_bins=self.options.num_bins,
            progress=ctx.progress,
            exact=exact,
        )
        ctx.calibration_stats.update(collected)
        return ctx.calibration_stats


def _zero_tensors_amax(stats: dict, amax: dict[str, float]) -> list[str]:
    """Give the tensors in ``amax`` that were zero on every sample ``ZERO_TENSOR_AMAX`` (no warning); return
    their names, sorted."""
    zero = sorted(name for name in amax if name in stats and stats[name].absmax <= AMAX_FLOOR)
    for name in zero:
        amax[name] = ZERO_TENSOR_AMAX
    return zero


def _guard_degenerate(model: ir.Model, stats: dict, amax: dict[str, float], ctx: PassContext) -> None:
    """Give all-zero tensors ``ZERO_TENSOR_AMAX`` (in place of a ~1e-10 scale) and warn; warn about constant
    graph inputs too.

    A tensor that was zero on every calibration sample quantizes exactly with any scale; the floor scale
    would crush any non-zero value it sees later to ~1e-8 and make a consumer's INT32 bias overflow.
    """
    zero = _zero_tensors_amax(stats, amax)
    if zero:
        warn_once(
            ctx,
            "%d activation tensor(s) were all zero over the calibration data (%s): they get scale 1/127 "
            "(amax %g) instead of ~1e-10; is the calibration data all zeros or constant?",
            len(zero),
            first_names(zero),
            ZERO_TENSOR_AMAX,
        )
    inputs = {value.name for value in model.graph.inputs}
    for name in sorted(set(stats) & inputs):
        if name not in zero and stats[name].min == stats[name].max:
            warn_once(
                ctx,
                "calibration data of input %r is constant (every value %g): its scale fits "
                "that one value only",
                name,
                stats[name].min,
            )


def _concat_members(quantizers: list[ir.Node]) -> dict[str, tuple[str, list[str]]]:
    """Each activation input of a Concat whose output a Q reads: its name -> (Concat output, consumers)."""
    members: dict[str, tuple[str, list[str]]] = {}
    for quantize in quantizers:
        tensor = input_of(quantize, 0)
        producer = tensor.producer()
        if producer is None or producer.op_type != "Concat":
            continue
        readers = [
            user.name or user.op_type
            for dq, _ in quantize.outputs[0].uses()
            for value in dq.outputs
            for user, _ in value.uses()
        ]
        for member in producer.inputs:
            # a member read through its DQ: the tensor its Q quantizes
            member = underlying_tensor(member) if member is not None else None
            if member is not None and member.name and constant_array(member) is None:
                members[member.name] = (tensor.name or "", readers)
    return members


def _warn_drowned_members(
    members: dict[str, tuple[str, list[str]]], stats: dict, amax: dict[str, float], ctx: PassContext
) -> None:
    """Warn where one Concat input's range is far below the scale its Concat output is quantized with.

    A quantized Concat output has one scale for all its inputs (TensorRT moves the Q onto each of them), so
    an input whose range is more than ``DROWNED_RATIO`` times smaller keeps fewer than 127 / 16 ~ 8 INT8
    levels, and one 10**4 times smaller is rounded to 0 (issue 12, 2a). No scale choice helps there: the
    layers reading the Concat output must stay float to keep that branch (``--exclude``).
    """
    for member, (output, readers) in sorted(members.items()):
        if member not in stats or output not in amax:
            continue
        reach = float(stats[member].absmax)
        ratio = amax[output] / reach if reach > 0.0 else math.inf
        if ratio > DROWNED_RATIO:
            warn_once(
                ctx,
                "Concat output %r is quantized with one scale (amax %.4g) but its input %r reaches only %.4g "
                "(%.3g times less): INT8 keeps about %d level(s) of that input; keep %s float (--exclude) "
                "if it matters",
                output,
                amax[output],
                member,
                reach,
                ratio,
                int(INT8_MAX / ratio) if math.isfinite(ratio) else 0,
                ", ".join(repr(name) for name in readers) or "its readers",
            )


def _op_types(quantize: ir.Node) -> tuple[str, ...]:
    """The producer op type and the op types reading the quantized tensor, for per-op overrides."""
    tensor = input_of(quantize, 0)
    producer = tensor.producer()
    ops = [producer.op_type] if producer is not None else []
    for dq, _ in quantize.outputs[0].uses():
        ops.extend(user.op_type for value in dq.outputs for user, _ in value.uses())
    return tuple(dict.fromkeys(ops))


def plan_text(method: str, overrides: tuple[str, ...]) -> str:
    """The calibration recorded in the model: the method, and the per-tensor overrides if any."""
    return f"{method} (overrides: {', '.join(overrides)})" if overrides else method
