"""COCO mAP of an ONNX YOLO detector with onnxruntime (CPU) and faster-coco-eval.

Preprocessing matches training: RGB, ``/ 255``, NCHW float32, no letterbox (images must already have the
model's input size). The metric itself comes from ``faster_coco_eval`` (a pycocotools-compatible COCOeval).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from qdq_compiler.detect.decode import Detections, decode

log = logging.getLogger(__name__)


def load_image(path: str | Path) -> np.ndarray:
    """An image file as a ``[3, H, W]`` float32 RGB array in [0, 1]."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), np.float32) / 255.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def to_coco_results(det: Detections, image_id: int) -> list[dict]:
    """COCO result records (``bbox`` as xywh, ``category_id`` = class + 1) for one image."""
    out = []
    for (x0, y0, x1, y1), s, c in zip(det.boxes.tolist(), det.scores.tolist(), det.classes.tolist()):
        out.append(
            {
                "image_id": image_id,
                "category_id": int(c) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(s),
            }
        )
    return out


def coco_map(coco_gt: dict | str | Path, results: list[dict], image_ids: Sequence[int] | None = None) -> dict:
    """``{"map50", "map50_95"}`` of ``results`` against ``coco_gt`` computed by faster-coco-eval."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt_data = json.loads(Path(coco_gt).read_text()) if isinstance(coco_gt, (str, Path)) else coco_gt
    gt = COCO(copy.deepcopy(gt_data))
    if not results:
        return {"map50": 0.0, "map50_95": 0.0}
    dt = gt.loadRes(copy.deepcopy(results))
    ev = COCOeval_faster(gt, dt, "bbox", print_function=log.debug)
    if image_ids is not None:
        ev.params.imgIds = sorted(int(i) for i in image_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    stats = [max(float(v), 0.0) for v in ev.stats[:2]]  # -1 means "no ground truth": report 0
    return {"map50": stats[1], "map50_95": stats[0]}


def _session(model: str | Path | onnx.ModelProto, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def evaluate_onnx(
    model_path_or_proto: str | Path | onnx.ModelProto,
    images_dir: str | Path,
    coco_json: str | Path,
    conf_thres: float = 0.001,
    iou_thres: float = 0.65,
    limit: int | None = None,
    threads: int | None = None,
) -> dict:
    """Run the detector over the images of ``coco_json`` (first ``limit``) and return COCO mAP.

    Returns ``{"map50", "map50_95", "images", "detections"}``.
    """
    gt_data = json.loads(Path(coco_json).read_text())
    images = sorted(gt_data["images"], key=lambda r: r["id"])[:limit]
    sess = _session(model_path_or_proto, threads)
    inp = sess.get_inputs()[0]
    want_hw = tuple(inp.shape[2:4])
    results: list[dict] = []
    for rec in images:
        x = load_image(Path(images_dir) / rec["file_name"])
        if all(isinstance(d, int) for d in want_hw) and x.shape[1:] != want_hw:
            raise ValueError(f"{rec['file_name']}: image size {x.shape[1:]} != model input {want_hw}")
        out = sess.run(None, {inp.name: x[None]})[0]
        det = decode(out, conf_thres=conf_thres, iou_thres=iou_thres)[0]
        results.extend(to_coco_results(det, rec["id"]))
    metrics = coco_map(gt_data, results, image_ids=[r["id"] for r in images])
    return {**metrics, "images": len(images), "detections": len(results)}
