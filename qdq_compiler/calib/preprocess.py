"""Image preprocessing for calibration: options, letterbox/resize geometry, normalisation (numpy only)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from .errors import CalibrationDataError

__all__ = ["Preprocess", "letterbox_geometry", "preprocess_image", "resize_bilinear"]

_FLOAT_DTYPES = ("float32", "float16", "float64")


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes a model input. The defaults suit Ultralytics YOLO exports.

    ``size`` is ``(height, width)``; None takes the model input's static H and W. ``letterbox`` keeps the
    aspect ratio and pads with ``pad_value`` (a 0-255 pixel value, before scaling) centred like Ultralytics;
    ``resize`` stretches. Then ``x = (pixel * scale - mean) / std`` per channel, in ``channel_order``,
    laid out as ``layout`` and cast to ``dtype``. Resizing is bilinear with half-pixel centres and no
    antialiasing (OpenCV's INTER_LINEAR, which Ultralytics uses).
    """

    size: tuple[int, int] | None = None
    resize: Literal["letterbox", "resize"] = "letterbox"
    pad_value: float = 114.0
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.size is not None:
            size = tuple(int(v) for v in self.size)
            if len(size) != 2 or min(size) < 1:
                raise CalibrationDataError(f"preprocess size must be (height, width) > 0, got {self.size!r}")
            object.__setattr__(self, "size", size)
        for name in ("mean", "std"):
            value = getattr(self, name)
            value = (float(value),) if np.ndim(value) == 0 else tuple(float(v) for v in value)
            if len(value) not in (1, 3):
                raise CalibrationDataError(f"preprocess {name} needs 1 or 3 values, got {len(value)}")
            object.__setattr__(self, name, value)
        if any(v == 0 for v in self.std):
            raise CalibrationDataError("preprocess std must not contain 0")
        choices = {
            "resize": ("letterbox", "resize"),
            "channel_order": ("RGB", "BGR"),
            "layout": ("NCHW", "NHWC"),
            "dtype": _FLOAT_DTYPES,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise CalibrationDataError(
                    f"preprocess {name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}"
                )
        object.__setattr__(self, "pad_value", float(self.pad_value))
        object.__setattr__(self, "scale", float(self.scale))

    def describe(self) -> dict[str, Any]:
        """The options as a JSON-ready dict."""
        data = asdict(self)
        data["size"] = list(self.size) if self.size is not None else None
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    def sha256(self) -> str:
        """Hash of the options (canonical JSON), for the calibration cache key."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def letterbox_geometry(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(new_h, new_w, top, left)``: the resized image size and its offset inside ``dst_hw``."""
    (src_h, src_w), (dst_h, dst_w) = src_hw, dst_hw
    ratio = min(dst_h / src_h, dst_w / src_w)
    new_h = min(dst_h, max(1, int(round(src_h * ratio))))
    new_w = min(dst_w, max(1, int(round(src_w * ratio))))
    top = int(round((dst_h - new_h) / 2 - 0.1))
    left = int(round((dst_w - new_w) / 2 - 0.1))
    return new_h, new_w, top, left


def _axis_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left/right source indices and right-hand weights for bilinear resampling along one axis."""
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0.0, src - 1)
    left = np.floor(pos).astype(np.intp)
    right = np.minimum(left + 1, src - 1)
    return left, right, (pos - left).astype(np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an ``HxWxC`` image (half-pixel centres, edge clamp, no antialias); float32 out."""
    src = image.astype(np.float32, copy=False)
    if src.shape[:2] == (height, width):
        return src.copy()
    top, bottom, wy = _axis_taps(src.shape[0], height)
    left, right, wx = _axis_taps(src.shape[1], width)
    rows = src[top] * (1 - wy)[:, None, None] + src[bottom] * wy[:, None, None]
    return rows[:, left] * (1 - wx)[None, :, None] + rows[:, right] * wx[None, :, None]


def preprocess_image(image: np.ndarray, options: Preprocess, size: tuple[int, int]) -> np.ndarray:
    """Turn one ``HxWxC`` (RGB or grey) uint8 image into a ``CxHxW`` / ``HxWxC`` array (no batch axis)."""
    if image.ndim == 2:
        image = image[:, :, None]
    height, width = size
    if options.resize == "letterbox":
        new_h, new_w, top, left = letterbox_geometry(image.shape[:2], size)
        canvas = np.full((height, width, image.shape[2]), options.pad_value, dtype=np.float32)
        canvas[top : top + new_h, left : left + new_w] = resize_bilinear(image, new_h, new_w)
    else:
        canvas = resize_bilinear(image, height, width)
    if options.channel_order == "BGR" and canvas.shape[2] == 3:
        canvas = canvas[:, :, ::-1]
    mean = np.asarray(options.mean, dtype=np.float32)
    std = np.asarray(options.std, dtype=np.float32)
    canvas = (canvas * np.float32(options.scale) - mean) / std
    if options.layout == "NCHW":
        canvas = canvas.transpose(2, 0, 1)
    return np.ascontiguousarray(canvas, dtype=options.dtype)
