"""Deterministic synthetic detection data: filled shapes on textured backgrounds (numpy + Pillow only).

Each image is drawn from its own generator ``np.random.default_rng([split_seed, index])``, so a split is
reproducible image by image and independent of how many images are asked for. Four classes (``circle``,
``rectangle``, ``triangle``, ``cross``) appear at varied scales, aspect ratios, rotations, overlaps and
contrasts on gradient, radial, smooth-noise, stripe and checker backgrounds, with light blur and noise.
Labels are tight pixel boxes, written as COCO json and YOLO txt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from qdq_compiler.detect import CLASS_NAMES, IMAGE_SIZE

SPLIT_SEEDS = {"train": 0, "calib": 1, "val": 2}
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down for anti-aliased edges
MIN_SIZE, MAX_SIZE = 12.0, 72.0  # object scale range in pixels (log-uniform)
MAX_OBJECTS = 6
MAX_OCCLUDED = 0.4  # at most this fraction of an earlier box may be covered by later ones (box overlap)


@dataclass
class Sample:
    """One labelled image: ``image`` HxWx3 uint8 RGB, ``boxes`` [n,4] xyxy pixels, ``classes`` [n] int."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray


# ----------------------------------------------------------------------------------------------- backgrounds
def _rand_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A float32 HxWx3 textured background in [0, 255]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = _rand_color(rng), _rand_color(rng)
    kind = rng.integers(0, 5)
    if kind == 0:  # linear gradient
        a = rng.uniform(0, 2 * math.pi)
        t = (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a) + 0.5
    elif kind == 1:  # radial gradient
        cx, cy = rng.uniform(0, 1, 2)
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) * rng.uniform(0.8, 2.0)
    elif kind == 2:  # smooth value noise
        n = int(rng.integers(3, 12))
        low = Image.fromarray((rng.uniform(0, 255, (n, n))).astype(np.uint8))
        t = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255.0
    elif kind == 3:  # stripes
        a = rng.uniform(0, math.pi)
        freq = rng.uniform(2, 14)
        phase = (xx * math.cos(a) + yy * math.sin(a)) * freq * 2 * math.pi
        t = 0.5 + 0.5 * np.sin(phase)
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    else:  # checker
        cells = rng.uniform(3, 12)
        t = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(np.float32)
    t = np.clip(t, 0, 1)[..., None]
    bg = c0 * (1 - t) + c1 * t
    bg += rng.normal(0, rng.uniform(0, 10), (size, size, 1))  # grain
    return bg.astype(np.float32)


# --------------------------------------------------------------------------------------------------- shapes
def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.asarray([[c, s], [-s, c]], np.float64)


def _shape_outline(rng: np.random.Generator, cls: int) -> tuple[str, np.ndarray]:
    """Return ``(kind, points)`` centred on the origin: an ellipse as its 2 corner points or a polygon."""
    size = math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE)))
    name = CLASS_NAMES[cls]
    if name == "circle":
        r = size / 2 * math.sqrt(rng.uniform(0.8, 1.25))
        ratio = rng.uniform(0.85, 1.18)
        rx, ry = r * math.sqrt(ratio), r / math.sqrt(ratio)
        return "ellipse", np.asarray([[-rx, -ry], [rx, ry]])
    if name == "rectangle":
        aspect = math.exp(rng.uniform(math.log(0.4), math.log(2.5)))
        w, h = size * math.sqrt(aspect) / 2, size / math.sqrt(aspect) / 2
        pts = np.asarray([[-w, -h], [w, -h], [w, h], [-w, h]])
        return "polygon", _rotate(pts, rng.uniform(-0.35, 0.35))
    if name == "triangle":
        ang = np.deg2rad(np.asarray([90.0, 210.0, 330.0]) + rng.uniform(-15, 15, 3))
        rad = size / 2 * rng.uniform(0.85, 1.15, 3)
        pts = np.stack([rad * np.cos(ang), -rad * np.sin(ang)], axis=1)
        pts[:, 0] *= rng.uniform(0.75, 1.3)
        return "polygon", _rotate(pts, rng.uniform(-math.pi, math.pi))
    # cross: a plus sign (rotated up to 45 degrees, so also an "x"), arms of unequal length
    t = size * rng.uniform(0.12, 0.18)
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


def _overlap_ok(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    """The new (top) box may not hide more than ``MAX_OCCLUDED`` of any earlier box."""
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw > 0 and ih > 0 and iw * ih > MAX_OCCLUDED * (b[2] - b[0]) * (b[3] - b[1]):
            return False
    return True


def _shape_mask(kind: str, pts: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased float32 HxW coverage mask of a shape given in pixel coordinates."""
    ss = SUPERSAMPLE
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    p = (pts * ss).tolist()
    if kind == "ellipse":
        draw.ellipse([p[0][0], p[0][1], p[1][0], p[1][1]], fill=255)
    else:
        draw.polygon([tuple(q) for q in p], fill=255)
    small = canvas.reduce(ss)
    return np.asarray(small, np.float32)[..., None] / 255.0


def _object_color(rng: np.random.Generator, bg_patch: np.ndarray) -> np.ndarray:
    """A colour that differs from the mean of ``bg_patch`` by a random minimum contrast."""
    mean = bg_patch.reshape(-1, 3).mean(axis=0)
    need = rng.uniform(45, 140)
    best, best_d = _rand_color(rng), -1.0
    for _ in range(30):
        c = _rand_color(rng)
        d = float(np.linalg.norm(c - mean))
        if d >= need:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


# ---------------------------------------------------------------------------------------------- one sample
def make_sample(rng: np.random.Generator, size: int = IMAGE_SIZE) -> Sample:
    """Draw one labelled image from ``rng``."""
    img = _background(rng, size)
    boxes: list[np.ndarray] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        for _try in range(30):
            kind, pts = _shape_outline(rng, cls)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            span = hi - lo
            if np.any(span > size - 4):
                continue
            centre = rng.uniform(1 - lo, size - 1 - hi)
            pts = pts + centre
            box = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
            if _overlap_ok(box, boxes):
                break
        else:
            continue
        mask = _shape_mask(kind, pts, size)
        x0, y0, x1, y1 = (int(v) for v in np.clip(np.round(box), 0, size))
        colour = _object_color(rng, img[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)])
        # Mild shading across the object so fills are not perfectly flat.
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        a = rng.uniform(0, 2 * math.pi)
        ramp = (xx - centre[0]) * math.cos(a) + (yy - centre[1]) * math.sin(a)
        shade = 1 + rng.uniform(0, 0.25) * ramp / (0.5 * max(span.max(), 1.0))
        obj = colour[None, None, :] * shade[..., None]
        img = img * (1 - mask) + obj * mask
        boxes.append(box)
        classes.append(cls)
    # Distractors: a few thin lines that are not objects.
    if rng.random() < 0.3:
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(1, 4))):
            xy = rng.uniform(0, size, 4).tolist()
            draw.line(xy, fill=tuple(int(v) for v in _rand_color(rng)), width=1)
        img = np.asarray(pil, np.float32)
    if rng.random() < 0.5:
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        img = np.asarray(pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))), np.float32)
    img = img + rng.normal(0, rng.uniform(0, 6), img.shape)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    box_arr = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Sample(image=image, boxes=np.clip(box_arr, 0, size), classes=np.asarray(classes, np.int64))


def generate(split: str | int, count: int, start: int = 0, size: int = IMAGE_SIZE) -> Iterator[Sample]:
    """Yield ``count`` samples of ``split`` (a name in :data:`SPLIT_SEEDS` or a seed) from index ``start``."""
    seed = SPLIT_SEEDS[split] if isinstance(split, str) else int(split)
    for i in range(start, start + count):
        yield make_sample(np.random.default_rng([seed, i]), size)


# ---------------------------------------------------------------------------------------------------- labels
def coco_dict(samples: list[Sample], file_names: list[str]) -> dict:
    """COCO detection json (category ids are class index + 1, annotation ids start at 1)."""
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for img_id, (s, name) in enumerate(zip(samples, file_names), start=1):
        h, w = s.image.shape[:2]
        images.append({"id": img_id, "file_name": name, "width": w, "height": h})
        for box, cls in zip(s.boxes.tolist(), s.classes.tolist()):
            x0, y0, x1, y1 = (round(v, 2) for v in box)
            bw, bh = round(x1 - x0, 2), round(y1 - y0, 2)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_id,
                    "category_id": cls + 1,
                    "bbox": [x0, y0, bw, bh],
                    "area": round(bw * bh, 2),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def yolo_lines(sample: Sample) -> list[str]:
    """YOLO txt label lines: ``class cx cy w h`` normalised to [0, 1]."""
    h, w = sample.image.shape[:2]
    lines = []
    for (x0, y0, x1, y1), cls in zip(sample.boxes.tolist(), sample.classes.tolist()):
        lines.append(
            f"{cls} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
        )
    return lines


def write_split(
    out_dir: str | Path,
    split: str | int,
    count: int,
    fmt: str = "jpg",
    quality: int = 90,
    coco_json: str | Path | None = None,
    yolo: bool = False,
) -> list[Path]:
    """Write ``count`` images of ``split`` into ``out_dir`` (plus COCO json and/or YOLO txt labels)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples, names, paths = [], [], []
    for i, s in enumerate(generate(split, count)):
        name = f"{i:05d}.{fmt}"
        path = out / name
        pil = Image.fromarray(s.image)
        if fmt in ("jpg", "jpeg"):
            pil.save(path, quality=quality)
        else:
            pil.save(path, optimize=True)
        if yolo:
            path.with_suffix(".txt").write_text("".join(line + "\n" for line in yolo_lines(s)))
        samples.append(s)
        names.append(name)
        paths.append(path)
    if coco_json is not None:
        Path(coco_json).write_text(json.dumps(coco_dict(samples, names), separators=(",", ":")))
    return paths
