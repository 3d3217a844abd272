"""The synthetic detection data generator: determinism and label sanity."""

from __future__ import annotations

import json

import numpy as np

from qdq_compiler.detect import CLASS_NAMES, IMAGE_SIZE
from qdq_compiler.detect.synthetic import MAX_OBJECTS, coco_dict, generate, write_split, yolo_lines


def test_generator_is_deterministic_per_image() -> None:
    a = list(generate("val", 4))
    b = list(generate("val", 2, start=2))
    again = list(generate("val", 4))
    for x, y in zip(a, again):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.classes, y.classes)
    # Image i does not depend on how many images come before it.
    np.testing.assert_array_equal(a[2].image, b[0].image)
    np.testing.assert_array_equal(a[3].boxes, b[1].boxes)


def test_splits_differ() -> None:
    train, val = next(generate("train", 1)), next(generate("val", 1))
    assert not np.array_equal(train.image, val.image)


def test_labels_are_sane() -> None:
    samples = list(generate("calib", 30))
    classes = np.concatenate([s.classes for s in samples])
    assert set(classes.tolist()) == set(range(len(CLASS_NAMES)))
    for s in samples:
        assert s.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and s.image.dtype == np.uint8
        assert 1 <= len(s.classes) == len(s.boxes) <= MAX_OBJECTS
        w, h = s.boxes[:, 2] - s.boxes[:, 0], s.boxes[:, 3] - s.boxes[:, 1]
        assert np.all(s.boxes >= 0) and np.all(s.boxes <= IMAGE_SIZE)
        assert np.all(w >= 4) and np.all(h >= 4) and np.all(w <= IMAGE_SIZE) and np.all(h <= IMAGE_SIZE)
    assert samples[0].image.std() > 5  # textured, not blank


def test_coco_and_yolo_labels(tmp_path) -> None:
    paths = write_split(tmp_path / "imgs", "val", 3, coco_json=tmp_path / "val.json", yolo=True)
    assert [p.name for p in paths] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    coco = json.loads((tmp_path / "val.json").read_text())
    samples = list(generate("val", 3))
    assert [c["name"] for c in coco["categories"]] == list(CLASS_NAMES)
    assert len(coco["images"]) == 3
    assert len(coco["annotations"]) == sum(len(s.classes) for s in samples)
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    first = coco["annotations"][0]
    x0, y0, x1, y1 = samples[0].boxes[0]
    np.testing.assert_allclose(first["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=0.02)
    assert first["category_id"] == samples[0].classes[0] + 1
    lines = (tmp_path / "imgs" / "00000.txt").read_text().splitlines()
    assert lines == yolo_lines(samples[0])
    cls, cx, cy, w, h = lines[0].split()
    assert int(cls) == samples[0].classes[0]
    np.testing.assert_allclose(float(cx) * IMAGE_SIZE, (x0 + x1) / 2, atol=1e-3)
    assert coco_dict([], [])["annotations"] == []
