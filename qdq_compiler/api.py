"""The one import for pass authors: ``from qdq_compiler.api import ...``.

A thin re-export; every name lives in the module listed here, which documents it in full.

Passes (``qdq_compiler.pm``)
    ``Pass`` (subclass: ``name``, ``summary``, an ``Options`` frozen dataclass, ``run(model, ctx)``),
    ``PassContext`` (runtime inputs: calibration data and statistics, ``logger``), ``PassResult``
    (``modified``, named ``statistics``, ``preserved`` facts: ``shape_facts`` of ``ctx.facts`` for an
    edit that changes no value's type or shape), ``register_pass`` (class decorator), ``function_pass``
    (a function as an option-less pass), ``NoOptions``, ``PassManager`` (run a pipeline text),
    ``register_pipeline``. Options are a ``@dataclass(frozen=True) class Options`` inside the pass, every
    field with a default; ``dataclass`` and ``field`` are re-exported for it.
IR (``onnx_ir`` as ``ir``, helpers in ``qdq_compiler.ir``)
    Queries: ``input_of``, ``producer_of``, ``constant_array``, ``attribute_value``, ``sole_user``,
    ``op_counts``, ``is_quantize``, ``is_dequantize``, ``scale_of``, ``zero_point_of``, ``axis_of``.
    ONNX operator facts (``qdq_compiler.ir.op_facts``): ``weighted_op`` (weight input and output-channel
    axis of Conv/ConvTranspose/Gemm/MatMul), ``is_weight_qdq``, ``is_activation_quantizer``, ``node_label``.
    Edits: ``add_constant``, ``replace_value``, ``bypass_node``, ``insert_on_edge``, ``insert_qdq_pair``,
    ``set_scale``, ``eliminate_dead_code``, ``remove_unused_initializers``, ``NameScope`` (fresh names).
    Model I/O and printing: ``load_model``, ``save_model``, ``to_proto``, ``dump``, ``verify``.
State for a later pass (``qdq_compiler.ir.state``)
    ``model_state``, ``set_model_state``, ``value_state``, ``set_value_state``: JSON kept in the model.
The INT8 grid (``qdq_compiler.quant.grid``)
    ``INT8_MAX``, ``scale_from_amax`` (symmetric scale of a range, per tensor or per channel).
Rewriting (``qdq_compiler.rewrite``)
    ``Rewriter`` (every edit of a pattern, counted, named from one scope per graph), ``RewritePattern``
    (anchor op type and ``match_and_rewrite``), ``apply_patterns_greedily`` (the worklist driver; its
    Rewriter says whether it ``converged``), ``RewriteListener`` (told of every insert, erase and change).
Declarative patterns (``qdq_compiler.rewrite.patterns``)
    ``Pattern`` (name, root, ``rewrite`` and ``check`` callbacks), its root built with ``op``, ``var``,
    ``const`` and ``equals`` (they return ``OpPattern``, ``Var`` and ``Const``); the callbacks get a
    ``Match``; ``pattern_pass`` (name, summary, patterns) registers a pass running them.
Errors (``qdq_compiler.errors``)
    ``QdqcError``: a user error, printed as one line (``qdqc: error: ...``).
Testing a pass (``qdq_compiler.accuracy.numerics``)
    ``run_outputs`` (onnxruntime on CPU, deterministic), ``compare_outputs``, ``sqnr_db``.

docs/writing-passes.md is the tutorial; examples/qdqc-example-passes is a plugin package built on this.
"""

from dataclasses import dataclass, field

import onnx_ir as ir

from qdq_compiler.accuracy.numerics import compare_outputs, run_outputs, sqnr_db
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import (
    NameScope,
    add_constant,
    bypass_node,
    constant_array,
    dump,
    eliminate_dead_code,
    input_of,
    insert_on_edge,
    insert_qdq_pair,
    is_dequantize,
    is_quantize,
    load_model,
    op_counts,
    producer_of,
    replace_value,
    save_model,
    to_proto,
    verify,
)
from qdq_compiler.ir.editing import remove_unused_initializers
from qdq_compiler.ir.op_facts import is_activation_quantizer, is_weight_qdq, node_label, weighted_op
from qdq_compiler.ir.qdq import axis_of, scale_of, set_scale, zero_point_of
from qdq_compiler.ir.state import model_state, set_model_state, set_value_state, value_state
from qdq_compiler.pm import (
    NoOptions,
    Pass,
    PassContext,
    PassManager,
    PassResult,
    register_pass,
    register_pipeline,
    shape_facts,
)
from qdq_compiler.pm.base import function_pass
from qdq_compiler.quant.grid import INT8_MAX, scale_from_amax
from qdq_compiler.rewrite import RewriteListener, RewritePattern, Rewriter, apply_patterns_greedily, sole_user
from qdq_compiler.rewrite.patterns import (
    Const,
    Match,
    OpPattern,
    Pattern,
    Var,
    attribute_value,
    const,
    equals,
    op,
    pattern_pass,
    var,
)

__all__ = [
    # passes
    "NoOptions",
    "Pass",
    "PassContext",
    "PassManager",
    "PassResult",
    "dataclass",
    "field",
    "function_pass",
    "register_pass",
    "register_pipeline",
    "shape_facts",
    # IR
    "NameScope",
    "add_constant",
    "attribute_value",
    "axis_of",
    "bypass_node",
    "constant_array",
    "dump",
    "eliminate_dead_code",
    "input_of",
    "insert_on_edge",
    "insert_qdq_pair",
    "ir",
    "is_activation_quantizer",
    "is_weight_qdq",
    "node_label",
    "weighted_op",
    "INT8_MAX",
    "scale_from_amax",
    "is_dequantize",
    "is_quantize",
    "load_model",
    "op_counts",
    "producer_of",
    "remove_unused_initializers",
    "replace_value",
    "save_model",
    "scale_of",
    "set_scale",
    "sole_user",
    "to_proto",
    "verify",
    "zero_point_of",
    # state
    "model_state",
    "set_model_state",
    "set_value_state",
    "value_state",
    # rewriting
    "RewritePattern",
    "RewriteListener",
    "Rewriter",
    "apply_patterns_greedily",
    # declarative patterns
    "Const",
    "Match",
    "OpPattern",
    "Pattern",
    "Var",
    "const",
    "equals",
    "op",
    "pattern_pass",
    "var",
    # errors and testing
    "QdqcError",
    "compare_outputs",
    "run_outputs",
    "sqnr_db",
]
