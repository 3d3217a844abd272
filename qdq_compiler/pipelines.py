"""Named pipelines: the default flows written down as text, printable and editable, and their options.

`PIPELINE_OPTIONS` is the one table of what `trt-int8{target=trt11,method=max}` may set and which pass
option each sets; `qdqc compile`'s flags are the same options (`--target trt11` is `target=trt11`).
"""

from __future__ import annotations

from qdq_compiler.pm.pipeline_options import PipelineOption
from qdq_compiler.pm.registry import register_pipeline

PREPARE = "infer-shapes,canonicalize,fold-constants,fold-bn,canonicalize,infer-shapes"
TRT_INT8 = ",".join(
    [
        "upgrade-opset",
        "prepare",
        # Cross-layer equalisation: measured to help where it finds Relu-joined conv pairs (bundled classifier
        # +1.7 dB and top-1 agreement 0.977 -> 1.000, detector +0.3 dB; bench/bench_accuracy.py) and a no-op
        # elsewhere. correct-bias is not on by default (mixed: the detector's mAP drops).
        "equalize",
        # Per-channel equalisation through trailing scalar affines and across Concat members (data-driven):
        # segmenter_wide IoU vs FP32 0.03 -> 0.95, segmenter 0.936 -> 0.974; the classifier and detector have
        # no such site (their graphs are unchanged). bench/README.md, bench_accuracy.py.
        "equalize-channels",
        "place-qdq",
        "calibrate",
        "unify-scales",
        "fold-scales",
        "cleanup-qdq",
        "legalize-trt",
        "verify-trt",
    ]
)

TRT_INT8_FROM_QDQ = ",".join(
    [
        "upgrade-opset",
        "canonicalize",  # Identity/Dropout go first, so recorded scales carry the names the pipeline keeps
        "strip-qdq",
        "prepare",
        "place-qdq",
        "import-scales",
        "unify-scales",
        "fold-scales",
        "cleanup-qdq",
        "legalize-trt",
        "verify-trt",
    ]
)

PIPELINE_OPTIONS = (
    PipelineOption(
        "target",
        (("legalize-trt", "target"),),
        "trt10: float graph with Q/DQ; trt11: strongly typed, float remainder in FP16 (opset 19).",
        flag="--target",
    ),
    PipelineOption(
        "io-fp16",
        (("legalize-trt", "io_fp16"),),
        "trt11: FP16 graph inputs/outputs (default float32).",
        flag="--io-fp16",
    ),
    PipelineOption(
        "opset",
        (("upgrade-opset", "min"),),
        "Convert the model to at least this ONNX opset.",
    ),
    PipelineOption(
        "method",
        (("calibrate", "method"),),
        "Activation calibration: max, percentile{p=99.99}, entropy, mse, or auto (the best per scale group, "
        "validated on the outputs; auto{candidates=[...],tolerance=0.1,samples=64}).",
        flag="--method",
    ),
    PipelineOption(
        "overrides",
        (("calibrate", "overrides"),),
        "Per-tensor methods: [head.*=max,op:Concat=percentile{p=99.9}].",
        flag="--calib-override",
    ),
    PipelineOption(
        "two-pass",
        (("calibrate", "exact"),),
        "Read the data twice (the default): histograms over exactly [0, absmax] instead of growing ones; "
        "false (--one-pass) reads them once.",
        flag="--two-pass",
        off_flag="--one-pass",
    ),
    PipelineOption(
        "exclude",
        (("place-qdq", "exclude"),),
        "Keep nodes whose name matches (fnmatch) in float.",
        flag="--exclude",
    ),
    PipelineOption(
        "exclude-ops",
        (("place-qdq", "exclude_ops"),),
        "Keep all nodes of these op types in float.",
        flag="--exclude-op",
    ),
    PipelineOption(
        "quantize-head",
        (("place-qdq", "quantize_head"),),
        "Quantize the detection-head output layers too.",
        flag="--quantize-head",
    ),
    PipelineOption(
        "weights",
        (("fold-scales", "weights"),),
        "int8: INT8 initializers behind DQ; qdq: float weights behind Q->DQ.",
        flag="--weights",
    ),
    PipelineOption(
        "missing-scales",
        (("import-scales", "missing"),),
        "A tensor qdqc quantizes but the source model did not is an error, or stays float.",
        flag="--missing-scales",
    ),
)
OPTIONS_BY_NAME = {option.name: option for option in PIPELINE_OPTIONS}

register_pipeline(
    "prepare",
    PREPARE,
    "Clean a float export for quantization: shapes, canonical form, constant folding, BN folding.",
    PIPELINE_OPTIONS,
)
register_pipeline(
    "trt-int8",
    TRT_INT8,
    "PTQ for TensorRT: prepare, equalize conv pairs, place Q/DQ, calibrate, unify scales, fold INT8 weights, "
    "clean up, legalize, lint.",
    PIPELINE_OPTIONS,
)
register_pipeline(
    "trt-int8-from-qdq",
    TRT_INT8_FROM_QDQ,
    "Re-place an already-quantized model's Q/DQ for TensorRT, keeping its scales: strip its Q/DQ, prepare, "
    "place, import the scales, unify, fold, clean up, legalize, lint.",
    PIPELINE_OPTIONS,
)
