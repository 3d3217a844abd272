"""upgrade-opset: bring the default-domain opset up to a minimum with onnx's version converter."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx_ir as ir

from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model
from qdq_compiler.ir.external import proto_for_tools, put_weights_back
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass


@register_pass
class UpgradeOpset(Pass):
    """Per-channel Q/DQ needs opset 13, FP16 scales (strongly typed TensorRT 11) need opset 19."""

    name = "upgrade-opset"
    summary = (
        "Convert the model to at least the given ONNX opset (13 for per-channel Q/DQ, 19 for FP16 Q/DQ)."
    )

    @dataclass(frozen=True)
    class Options:
        min: int = 13

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        current = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        if current >= self.options.min:
            return PassResult(modified=False)
        try:
            converted = onnx.version_converter.convert_version(proto_for_tools(model), self.options.min)
        except Exception as exc:  # the converter raises RuntimeError/ValueError with C++ messages
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QdqcError(
                f"cannot upgrade the model from opset {current} to {self.options.min}: {first}; "
                f"re-export it with opset >= {self.options.min}"
            ) from None
        upgraded = load_model(converted)
        put_weights_back(model, upgraded)  # a model past 2 GB was converted without its weights
        model.graph = upgraded.graph  # the opset imports belong to the graph and come with it
        result = PassResult(modified=True)
        result.statistics["opset-before"] = current
        result.statistics["opset-after"] = self.options.min
        return result
