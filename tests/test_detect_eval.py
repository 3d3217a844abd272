"""The bundled sample detector and data, and COCO mAP evaluation with onnxruntime + faster-coco-eval."""

from __future__ import annotations

import json
from functools import cache

import onnx
import pytest

from qdq_compiler.detect import CLASS_NAMES, IMAGE_SIZE, bundled
from qdq_compiler.detect.evaluate import coco_map, evaluate_onnx, load_image

pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is a dependency of qdq_compiler.detect")


@cache
def _val_json() -> dict:
    return json.loads(bundled.val_json().read_text())


def test_bundled_files_present() -> None:
    assert bundled.available()
    calib = sorted(bundled.calib_dir().glob("*.jpg"))
    val = sorted(bundled.val_dir().glob("*.jpg"))
    assert len(calib) >= 64 and len(val) >= 100
    names = {r["file_name"] for r in _val_json()["images"]}
    assert names == {p.name for p in val}
    assert [c["name"] for c in _val_json()["categories"]] == list(CLASS_NAMES)
    x = load_image(calib[0])
    assert x.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and x.min() >= 0.0 and x.max() <= 1.0


def test_bundled_model_interface() -> None:
    model = onnx.load(bundled.model_path())
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    inp, out = model.graph.input[0], model.graph.output[0]
    assert inp.name == "images"
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, IMAGE_SIZE, IMAGE_SIZE]
    dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
    assert dims == [1, 3 * sum((IMAGE_SIZE // s) ** 2 for s in (8, 16, 32)), 5 + len(CLASS_NAMES)]
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "MaxPool", "Concat", "Resize", "Sigmoid"} <= ops


def test_coco_map_of_ground_truth_is_perfect() -> None:
    gt = _val_json()
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt["annotations"]
    ]
    m = coco_map(gt, results)
    assert m["map50"] == pytest.approx(1.0) and m["map50_95"] == pytest.approx(1.0)
    assert coco_map(gt, []) == {"map50": 0.0, "map50_95": 0.0}


def test_evaluate_subset_accepts_path_and_proto() -> None:
    a = evaluate_onnx(bundled.model_path(), bundled.val_dir(), bundled.val_json(), limit=10)
    assert a["images"] == 10 and a["detections"] > 0
    assert 0.0 <= a["map50_95"] <= a["map50"] <= 1.0
    b = evaluate_onnx(onnx.load(bundled.model_path()), bundled.val_dir(), bundled.val_json(), limit=10)
    assert b == a


def test_fp32_accuracy_on_full_val_set() -> None:
    m = evaluate_onnx(bundled.model_path(), bundled.val_dir(), bundled.val_json())
    assert m["images"] == len(_val_json()["images"])
    assert m["map50"] >= 0.6, m
