"""Searching over compile variants: the evaluation engine (independent variants sharing one statistics pass
and the float model's outputs), its executors (in-process, local process pool, Ray), calibration statistics
collected by several workers, and the fallback search to an accuracy target."""

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
]
