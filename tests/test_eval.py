"""`qdqc eval`: per-output SQNR and cosine, and the task metrics, checked against values computed here
independently (numpy) on small hand-built models, and against the bundled detector's evaluation."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy.numerics import sqnr_from_powers
from qdq_compiler.cli import main
from qdq_compiler.errors import QdqcError
from qdq_compiler.evaluation import evaluate_models
from qdq_compiler.evaluation.kind import MODEL_KIND_KEY
from qdq_compiler.evaluation.metrics import agreement, binary_iou, cosine_similarity

SAMPLES = 24


# --------------------------------------------------------------------------- models and data built here
def classifier(weight: np.ndarray, batch: int | str = 1) -> onnx.ModelProto:
    """x [batch,3,4,4] -> GlobalAveragePool -> Flatten -> MatMul(weight [3,5]) -> scores [batch,5]."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 4, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 5])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def segmenter(weight: np.ndarray, bias: float, batch: int | str = 1) -> onnx.ModelProto:
    """x [batch,3,6,6] -> 1x1 Conv(weight [3], bias) -> Sigmoid -> map [batch,1,6,6]."""
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["map"]),
    ]
    graph = helper.make_graph(
        nodes,
        "segmenter",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 6, 6])],
        [helper.make_tensor_value_info("map", TensorProto.FLOAT, [batch, 1, 6, 6])],
        [
            numpy_helper.from_array(weight.reshape(1, 3, 1, 1).astype(np.float32), "w"),
            numpy_helper.from_array(np.asarray([bias], np.float32), "b"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def save(model: onnx.ModelProto, path, kind: str | None = None) -> str:
    if kind is not None:
        helper.set_model_props(model, {MODEL_KIND_KEY: kind})
    onnx.save_model(model, path)
    return str(path)


@pytest.fixture
def class_weights():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((3, 5)).astype(np.float32)
    perturbed = weight.copy()
    perturbed[1, 2] += 0.8  # one weight moved: some samples change their best class
    return weight, perturbed


@pytest.fixture
def samples(tmp_path):
    rng = np.random.default_rng(1)
    return rng.standard_normal((SAMPLES, 3, 4, 4)).astype(np.float32)


def reference_scores(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return x.astype(np.float64).mean(axis=(2, 3)) @ weight.astype(np.float64)


def numpy_sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    return 10 * math.log10(np.sum(ref**2) / np.sum((ref - test) ** 2))


def numpy_cosine(ref: np.ndarray, test: np.ndarray) -> float:
    return float(np.sum(ref * test) / math.sqrt(np.sum(ref**2) * np.sum(test**2)))


# --------------------------------------------------------------------------- the metrics themselves
def test_metrics_against_hand_computed_values() -> None:
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert cosine_similarity(np.array([1.0, 2.0]), np.array([-1.0, -2.0])) == pytest.approx(-1.0)
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine_similarity(np.zeros(3), np.ones(3)) == 0.0
    assert math.isnan(cosine_similarity(np.array([1.0]), np.array([np.nan])))
    a = np.array([[1, 1, 0], [0, 1, 0]], bool)
    b = np.array([[1, 0, 0], [1, 1, 1]], bool)
    assert binary_iou(a, b) == 2 / 5  # both: (0,0), (1,1); either: those and (0,1), (1,0), (1,2)
    assert binary_iou(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    assert agreement(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 0])) == 0.5


# --------------------------------------------------------------------------- classifier
def test_classifier_against_itself(tmp_path, class_weights, samples, capsys) -> None:
    model = save(classifier(class_weights[0]), tmp_path / "fp32.onnx")
    np.save(tmp_path / "data.npy", samples)
    report_path = tmp_path / "report.json"
    args = ["eval", model, model, "--data", str(tmp_path / "data.npy"), "--json", str(report_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "inf" in out and "1.000000" in out and "task: classifier (from output shapes)" in out
    report = json.loads(report_path.read_text())
    assert report["outputs"]["scores"] == {"shape": [SAMPLES, 5], "sqnr_db": "inf", "cosine": 1.0}
    assert report["metrics"]["top-1"]["int8_vs_fp32"] == 1.0
    assert report["samples"] == SAMPLES and report["kind"] == "classifier"


@pytest.mark.parametrize("batch, batch_size", [(1, None), ("N", 5)])  # 5: batches of 5, 5, 5, 5, 4
def test_classifier_with_a_perturbed_weight(tmp_path, class_weights, samples, batch, batch_size) -> None:
    weight, perturbed = class_weights
    fp32, int8 = classifier(weight, batch), classifier(perturbed, batch)
    np.save(tmp_path / "data.npy", samples)
    truth = np.random.default_rng(2).integers(0, 5, SAMPLES)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({str(i): int(c) for i, c in enumerate(truth)}))
    data = str(tmp_path / "data.npy")
    report = evaluate_models(fp32, int8, data, labels=str(labels), batch_size=batch_size)
    assert report.samples == SAMPLES and report.outputs[0].shape == (SAMPLES, 5)

    ref, test = reference_scores(samples, weight), reference_scores(samples, perturbed)
    stats = report.outputs[0]
    assert stats.sqnr_db == pytest.approx(numpy_sqnr(ref, test), rel=1e-4)
    assert stats.cosine == pytest.approx(numpy_cosine(ref, test), abs=1e-6)
    expected_agreement = float(np.mean(ref.argmax(1) == test.argmax(1)))
    assert 0.0 < expected_agreement < 1.0  # the perturbation moves some decisions, not all
    top1 = report.metric("top-1")
    assert top1.int8_vs_fp32 == expected_agreement
    assert top1.fp32_vs_labels == float(np.mean(ref.argmax(1) == truth))
    assert top1.int8_vs_labels == float(np.mean(test.argmax(1) == truth))


def test_classifier_labels_as_csv_with_a_header(tmp_path, class_weights, samples) -> None:
    np.save(tmp_path / "data.npy", samples)
    truth = np.arange(SAMPLES) % 5
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class\n" + "".join(f"{i},{c}\n" for i, c in enumerate(truth)))
    model = classifier(class_weights[0])
    report = evaluate_models(model, model, str(tmp_path / "data.npy"), labels=str(labels))
    ref = reference_scores(samples, class_weights[0])
    assert report.metric("top-1").fp32_vs_labels == float(np.mean(ref.argmax(1) == truth))


def test_classifier_labels_of_an_image_folder_by_file_name(tmp_path, class_weights) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(images / f"img{index}.png")
    labels = tmp_path / "labels.json"
    truth = {f"img{index}.png": index % 5 for index in range(6)}
    labels.write_text(json.dumps(truth))
    model = classifier(class_weights[0])
    report = evaluate_models(model, model, str(images), labels=str(labels))
    x = pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # the default preprocessing: /255, NCHW
    ref = reference_scores(x, class_weights[0])
    expected = float(np.mean(ref.argmax(1) == np.array([truth[f"img{i}.png"] for i in range(6)])))
    assert report.metric("top-1").fp32_vs_labels == expected


# --------------------------------------------------------------------------- segmentation
def sigmoid_maps(x: np.ndarray, weight: np.ndarray, bias: float) -> np.ndarray:
    logits = np.einsum("nchw,c->nhw", x.astype(np.float64), weight.astype(np.float64)) + bias
    return 1 / (1 + np.exp(-logits))


@pytest.mark.parametrize("batch, batch_size", [(1, None), ("N", 5)])  # 5: masks read batch by batch
def test_segmentation_iou_against_numpy(tmp_path, batch, batch_size) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((SAMPLES, 3, 6, 6)).astype(np.float32)
    np.save(tmp_path / "data.npy", x)
    weight = np.array([1.0, -0.5, 0.25], np.float32)
    masks = tmp_path / "masks"
    masks.mkdir()
    truth = rng.random((SAMPLES, 6, 6)) > 0.5
    for index, mask in enumerate(truth):
        np.save(masks / f"{index}.npy", mask.astype(np.uint8))
    fp32 = save(segmenter(weight, 0.0, batch), tmp_path / "fp32.onnx", kind="segmentation")
    int8 = save(segmenter(weight, 0.3, batch), tmp_path / "int8.onnx")
    report_path = tmp_path / "r.json"
    args = ["eval", fp32, int8, "--data", str(tmp_path / "data.npy"), "--labels", str(masks)]
    args += ["--batch-size", str(batch_size)] if batch_size else []
    assert main([*args, "--threshold", "0.6", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["kind_source"] == "metadata"
    ref, test = sigmoid_maps(x, weight, 0.0), sigmoid_maps(x, weight, 0.3)

    def iou(a, b):
        return np.sum(a & b) / np.sum(a | b)

    metric = report["metrics"]["IoU@0.6"]
    assert metric["int8_vs_fp32"] == pytest.approx(iou(ref > 0.6, test > 0.6), abs=1e-12)
    assert 0.3 < metric["int8_vs_fp32"] < 0.95
    assert metric["fp32_vs_labels"] == pytest.approx(iou(ref > 0.6, truth), abs=1e-12)
    assert metric["int8_vs_labels"] == pytest.approx(iou(test > 0.6, truth), abs=1e-12)
    assert report["outputs"]["map"]["sqnr_db"] == pytest.approx(numpy_sqnr(ref, test), rel=1e-4)


def test_segmentation_against_itself_with_png_masks(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(5)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(images / f"s{index}.jpg")
        Image.fromarray((rng.random((6, 6)) > 0.5).astype(np.uint8) * 255).save(masks / f"s{index}.png")
    model = segmenter(np.array([1.0, 1.0, -1.0], np.float32), 0.0)
    report = evaluate_models(model, model, str(images), labels=str(masks), kind="segmentation")
    metric = report.metric("IoU@0.5")
    assert metric.int8_vs_fp32 == 1.0 and metric.fp32_vs_labels == metric.int8_vs_labels
    assert 0.0 < metric.fp32_vs_labels < 1.0
    assert report.outputs[0].cosine == 1.0 and report.outputs[0].sqnr_db == math.inf


# --------------------------------------------------------------------------- detector (bundled)
def test_detector_against_itself_and_the_bundled_evaluation(capsys) -> None:
    """Eval's mAP against the labels is the bundled evaluation's; against its own detections it is 1."""
    from qdq_compiler.detect import bundled

    model = str(bundled.model_path())
    args = ["eval", model, model, "--data", str(bundled.val_dir()), "--labels", str(bundled.val_json())]
    assert main([*args, "--limit", "12", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = bundled.evaluate_bundled(model, limit=12)
    assert report["kind"] == "detector" and report["kind_source"] == "output shapes"
    assert report["metrics"]["mAP@0.5"]["fp32_vs_labels"] == pytest.approx(expected["map50"], abs=1e-9)
    assert report["metrics"]["mAP@0.5:0.95"]["int8_vs_labels"] == pytest.approx(
        expected["map50_95"], abs=1e-9
    )
    assert report["metrics"]["mAP@0.5"]["int8_vs_fp32"] == 1.0
    assert report["metrics"]["mAP@0.5:0.95"]["int8_vs_fp32"] == 1.0


# --------------------------------------------------------------------------- user errors
def test_user_errors_are_one_line(tmp_path, class_weights, samples, capsys) -> None:
    model = save(classifier(class_weights[0]), tmp_path / "fp32.onnx")
    seg = save(segmenter(np.ones(3, np.float32), 0.0), tmp_path / "seg.onnx")
    data = tmp_path / "data.npy"
    np.save(data, samples)
    np.save(tmp_path / "empty.npy", np.zeros((0, 3, 4, 4), np.float32))
    (tmp_path / "labels.txt").write_text("0 1\n")
    (tmp_path / "short.json").write_text(json.dumps({"0": 1}))
    (tmp_path / "big.json").write_text(json.dumps({str(i): 7 for i in range(SAMPLES)}))
    (tmp_path / "list.json").write_text("[1, 2]")
    cases = [
        (["--data", str(tmp_path / "nope.npy")], "nope.npy"),
        (["--data", str(tmp_path / "empty.npy")], "no calibration samples"),
        (["--data", str(data), "--labels", str(tmp_path / "labels.txt")], "a .json or .csv"),
        (["--data", str(data), "--labels", str(tmp_path / "short.json")], "no label for sample '1'"),
        (["--data", str(data), "--labels", str(tmp_path / "big.json")], "outside 0..4"),
        (["--data", str(data), "--labels", str(tmp_path / "list.json")], "expected a JSON object"),
        (["--data", str(data), "--labels", str(tmp_path / "none.json")], "no such file"),
        (["--data", str(data), "--kind", "detector"], "--kind detector needs an output of shape [B,N,5+nc]"),
    ]
    for extra, message in cases:
        assert main(["eval", model, model, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, (extra, err)
    assert main(["eval", model, seg, "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "the two models' inputs differ" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", model, str(tmp_path / "missing.onnx"), "--data", str(data)]) == 2


def test_yolov8_layout_is_not_taken_for_a_detector(tmp_path, capsys) -> None:
    """[B, 4+nc, N] (YOLOv8, no objectness) is not the [B, N, 5+nc] eval decodes: refused, not misread."""
    rows = np.random.default_rng(6).random((6, 20)).tolist()  # 6 columns of 20 "boxes": the transposed layout
    model = save(constant_detector(rows), tmp_path / "v8.onnx")
    np.save(tmp_path / "data.npy", np.zeros((2, 3, 4, 4), np.float32))
    assert main(["eval", model, model, "--data", str(tmp_path / "data.npy")]) == 2
    assert "cannot tell the model's kind" in capsys.readouterr().err
    assert main(["eval", model, model, "--data", str(tmp_path / "data.npy"), "--kind", "detector"]) == 2
    assert "--kind detector needs an output of shape [B,N,5+nc]" in capsys.readouterr().err


def test_unknown_kind_asks_for_kind(tmp_path, capsys) -> None:
    """An output that fits no kind ([1,2,6,6]) is refused with one line that asks for --kind."""
    weight = np.ones((2, 3, 1, 1), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "two_maps",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    np.save(tmp_path / "data.npy", np.zeros((2, 3, 6, 6), np.float32))
    assert main(["eval", model, model, "--data", str(tmp_path / "data.npy")]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the model's kind" in err and err.strip().endswith("give --kind"), err


# --------------------------------------------------------------------------- detector (hand-made)
def constant_detector(rows: list[list[float]], size: int = 4) -> onnx.ModelProto:
    """A 'detector' whose output [1, N, 6] (xywh, objectness, one class score) is ``rows`` whatever its
    input x [1, 3, size, size] is."""
    table = np.asarray(rows, np.float32)[None]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=1, axes=[1, 2, 3]),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Reshape", ["nothing", "shape"], ["nothing3"]),
        helper.make_node("Add", ["table", "nothing3"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(table.shape))],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
            numpy_helper.from_array(np.asarray([1, 1, 1], np.int64), "shape"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_detector_map_against_fp32_detections_by_hand(tmp_path) -> None:
    """FP32 finds A and B (scores 0.9, 0.8; C at 0.1 is below --reference-conf, so no ground truth). INT8
    finds A exactly, puts B where nothing is (a false positive) and keeps C: recall reaches 1/2 at
    precision 1 and no further, so COCO's 101-point AP is 51/101 at every IoU threshold."""
    box_a, box_b, box_c = [40, 40, 20, 20, 0.9, 1.0], [100, 100, 20, 20, 0.8, 1.0], [10, 10, 4, 4, 0.1, 1.0]
    moved_b = [130, 130, 20, 20, 0.8, 1.0]
    nothing = [[80, 80, 10, 10, 0.0, 1.0]] * 4  # objectness 0: below any threshold (N rows >= 5 + nc)
    fp32 = constant_detector([box_a, box_b, box_c, *nothing])
    int8 = constant_detector([box_a, moved_b, box_c, *nothing])
    np.save(tmp_path / "data.npy", np.zeros((3, 3, 4, 4), np.float32))
    report = evaluate_models(fp32, int8, str(tmp_path / "data.npy"))
    assert report.kind == "detector"
    assert report.metric("mAP@0.5").int8_vs_fp32 == pytest.approx(51 / 101, abs=1e-9)
    assert report.metric("mAP@0.5:0.95").int8_vs_fp32 == pytest.approx(51 / 101, abs=1e-9)
    itself = evaluate_models(fp32, fp32, str(tmp_path / "data.npy"))
    assert itself.metric("mAP@0.5").int8_vs_fp32 == 1.0


def test_eval_sqnr_is_compile_s_self_check_on_the_same_samples(yolo_path, calib_path, tmp_path) -> None:
    """The YOLOv7-tiny test model compiled on calib.npy: eval on those 4 samples measures the SQNR that
    compile's self-check reported (the same onnxruntime runs)."""
    compiled, summary = tmp_path / "yolo.int8.onnx", tmp_path / "summary.json"
    compile_args = ["-q", "compile", str(yolo_path), "--calib", str(calib_path), "-o", str(compiled)]
    assert main([*compile_args, "--summary-json", str(summary)]) == 0
    [checked] = json.loads(summary.read_text())["self_check"]["outputs"]
    model, int8 = onnx.load(str(yolo_path)), onnx.load(str(compiled))
    report = evaluate_models(model, int8, str(calib_path))
    assert report.kind == "detector" and report.samples == 4
    assert report.outputs[0].sqnr_db == pytest.approx(checked["sqnr_db"], abs=5e-4)  # summary: 3 decimals
    assert 0.0 <= report.metric("mAP@0.5").int8_vs_fp32 <= 1.0


def test_detections_are_mapped_back_through_the_letterbox(tmp_path) -> None:
    """A 320x240 image letterboxed into the 160x160 input: scale 0.5, 20 rows of padding on top. The model's
    box xyxy (10, 30, 50, 70) is (20, 20, 100, 100) in the image, where the label is: mAP 1 (unmapped, the
    box would miss the label: IoU 0.18)."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((240, 320, 3), np.uint8)).save(images / "wide.png")
    coco = {
        "images": [{"id": 7, "file_name": "wide.png", "width": 320, "height": 240}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [20, 20, 80, 80], "area": 6400, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(coco))
    rows = [[30, 50, 40, 40, 0.9, 1.0]] + [[80, 80, 10, 10, 0.0, 1.0]] * 6
    model = constant_detector(rows, size=160)
    report = evaluate_models(model, model, str(images), labels=str(labels))
    assert report.metric("mAP@0.5").fp32_vs_labels == 1.0
    assert report.metric("mAP@0.5:0.95").int8_vs_labels == 1.0


def test_image_size_follows_the_exif_orientation(tmp_path) -> None:
    """A 320x240 JPEG tagged 'rotate 90' is read upright (240 wide, 320 high), so boxes map back through
    that size, not the stored one."""
    from PIL import Image, ImageOps

    from qdq_compiler.evaluation.data import EvalData

    image = Image.fromarray(np.zeros((240, 320, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "turned.jpg", exif=exif.tobytes())
    with Image.open(tmp_path / "turned.jpg") as opened:
        upright_w, upright_h = ImageOps.exif_transpose(opened).size
    data = EvalData(data=None, names=["turned.jpg"], source=str(tmp_path), image_root=tmp_path)  # type: ignore[arg-type]
    assert data.image_size(0) == (upright_h, upright_w) == (320, 240)


def test_the_json_report_is_byte_identical_run_to_run(tmp_path, class_weights, samples) -> None:
    fp32 = save(classifier(class_weights[0]), tmp_path / "fp32.onnx")
    int8 = save(classifier(class_weights[1]), tmp_path / "int8.onnx")
    np.save(tmp_path / "data.npy", samples)
    written = []
    for run in range(2):
        path = tmp_path / f"report{run}.json"
        assert (
            main(["-q", "eval", fp32, int8, "--data", str(tmp_path / "data.npy"), "--json", str(path)]) == 0
        )
        written.append(path.read_bytes())
    assert written[0] == written[1] and b'"top-1"' in written[0]


def test_class_labels_read_the_bundled_form_with_a_classes_table(tmp_path) -> None:
    """The bundled val.json nests its table under "labels" beside "classes" (names or indexes)."""
    from qdq_compiler.evaluation.labels import load_class_labels

    path = tmp_path / "val.json"
    path.write_text(json.dumps({"classes": ["circle", "cross"], "labels": {"a.jpg": 1, "b.jpg": "circle"}}))
    assert load_class_labels(path, ["b.jpg", "a.jpg"]).tolist() == [0, 1]
    path.write_text(json.dumps({"classes": ["circle"], "labels": {"a.jpg": "square"}}))
    with pytest.raises(QdqcError, match="'square'.*not a class index or one of the classes"):
        load_class_labels(path, ["a.jpg"])


def test_eval_of_the_bundled_classifier_against_its_shipped_labels(classifier_path, capsys) -> None:
    model = str(classifier_path)
    folder = os.path.dirname(model)
    code = main(["eval", model, model, "--data", os.path.join(folder, "val"),
                 "--labels", os.path.join(folder, "val.json"), "--limit", "8", "--json", "-"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    top1 = report["metrics"]["top-1"]
    assert top1["int8_vs_fp32"] == 1.0 and 0.5 <= top1["fp32_vs_labels"] <= 1.0


@pytest.mark.parametrize(
    ("signal", "noise", "expected"),
    [
        (10.0, 1.0, 10.0),
        (1.0, 0.0, math.inf),
        (1.0, -1e-18, math.inf),  # the rounding of a zero sum of squares: no error, not a math error
        (0.0, 1.0, -math.inf),
        (1.0, math.inf, math.nan),
    ],
)
def test_sqnr_from_powers_conventions(signal, noise, expected) -> None:
    """The one SQNR-from-sums rule (qdqc eval, the self-check and --method auto's local scores)."""
    found = sqnr_from_powers(signal, noise)
    assert (math.isnan(found) and math.isnan(expected)) or found == pytest.approx(expected)
