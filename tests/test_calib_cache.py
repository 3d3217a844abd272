"""Calibration cache (version 3): round trip, byte-for-byte determinism, stale-key and old-version refusal,
atomic writes."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qdq_compiler.calib import cache as cache_module
from qdq_compiler.calib.cache import (
    CacheKey,
    cache_key,
    load_cache,
    model_sha256,
    read_cache_key,
    save_cache,
)
from qdq_compiler.calib.data import ArrayData, InputSpec, IterableData
from qdq_compiler.calib.errors import CalibrationCacheError
from qdq_compiler.calib.histogram import TensorStats, collect_exact
from qdq_compiler.calib.methods import compute_amax

KEY = CacheKey(
    model_sha256="a" * 64, data_sha256="b" * 64, preprocess_sha256="c" * 64, num_bins=2048, batch_size=8
)


def _stats() -> dict[str, TensorStats]:
    rng = np.random.default_rng(1)
    out = {}
    samples = {
        "/conv/out": rng.standard_normal(3000),
        "relu:0": np.maximum(rng.laplace(size=999), 0),
        "zeros": np.zeros(10),
    }
    for name, data in samples.items():
        out[name] = collect_exact([data.astype(np.float32)], name=name)  # binning "fixed"
    one_pass = TensorStats(name="one pass")  # binning "grow": 2048 bins over the first batch's absmax ...
    one_pass.update(rng.standard_normal(200).astype(np.float32) * 5)
    one_pass.update(rng.standard_normal(2000).astype(np.float32) * 5)  # ... and more bins above it
    out["one pass"] = one_pass
    coarse = TensorStats(name="coarse")  # grown 100-fold: pairs merged, base 2048 / 4
    coarse.update(rng.standard_normal(100).astype(np.float32))
    coarse.update(rng.standard_normal(1000).astype(np.float32) * 100)
    out["coarse"] = coarse
    huge = TensorStats(name="huge growth")  # grown 1e5-fold: merged past base 1, base 2048 / 4096
    huge.update(np.array([1.0, -0.5], dtype=np.float32))
    huge.update(np.array([1e5, 3.0], dtype=np.float32))
    out["huge growth"] = huge
    nan_only = TensorStats(name="nan only")
    nan_only.update(np.array([np.nan, np.inf]))
    out["nan only"] = nan_only
    return out


def _model(bias: float = 0.0) -> onnx.ModelProto:
    node = helper.make_node("Add", ["x", "b"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [onnx.numpy_helper.from_array(np.array([bias], np.float32), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_round_trip(tmp_path):
    stats = _stats()
    path = tmp_path / "model.calib"
    save_cache(path, stats, KEY)
    loaded = load_cache(path, KEY, require=stats)
    assert sorted(loaded) == sorted(stats)
    for name, original in stats.items():
        again = loaded[name]
        np.testing.assert_array_equal(again.hist, original.hist)
        assert again.hist.dtype == np.int64 and again.name == name
        for attr in (
            "range",
            "base",
            "hist_width",
            "count",
            "nan_count",
            "inf_count",
            "num_bins",
            "binning",
            "max_bins",
        ):
            assert getattr(again, attr) == getattr(original, attr), (name, attr)
        if original.count:
            assert (again.min, again.max) == (original.min, original.max)
            for method in ("max", "percentile", "entropy", "mse"):
                assert compute_amax(again, method) == compute_amax(original, method)
    assert read_cache_key(path) == KEY
    assert [stats[n].binning for n in ("one pass", "coarse", "zeros")] == ["grow", "grow", "fixed"]
    assert stats["one pass"].hist.size > 2048 and stats["coarse"].base == 512
    assert stats["huge growth"].base == 0.5 and stats["huge growth"].hist.size == 50_001
    # a loaded grow histogram goes on growing (and merging) as the original would
    for name in ("coarse", "one pass", "huge growth"):
        again, original = loaded[name], stats[name]
        batch = np.array([0.5, -3.0 * original.absmax], dtype=np.float32)
        again.update(batch)
        original.update(batch)
        np.testing.assert_array_equal(again.hist, original.hist)
        assert again.base == original.base


def test_loaded_histograms_of_one_size_share_one_block_and_stay_independent(tmp_path):
    """load_cache puts histograms of one size in one block (40k separately allocated ones fragmented the
    heap: every later pass of the 40k-node bench ran ~20% slower); each row still updates on its own."""
    stats = _stats()
    stats.update({f"twin {k}": collect_exact([np.full(50, k + 1.0, np.float32)]) for k in range(3)})
    path = tmp_path / "model.calib"
    save_cache(path, stats, KEY)
    loaded = load_cache(path, KEY)
    by_size: dict[int, set[int]] = {}
    for item in loaded.values():
        assert item.hist.base is not None and item.hist.flags.writeable
        by_size.setdefault(item.hist.size, set()).add(id(item.hist.base))
    assert all(len(blocks) == 1 for blocks in by_size.values()) and len(by_size[2048]) == 1
    assert sum(1 for item in loaded.values() if item.hist.size == 2048) >= 6
    before = {name: item.hist.copy() for name, item in loaded.items()}
    loaded["twin 0"].update(np.array([0.5, 1.0], np.float32))  # fixed binning: counts added in place
    assert loaded["twin 0"].hist.sum() == before["twin 0"].sum() + 2
    for name, item in loaded.items():
        if name != "twin 0":
            np.testing.assert_array_equal(item.hist, before[name])
            np.testing.assert_array_equal(item.hist, stats[name].hist)


def test_meta_entries(tmp_path):
    stats = _stats()
    save_cache(tmp_path / "c.calib", stats, KEY)
    with zipfile.ZipFile(tmp_path / "c.calib") as archive:
        meta = json.loads(archive.read("meta.json"))
    assert meta["version"] == 3 and meta["key"] == {**KEY.__dict__} and meta["key"]["batch_size"] == 8
    entries = {entry["name"]: entry for entry in meta["tensors"]}
    for name, item in stats.items():
        entry = entries[name]
        assert (entry["binning"], entry["base"], entry["range"], entry["hist_bins"]) == (
            item.binning,
            item.base,
            item.range,
            item.hist.size,
        )
        assert "oversample" not in entry
    assert entries["coarse"]["base"] == 512 and entries["one pass"]["base"] == 2048
    assert entries["huge growth"]["base"] == 0.5 and isinstance(entries["coarse"]["base"], int)
    assert entries["nan only"]["min"] is None and entries["nan only"]["nan_count"] == 1


def test_bytes_are_deterministic(tmp_path):
    stats = _stats()
    save_cache(tmp_path / "one", stats, KEY)
    reordered = dict(reversed(list(stats.items())))
    os.utime(tmp_path / "one", (0, 0))
    save_cache(tmp_path / "two", reordered, KEY)
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()
    with zipfile.ZipFile(tmp_path / "one") as archive:
        names = archive.namelist()
        assert names[0] == "meta.json" and names[1:] == [f"hist/{i:06d}.npy" for i in range(len(stats))]
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


@pytest.mark.parametrize(
    ("change", "label"),
    [
        (
            {"model_sha256": "d" * 64},
            "model hash differs (model hash: cache aaaaaaaaaaaa..., expected dddddddddddd...)",
        ),
        ({"data_sha256": "e" * 64}, "data hash differs"),
        ({"preprocess_sha256": "f" * 64}, "preprocessing hash differs"),
        ({"num_bins": 1024}, "num_bins differs (num_bins: cache 2048, expected 1024)"),
        ({"batch_size": 16}, "batch size differs (batch size: cache 8, expected 16)"),
        ({"model_sha256": "d" * 64, "data_sha256": "e" * 64}, "model hash, data hash differ"),
        (
            {"num_bins": 1024, "batch_size": 1},
            "num_bins, batch size differ (num_bins: cache 2048, expected 1024; "
            "batch size: cache 8, expected 1)",
        ),
    ],
)
def test_stale_key_refused(tmp_path, change, label):
    path = tmp_path / "c.calib"
    save_cache(path, _stats(), KEY)
    with pytest.raises(CalibrationCacheError) as info:
        load_cache(path, CacheKey(**{**KEY.__dict__, **change}))
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"stale calibration cache {path}: ") and label in text


def _rewrite_meta(path, old: bytes, new: bytes) -> None:
    save_cache(path, _stats(), KEY)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    assert old in members["meta.json"]
    members["meta.json"] = members["meta.json"].replace(old, new)
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)


def _old_cache(path, version: int) -> None:
    """A cache as qdqc wrote it before version 3."""
    values = np.abs(np.linspace(-3, 2, 1000, dtype=np.float32))
    entry = {
        "name": "t",
        "histogram": "hist/000000.npy",
        "num_bins": 2048,
        "range": 4.0,
        "count": 1000,
        "nan_count": 0,
        "inf_count": 0,
        "min": -3.0,
        "max": 2.0,
    }
    key = {k: v for k, v in KEY.__dict__.items() if k != "batch_size"}  # the old keys had no batch size
    if version == 1:  # 2048 bins over a power-of-two range
        counts, _ = np.histogram(values, bins=2048, range=(0.0, 4.0))
    else:  # 16 x 2048 bins over a power-of-two range, re-binned before use
        counts, _ = np.histogram(values, bins=16 * 2048, range=(0.0, 4.0))
        entry.update(binning="pow2", hist_bins=counts.size, oversample=16)
    meta = {"format": "qdqc-calibration-cache", "version": version, "key": key, "tensors": [entry]}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta, sort_keys=True))
        archive.writestr("hist/000000.npy", cache_module._npy_bytes(counts))


@pytest.mark.parametrize(("version", "why"), [(1, "power-of-two"), (2, "lacks the batch size")])
def test_old_caches_refused(tmp_path, version, why):
    path = tmp_path / f"v{version}.calib"
    _old_cache(path, version)
    for read in (lambda: load_cache(path, KEY), lambda: read_cache_key(path)):  # the CLI reads the key first
        with pytest.raises(CalibrationCacheError) as info:
            read()
        text = str(info.value)
        assert text.startswith(
            f"{path} has cache format version {version}; this qdqc reads version 3: "
            f"recalibrate (version {version} "
        )
        assert text.endswith(")") and why in text and "\n" not in text


def test_unreadable_caches(tmp_path):
    with pytest.raises(CalibrationCacheError, match="not found"):
        load_cache(tmp_path / "missing", KEY)
    (tmp_path / "junk").write_bytes(b"hello")
    with pytest.raises(CalibrationCacheError, match="is not a calibration cache"):
        load_cache(tmp_path / "junk", KEY)
    path = tmp_path / "old"
    _rewrite_meta(path, b'"version": 3', b'"version": 99')
    with pytest.raises(CalibrationCacheError, match="version 99; this qdqc reads version 3: recalibrate$"):
        load_cache(path, KEY)
    _rewrite_meta(path, b'"batch_size": 8,', b"")  # a version 3 key must have every field
    with pytest.raises(CalibrationCacheError, match="has a malformed key"):
        read_cache_key(path)
    _rewrite_meta(path, b'"binning": "grow"', b'"binning": "pow2"')
    with pytest.raises(
        CalibrationCacheError,
        match=r"corrupt entry for tensor '.*' \(binning must be 'fixed' or 'grow', "
        r"got 'pow2'\)",
    ):
        load_cache(path, KEY)
    _rewrite_meta(path, b'"base": 512', b'"base": 3')
    with pytest.raises(CalibrationCacheError, match="corrupt entry for tensor 'coarse' .*cannot have base 3"):
        load_cache(path, KEY)
    save_cache(path, _stats(), KEY)
    with pytest.raises(CalibrationCacheError, match="lacks tensor\\(s\\) 'other': recalibrate"):
        load_cache(path, KEY, require=["zeros", "other"])


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.calib"
    save_cache(path, _stats(), KEY)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_cache(path, {"x": TensorStats()}, KEY)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.calib"]  # no temp file left behind


def test_bin_count_must_match_key(tmp_path):
    with pytest.raises(CalibrationCacheError, match="has 512 bins; the key says 2048"):
        save_cache(tmp_path / "c", {"t": TensorStats(num_bins=512)}, KEY)
    with pytest.raises(CalibrationCacheError, match="'t' has no histogram \\(binning 'none'\\)"):
        save_cache(tmp_path / "c", {"t": TensorStats(histogram=False)}, KEY)
    assert not (tmp_path / "c").exists()


def test_model_hash_and_key():
    assert model_sha256(_model()) == model_sha256(_model())
    assert model_sha256(_model()) != model_sha256(_model(bias=1.0))
    relabelled = _model()
    relabelled.producer_name = "someone else"  # outside the graph: same hash
    assert model_sha256(relabelled) == model_sha256(_model())
    batches = [np.ones(1, np.float32)]
    key = cache_key(_model(), IterableData(batches, _model()), 2048)
    assert key.model_sha256 == model_sha256(_model()) and key.num_bins == 2048
    assert key.batch_size == 0  # in-memory batches: their shapes are hashed
    assert key.data_sha256 == IterableData(list(batches), _model()).data_sha256
    arrays, dynamic = np.zeros((6, 1), np.float32), [InputSpec("x", (None, 1), np.dtype(np.float32))]
    assert cache_key(_model(), ArrayData(arrays, dynamic, batch_size=3), 2048).batch_size == 3
    assert cache_key(_model(), ArrayData(arrays, dynamic), 2048).batch_size == 1  # the reader's default
    assert KEY.differences(CacheKey(**{**KEY.__dict__, "batch_size": 3})) == ["batch size"]
    with pytest.raises(TypeError):
        CacheKey("a", "b", "c", 2048)  # batch_size is required  # type: ignore[call-arg]
    with pytest.raises(CalibrationCacheError, match="cannot be hashed"):
        cache_key(_model(), IterableData(iter(batches), _model()), 2048)
