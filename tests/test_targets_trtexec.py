"""The trtexec command builder and the shared shape-spec parser."""

from __future__ import annotations

import pytest

from qdq_compiler.errors import QdqcError
from qdq_compiler.targets.shapes import InputShape, ShapeSpecError, parse_shape_spec
from qdq_compiler.targets.trtexec import TargetError, format_command, trtexec_command

PRECISION_FLAGS = {"--int8", "--fp16", "--best", "--bf16", "--fp8"}


def cmd(**overrides) -> list[str]:
    args = {
        "model_path": "m.onnx",
        "target": "orin",
        "trt_major": 10,
        "dla_core": None,
        "shapes": None,
        "engine_path": "out/m.engine",
        "strongly_typed": None,
    }
    args.update(overrides)
    return trtexec_command(**args)


def test_trt10_default_is_weakly_typed_int8_fp16_with_layer_report():
    argv = cmd()
    assert argv[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=out/m.engine"]
    assert "--int8" in argv and "--fp16" in argv and "--stronglyTyped" not in argv
    assert argv[-4:] == [
        "--profilingVerbosity=detailed",
        "--exportLayerInfo=out/m.layers.json",
        "--exportProfile=out/m.profile.json",
        "--separateProfileRun",
    ]


def test_trt10_strongly_typed_drops_precision_flags():
    argv = cmd(strongly_typed=True)
    assert "--stronglyTyped" in argv and not PRECISION_FLAGS & set(argv)


@pytest.mark.parametrize("target", ["orin", "thor", "x86"])
def test_trt11_is_always_strongly_typed(target):
    argv = cmd(target=target, trt_major=11)
    assert "--stronglyTyped" in argv and not PRECISION_FLAGS & set(argv)
    with pytest.raises(TargetError, match="TensorRT 11"):
        cmd(target=target, trt_major=11, strongly_typed=False)


def test_dla_only_on_orin_with_gpu_fallback():
    argv = cmd(dla_core=1)
    assert "--useDLACore=1" in argv and "--allowGPUFallback" in argv
    assert "--useDLACore=0" in cmd(dla_core=0, trt_major=11)
    for target in ("thor", "x86"):
        with pytest.raises(TargetError, match="DLA"):
            cmd(target=target, dla_core=0)
    with pytest.raises(TargetError, match="static shapes"):
        cmd(dla_core=0, shapes="images:1..4x3x64x64")
    with pytest.raises(TargetError):
        cmd(dla_core=-1)


def test_static_shapes_use_shapes_only():
    argv = cmd(shapes="images:1x3x640x640")
    assert "--shapes=images:1x3x640x640" in argv
    assert not [a for a in argv if a.startswith(("--minShapes", "--optShapes", "--maxShapes"))]


def test_dynamic_batch_uses_min_opt_max():
    argv = cmd(shapes="images:1..8x3x640x640,mask:1..4..8x1")
    assert "--minShapes=images:1x3x640x640,mask:1x1" in argv
    assert "--optShapes=images:8x3x640x640,mask:4x1" in argv
    assert "--maxShapes=images:8x3x640x640,mask:8x1" in argv
    assert "--shapes=images:8x3x640x640,mask:4x1" in argv


def test_workspace_timing_cache_and_custom_paths():
    argv = cmd(
        workspace_mib=2048,
        timing_cache="cache.bin",
        layer_info_path="l.json",
        profile_path="p.json",
        trtexec="/usr/src/tensorrt/bin/trtexec",
    )
    assert argv[0] == "/usr/src/tensorrt/bin/trtexec"
    assert "--memPoolSize=workspace:2048" in argv and "--timingCacheFile=cache.bin" in argv
    assert "--exportLayerInfo=l.json" in argv and "--exportProfile=p.json" in argv
    assert not [a for a in cmd(layer_report=False) if "export" in a or "profiling" in a.lower()]
    with pytest.raises(TargetError):
        cmd(workspace_mib=0)


def test_bad_target_and_version():
    with pytest.raises(TargetError, match="unknown target"):
        cmd(target="xavier")
    with pytest.raises(TargetError, match="major"):
        cmd(trt_major=8)


def test_shape_spec_parser():
    assert parse_shape_spec("x:1x3x8x8") == [InputShape("x", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))]
    (spec,) = parse_shape_spec("in.put:0:2..16x3")  # names may contain ':' ; the last one splits
    assert (
        spec.name == "in.put:0"
        and spec.is_dynamic
        and (spec.min, spec.opt, spec.max) == ((2, 3), (16, 3), (16, 3))
    )
    for bad in ("x", "x:1xAx3", "x:4..2x3", "x:0x3", ""):
        with pytest.raises(ShapeSpecError):
            parse_shape_spec(bad)
    assert issubclass(ShapeSpecError, QdqcError)


def test_format_command_quotes_paths():
    assert format_command(cmd(model_path="my model.onnx"))[:40].startswith("trtexec '--onnx=my model.onnx'")
