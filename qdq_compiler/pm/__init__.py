"""Pass infrastructure: Pass, PassContext, PassResult, registry, pipeline text, PassManager, instruments."""

from qdq_compiler.pm.base import SHAPES_INFERRED, NoOptions, Pass, PassContext, PassResult, shape_facts
from qdq_compiler.pm.manager import PassManager, stamp_model
from qdq_compiler.pm.pipeline import format_pipeline, parse_pipeline, pipeline_options
from qdq_compiler.pm.pipeline_options import PipelineOption, set_option, settle_pipeline
from qdq_compiler.pm.registry import (
    NamedPipeline,
    all_passes,
    all_pipelines,
    get_named_pipeline,
    get_pass,
    get_pipeline,
    load_passes,
    load_plugin,
    register_pass,
    register_pipeline,
)

__all__ = [
    "SHAPES_INFERRED",
    "NamedPipeline",
    "NoOptions",
    "Pass",
    "PassContext",
    "PassManager",
    "PassResult",
    "PipelineOption",
    "all_passes",
    "all_pipelines",
    "format_pipeline",
    "get_named_pipeline",
    "get_pass",
    "get_pipeline",
    "load_passes",
    "load_plugin",
    "parse_pipeline",
    "pipeline_options",
    "register_pass",
    "register_pipeline",
    "set_option",
    "settle_pipeline",
    "shape_facts",
    "stamp_model",
]
