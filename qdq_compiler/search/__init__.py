"""Searching over compile variants: the evaluation engine (independent variants sharing one statistics pass
and the float model's outputs), its executors (in-process, local process pool, Ray), calibration statistics
collected by several workers, and what runs on it: the fallback search to an accuracy target,
`qdqc sensitivity`'s variants and ``--method auto``'s validation."""

from qdq_compiler.search.engine import (
    EvalSetup,
    EvalSource,
    Evaluator,
    Measurement,
    TaskGoal,
    Variant,
    build_setup,
)
from qdq_compiler.search.executors import Executor, make_executor
from qdq_compiler.search.method_auto import validate_method_auto
from qdq_compiler.search.sensitivity import measure_sensitivity

__all__ = [
    "EvalSetup",
    "EvalSource",
    "Evaluator",
    "Executor",
    "Measurement",
    "TaskGoal",
    "Variant",
    "build_setup",
    "make_executor",
    "measure_sensitivity",
    "validate_method_auto",
]
