"""Calibration data readers: batches ``dict[input name, np.ndarray]`` from images, .npy, .npz or iterables.

Every reader validates each batch against the model inputs (names, dtype, rank, static dims) and describes
its data for the calibration cache key: ``data_sha256`` (file names and contents, or array contents) and
``preprocess_sha256`` (the preprocessing options). Errors are :class:`CalibrationDataError`, one line each.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib.util
import logging
import mmap
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import CalibrationDataError
from .preprocess import Preprocess, preprocess_image

__all__ = [
    "IMAGE_SUFFIXES",
    "ArrayData",
    "CalibrationData",
    "CalibrationDataError",
    "ImageFolderData",
    "InputSpec",
    "IterableData",
    "NpyData",
    "NpzData",
    "Preprocess",
    "model_input_specs",
    "open_calibration_data",
    "validate_batch",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PILLOW_MISSING = "reading images needs Pillow: pip install pillow"

logger = logging.getLogger(__name__)
Batch = dict[str, np.ndarray]


# --------------------------------------------------------------------------- model inputs
@dataclass(frozen=True)
class InputSpec:
    """A model input: name, shape (None for a dynamic dim) and numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def shape_text(self) -> str:
        return "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"


def model_input_specs(model: onnx.ModelProto) -> tuple[InputSpec, ...]:
    """The graph inputs that are not initializers, in graph order."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise CalibrationDataError(f"model input {value.name!r} is not a tensor")
        if not tensor_type.HasField("shape"):
            raise CalibrationDataError(
                f"model input {value.name!r} has no shape (not even a rank), so calibration data cannot be "
                "checked against it (TensorRT needs its rank too): export the model with input shapes; "
                "dynamic dims may stay symbolic"
            )
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in tensor_type.shape.dim
        )
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        specs.append(InputSpec(value.name, dims, dtype))
    return tuple(specs)


def _as_specs(model: onnx.ModelProto | Sequence[InputSpec]) -> tuple[InputSpec, ...]:
    return model_input_specs(model) if isinstance(model, onnx.ModelProto) else tuple(model)


def validate_batch(batch: Mapping[str, Any] | np.ndarray, specs: Sequence[InputSpec], source: str) -> Batch:
    """Check a batch against the model inputs and return it as ``{name: ndarray}``.

    A bare array is accepted for a single-input model. Raises :class:`CalibrationDataError` on unknown or
    missing names, a dtype that differs, or a rank / static dimension that differs.
    """
    if not isinstance(batch, Mapping):
        if len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise CalibrationDataError(
                f"{source}: a bare array fits single-input models only; "
                f"this model has inputs {names}: give a dict keyed by input name"
            )
        batch = {specs[0].name: batch}
    _check_names(list(batch), specs, source)
    out: Batch = {}
    for spec in specs:
        array = np.asarray(batch[spec.name])
        if array.dtype != spec.dtype:
            raise CalibrationDataError(
                f"{source}: input {spec.name!r} expects dtype {spec.dtype} but got "
                f"{array.dtype}; convert it with .astype(np.{spec.dtype})"
            )
        _check_shape(spec, array.shape, source)
        out[spec.name] = array
    return out


def _check_names(names: Sequence[str], specs: Sequence[InputSpec], source: str) -> None:
    expected = [s.name for s in specs]
    unknown = sorted(set(names) - set(expected))
    if unknown:
        raise CalibrationDataError(
            f"{source}: unknown input name(s) {', '.join(map(repr, unknown))}; "
            f"model inputs are {', '.join(map(repr, expected))}"
        )
    missing = [name for name in expected if name not in names]
    if missing:
        raise CalibrationDataError(f"{source}: missing input(s) {', '.join(map(repr, missing))}")


def _check_shape(spec: InputSpec, shape: tuple[int, ...], source: str, what: str = "got") -> None:
    if len(shape) != len(spec.shape) or any(
        d is not None and d != s for d, s in zip(spec.shape, shape, strict=True)
    ):
        got = "[" + ",".join(map(str, shape)) + "]"
        raise CalibrationDataError(
            f"{source}: input {spec.name!r} expects shape {spec.shape_text()} but {what} {got}"
        )


def _resolve_batch_size(
    batch_size: int | None, specs: Sequence[InputSpec], source: str, check_fixed: bool = True
) -> int:
    static = {s.shape[0] for s in specs if s.shape and s.shape[0] is not None}
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise CalibrationDataError(f"{source}: batch size must be >= 1, got {batch_size!r}")
    if not static or not check_fixed:
        return 1 if batch_size is None else int(batch_size)
    fixed = min(static)
    if batch_size is not None and int(batch_size) != fixed:
        raise CalibrationDataError(
            f"{source}: the model's batch dimension is fixed at {fixed}; use batch size {fixed}"
        )
    return fixed


def _has_static_batch(specs: Sequence[InputSpec]) -> bool:
    return any(s.shape and s.shape[0] is not None for s in specs)


def _check_path(path: str | os.PathLike[str]) -> Path:
    resolved = Path(path)
    if not resolved.exists():
        raise CalibrationDataError(f"calibration data not found: {resolved}")
    return resolved


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise CalibrationDataError(f"sample limit must be >= 1, got {limit!r}")


def _hash_files(paths: Sequence[Path], root: Path, extra: str = "") -> str:
    digest = hashlib.sha256(b"qdqc-calib-data-v1\0" + extra.encode() + b"\0")
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _hash_arrays(batches: Iterable[Mapping[str, np.ndarray]]) -> str:
    digest = hashlib.sha256(b"qdqc-calib-arrays-v1\0")
    for batch in batches:
        for name in sorted(batch):
            array = np.ascontiguousarray(batch[name])
            digest.update(f"{name}\0{array.dtype.str}\0{list(array.shape)}\0".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


_NO_PREPROCESS_SHA256 = hashlib.sha256(b"{}").hexdigest()


# --------------------------------------------------------------------------- readers
class CalibrationData(abc.ABC):
    """An iterable of validated batches, plus a description for the cache key."""

    kind = "data"

    def __init__(self, specs: Sequence[InputSpec], source: str) -> None:
        self.specs = tuple(specs)
        self.source = source
        self._data_sha256: str | None = None

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Batch]: ...

    @property
    @abc.abstractmethod
    def num_samples(self) -> int | None:
        """Samples one pass yields (None if unknown)."""

    @abc.abstractmethod
    def _compute_data_sha256(self) -> str | None: ...

    @property
    def reiterable(self) -> bool:
        """True if every iteration yields the same batches (exact calibration reads the data twice)."""
        return True

    @property
    def data_sha256(self) -> str | None:
        """sha256 of the data actually fed (None when it cannot be known without consuming it)."""
        if self._data_sha256 is None:
            self._data_sha256 = self._compute_data_sha256()
        return self._data_sha256

    @property
    def preprocess(self) -> Preprocess | None:
        return None

    @property
    def preprocess_sha256(self) -> str:
        options = self.preprocess
        return options.sha256() if options is not None else _NO_PREPROCESS_SHA256

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: kind, source, sample count, hashes, preprocessing."""
        options = self.preprocess
        return {
            "kind": self.kind,
            "source": self.source,
            "num_samples": self.num_samples,
            "data_sha256": self.data_sha256,
            "preprocess": options.describe() if options is not None else None,
            "preprocess_sha256": self.preprocess_sha256,
        }


class _ArrayFileData(CalibrationData):
    """Shared slicing of ``name -> [N, ...]`` arrays into batches, in one of two layouts per input.

    * batch layout: rank = input rank; the N samples are concatenated on the model's batch axis (axis 0) and
      every run takes ``batch_size`` of them (``[N, 3, 640, 640]`` for an input ``[1, 3, 640, 640]``);
    * stacked layout: rank = input rank + 1 and the trailing dims match the input; sample ``i`` is fed
      whole as the input in run ``i`` (``[N, 32, 64]`` for an input ``[32, 64]`` without a batch axis).

    The array's rank decides, so the layout never depends on dynamic dims. When any input is stacked, every
    run takes one sample of every input: batch size 1 (a batch-layout input then needs a batch of 1).
    """

    def __init__(
        self, specs: Sequence[InputSpec], source: str, batch_size: int | None, limit: int | None
    ) -> None:
        super().__init__(specs, source)
        _check_limit(limit)
        self._requested_batch_size = batch_size
        self.batch_size = _resolve_batch_size(batch_size, self.specs, source, check_fixed=False)
        self.limit = limit
        self._count = 0
        self._stacked: frozenset[str] = frozenset()

    def _set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        counts = {name: (a.shape[0] if a.ndim else 0) for name, a in arrays.items()}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            raise CalibrationDataError(f"{self.source}: inputs hold different sample counts ({detail})")
        total = next(iter(counts.values()))
        if total == 0:
            raise CalibrationDataError(f"{self.source}: no calibration samples (count 0)")
        for spec in self.specs:
            array = arrays[spec.name]
            if array.dtype != spec.dtype:
                raise CalibrationDataError(
                    f"{self.source}: input {spec.name!r} expects dtype {spec.dtype} "
                    f"but the data holds {array.dtype}; convert it with "
                    f".astype(np.{spec.dtype})"
                )
        self._stacked = frozenset(s.name for s in self.specs if _is_stacked(s, arrays[s.name].shape))
        batched = [spec for spec in self.specs if spec.name not in self._stacked]
        if self._stacked:
            self.batch_size = self._one_sample_per_run(batched)
        else:
            self.batch_size = _resolve_batch_size(self._requested_batch_size, self.specs, self.source)
        for spec in batched:
            _check_batch_layout(spec, arrays[spec.name].shape, self.batch_size, self.source)
        self._arrays = arrays
        self._count = min(total, self.limit) if self.limit else total
        if _has_static_batch(batched) and self._count % self.batch_size:
            dropped = self._count % self.batch_size
            logger.warning(
                "%s: dropping the last %d sample(s): the model's batch is fixed at %d",
                self.source,
                dropped,
                self.batch_size,
            )
            self._count -= dropped
            if self._count == 0:
                raise CalibrationDataError(
                    f"{self.source}: fewer samples than the fixed batch size {self.batch_size}"
                )

    def _one_sample_per_run(self, batched: Sequence[InputSpec]) -> int:
        """Batch size 1 for data with a stacked input; refuse what asks for more samples per run."""
        stacked = sorted(self._stacked)[0]
        requested = self._requested_batch_size
        if requested is not None and int(requested) != 1:
            raise CalibrationDataError(
                f"{self.source}: input {stacked!r} holds samples stacked on a new "
                f"leading axis, fed one sample per run: use batch size 1"
            )
        for spec in batched:
            if spec.shape and spec.shape[0] is not None and spec.shape[0] != 1:
                raise CalibrationDataError(
                    f"{self.source}: input {stacked!r} holds samples stacked on a new leading axis (one "
                    f"sample per run) but input {spec.name!r} has its batch fixed at {spec.shape[0]}: stack "
                    f"its samples too, as [N,{','.join(map(str, spec.shape))}]"
                )
        return 1

    @property
    def num_samples(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, self._count, self.batch_size):
            stop = min(start + self.batch_size, self._count)
            batch = {
                name: np.array(a[start] if name in self._stacked else a[start:stop], order="C")
                for name, a in self._arrays.items()
            }
            _release_mapped_pages(self._arrays.values())
            yield validate_batch(batch, self.specs, self.source)


def _is_stacked(spec: InputSpec, shape: tuple[int, ...]) -> bool:
    """True when ``shape`` is ``[N, *spec.shape]``: samples stacked on a new leading axis."""
    return len(shape) == len(spec.shape) + 1 and all(
        d is None or d == s for d, s in zip(spec.shape, shape[1:], strict=True)
    )


def _check_batch_layout(spec: InputSpec, shape: tuple[int, ...], batch_size: int, source: str) -> None:
    """Refuse an array that fits neither layout, naming both."""
    stacked_rank = len(spec.shape) + 1
    run_shape = (batch_size, *shape[1:]) if shape else shape
    fits = len(shape) == len(spec.shape) and all(
        d is None or d == s for d, s in zip(spec.shape, run_shape, strict=True)
    )
    if fits:
        return
    got = "[" + ",".join(map(str, shape)) + "]"
    if len(shape) == stacked_rank:
        raise CalibrationDataError(
            f"{source}: input {spec.name!r} expects shape {spec.shape_text()} but the "
            f"samples stacked in {got} have shape [{','.join(map(str, shape[1:]))}]"
        )
    if not spec.shape:
        raise CalibrationDataError(
            f"{source}: input {spec.name!r} is a scalar: give its samples as [N], got {got}"
        )
    if len(shape) != len(spec.shape):
        dims = [("?" if d is None else str(d)) for d in spec.shape]
        raise CalibrationDataError(
            f"{source}: input {spec.name!r} expects shape {spec.shape_text()}: give its samples on the batch "
            f"axis [N,{','.join(dims[1:])}] or stacked [N,{','.join(dims)}]; got {got}".replace(",]", "]")
        )
    _check_shape(spec, run_shape, source, "samples stack to")


def _release_mapped_pages(arrays: Iterable[np.ndarray]) -> None:
    """Drop the file pages a memory-mapped array has read from this process's memory (they stay cached).

    Without it, every sample read from a memory-mapped .npy stays resident and peak memory grows with
    the data set; the batch in use has been copied out already.
    """
    for array in arrays:
        mapping = getattr(array, "_mmap", None)
        if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mapping.madvise(mmap.MADV_DONTNEED)


class NpyData(_ArrayFileData):
    """A ``.npy`` of N samples stacked on axis 0, for a single-input model (memory-mapped)."""

    kind = "npy"

    def __init__(
        self,
        path: str | os.PathLike[str],
        model: onnx.ModelProto | Sequence[InputSpec],
        batch_size: int | None = None,
        limit: int | None = None,
    ) -> None:
        self.path = _check_path(path)
        specs = _as_specs(model)
        super().__init__(specs, str(self.path), batch_size, limit)
        if len(self.specs) != 1:
            names = ", ".join(repr(s.name) for s in self.specs)
            raise CalibrationDataError(
                f"{self.source}: a .npy feeds single-input models only; the model has "
                f"inputs {names}: use an .npz keyed by input name"
            )
        try:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CalibrationDataError(f"{self.source}: not a readable .npy file ({exc})") from None
        if not isinstance(array, np.ndarray):
            raise CalibrationDataError(f"{self.source}: expected a .npy array, found an archive")
        self._set_arrays({self.specs[0].name: array})

    def _compute_data_sha256(self) -> str:
        return _hash_files([self.path], self.path.parent, f"limit={self.limit}")


class NpzData(_ArrayFileData):
    """An ``.npz`` whose keys are the model input names, each holding N samples on axis 0."""

    kind = "npz"

    def __init__(
        self,
        path: str | os.PathLike[str],
        model: onnx.ModelProto | Sequence[InputSpec],
        batch_size: int | None = None,
        limit: int | None = None,
    ) -> None:
        self.path = _check_path(path)
        super().__init__(_as_specs(model), str(self.path), batch_size, limit)
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                keys = list(archive.files)
                _check_names(keys, self.specs, self.source)
                arrays = {name: archive[name] for name in keys}
        except CalibrationDataError:
            raise
        except (OSError, ValueError) as exc:
            raise CalibrationDataError(f"{self.source}: not a readable .npz file ({exc})") from None
        self._set_arrays(arrays)

    def _compute_data_sha256(self) -> str:
        return _hash_files([self.path], self.path.parent, f"limit={self.limit}")


class ArrayData(_ArrayFileData):
    """In-memory samples stacked on axis 0: an array (single-input model) or a dict keyed by input name."""

    kind = "arrays"

    def __init__(
        self,
        arrays: np.ndarray | Mapping[str, np.ndarray],
        model: onnx.ModelProto | Sequence[InputSpec],
        batch_size: int | None = None,
        limit: int | None = None,
        source: str = "calibration arrays",
    ) -> None:
        super().__init__(_as_specs(model), source, batch_size, limit)
        if not isinstance(arrays, Mapping):
            if len(self.specs) != 1:
                names = ", ".join(repr(s.name) for s in self.specs)
                raise CalibrationDataError(
                    f"{source}: a bare array fits single-input models only; the model "
                    f"has inputs {names}: give a dict keyed by input name"
                )
            arrays = {self.specs[0].name: arrays}
        _check_names(list(arrays), self.specs, source)
        self._set_arrays({name: np.asarray(value) for name, value in arrays.items()})

    def _compute_data_sha256(self) -> str:
        return _hash_arrays([{name: a[: self._count] for name, a in self._arrays.items()}])


class ImageFolderData(CalibrationData):
    """Image files (jpg/jpeg/png/bmp, sorted by name) of a folder, preprocessed for a single-input model."""

    kind = "image-folder"

    def __init__(
        self,
        path: str | os.PathLike[str],
        model: onnx.ModelProto | Sequence[InputSpec],
        preprocess: Preprocess | None = None,
        batch_size: int | None = None,
        limit: int | None = None,
        recursive: bool = False,
    ) -> None:
        self.root = _check_path(path)
        super().__init__(_as_specs(model), str(self.root))
        if not self.root.is_dir():
            raise CalibrationDataError(f"{self.source}: expected a folder of images")
        _check_limit(limit)
        pattern = self.root.rglob("*") if recursive else self.root.iterdir()
        files = sorted(
            (p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        if not files:
            suffixes = "/".join(IMAGE_SUFFIXES)
            raise CalibrationDataError(f"{self.source}: no images ({suffixes}) found (count 0)")
        self.files = files[:limit] if limit else files
        self.limit = limit
        if len(self.specs) != 1:
            names = ", ".join(repr(s.name) for s in self.specs)
            raise CalibrationDataError(
                f"{self.source}: image folders feed single-input models only; the "
                f"model has inputs {names}: use an .npz keyed by input name"
            )
        self.batch_size = _resolve_batch_size(batch_size, self.specs, self.source)
        self._options, self._size, self._channels = self._resolve_options(preprocess or Preprocess())
        if _has_static_batch(self.specs) and len(self.files) % self.batch_size:
            dropped = len(self.files) % self.batch_size
            logger.warning(
                "%s: dropping the last %d image(s): the model's batch is fixed at %d",
                self.source,
                dropped,
                self.batch_size,
            )
            self.files = self.files[: len(self.files) - dropped]
            if not self.files:
                raise CalibrationDataError(f"{self.source}: fewer images than the fixed batch size")
        if importlib.util.find_spec("PIL") is None:
            raise CalibrationDataError(PILLOW_MISSING)

    def _resolve_options(self, options: Preprocess) -> tuple[Preprocess, tuple[int, int], int]:
        spec = self.specs[0]
        if len(spec.shape) != 4:
            raise CalibrationDataError(
                f"{self.source}: input {spec.name!r} has shape {spec.shape_text()}; images need a 4-D input"
            )
        if options.layout == "NCHW":
            channels, height, width = spec.shape[1:]
        else:
            height, width, channels = spec.shape[1:]
        channels = channels or 3
        if channels not in (1, 3):
            raise CalibrationDataError(
                f"{self.source}: input {spec.name!r} has {channels} channels in "
                f"{options.layout} layout; images give 1 or 3"
            )
        if channels == 1 and (len(options.mean) > 1 or len(options.std) > 1):
            raise CalibrationDataError(f"{self.source}: a 1-channel input needs a single mean and std value")
        size = options.size
        if size is None:
            if height is None or width is None:
                raise CalibrationDataError(
                    f"{self.source}: input {spec.name!r} has a dynamic height/width "
                    f"({spec.shape_text()}); set Preprocess(size=(H, W))"
                )
            size = (height, width)
        elif (height is not None and height != size[0]) or (width is not None and width != size[1]):
            raise CalibrationDataError(
                f"{self.source}: preprocess size {list(size)} does not match input "
                f"{spec.name!r} of shape {spec.shape_text()}"
            )
        if np.dtype(options.dtype) != spec.dtype:
            raise CalibrationDataError(
                f"{self.source}: preprocess dtype {options.dtype} does not match "
                f"input {spec.name!r} of dtype {spec.dtype}"
            )
        resolved = dataclasses.replace(options, size=size)
        return resolved, size, channels

    @property
    def preprocess(self) -> Preprocess:
        return self._options

    @property
    def num_samples(self) -> int:
        return len(self.files)

    def _compute_data_sha256(self) -> str:
        return _hash_files(self.files, self.root)

    def load(self, path: Path) -> np.ndarray:
        """Decode and preprocess one image file (no batch axis)."""
        try:
            from PIL import Image, ImageOps
        except ImportError:  # pragma: no cover - checked in __init__
            raise CalibrationDataError(PILLOW_MISSING) from None
        try:
            with Image.open(path) as opened:
                image = ImageOps.exif_transpose(opened).convert("L" if self._channels == 1 else "RGB")
                pixels = np.asarray(image)
        except (OSError, ValueError) as exc:
            raise CalibrationDataError(f"cannot decode image {path}: {exc}") from None
        return preprocess_image(pixels, self._options, self._size)

    def __iter__(self) -> Iterator[Batch]:
        name = self.specs[0].name
        for start in range(0, len(self.files), self.batch_size):
            chunk = self.files[start : start + self.batch_size]
            batch = np.stack([self.load(path) for path in chunk])
            yield validate_batch({name: batch}, self.specs, self.source)


class IterableData(CalibrationData):
    """Batches given from Python: an iterable of dicts (input name -> batch array) or arrays (one input).

    Each item is fed as one batch and must include the batch axis. A list or tuple is hashed by content and
    can be iterated again; any other iterable is consumed once and has no ``data_sha256`` (not cacheable).
    """

    kind = "iterable"

    def __init__(
        self,
        batches: Iterable[Mapping[str, np.ndarray] | np.ndarray],
        model: onnx.ModelProto | Sequence[InputSpec],
        source: str = "calibration batches",
    ) -> None:
        super().__init__(_as_specs(model), source)
        self._batches = batches
        self._sequence = isinstance(batches, (list, tuple))
        if self._sequence and not batches:
            raise CalibrationDataError(f"{source}: no calibration batches (count 0)")

    @property
    def reiterable(self) -> bool:
        return self._sequence

    @property
    def num_samples(self) -> int | None:
        if not self._sequence:
            return None
        return sum(next(iter(b.values())).shape[0] for b in self._validated())

    def _validated(self) -> Iterator[Batch]:
        for index, item in enumerate(self._batches):
            yield validate_batch(item, self.specs, f"{self.source}[{index}]")

    def __iter__(self) -> Iterator[Batch]:
        return self._validated()

    def _compute_data_sha256(self) -> str | None:
        return _hash_arrays(self._validated()) if self._sequence else None


def open_calibration_data(
    source: (
        str
        | os.PathLike[str]
        | np.ndarray
        | Mapping[str, np.ndarray]
        | Iterable[Mapping[str, np.ndarray] | np.ndarray]
        | CalibrationData
    ),
    model: onnx.ModelProto | Sequence[InputSpec],
    *,
    batch_size: int | None = None,
    preprocess: Preprocess | None = None,
    limit: int | None = None,
) -> CalibrationData:
    """Pick the reader for ``source``: a folder of images, a ``.npy``, an ``.npz``, an in-memory array (or
    dict of arrays) of samples on axis 0 (batch or stacked layout, see :class:`_ArrayFileData`), or an
    iterable of batches.

    ``batch_size`` None means the model's fixed batch, or 1 for a dynamic batch. ``limit`` keeps the first
    samples only. ``preprocess`` applies to images only.
    """
    if isinstance(source, CalibrationData):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = _check_path(source)
        if path.is_dir():
            return ImageFolderData(path, model, preprocess, batch_size, limit)
        suffix = path.suffix.lower()
        if preprocess is not None:
            raise CalibrationDataError(f"{path}: preprocessing options apply to image folders only")
        if suffix == ".npy":
            return NpyData(path, model, batch_size, limit)
        if suffix == ".npz":
            return NpzData(path, model, batch_size, limit)
        raise CalibrationDataError(
            f"{path}: unsupported calibration data; give a folder of images, a .npy or an .npz"
        )
    if isinstance(source, (np.ndarray, Mapping)):
        return ArrayData(source, model, batch_size, limit)
    if isinstance(source, Iterable):
        return IterableData(source, model)
    raise CalibrationDataError(f"unsupported calibration data of type {type(source).__name__}")
