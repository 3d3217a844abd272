"""Calibration cache: the collected statistics of a (model, data, preprocessing) triple, in one file.

Format (version 3, described in docs/calibration-cache.md): a ZIP archive holding ``meta.json`` (format
name, version, the key, and per tensor its name, histogram binning, size, range and base, counts, min
and max)
followed by one ``hist/NNNNNN.npy`` (little-endian int64 counts) per tensor, in name order. Every member
has a fixed date, so the same statistics and key always give the same bytes (for a given zlib). Files are
written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import onnx

from qdq_compiler.ir.external import serialized_chunks
from qdq_compiler.paths import write_atomic

from .errors import CalibrationCacheError
from .histogram import TensorStats

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "CacheKey",
    "CalibrationCacheError",
    "cache_key",
    "load_cache",
    "model_sha256",
    "read_cache_key",
    "save_cache",
]

CACHE_FORMAT = "qdqc-calibration-cache"
CACHE_VERSION = 3
# Why a cache of an older version cannot be read (it is refused: recalibrate).
_OLD_VERSIONS = {
    1: "version 1 stored power-of-two-range histograms, from which entropy and mse cannot give the reference "
    "amax",
    2: "version 2 stored re-binned one-pass histograms and its key lacks the batch size",
}
_META = "meta.json"
_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class CacheKey:
    """What the statistics depend on; a cache is reused only when every field matches."""

    model_sha256: str
    data_sha256: str
    preprocess_sha256: str
    num_bins: int
    batch_size: int  # the first batch fixes the bins of a growing histogram; 0 when the data do not say

    _LABELS = {
        "model_sha256": "model hash",
        "data_sha256": "data hash",
        "preprocess_sha256": "preprocessing hash",
        "num_bins": "num_bins",
        "batch_size": "batch size",
    }

    def differences(self, other: CacheKey) -> list[str]:
        """Labels of the fields that differ from ``other``."""
        return [self._LABELS[f.name] for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def model_sha256(model: onnx.ModelProto) -> str:
    """sha256 of the model's opset imports and its graph, serialized deterministically."""
    digest = hashlib.sha256(b"qdqc-model-v1\0")
    for opset in sorted((o.domain, o.version) for o in model.opset_import):
        digest.update(f"{opset[0]}:{opset[1]}\0".encode())
    for chunk in serialized_chunks(model.graph):  # one chunk unless the graph is large (same bytes)
        digest.update(chunk)
    return digest.hexdigest()


def cache_key(model: onnx.ModelProto, data: Any, num_bins: int) -> CacheKey:
    """The key of ``model`` calibrated on ``data`` (a :class:`~qdq_compiler.calib.data.CalibrationData`)."""
    data_hash = data.data_sha256
    if data_hash is None:
        raise CalibrationCacheError("this calibration data cannot be hashed (a one-shot iterable): no cache")
    batch_size = int(getattr(data, "batch_size", 0) or 0)
    return CacheKey(model_sha256(model), data_hash, data.preprocess_sha256, int(num_bins), batch_size)


# --------------------------------------------------------------------------- writing
def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    return info


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array, dtype="<i8"), allow_pickle=False)
    return buffer.getvalue()


def _float_or_none(value: float, present: bool) -> float | None:
    return float(value) if present else None


def encode_cache(stats: Mapping[str, TensorStats], key: CacheKey) -> bytes:
    """The cache file's bytes."""
    names = sorted(stats)
    entries: list[dict[str, Any]] = []  # JSON objects
    for index, name in enumerate(names):
        item = stats[name]
        if item.num_bins != key.num_bins:
            raise CalibrationCacheError(f"{name!r} has {item.num_bins} bins; the key says {key.num_bins}")
        if item.binning not in ("fixed", "grow"):
            raise CalibrationCacheError(f"{name!r} has no histogram (binning {item.binning!r})")
        entries.append(
            {
                "name": name,
                "histogram": f"hist/{index:06d}.npy",
                "num_bins": item.num_bins,
                "binning": item.binning,
                "hist_bins": int(item.hist.size),
                "range": float(item.range),
                "base": item.base,
                "count": int(item.count),
                "nan_count": int(item.nan_count),
                "inf_count": int(item.inf_count),
                "min": _float_or_none(item.min, item.count > 0),
                "max": _float_or_none(item.max, item.count > 0),
            }
        )
    meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": asdict(key), "tensors": entries}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        text = json.dumps(meta, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n"
        archive.writestr(_member(_META), text.encode(), compresslevel=6)
        for entry, name in zip(entries, names, strict=True):
            archive.writestr(_member(entry["histogram"]), _npy_bytes(stats[name].hist), compresslevel=6)
    return buffer.getvalue()


def save_cache(path: str | os.PathLike[str], stats: Mapping[str, TensorStats], key: CacheKey) -> None:
    """Write ``stats`` under ``key`` to ``path`` atomically (temp file in the same folder, then rename)."""
    write_atomic(path, encode_cache(stats, key))


# --------------------------------------------------------------------------- reading
def _read_meta(archive: zipfile.ZipFile, where: str) -> dict[str, Any]:
    try:
        meta = json.loads(archive.read(_META))
    except (KeyError, ValueError) as exc:
        raise CalibrationCacheError(f"{where} is not a calibration cache ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise CalibrationCacheError(f"{where} is not a {CACHE_FORMAT} file")
    version = meta.get("version")
    if version != CACHE_VERSION:
        why = _OLD_VERSIONS.get(version) if isinstance(version, int) else None
        raise CalibrationCacheError(
            f"{where} has cache format version {version!r}; this qdqc reads version "
            f"{CACHE_VERSION}: recalibrate" + (f" ({why})" if why else "")
        )
    return meta


def _open(path: str | os.PathLike[str]) -> tuple[zipfile.ZipFile, str]:
    where = str(path)
    if not os.path.exists(where):
        raise CalibrationCacheError(f"calibration cache not found: {where}")
    try:
        return zipfile.ZipFile(where), where
    except (OSError, zipfile.BadZipFile) as exc:
        raise CalibrationCacheError(f"{where} is not a calibration cache ({exc})") from None


def _key_from(meta: Mapping[str, Any], where: str) -> CacheKey:
    try:
        return CacheKey(**meta["key"])
    except (KeyError, TypeError) as exc:
        raise CalibrationCacheError(f"{where} has a malformed key ({exc})") from None


def read_cache_key(path: str | os.PathLike[str]) -> CacheKey:
    """The key stored in a cache file."""
    archive, where = _open(path)
    with archive:
        return _key_from(_read_meta(archive, where), where)


def _short(value: object) -> str:
    text = str(value)
    return text[:12] + "..." if len(text) > 12 else text


def load_cache(
    path: str | os.PathLike[str], expected_key: CacheKey, require: Iterable[str] | None = None
) -> dict[str, TensorStats]:
    """Load the statistics of a cache written for ``expected_key``.

    Raises :class:`CalibrationCacheError` if the file is unreadable, of another version, stale (the message
    names the parts of the key that differ) or lacks a tensor listed in ``require``.
    """
    archive, where = _open(path)
    with archive:
        meta = _read_meta(archive, where)
        stored = _key_from(meta, where)
        differing = expected_key.differences(stored)
        if differing:
            detail = "; ".join(
                f"{label}: cache {_short(getattr(stored, f))}, expected {_short(getattr(expected_key, f))}"
                for f, label in CacheKey._LABELS.items()
                if label in differing
            )
            parts = ", ".join(differing) + (" differs" if len(differing) == 1 else " differ")
            raise CalibrationCacheError(f"stale calibration cache {where}: {parts} ({detail})")
        stats: dict[str, TensorStats] = {}
        for entry in meta.get("tensors", []):
            try:
                raw = io.BytesIO(archive.read(entry["histogram"]))
                counts = np.lib.format.read_array(raw, allow_pickle=False)
                if counts.dtype != np.int64 or counts.shape != (entry["hist_bins"],):
                    raise ValueError(f"histogram of dtype {counts.dtype} and shape {counts.shape}")
                has_values = entry["count"] > 0
                stats[entry["name"]] = TensorStats.from_histogram(
                    counts,
                    entry["range"],
                    min_value=entry["min"] if has_values else 0.0,
                    max_value=entry["max"] if has_values else 0.0,
                    count=entry["count"],
                    nan_count=entry["nan_count"],
                    inf_count=entry["inf_count"],
                    name=entry["name"],
                    num_bins=entry["num_bins"],
                    binning=entry["binning"],
                    base=entry["base"],
                )
            except (KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
                label = entry.get("name") if isinstance(entry, dict) else entry
                raise CalibrationCacheError(f"{where}: corrupt entry for tensor {label!r} ({exc})") from None
    _pack_histograms(stats.values())
    if require is not None:
        missing = sorted(set(require) - set(stats))
        if missing:
            shown = ", ".join(map(repr, missing[:5]))
            if len(missing) > 5:
                shown += f" and {len(missing) - 5} more"
            raise CalibrationCacheError(f"calibration cache {where} lacks tensor(s) {shown}: recalibrate")
    return stats


def _pack_histograms(stats: Iterable[TensorStats]) -> None:
    """Move histograms of one size into one block, each ``hist`` a row of it (a writable view).

    A cache of a large graph holds tens of thousands of 16 KB histograms; allocated one by one they are
    scattered through the C heap between the graph's objects, and every later pass ran about 20% slower
    on a 40k-node graph (bench/bench_ir.py). One block per size keeps the heap compact.
    """
    by_size: dict[int, list[TensorStats]] = {}
    for item in stats:
        by_size.setdefault(item.hist.size, []).append(item)
    for size, items in by_size.items():
        block = np.empty((len(items), size), dtype=np.int64)
        for row, item in zip(block, items):
            row[:] = item.hist
            item.hist = row
