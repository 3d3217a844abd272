"""Build the trtexec command line for a Q/DQ model, per target and TensorRT major version.

TensorRT 10 builds Q/DQ models weakly typed with `--int8 --fp16` (or `--stronglyTyped`, which forbids the
precision flags); TensorRT 11 removed the precision flags and is always strongly typed
(tensorrt-qdq.md s1; trtexec README "Create a strongly typed plan file"; TensorRT 10.x->11.x trtexec
migration guide). DLA exists on Orin only (tensorrt-qdq.md s2).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qdq_compiler.errors import QdqcError
from qdq_compiler.targets.shapes import InputShape, parse_shape_spec

Target = Literal["orin", "thor", "x86"]
TARGETS = ("orin", "thor", "x86")
TRT_MAJORS = (10, 11)
DLA_TARGETS = ("orin",)


class TargetError(QdqcError):
    """An impossible target/TensorRT/DLA/typing combination."""


@dataclass(frozen=True)
class BuildPlan:
    """Resolved build settings shared by trtexec_command and engine.build_engine."""

    target: str
    trt_major: int
    strongly_typed: bool
    dla_core: int | None
    shapes: list[InputShape]


def resolve_build(
    target: str, trt_major: int, dla_core: int | None, shapes: str | None, strongly_typed: bool | None
) -> BuildPlan:
    """Check the combination and fill defaults (TRT 10: weakly typed; TRT 11: strongly typed)."""
    if target not in TARGETS:
        raise TargetError(f"unknown target '{target}' (choose one of {', '.join(TARGETS)})")
    if trt_major not in TRT_MAJORS:
        raise TargetError(f"TensorRT major version {trt_major} is not supported (10 or 11)")
    if trt_major >= 11 and strongly_typed is False:
        raise TargetError("TensorRT 11 removed weakly typed builds (--int8/--fp16): always strongly typed")
    typed = strongly_typed if strongly_typed is not None else trt_major >= 11
    parsed = parse_shape_spec(shapes) if shapes else []
    if dla_core is not None:
        if target not in DLA_TARGETS:
            raise TargetError(f"DLA is only on Jetson Orin; target '{target}' has no DLA")
        if dla_core < 0:
            raise TargetError(f"DLA core must be >= 0, got {dla_core}")
        dynamic = [s.name for s in parsed if s.is_dynamic]
        if dynamic:
            raise TargetError(f"DLA supports static shapes only; dynamic inputs: {', '.join(dynamic)}")
    return BuildPlan(target, trt_major, typed, dla_core, parsed)


def default_artifacts(engine_path: str | Path) -> dict[str, Path]:
    """Where the layer-info and profile JSON go when not given: beside the engine."""
    engine = Path(engine_path)
    stem = engine.with_suffix("")
    return {"layer_info": Path(f"{stem}.layers.json"), "profile": Path(f"{stem}.profile.json")}


def trtexec_command(
    model_path: str | Path,
    target: Target,
    trt_major: int,
    dla_core: int | None,
    shapes: str | None,
    engine_path: str | Path,
    strongly_typed: bool | None = None,
    *,
    workspace_mib: int | None = None,
    timing_cache: str | Path | None = None,
    layer_report: bool = True,
    layer_info_path: str | Path | None = None,
    profile_path: str | Path | None = None,
    trtexec: str = "trtexec",
) -> list[str]:
    """The trtexec argv building `model_path` into `engine_path` for the target, with a layer report."""
    plan = resolve_build(target, trt_major, dla_core, shapes, strongly_typed)
    cmd = [trtexec, f"--onnx={model_path}", f"--saveEngine={engine_path}"]
    cmd += ["--stronglyTyped"] if plan.strongly_typed else ["--int8", "--fp16"]
    if plan.dla_core is not None:
        cmd += [f"--useDLACore={plan.dla_core}", "--allowGPUFallback"]
    cmd += _shape_flags(plan.shapes)
    if workspace_mib is not None:
        if workspace_mib <= 0:
            raise TargetError(f"workspace must be positive, got {workspace_mib} MiB")
        cmd.append(f"--memPoolSize=workspace:{workspace_mib}")
    if timing_cache is not None:
        cmd.append(f"--timingCacheFile={timing_cache}")
    if layer_report:
        defaults = default_artifacts(engine_path)
        cmd += [
            "--profilingVerbosity=detailed",
            f"--exportLayerInfo={layer_info_path or defaults['layer_info']}",
            f"--exportProfile={profile_path or defaults['profile']}",
            "--separateProfileRun",
        ]
    return cmd


def _shape_flags(shapes: list[InputShape]) -> list[str]:
    if not shapes:
        return []

    def joined(pick) -> str:
        return ",".join(f"{s.name}:{InputShape.text(pick(s))}" for s in shapes)

    if not any(s.is_dynamic for s in shapes):
        return [f"--shapes={joined(lambda s: s.opt)}"]
    return [
        f"--minShapes={joined(lambda s: s.min)}",
        f"--optShapes={joined(lambda s: s.opt)}",
        f"--maxShapes={joined(lambda s: s.max)}",
        f"--shapes={joined(lambda s: s.opt)}",  # the shape the timing/profile run uses
    ]


def format_command(cmd: list[str]) -> str:
    """The command as one shell-quoted line (for printing and copying to the Jetson)."""
    return shlex.join(cmd)
