"""Pass infrastructure: Pass, PassContext, PassResult, registry, pipeline text, PassManager, instruments."""

from qdq_compiler.pm.base import NoOptions, Pass, PassContext, PassResult
from qdq_compiler.pm.manager import PassManager, stamp_model
from qdq_compiler.pm.pipeline import format_pipeline, parse_pipeline
from qdq_compiler.pm.registry import (
    all_passes,
    all_pipelines,
    get_pass,
    get_pipeline,
    load_plugin,
    register_pass,
    register_pipeline,
)

__all__ = [
    "NoOptions",
    "Pass",
    "PassContext",
    "PassManager",
    "PassResult",
    "all_passes",
    "all_pipelines",
    "format_pipeline",
    "get_pass",
    "get_pipeline",
    "load_plugin",
    "parse_pipeline",
    "register_pass",
    "register_pipeline",
    "stamp_model",
]
