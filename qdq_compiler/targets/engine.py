"""Build a TensorRT engine from a Q/DQ ONNX file with the `tensorrt` Python API (on the Jetson or a GPU host).

tensorrt is imported lazily: everything else in qdq_compiler works without it, and calling build_engine
where it is missing raises TensorRTUnavailable. The settings mirror trtexec_command (same BuildPlan):
TensorRT 10 weakly typed sets the INT8 and FP16 builder flags; strongly typed (always on TensorRT 11)
sets none and the ONNX types decide. The engine's layer information (IEngineInspector, detailed
verbosity) is written as JSON, the same format `trtexec --exportLayerInfo` writes, for layer_report.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdq_compiler.errors import EXIT_NO_TENSORRT, QdqcError
from qdq_compiler.targets.trtexec import BuildPlan, default_artifacts, resolve_build

INSTALL_HINT = (
    "install TensorRT's Python bindings (JetPack ships them on Jetson; `pip install tensorrt` on x86 with "
    "an NVIDIA GPU), or build on the device with the line `qdqc build MODEL --print-trtexec` prints"
)


class TensorRTUnavailable(QdqcError):
    """The tensorrt Python package is not importable here (exit 4: `qdqc build` prints the trtexec line)."""

    exit_code = EXIT_NO_TENSORRT


class EngineBuildError(QdqcError):
    """TensorRT could not parse or build the model."""


@dataclass
class EngineBuild:
    """What build_engine produced."""

    engine_path: Path
    layer_info_path: Path | None
    layer_info: dict[str, Any] | None
    trt_version: str
    plan: BuildPlan


def import_tensorrt():
    """Import and return the tensorrt module, or raise TensorRTUnavailable with an install hint."""
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailable(f"TensorRT is not available ({exc}); {INSTALL_HINT}") from None
    return tensorrt


def tensorrt_major(trt) -> int:
    """Major version of an imported tensorrt module."""
    return int(str(trt.__version__).split(".")[0])


def build_engine(
    model_path: str | Path,
    engine_path: str | Path,
    *,
    target: str = "x86",
    trt_major: int | None = None,
    strongly_typed: bool | None = None,
    dla_core: int | None = None,
    shapes: str | None = None,
    workspace_mib: int | None = None,
    timing_cache: str | Path | None = None,
    layer_info_path: str | Path | None = None,
) -> EngineBuild:
    """Parse `model_path`, build and save the engine, and write its layer information JSON beside it."""
    trt = import_tensorrt()
    installed = tensorrt_major(trt)
    if trt_major is not None and trt_major != installed:
        raise EngineBuildError(f"asked for TensorRT {trt_major} but TensorRT {trt.__version__} is installed")
    plan = resolve_build(target, installed, dla_core, shapes, strongly_typed)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        detail = "; ".join(errors) or "unknown error"
        raise EngineBuildError(f"TensorRT could not parse {model_path}: {detail}")
    config = builder.create_builder_config()
    _configure(trt, builder, network, config, plan, workspace_mib)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        data = cache_path.read_bytes() if cache_path.exists() else b""
        config.set_timing_cache(config.create_timing_cache(data), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {model_path} (see the TensorRT log above)")
    engine_file = Path(engine_path)
    engine_file.parent.mkdir(parents=True, exist_ok=True)
    engine_file.write_bytes(bytes(serialized))
    if cache_path is not None:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    info_path = Path(layer_info_path or default_artifacts(engine_file)["layer_info"])
    info = _layer_information(trt, logger, serialized)
    info_path.write_text(json.dumps(info, indent=2))
    return EngineBuild(engine_file, info_path, info, str(trt.__version__), plan)


def _network_flags(trt, plan: BuildPlan) -> int:
    """STRONGLY_TYPED on TensorRT 10 when asked; TensorRT 11 deprecated the flag (always strongly typed)."""
    if plan.strongly_typed and plan.trt_major < 11:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _configure(trt, builder, network, config, plan: BuildPlan, workspace_mib: int | None) -> None:
    """Precision flags (TensorRT 10 weakly typed), workspace, verbosity, shape profile, DLA."""
    if not plan.strongly_typed:
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    if workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    dynamic = [
        network.get_input(i)
        for i in range(network.num_inputs)
        if any(d < 0 for d in network.get_input(i).shape)
    ]
    given = {s.name: s for s in plan.shapes}
    missing = [t.name for t in dynamic if t.name not in given]
    if missing:
        raise EngineBuildError(
            f"inputs with dynamic dimensions need shapes: {', '.join(missing)} "
            "(e.g. shapes='images:1..8x3x640x640')"
        )
    if plan.shapes:
        profile = builder.create_optimization_profile()
        for shape in plan.shapes:
            profile.set_shape(shape.name, shape.min, shape.opt, shape.max)
        config.add_optimization_profile(profile)
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _layer_information(trt, logger, serialized) -> dict[str, Any]:
    """The engine's per-layer information as a dict (IEngineInspector JSON)."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise EngineBuildError("TensorRT could not deserialize the engine it just built")
    inspector = engine.create_engine_inspector()
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def _parser_error(error) -> str:
    desc = error.desc() if hasattr(error, "desc") else str(error)
    node = error.node_name() if hasattr(error, "node_name") else ""
    return f"{node}: {desc}" if node else str(desc)
