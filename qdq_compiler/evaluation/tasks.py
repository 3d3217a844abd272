"""Task metrics by model kind, accumulated batch by batch: classifier top-1, segmentation IoU, detector mAP
(COCO, faster-coco-eval)."""

from __future__ import annotations

import abc
import importlib.util

import numpy as np

from qdq_compiler.calib.preprocess import letterbox_geometry
from qdq_compiler.detect.decode import Detections, decode
from qdq_compiler.detect.evaluate import coco_map, to_coco_results
from qdq_compiler.errors import QdqcError
from qdq_compiler.evaluation.data import EvalData
from qdq_compiler.evaluation.labels import (
    check_class_range,
    load_class_labels,
    load_coco,
    load_masks,
    mask_files,
)
from qdq_compiler.evaluation.metrics import IoUCount, agreement, top1
from qdq_compiler.evaluation.report import TaskMetric

# Detections scored for mAP: the thresholds of detect.evaluate.evaluate_onnx (COCO-style evaluation).
EVAL_CONF = 0.001
EVAL_IOU = 0.65


class Task(abc.ABC):
    """A task metric accumulated batch by batch over the task output of both models. Labels are read when
    the task is made, before any model runs, so a bad labels file is reported at once."""

    @abc.abstractmethod
    def add(self, fp32: np.ndarray, int8: np.ndarray) -> None:
        """Account for the next batch: both models' task output (axis 0: the samples, in data order)."""

    @abc.abstractmethod
    def finish(self) -> tuple[list[TaskMetric], list[str]]:
        """The metrics and notes on how they were measured."""


class ClassifierTask(Task):
    """Top-1 agreement of INT8 with FP32; with labels, each model's top-1 accuracy."""

    def __init__(self, data: EvalData, labels: str | None) -> None:
        self.data, self.labels = data, labels
        self.truth = load_class_labels(labels, data.names) if labels else None
        self.fp32_top: list[np.ndarray] = []
        self.int8_top: list[np.ndarray] = []
        self.num_classes = 0

    def add(self, fp32: np.ndarray, int8: np.ndarray) -> None:
        self.fp32_top.append(top1(fp32))
        self.int8_top.append(top1(int8))
        self.num_classes = fp32.shape[1]

    def finish(self) -> tuple[list[TaskMetric], list[str]]:
        fp32_top, int8_top = np.concatenate(self.fp32_top), np.concatenate(self.int8_top)
        truth = self.truth
        if truth is not None:
            check_class_range(truth, self.data.names, str(self.labels), self.num_classes)
        metric = TaskMetric(
            "top-1",
            agreement(int8_top, fp32_top),
            agreement(fp32_top, truth) if truth is not None else None,
            agreement(int8_top, truth) if truth is not None else None,
        )
        return [metric], ["top-1: agreement of the best class with FP32's; accuracy against the labels"]


class SegmentationTask(Task):
    """IoU of the maps binarised at ``> threshold``, INT8 against FP32 and each against label masks."""

    def __init__(self, data: EvalData, labels: str | None, threshold: float) -> None:
        self.threshold = threshold
        self.masks = mask_files(labels, data.names) if labels else None
        self.seen = 0
        self.int8_vs_fp32, self.fp32_vs_labels, self.int8_vs_labels = IoUCount(), IoUCount(), IoUCount()

    def add(self, fp32: np.ndarray, int8: np.ndarray) -> None:
        fp32_map, int8_map = fp32[:, 0] > self.threshold, int8[:, 0] > self.threshold
        self.int8_vs_fp32.add(int8_map, fp32_map)
        if self.masks is not None:
            masks = load_masks(self.masks[self.seen : self.seen + len(fp32)], fp32.shape[2:])
            self.fp32_vs_labels.add(fp32_map, masks)
            self.int8_vs_labels.add(int8_map, masks)
        self.seen += len(fp32)

    def finish(self) -> tuple[list[TaskMetric], list[str]]:
        labelled = self.masks is not None
        metric = TaskMetric(
            f"IoU@{self.threshold:g}",
            self.int8_vs_fp32.iou,
            self.fp32_vs_labels.iou if labelled else None,
            self.int8_vs_labels.iou if labelled else None,
        )
        note = f"IoU of the maps binarised at > {self.threshold:g}, pooled over all pixels of all samples"
        return [metric], [note]


class DetectorTask(Task):
    """COCO mAP@0.5 and mAP@0.5:0.95: INT8 against FP32's detections scored above ``reference_conf``, and
    with labels each model against the COCO json."""

    def __init__(self, data: EvalData, labels: str | None, reference_conf: float) -> None:
        if importlib.util.find_spec("faster_coco_eval") is None:
            raise QdqcError("detector mAP needs faster-coco-eval: pip install -e '.[eval]'")
        self.data, self.reference_conf = data, reference_conf
        self.coco = load_coco(labels, data.names) if labels else None
        self.fp32_dets: list[Detections] = []
        self.int8_dets: list[Detections] = []
        self.num_classes = 0

    def add(self, fp32: np.ndarray, int8: np.ndarray) -> None:
        self.fp32_dets.extend(decode(fp32, conf_thres=EVAL_CONF, iou_thres=EVAL_IOU))
        self.int8_dets.extend(decode(int8, conf_thres=EVAL_CONF, iou_thres=EVAL_IOU))
        self.num_classes = fp32.shape[2] - 5

    def finish(self) -> tuple[list[TaskMetric], list[str]]:
        reference = [_above(det, self.reference_conf) for det in self.fp32_dets]
        image_ids = list(range(1, len(reference) + 1))
        vs_fp32 = _map_against(_coco_truth(reference, self.num_classes), self.int8_dets, image_ids)
        notes = [f"INT8 vs FP32: FP32's detections scored > {self.reference_conf:g} are the ground truth"]
        if vs_fp32 is None:
            notes.append("INT8 vs FP32: FP32 detects nothing on these samples, so there is nothing to match")
        by_labels: list[dict | None] = [None, None]
        if self.coco is not None:
            coco, ids = self.coco
            by_labels = [
                coco_map(coco, _results(self.data, dets, ids), image_ids=ids)
                for dets in (self.fp32_dets, self.int8_dets)
            ]
        metrics = [
            TaskMetric(
                name,
                vs_fp32[key] if vs_fp32 is not None else None,
                by_labels[0][key] if by_labels[0] is not None else None,
                by_labels[1][key] if by_labels[1] is not None else None,
            )
            for name, key in (("mAP@0.5", "map50"), ("mAP@0.5:0.95", "map50_95"))
        ]
        return metrics, notes


def make_task(kind: str, data: EvalData, labels: str | None, threshold: float, reference_conf: float) -> Task:
    """The task of ``kind`` (its labels read now)."""
    if kind == "classifier":
        return ClassifierTask(data, labels)
    if kind == "segmentation":
        return SegmentationTask(data, labels, threshold)
    return DetectorTask(data, labels, reference_conf)


def _above(det: Detections, conf: float) -> Detections:
    keep = det.scores > conf
    return Detections(det.boxes[keep], det.scores[keep], det.classes[keep])


def _coco_truth(reference: list[Detections], num_classes: int) -> dict:
    """Detections as COCO ground truth, image ``i`` with id ``i + 1``."""
    annotations: list[dict] = []
    for image_id, det in enumerate(reference, start=1):
        for (x0, y0, x1, y1), cls in zip(det.boxes.tolist(), det.classes.tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    return {
        "images": [{"id": image_id} for image_id in range(1, len(reference) + 1)],
        "annotations": annotations,
        "categories": [{"id": cls + 1, "name": str(cls)} for cls in range(num_classes)],
    }


def _map_against(truth: dict, dets: list[Detections], image_ids: list[int]) -> dict | None:
    """mAP of ``dets`` against ``truth``; None when the truth has no object at all."""
    if not truth["annotations"]:
        return None
    results = [record for image_id, det in zip(image_ids, dets) for record in to_coco_results(det, image_id)]
    return coco_map(truth, results, image_ids=image_ids)


def _results(data: EvalData, dets: list[Detections], image_ids: list[int]) -> list[dict]:
    """COCO results of every sample, boxes mapped back to the image file's pixels for an image folder."""
    records = []
    for index, (det, image_id) in enumerate(zip(dets, image_ids)):
        if data.image_root is not None and data.preprocess is not None:
            det = Detections(_to_image_pixels(det.boxes, data, index), det.scores, det.classes)
        records.extend(to_coco_results(det, image_id))
    return records


def _to_image_pixels(boxes: np.ndarray, data: EvalData, index: int) -> np.ndarray:
    """xyxy boxes in model-input pixels back to the image file's pixels (undo letterbox or resize)."""
    assert data.preprocess is not None and data.preprocess.size is not None
    src_h, src_w = data.image_size(index)
    dst_h, dst_w = data.preprocess.size
    if (src_h, src_w) == (dst_h, dst_w):
        return boxes
    if data.preprocess.resize == "letterbox":
        new_h, new_w, top, left = letterbox_geometry((src_h, src_w), (dst_h, dst_w))
    else:
        new_h, new_w, top, left = dst_h, dst_w, 0, 0
    out = np.array(boxes, dtype=np.float64)
    out[:, [0, 2]] = (out[:, [0, 2]] - left) * (src_w / new_w)
    out[:, [1, 3]] = (out[:, [1, 3]] - top) * (src_h / new_h)
    return out.astype(np.float32)
