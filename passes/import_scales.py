"""import-scales: give qdqc's activation Q/DQ the scales of the model strip-qdq took apart.

Runs where ``calibrate`` would (after ``place-qdq``): every activation QuantizeLinear gets
``scale = amax / 127`` with the amax strip-qdq recorded for its tensor. qdqc may quantize a tensor the
imported model left float (a residual Add input, say); by default that is an error naming the tensors, and
``missing=float`` removes those Q/DQ instead (the tensor stays float, as it was in the imported model).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from qdq_compiler.errors import QdqcError
from qdq_compiler.ir.editing import eliminate_dead_code
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.activation_scales import activation_quantizers, apply_amax
from qdq_compiler.quant.activation_scales import quantized_tensor_name as _tensor_name
from qdq_compiler.quant.imported import imported_amax
from qdq_compiler.quant.unquantize import unquantize
from qdq_compiler.rewrite import Rewriter
from qdq_compiler.targets.recipe import IMPORTED, record_calibration

MISSING_CHOICES = ("error", "float")


@register_pass
class ImportScales(Pass):
    """Set activation scales from imported amax instead of calibration data."""

    name = "import-scales"
    summary = "Set activation Q/DQ scales from the imported model's (recorded by strip-qdq)."

    @dataclass(frozen=True)
    class Options:
        missing: str = "error"

        def __post_init__(self) -> None:
            if self.missing not in MISSING_CHOICES:
                raise ValueError(f"missing must be one of {', '.join(MISSING_CHOICES)}, got {self.missing!r}")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        imported = imported_amax(model)
        if imported is None:
            raise QdqcError("import-scales needs strip-qdq earlier in the pipeline (no imported scales)")
        result = PassResult(modified=False)
        quantizers = activation_quantizers(model.graph)
        missing = sorted({_tensor_name(q) for q in quantizers} - set(imported))
        if quantizers and not imported:  # nothing to take over, whatever `missing` says
            raise QdqcError(
                "the imported model carries no activation scales (weights-only quantized, or float): "
                "compile the float model with --calib instead"
            )
        if missing and self.options.missing == "error":
            shown = ", ".join(map(repr, missing[:5]))
            if len(missing) > 5:
                shown += f" and {len(missing) - 5} more"
            raise QdqcError(
                f"the imported model has no scale for {len(missing)} tensor(s) qdqc quantizes: {shown}; "
                "keep them float as the source model did (--missing-scales float, or "
                "import-scales{missing=float}), or compile the float model with --calib"
            )
        rewriter = Rewriter(model.graph)  # one naming scope for every scale constant made below
        for quantize in quantizers:
            name = _tensor_name(quantize)
            if name in missing:
                unquantize(model, quantize, "no imported scale for its input (--missing-scales float)")
                result.statistics["num-left-float"] += 1
                continue
            if apply_amax(quantize, imported[name], rewriter):
                result.statistics["num-scales-set"] += 1
        if result.statistics["num-left-float"]:
            eliminate_dead_code(model.graph)
        recorded = record_calibration(model, IMPORTED)
        result.modified = recorded or any(result.statistics.values())
        return result
