"""Measure a DB-style segmenter's activation ranges and its INT8 by every tool (issue 15's failure).

For one segmenter ONNX (default: the bundled ``segmenter_wide.onnx``), on the segmenter's bundled data:

- FP32 IoU of the map binarised at 0.5 vs the word masks;
- activation ranges on the calibration images: min..max of each neck Concat input, and for each tensor a
  Conv reads, the spread of its per-channel |max| (largest / median channel) and the share of channels whose
  |max| is below one INT8 step of a per-tensor max scale (|max| / 127: such a channel quantizes to zero);
- each variant's INT8 against FP32 (``qdqc eval``: SQNR of ``prob`` and IoU of the binarised maps), through
  bench/bench_accuracy.py's quantize-and-measure: qdqc's default, methods, scale-group and small-layer
  options, onnxruntime ``quantize_static``, Model Optimizer 0.47 (default and max calibration), and qdqc
  with groups of layers kept float (``--exclude``): the backbone, the neck, only the depthwise convs.

    python tools/measure_segmenter_wide.py [--model M.onnx] [--variants default,ort,...] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tools"))

import bench_accuracy  # noqa: E402

from qdq_compiler.accuracy.numerics import run_outputs  # noqa: E402
from qdq_compiler.zoo import bundled  # noqa: E402

FLOAT_GROUPS = ("float-backbone", "float-neck", "float-depthwise")
DEFAULT_VARIANTS = (
    "default,equalize-channels,mse-2p,max,entropy,percentile,group-float,trt-kernels,ort,modelopt,modelopt-max,"
    + ",".join(FLOAT_GROUPS)
)


def float_group(model: onnx.ModelProto, group: str) -> list[str]:
    """``--exclude`` arguments keeping a group of nodes float (fnmatch patterns on node names)."""
    if group == "float-backbone":
        return ["--exclude", "/backbone/*"]
    if group == "float-neck":
        return ["--exclude", "/neck/*"]
    names = [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]
    return [arg for name in names for arg in ("--exclude", name)]


def activation_ranges(model: onnx.ModelProto, images: np.ndarray) -> list[str]:
    """Markdown lines: Concat members' min..max, then per-channel spread of every tensor a Conv reads."""
    concat = [n for n in model.graph.node if n.op_type == "Concat"]
    conv_inputs = [n.input[0] for n in model.graph.node if n.op_type == "Conv"]
    wanted = list(dict.fromkeys([t for n in concat for t in n.input] + conv_inputs))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in wanted if t not in known)
    name = probe.graph.input[0].name
    outs = run_outputs(probe, ({name: images[i : i + 1]} for i in range(len(images))))
    lines = []
    for node in concat:
        parts = [f"{float(outs[t].min()):.1f}..{float(outs[t].max()):.1f}" for t in node.input]
        lines.append(f"- Concat `{node.name}` members: {', '.join(parts)}")
    lines.append("")
    lines.append("| tensor read by a Conv | channels | abs max | max/median channel | channels < 1 step |")
    lines.append("|---|---|---|---|---|")
    for tensor in dict.fromkeys(conv_inputs):
        per = np.abs(outs[tensor]).max(axis=(0, 2, 3))
        top = float(per.max())
        spread = top / max(float(np.median(per)), 1e-12)
        dead = float(np.mean(per < top / 127))
        lines.append(f"| `{tensor}` | {per.size} | {top:.2f} | {spread:.1f} | {dead:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=bundled.SEGMENTER_WIDE.model_path())
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--modelopt-python", default=bench_accuracy.MODELOPT_PYTHON)
    ap.add_argument("--calib-limit", type=int, default=64)
    ap.add_argument("--eval-limit", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None, help="also write the report here (markdown)")
    args = ap.parse_args(argv)
    data = bundled.SEGMENTER
    model = onnx.load(str(args.model))
    calib = bundled.load_images(sorted(data.calib_dir().glob("*.jpg"))[: args.calib_limit])
    lines = [
        f"# {args.model.name}",
        "",
        f"FP32 IoU vs masks: {bundled.evaluate_segmenter(args.model):.4f}",
        "",
    ]
    lines += activation_ranges(model, calib)
    print("\n".join(lines), flush=True)
    rows = []
    options = SimpleNamespace(
        calib_limit=args.calib_limit, eval_limit=args.eval_limit, modelopt_python=args.modelopt_python
    )
    paths = {
        "model": args.model,  # replaced by a copy below: Model Optimizer rewrites its input file in place
        "calib": data.calib_dir(),
        "val": data.val_dir(),
        "labels": data.labels_path(),
    }
    with tempfile.TemporaryDirectory(prefix="seg_wide.") as tmp:
        paths["model"] = Path(tmp) / args.model.name
        shutil.copyfile(args.model, paths["model"])
        npy = bench_accuracy.calibration_array(
            args.model, data.calib_dir(), args.calib_limit, Path(tmp) / "c.npy"
        )
        for variant in filter(None, args.variants.split(",")):
            if variant in FLOAT_GROUPS:
                bench_accuracy.QDQC_VARIANTS[variant] = float_group(model, variant)
            row = bench_accuracy.measure("wide", paths, variant, Path(tmp), npy, options)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if rows:
        lines += ["", bench_accuracy.table(rows)]
        print(bench_accuracy.table(rows))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
