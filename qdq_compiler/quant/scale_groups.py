"""Scale groups: tensors TensorRT needs to share one scale, found with union-find over the graph.

A group joins the inputs and the output of every Concat, and the data input and outputs of every op that
Q/DQ commute with (MaxPool, nearest Resize, Reshape, Transpose, Slice, Split, Flatten, Squeeze, Unsqueeze,
Identity, ...: the table in targets/trt_rules.py). Tensors are identified through Q/DQ pairs: the output of
DQ(Q(t)) counts as t itself.
"""

from __future__ import annotations

from collections import defaultdict

import onnx_ir as ir
from networkx.utils import UnionFind

from qdq_compiler.ir.access import input_of
from qdq_compiler.ir.qdq import is_dequantize, is_quantize
from qdq_compiler.targets.trt_rules import commuting_rule


def underlying_tensor(value: ir.Value) -> ir.Value:
    """The float tensor behind `value`: t for the output of DQ(Q(t)), else `value` itself."""
    dequantize = value.producer()
    if is_dequantize(dequantize) and dequantize.inputs[0] is not None:
        quantize = dequantize.inputs[0].producer()
        if is_quantize(quantize) and quantize.inputs[0] is not None:
            return quantize.inputs[0]
    return value


def scale_groups(graph: ir.Graph, tie_residual_add: bool = False) -> list[list[ir.Value]]:
    """Groups (of two or more tensors) that must share one scale, each in graph order, deterministic."""
    order: dict[int, int] = {}
    values: dict[int, ir.Value] = {}

    def key(value: ir.Value) -> int:
        tensor = underlying_tensor(value)
        values.setdefault(id(tensor), tensor)
        order.setdefault(id(tensor), len(order))
        return id(tensor)

    union: UnionFind[int] = UnionFind()
    for node in graph:
        if is_quantize(node) or is_dequantize(node):
            continue
        rule = commuting_rule(node)
        if rule is not None:
            members = [key(input_of(node, i)) for i in rule.data_input_indices(node)]
            members += [key(v) for v in node.outputs if v.uses() or v.is_graph_output()]
            union.union(*members)
        elif tie_residual_add and node.op_type == "Add" and len(node.inputs) == 2:
            left, right = node.inputs
            if left is not None and right is not None:
                union.union(key(left), key(right))
    groups: dict[int, list[int]] = defaultdict(list)
    for member in sorted(order, key=order.__getitem__):
        groups[union[member]].append(member)
    return [[values[m] for m in members] for members in groups.values() if len(members) > 1]


def quantizers_of(tensor: ir.Value) -> list[ir.Node]:
    """The QuantizeLinear nodes reading `tensor`."""
    return [user for user, index in tensor.uses() if is_quantize(user) and index == 0]
