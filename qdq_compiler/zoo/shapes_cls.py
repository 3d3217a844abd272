"""Deterministic synthetic image classification data: one large shape per image on a textured background.

The four classes are the detector's shapes (``circle``, ``rectangle``, ``triangle``, ``cross``), drawn with
the same outlines and backgrounds as :mod:`qdq_compiler.detect.synthetic` but one shape per image, 36..80 %
of the image wide, plus up to two small distractor shapes of other classes, distractor lines, blur and
noise. Image ``i`` of a split comes from ``np.random.default_rng([split_seed, i])``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from qdq_compiler.detect import CLASS_NAMES
from qdq_compiler.detect.synthetic import _background, _object_color, _rand_color, _rotate, _shape_mask

IMAGE_SIZE = 96
SPLIT_SEEDS = {"train": 10, "calib": 11, "val": 12}


@dataclass
class ClassSample:
    """One labelled image: ``image`` HxWx3 uint8 RGB and its class index ``label``."""

    image: np.ndarray
    label: int


def _outline(rng: np.random.Generator, cls: int, size: float) -> tuple[str, np.ndarray]:
    """``(kind, points)`` of shape ``cls`` about ``size`` pixels wide, centred on the origin."""
    name = CLASS_NAMES[cls]
    if name == "circle":
        ratio = rng.uniform(0.8, 1.25)
        r = size / 2
        return "ellipse", np.asarray(
            [[-r * math.sqrt(ratio), -r / math.sqrt(ratio)], [r * math.sqrt(ratio), r / math.sqrt(ratio)]]
        )
    if name == "rectangle":
        aspect = math.exp(rng.uniform(math.log(0.45), math.log(2.2)))
        w, h = size * math.sqrt(aspect) / 2, size / math.sqrt(aspect) / 2
        pts = np.asarray([[-w, -h], [w, -h], [w, h], [-w, h]])
        return "polygon", _rotate(pts, rng.uniform(-0.6, 0.6))
    if name == "triangle":
        ang = np.deg2rad(np.asarray([90.0, 210.0, 330.0]) + rng.uniform(-15, 15, 3))
        rad = size / 2 * rng.uniform(0.85, 1.15, 3)
        pts = np.stack([rad * np.cos(ang), -rad * np.sin(ang)], axis=1)
        return "polygon", _rotate(pts, rng.uniform(-math.pi, math.pi))
    t = size * rng.uniform(0.1, 0.17)
    a, b = size / 2 * rng.uniform(0.8, 1.0), size / 2 * rng.uniform(0.6, 1.0)
    pts = np.asarray(
        [
            [-t, -b],
            [t, -b],
            [t, -t],
            [a, -t],
            [a, t],
            [t, t],
            [t, b],
            [-t, b],
            [-t, t],
            [-a, t],
            [-a, -t],
            [-t, -t],
        ]
    )
    return "polygon", _rotate(pts, rng.uniform(-math.pi / 4, math.pi / 4))


def _paint(rng: np.random.Generator, img: np.ndarray, cls: int, size: float) -> np.ndarray:
    """Paint one shape of class ``cls`` at a random place where it fits."""
    n = img.shape[0]
    kind, pts = _outline(rng, cls, size)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    lo_c, hi_c = 1 - lo, n - 1 - hi
    centre = rng.uniform(np.minimum(lo_c, hi_c), np.maximum(lo_c, hi_c))
    pts = pts + centre
    mask = _shape_mask(kind, pts, n)
    x0, y0 = (int(v) for v in np.clip(pts.min(axis=0), 0, n - 1))
    x1, y1 = (int(v) for v in np.clip(pts.max(axis=0), 1, n))
    colour = _object_color(rng, img[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)])
    return img * (1 - mask) + colour[None, None, :] * mask


def make_sample(rng: np.random.Generator, size: int = IMAGE_SIZE) -> ClassSample:
    """Draw one labelled image from ``rng``."""
    img = _background(rng, size)
    label = int(rng.integers(0, len(CLASS_NAMES)))
    for _ in range(int(rng.integers(0, 3))):  # small distractors of other classes first (underneath)
        other = int((label + rng.integers(1, len(CLASS_NAMES))) % len(CLASS_NAMES))
        img = _paint(rng, img, other, size * rng.uniform(0.12, 0.22))
    img = _paint(rng, img, label, size * rng.uniform(0.36, 0.8))
    if rng.random() < 0.4:
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(1, 4))):
            draw.line(rng.uniform(0, size, 4).tolist(), fill=tuple(int(v) for v in _rand_color(rng)), width=1)
        img = np.asarray(pil, np.float32)
    if rng.random() < 0.5:
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        img = np.asarray(pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))), np.float32)
    img = img + rng.normal(0, rng.uniform(0, 8), img.shape)
    return ClassSample(np.clip(np.round(img), 0, 255).astype(np.uint8), label)


def generate(split: str | int, count: int, start: int = 0, size: int = IMAGE_SIZE) -> Iterator[ClassSample]:
    """Yield ``count`` samples of ``split`` (a name in :data:`SPLIT_SEEDS` or a seed) from index ``start``."""
    seed = SPLIT_SEEDS[split] if isinstance(split, str) else int(split)
    for i in range(start, start + count):
        yield make_sample(np.random.default_rng([seed, i]), size)


def write_split(
    out_dir: str | Path,
    split: str | int,
    count: int,
    quality: int = 90,
    labels_json: str | Path | None = None,
) -> None:
    """Write ``count`` JPEGs of ``split`` into ``out_dir`` and, if asked, the labels json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, int] = {}
    for i, s in enumerate(generate(split, count)):
        name = f"{i:05d}.jpg"
        Image.fromarray(s.image).save(out / name, quality=quality)
        labels[name] = s.label
    if labels_json is not None:
        doc = {"classes": list(CLASS_NAMES), "labels": labels}
        Path(labels_json).write_text(json.dumps(doc, indent=0, sort_keys=True) + "\n")
