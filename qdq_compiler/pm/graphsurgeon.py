"""Run an onnx-graphsurgeon script as a pass: export to ONNX, edit as gs.Graph, import back."""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.ir.state import STATE_PREFIX
from qdq_compiler.pm.base import Pass, PassContext, PassResult


def graphsurgeon_pass(name: str, summary: str) -> Callable[[Callable], type[Pass]]:
    """Decorator: `fn(graph: gs.Graph) -> None` becomes a Pass that edits the model through graphsurgeon."""

    def wrap(fn: Callable) -> type[Pass]:
        def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
            import onnx_graphsurgeon as gs

            before = to_proto(model)
            graph = gs.import_onnx(before)
            fn(graph)
            graph.cleanup().toposort()
            after = gs.export_onnx(graph)
            after.metadata_props.extend(before.metadata_props)
            if after.graph.SerializeToString() == before.graph.SerializeToString():
                return PassResult(modified=False)
            replacement = load_model(after)
            _carry_value_state(model.graph, replacement.graph)
            model.graph = replacement.graph
            model.opset_imports.update(replacement.opset_imports)
            return PassResult(modified=True)

        return type(
            fn.__name__,
            (Pass,),
            {
                "name": name,
                "summary": summary,
                "run": run,
                "__doc__": fn.__doc__,
                "__module__": fn.__module__,
            },
        )

    return wrap


def _values(graph: ir.Graph) -> list[ir.Value]:
    return [*graph.inputs, *graph.initializers.values(), *(v for node in graph for v in node.outputs)]


def _carry_value_state(before: ir.Graph, after: ir.Graph) -> None:
    """Give ``after``'s tensors the qdqc state (calibrated amax) of ``before``'s tensors of the same name:
    graphsurgeon drops value metadata."""
    state = {
        value.name: {key: text for key, text in value.metadata_props.items() if key.startswith(STATE_PREFIX)}
        for value in _values(before)
        if value.name
    }
    for value in _values(after):
        value.metadata_props.update(state.get(value.name or "", {}))
