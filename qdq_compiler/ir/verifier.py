"""Structural checks of the IR, run between passes with --verify-each."""

from __future__ import annotations

import onnx
import onnx_ir as ir

from qdq_compiler.errors import VerificationError
from qdq_compiler.ir.op_facts import describe_node


def verify(model: ir.Model, check_onnx: bool = True, full_check: bool = False) -> None:
    """Raise VerificationError if a value is used before it is defined, names clash, or onnx rejects it."""
    graph = model.graph
    defined: set[int] = {id(v) for v in graph.inputs}
    defined.update(id(v) for v in graph.initializers.values())
    names: dict[str, str] = {}
    for value in list(graph.inputs) + list(graph.initializers.values()):
        if value.name:
            names.setdefault(value.name, "input/initializer")
    for node in graph:
        for read in node.inputs:
            if read is not None and id(read) not in defined and read.graph is graph:
                raise VerificationError(f"{describe_node(node)} reads '{read.name}' before it is defined")
        for value in node.outputs:
            if value.name in names:
                raise VerificationError(
                    f"value name '{value.name}' is defined twice "
                    f"(by {names[value.name]} and by {describe_node(node)})"
                )
            if value.name:
                names[value.name] = describe_node(node)
            defined.add(id(value))
    for value in graph.outputs:
        if id(value) not in defined:
            raise VerificationError(f"graph output '{value.name}' is never produced")
    if check_onnx:
        from qdq_compiler.ir.external import check_model

        try:
            check_model(model, full_check=full_check)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
            raise VerificationError(f"onnx checker: {first}") from exc
