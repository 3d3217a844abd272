"""The IR facade over onnx-ir: load/save, graph edits, Q/DQ helpers, printer, verifier.

Only this package touches onnx-ir beyond its public Node/Value/Graph objects.
"""

from qdq_compiler.ir.access import input_of, producer_of
from qdq_compiler.ir.analysis import op_counts, to_networkx
from qdq_compiler.ir.editing import (
    NameScope,
    add_constant,
    bypass_node,
    constant_array,
    eliminate_dead_code,
    insert_on_edge,
    replace_value,
    topological_sort,
)
from qdq_compiler.ir.io import load_model, save_model, to_proto
from qdq_compiler.ir.printer import dump
from qdq_compiler.ir.qdq import count_qdq, insert_qdq_pair, is_dequantize, is_quantize
from qdq_compiler.ir.verifier import verify

__all__ = [
    "NameScope",
    "add_constant",
    "bypass_node",
    "constant_array",
    "count_qdq",
    "dump",
    "eliminate_dead_code",
    "input_of",
    "insert_on_edge",
    "insert_qdq_pair",
    "is_dequantize",
    "is_quantize",
    "load_model",
    "op_counts",
    "producer_of",
    "replace_value",
    "save_model",
    "to_networkx",
    "to_proto",
    "topological_sort",
    "verify",
]
