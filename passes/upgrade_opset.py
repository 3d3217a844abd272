"""upgrade-opset: bring the default-domain opset up to a minimum with onnx's version converter.

Float16 models need opset 19. QuantizeLinear/DequantizeLinear accept only float32 (and int32) at opsets
13-18; float16 and bfloat16 inputs, scales and DequantizeLinear outputs arrive in opset 19. A float16 model
compiled at opset 13 gets Q/DQ that onnx.checker and onnxruntime refuse, so when the model computes in
float16 or bfloat16 anywhere the minimum becomes `min-fp16` (19). This pass runs first, before place-qdq
decides where the Q/DQ go, so it looks at the whole model, not at the Q/DQ positions; a float32 model with
a small float16 section is upgraded too, which costs nothing (TensorRT's ONNX parser reads opsets 9-20 from
TensorRT 10.0 (onnx-tensorrt docs/operators.md, release 10.0/10.1), so 10.3 on JetPack 6 takes opset 19, and
`--target trt11` asks for 19 anyway).

Why not keep the opset and put Casts around each Q/DQ instead: TensorRT fuses a DequantizeLinear into the
Conv/Gemm/MatMul it feeds (tensorrt-qdq.md s4); a Cast between the DQ and the layer is one more op the
fusion would have to see through, and no NVIDIA page says it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx_ir as ir

from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model
from qdq_compiler.ir.external import proto_for_tools, put_weights_back
from qdq_compiler.ir.op_facts import (
    FLOAT16_QDQ_MIN_OPSET,
    FLOAT16_TYPES,
    PER_CHANNEL_MIN_OPSET,
    default_opset,
)
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass


@register_pass
class UpgradeOpset(Pass):
    """Per-channel Q/DQ needs opset 13; float16 Q/DQ (float16 models, strongly typed TensorRT 11) need 19."""

    name = "upgrade-opset"
    summary = (
        "Convert the model to at least the given ONNX opset (13 for per-channel Q/DQ; 19, `min-fp16`, "
        "when the model computes in float16, whose Q/DQ need it)."
    )

    @dataclass(frozen=True)
    class Options:
        min: int = PER_CHANNEL_MIN_OPSET
        min_fp16: int = FLOAT16_QDQ_MIN_OPSET

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        current = default_opset(model.opset_imports, missing=1)
        target = self.options.min
        if computes_in_float16(model.graph):
            target = max(target, self.options.min_fp16)
        if current >= target:
            return PassResult(modified=False)
        try:
            converted = onnx.version_converter.convert_version(proto_for_tools(model), target)
        except Exception as exc:  # the converter raises RuntimeError/ValueError with C++ messages
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QdqcError(
                f"cannot upgrade the model from opset {current} to {target}: {first}; "
                f"re-export it with opset >= {target}"
            ) from None
        upgraded = load_model(converted)
        put_weights_back(model, upgraded)  # a model past 2 GB was converted without its weights
        model.graph = upgraded.graph  # the opset imports belong to the graph and come with it
        result = PassResult(modified=True)
        result.statistics["opset-before"] = current
        result.statistics["opset-after"] = target
        return result


def computes_in_float16(graph: ir.Graph) -> bool:
    """True when a graph input, initializer, node output or Cast target is float16 or bfloat16."""
    values = [*graph.inputs, *graph.initializers.values()]
    for node in graph.all_nodes():
        values.extend(node.outputs)
        to = node.attributes.get("to") if node.op_type == "Cast" else None
        if to is not None and to.as_int() in FLOAT16_TYPES:
            return True
        value_attr = node.attributes.get("value") if node.op_type == "Constant" else None
        tensor = value_attr.as_tensor() if value_attr is not None else None
        if tensor is not None and tensor.dtype in FLOAT16_TYPES:
            return True
    for value in values:
        dtype = value.const_value.dtype if value.const_value is not None else value.dtype
        if dtype in FLOAT16_TYPES:
            return True
    return False
