"""Deterministic synthetic text-segmentation data: words of glyph-like strokes on textured backgrounds.

Each image holds 1..6 horizontal text lines; a line is a run of words, a word a run of glyphs, a glyph one to
three random strokes (bars, diagonals, hooks, dots, small rings) inside a cell of the line's height. The
target is the binary mask of the word boxes (what a DB-style detector's probability map should light up).
Backgrounds are the detector's textures (:mod:`qdq_compiler.detect.synthetic`), with filled shapes and
thin lines as non-text distractors, blur and noise. Image ``i`` of a split comes from
``np.random.default_rng([split_seed, i])``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from qdq_compiler.detect.synthetic import _background, _object_color, _rand_color

IMAGE_SIZE = 128
SPLIT_SEEDS = {"train": 20, "calib": 21, "val": 22}
SUPERSAMPLE = 3
MAX_LINES = 6


@dataclass
class TextSample:
    """One image: ``image`` HxWx3 uint8 RGB and ``mask`` HxW uint8 (1 inside a word box)."""

    image: np.ndarray
    mask: np.ndarray


def _glyph(
    rng: np.random.Generator, draw: ImageDraw.ImageDraw, x: float, y: float, w: float, h: float, sw: int
) -> None:
    """Draw one glyph of 1..3 strokes in the cell ``(x, y, w, h)`` (supersampled coordinates)."""
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 5))
        if kind == 0:  # vertical bar, full or partial height
            cx = x + rng.uniform(0.1, 0.9) * w
            y0, y1 = y + rng.uniform(0, 0.4) * h, y + rng.uniform(0.6, 1) * h
            draw.line([cx, y0, cx, y1], fill=255, width=sw)
        elif kind == 1:  # horizontal bar
            cy = y + rng.uniform(0.1, 0.9) * h
            draw.line([x, cy, x + w, cy], fill=255, width=sw)
        elif kind == 2:  # diagonal
            pts = [x + rng.uniform(0, 0.3) * w, y, x + rng.uniform(0.7, 1) * w, y + h]
            if rng.random() < 0.5:
                pts[1], pts[3] = pts[3], pts[1]
            draw.line(pts, fill=255, width=sw)
        elif kind == 3:  # ring or arc
            box = [x, y + rng.uniform(0, 0.4) * h, x + w, y + h]
            start = float(rng.uniform(0, 360))
            draw.arc(box, start, start + float(rng.uniform(180, 360)), fill=255, width=sw)
        else:  # dot / small block
            cx, cy = x + rng.uniform(0.2, 0.8) * w, y + rng.uniform(0.1, 0.9) * h
            r = sw * rng.uniform(0.6, 1.2)
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=255)


def _free(
    box: tuple[float, float, float, float], boxes: list[tuple[float, float, float, float]], margin: float
) -> bool:
    x0, y0, x1, y1 = box
    return all(
        x1 + margin < b[0] or b[2] + margin < x0 or y1 + margin < b[1] or b[3] + margin < y0 for b in boxes
    )


def _distractors(rng: np.random.Generator, img: np.ndarray, size: int) -> np.ndarray:
    """Non-text clutter: a few filled ellipses/rectangles and thin long lines."""
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(0, 3))):
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(6, 24, 2)
        colour = tuple(int(v) for v in _rand_color(rng))
        if rng.random() < 0.5:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
        else:
            draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
    for _ in range(int(rng.integers(0, 3))):
        draw.line(rng.uniform(0, size, 4).tolist(), fill=tuple(int(v) for v in _rand_color(rng)), width=1)
    return np.asarray(pil, np.float32)


def make_sample(rng: np.random.Generator, size: int = IMAGE_SIZE) -> TextSample:
    """Draw one image and its word mask from ``rng``."""
    ss = SUPERSAMPLE
    img = _distractors(rng, _background(rng, size), size)
    mask = np.zeros((size, size), np.uint8)
    lines: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(1, MAX_LINES + 1))):
        h = float(rng.uniform(7, 18))
        length = float(rng.uniform(3 * h, min(size - 4, 14 * h)))
        for _try in range(20):
            x0, y0 = rng.uniform(2, size - 2 - length), rng.uniform(2, size - 2 - h)
            box = (x0, y0, x0 + length, y0 + h)
            if _free(box, lines, h * 0.4):
                break
        else:
            continue
        lines.append(box)
        ink = Image.new("L", (size * ss, size * ss), 0)
        draw = ImageDraw.Draw(ink)
        sw = max(1, round(h * ss * rng.uniform(0.09, 0.16)))
        x, word_start = x0, x0
        while True:
            gw = h * rng.uniform(0.4, 0.85)
            if x + gw > x0 + length:
                break
            _glyph(rng, draw, x * ss, y0 * ss, gw * ss, h * ss, sw)
            x_end = x + gw
            x = x_end + h * rng.uniform(0.1, 0.25)
            if rng.random() < 0.18 or x + h * 0.4 > x0 + length:  # end of word
                mask[int(round(y0)) : int(round(y0 + h)), int(round(word_start)) : int(round(x_end))] = 1
                x += h * rng.uniform(0.35, 0.8)
                word_start = x
        cover = np.asarray(ink.reduce(ss), np.float32)[..., None] / 255.0
        ys, xs = int(y0), int(x0)
        colour = _object_color(rng, img[ys : ys + int(h) + 1, xs : xs + int(length) + 1])
        img = img * (1 - cover) + colour[None, None, :] * cover
    if rng.random() < 0.4:
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        img = np.asarray(pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8))), np.float32)
    img = img + rng.normal(0, rng.uniform(0, 6), img.shape)
    return TextSample(np.clip(np.round(img), 0, 255).astype(np.uint8), mask)


def generate(split: str | int, count: int, start: int = 0, size: int = IMAGE_SIZE) -> Iterator[TextSample]:
    """Yield ``count`` samples of ``split`` (a name in :data:`SPLIT_SEEDS` or a seed) from index ``start``."""
    seed = SPLIT_SEEDS[split] if isinstance(split, str) else int(split)
    for i in range(start, start + count):
        yield make_sample(np.random.default_rng([seed, i]), size)


def write_split(
    out_dir: str | Path, split: str | int, count: int, quality: int = 90, mask_dir: str | Path | None = None
) -> None:
    """Write ``count`` JPEGs of ``split`` into ``out_dir`` and 1-bit PNG masks into ``mask_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    masks = Path(mask_dir) if mask_dir is not None else None
    if masks is not None:
        masks.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(generate(split, count)):
        Image.fromarray(s.image).save(out / f"{i:05d}.jpg", quality=quality)
        if masks is not None:
            Image.fromarray(s.mask * 255).convert("1").save(masks / f"{i:05d}.png", optimize=True)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask PNG written by :func:`write_split` as HxW uint8 in {0, 1}."""
    return (np.asarray(Image.open(path).convert("L")) != 0).astype(np.uint8)  # 1-bit PNGs: 0 or 255
