"""unify-scales: give every tensor in a scale group (Concat, MaxPool, commuting ops) one scale.

Rule for the group's amax: the largest calibrated amax among its quantized members. A Concat's output range
is the union of its inputs' ranges, so the largest member amax clips none of them; taking a smaller one would
clip the widest branch, which is the error TensorRT users see as lost boxes.

Exception, members far below the group: a member whose own amax is below ``group amax / max-ratio`` is not
tied. On the shared grid it would keep fewer than ``127 / max-ratio`` INT8 levels (none at all at ratios near
127 and beyond: a branch 10^4 times smaller than its Concat partner quantizes to 0, and so does every layer
reading it). It keeps its own scale instead; TensorRT then runs a requantization where it meets the group
(``qdqc explain`` lists it), and a warning names the tensor and the ratio. The default ratio 16 leaves a tied
member at least 8 levels (3 bits); real networks stay far inside it (YOLOv7-tiny and the bundled detector:
largest ratio ~3), so their groups are tied as before.

``disagree=float`` keeps such a group float instead of splitting it: when any member is more than
``max-ratio`` below the group (a quantized member by its own scale; a Concat input that only the Concat reads,
which has no Q of its own but gets the output's from TensorRT, by the absmax calibrate collected for it),
every member's activation Q/DQ is removed (the Concat, its inputs and output
read float; weighted layers that read a member become float layers, recorded with the reason). This trades
the INT8 MACs of those readers for the precision of the narrow members and no requantization; bench
``bench/bench_accuracy.py`` (variant ``group-float``) measures it on the bundled models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.editing import eliminate_dead_code
from qdq_compiler.ir.qdq import axis_of, scale_of
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.grid import INT8_MAX
from qdq_compiler.quant.scale_groups import quantizers_of, scale_groups
from qdq_compiler.quant.unquantize import unquantize
from qdq_compiler.rewrite import Rewriter

INT8_LEVELS = INT8_MAX  # levels on one side of zero
DISAGREE_CHOICES = ("untie", "float")  # a member far below its group keeps its own scale / the group is float


@register_pass
class UnifyScales(Pass):
    """Tie the scales TensorRT needs equal, so Q/DQ cancel instead of leaving requantize layers."""

    name = "unify-scales"
    summary = (
        "Give all Concat inputs/output and commuting-op inputs/outputs one scale per group (max amax); "
        "members more than max-ratio below it keep their own."
    )

    @dataclass(frozen=True)
    class Options:
        tie_residual_add: bool = False
        max_ratio: float = 16.0
        disagree: str = "untie"

        def __post_init__(self) -> None:
            if not self.max_ratio >= 1.0:
                raise ValueError(f"max-ratio must be >= 1 (got {self.max_ratio})")
            if self.disagree not in DISAGREE_CHOICES:
                raise ValueError(
                    f"disagree must be one of {', '.join(DISAGREE_CHOICES)}, got {self.disagree!r}"
                )

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        result = PassResult(modified=False)
        # one naming scope for every scale constant made below, built at the first edit (none: no scan)
        rewriter: Rewriter | None = None
        for group in scale_groups(model.graph, self.options.tie_residual_add):
            members = [(tensor, _per_tensor_quantizers(tensor)) for tensor in group]
            unquantized = [tensor for tensor, quantizers in members if not quantizers]
            members = [(tensor, quantizers) for tensor, quantizers in members if quantizers]
            own = {id(tensor): _largest_scale(quantizers) for tensor, quantizers in members}
            known = [scale for scale in own.values() if scale is not None]
            if not known:
                continue
            shared = max(known)
            widest = next(tensor for tensor, _ in members if own[id(tensor)] == shared)
            if self.options.disagree == "float":
                ratio = _largest_ratio(shared, known, unquantized, ctx)
                if ratio > self.options.max_ratio:
                    rewriter = rewriter or Rewriter(model.graph)  # its scope keeps the names removed here
                    _keep_float(model, ctx, members, widest, ratio)
                    result.statistics["num-groups-kept-float"] += 1
                    continue
            if sum(len(quantizers) for _, quantizers in members) < 2:
                continue
            result.statistics["num-scale-groups"] += 1
            for tensor, quantizers in members:
                scale = own[id(tensor)]
                if scale is not None and scale * self.options.max_ratio < shared:
                    _warn_untied(ctx, tensor, widest, shared / scale)
                    result.statistics["num-members-untied"] += 1
                    continue
                for quantize in quantizers:
                    current = scale_of(quantize)
                    if current is not None and float(np.asarray(current).reshape(())) == shared:
                        continue
                    rewriter = rewriter or Rewriter(model.graph)
                    rewriter.set_scale(quantize, np.float32(shared))
                    result.statistics["num-scales-unified"] += 1
        if result.statistics["num-groups-kept-float"]:
            eliminate_dead_code(model.graph)
        result.modified = (
            result.statistics["num-scales-unified"] + result.statistics["num-groups-kept-float"] > 0
        )
        return result


def _largest_ratio(shared: float, known: list[float], unquantized: list[ir.Value], ctx: PassContext) -> float:
    """How far the group's narrowest member is below its scale: quantized members by their own scale, and
    unquantized ones (a Concat input read only by the Concat: TensorRT moves the output's Q onto it) by the
    absmax calibrate collected for them (ctx.calibration_stats); all-zero members do not count."""
    ratios = [shared / scale for scale in known if scale > 0.0]
    for tensor in unquantized:
        stats = ctx.calibration_stats.get(tensor.name or "")
        if stats is not None and stats.absmax > 0.0:
            ratios.append(shared * INT8_LEVELS / float(stats.absmax))
    return max(ratios, default=1.0)


def _keep_float(
    model: ir.Model,
    ctx: PassContext,
    members: list[tuple[ir.Value, list[ir.Node]]],
    widest: ir.Value,
    ratio: float,
) -> None:
    """Remove every member's activation Q/DQ (disagree=float) and say so."""
    reason = f"reads a scale group whose ranges differ {ratio:.3g}x (unify-scales{{disagree=float}})"
    for _, quantizers in members:
        for quantize in quantizers:
            unquantize(model, quantize, reason)
    ctx.logger.warning(
        "unify-scales: the scale group of %r stays float: a member's range is %.3g times smaller than the "
        "group's, more than max-ratio (disagree=float)",
        widest.name,
        ratio,
    )


def _per_tensor_quantizers(tensor: ir.Value) -> list[ir.Node]:
    return [q for q in quantizers_of(tensor) if axis_of(q) is None]


def _largest_scale(quantizers: list[ir.Node]) -> float | None:
    """The member's own calibrated scale (the largest of its Qs'), None when no Q has a constant scale."""
    scales = [scale_of(q) for q in quantizers]
    known = [float(np.asarray(s).reshape(())) for s in scales if s is not None]
    return max(known) if known else None


def _warn_untied(ctx: PassContext, tensor: ir.Value, widest: ir.Value, ratio: float) -> None:
    ctx.logger.warning(
        "unify-scales: %r is not tied to the scale of its group: its range is %.3g times smaller than that "
        "of %r, so on the shared scale it would keep %.3g INT8 levels; it keeps its own scale, and TensorRT "
        "requantizes where it joins the group",
        tensor.name,
        ratio,
        widest.name,
        INT8_LEVELS / ratio,
    )
