"""infer-shapes: annotate every value with the dtype and shape ONNX shape inference derives."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx_ir as ir

from qdq_compiler.ir.external import proto_for_inference
from qdq_compiler.pm import SHAPES_INFERRED, Pass, PassContext, PassResult, register_pass


@register_pass
class InferShapes(Pass):
    """Run onnx shape inference (with data propagation) and copy types and shapes onto the IR values."""

    name = "infer-shapes"
    summary = "Annotate values with dtypes and shapes from ONNX shape inference."

    @dataclass(frozen=True)
    class Options:
        data_prop: bool = True
        strict: bool = False

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        # Inference on a graph no pass changed since it last ran here (same options) finds nothing new.
        inferred_fact = (SHAPES_INFERRED, self.options)
        if ctx.facts is not None and inferred_fact in ctx.facts:
            return PassResult(modified=False)
        result = self._annotate(model)
        if ctx.facts is not None:
            ctx.facts.add(inferred_fact)
        result.preserved = frozenset({inferred_fact})  # annotating shapes leaves them inferred
        return result

    def _annotate(self, model: ir.Model) -> PassResult:
        proto = proto_for_inference(model)  # past 256 MB without the weights, which inference does not read
        inferred = onnx.shape_inference.infer_shapes(
            proto, check_type=True, strict_mode=self.options.strict, data_prop=self.options.data_prop
        )
        known = {info.name: info for info in inferred.graph.value_info}
        known.update({info.name: info for info in inferred.graph.output})
        result = PassResult(modified=False)
        for node in model.graph:
            for value in node.outputs:
                info = known.get(value.name or "")
                if info is None or not info.type.HasField("tensor_type"):
                    continue
                if _apply(value, info.type.tensor_type):
                    result.modified = True
                    result.statistics["num-values-annotated"] += 1
        return result


def _apply(value: ir.Value, tensor_type: onnx.TypeProto.Tensor) -> bool:
    """Set dtype and shape from inference where they are new or more precise; say whether anything changed."""
    changed = False
    if tensor_type.elem_type and (value.type is None or value.dtype is None):
        value.type = ir.TensorType(ir.DataType(tensor_type.elem_type))
        changed = True
    if tensor_type.HasField("shape"):
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim
        ]
        new_shape = ir.Shape(dims)
        if value.shape is None or (
            _unknown_dims(value.shape) > _unknown_dims(new_shape) and len(value.shape) == len(new_shape)
        ):
            value.shape = new_shape
            changed = True
    return changed


def _unknown_dims(shape: ir.Shape) -> int:
    return sum(1 for d in shape if not isinstance(d, int))
