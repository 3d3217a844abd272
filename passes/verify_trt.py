"""verify-trt: fail the pipeline when the model breaks TensorRT's Q/DQ rules (qdq_compiler.targets.lint).

The rules follow the target the model records (legalize-trt writes it earlier in the pipeline): a trt11
model is built strongly typed, so its float16 scales are no warning (targets/recipe.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.targets.lint import TrtLintError, lint_model


@register_pass
class VerifyTrt(Pass):
    """Run the TensorRT linter; raise listing the errors (and warnings with fail_on_warning). Never edits."""

    name = "verify-trt"
    summary = "Check the Q/DQ model against TensorRT's rules; fail on errors (optionally on warnings)."

    @dataclass(frozen=True)
    class Options:
        fail_on_warning: bool = False

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        violations = lint_model(model)
        result = PassResult(modified=False)
        errors = [v for v in violations if v.severity == "error"]
        warnings = [v for v in violations if v.severity == "warning"]
        result.statistics["num-lint-errors"] = len(errors)
        result.statistics["num-lint-warnings"] = len(warnings)
        for violation in warnings:
            ctx.logger.warning("verify-trt: %s", violation)
        if errors or (warnings and self.options.fail_on_warning):
            raise TrtLintError(errors + warnings if self.options.fail_on_warning else errors)
        return result
