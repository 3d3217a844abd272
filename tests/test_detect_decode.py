"""Box decoding and NMS on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from qdq_compiler.detect.decode import candidates, decode, xywh_to_xyxy
from qdq_compiler.detect.nms import batched_nms, box_iou, nms


def _row(x: float, y: float, w: float, h: float, obj: float, cls: list[float]) -> list[float]:
    return [x, y, w, h, obj, *cls]


def test_xywh_to_xyxy() -> None:
    np.testing.assert_allclose(xywh_to_xyxy(np.array([[10.0, 20.0, 4.0, 6.0]])), [[8, 17, 12, 23]])


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]], rtol=1e-6)


def test_nms_keeps_best_of_overlapping() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.3], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 0, 2, 3]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_batched_nms_is_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    assert batched_nms(boxes, scores, np.array([0, 1, 0]), 0.5).tolist() == [1, 2]
    assert batched_nms(boxes, scores, np.array([0, 0, 0]), 0.5).tolist() == [1]


def test_candidates_score_is_obj_times_cls() -> None:
    pred = np.array(
        [
            _row(50, 50, 20, 10, 0.9, [0.1, 0.8, 0.5]),
            _row(10, 10, 4, 4, 0.01, [0.9, 0.9, 0.9]),  # objectness below threshold
        ],
        np.float32,
    )
    multi = candidates(pred, conf_thres=0.3)
    assert multi.classes.tolist() == [1, 2]
    np.testing.assert_allclose(multi.scores, [0.72, 0.45], rtol=1e-6)
    np.testing.assert_allclose(multi.boxes, [[40, 45, 60, 55]] * 2)
    single = candidates(pred, conf_thres=0.3, multi_label=False)
    assert single.classes.tolist() == [1] and len(single) == 1


def test_decode_batch() -> None:
    out = np.array(
        [
            [
                _row(50, 50, 20, 20, 0.9, [0.9, 0.0]),
                _row(51, 50, 20, 20, 0.8, [0.9, 0.0]),  # duplicate of row 0: suppressed
                _row(51, 50, 20, 20, 0.8, [0.0, 0.9]),  # same place, other class: kept
                _row(120, 120, 10, 10, 0.2, [0.5, 0.0]),  # score 0.1 < 0.25
            ],
            [
                _row(30, 30, 8, 8, 0.6, [0.0, 0.7]),
                _row(0, 0, 0, 0, 0.0, [0.0, 0.0]),
                _row(0, 0, 0, 0, 0.0, [0.0, 0.0]),
                _row(0, 0, 0, 0, 0.0, [0.0, 0.0]),
            ],
        ],
        np.float32,
    )
    dets = decode(out, conf_thres=0.25, iou_thres=0.5)
    assert [len(d) for d in dets] == [2, 1]
    assert dets[0].classes.tolist() == [0, 1]
    np.testing.assert_allclose(dets[0].boxes[0], [40, 40, 60, 60])
    np.testing.assert_allclose(dets[1].scores, [0.42], rtol=1e-6)
    assert len(decode(out, conf_thres=0.25, iou_thres=0.5, max_det=1)[0]) == 1
    with pytest.raises(ValueError):
        decode(out[0])
