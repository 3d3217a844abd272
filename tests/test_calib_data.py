"""Calibration data readers: .npy, .npz, iterables, image folders; validation errors; hashes."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qdq_compiler.calib.data import (
    PILLOW_MISSING,
    ArrayData,
    ImageFolderData,
    InputSpec,
    IterableData,
    NpyData,
    NpzData,
    model_input_specs,
    open_calibration_data,
    validate_batch,
)
from qdq_compiler.calib.errors import CalibrationDataError
from qdq_compiler.calib.preprocess import Preprocess, letterbox_geometry, preprocess_image, resize_bilinear

HAS_PIL = importlib.util.find_spec("PIL") is not None


def _model(inputs: dict[str, list[int | str]], elem_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    values = [helper.make_tensor_value_info(name, elem_type, shape) for name, shape in inputs.items()]
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name in inputs]
    outputs = [helper.make_tensor_value_info(f"{name}_out", elem_type, None) for name in inputs]
    weight = onnx.numpy_helper.from_array(np.zeros(1, np.float32), "w")
    weight_input = helper.make_tensor_value_info("w", TensorProto.FLOAT, [1])
    graph = helper.make_graph(nodes, "g", [*values, weight_input], outputs, [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


STATIC = _model({"images": [1, 3, 8, 8]})
DYNAMIC = _model({"images": ["N", 3, 8, 8]})
TWO = _model({"a": ["N", 4], "b": ["N", 2]})


def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_model_input_specs_skip_initializers():
    specs = model_input_specs(DYNAMIC)
    assert specs == (InputSpec("images", (None, 3, 8, 8), np.dtype(np.float32)),)
    assert specs[0].shape_text() == "[?,3,8,8]"


# --------------------------------------------------------------------------- .npy
def test_npy_static_batch(tmp_path):
    data = np.random.default_rng(0).random((5, 3, 8, 8), dtype=np.float32)
    np.save(tmp_path / "calib.npy", data)
    reader = open_calibration_data(tmp_path / "calib.npy", STATIC)
    assert isinstance(reader, NpyData) and reader.batch_size == 1 and reader.num_samples == 5
    batches = list(reader)
    assert len(batches) == 5 and batches[0]["images"].shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(np.concatenate([b["images"] for b in batches]), data)
    assert len(list(reader)) == 5  # re-iterable
    with pytest.raises(CalibrationDataError, match="fixed at 1; use batch size 1"):
        NpyData(tmp_path / "calib.npy", STATIC, batch_size=4)


def test_npy_dynamic_batch_and_limit(tmp_path):
    np.save(tmp_path / "calib.npy", np.zeros((10, 3, 8, 8), np.float32))
    sizes = [b["images"].shape[0] for b in NpyData(tmp_path / "calib.npy", DYNAMIC, batch_size=4)]
    assert sizes == [4, 4, 2]
    limited = NpyData(tmp_path / "calib.npy", DYNAMIC, batch_size=4, limit=5)
    assert [b["images"].shape[0] for b in limited] == [4, 1] and limited.num_samples == 5
    assert limited.data_sha256 != NpyData(tmp_path / "calib.npy", DYNAMIC).data_sha256


def test_static_batch_drops_partial_batch(tmp_path, caplog):
    # an earlier CLI test may have left the qdqc logger at --quiet's level: set it for this test only
    caplog.set_level(logging.WARNING, logger="qdqc")
    model = _model({"x": [2, 4]})
    np.save(tmp_path / "x.npy", np.zeros((5, 4), np.float32))
    reader = NpyData(tmp_path / "x.npy", model)
    assert reader.num_samples == 4 and [b["x"].shape for b in reader] == [(2, 4), (2, 4)]
    assert "dropping the last 1 sample" in caplog.text


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 3, 8, 8), np.float32), "no calibration samples (count 0)"),
        (
            np.zeros((2, 3, 8, 9), np.float32),
            "input 'images' expects shape [1,3,8,8] but samples stack to [1,3,8,9]",
        ),
        (np.zeros((2, 3, 8), np.float32), "expects shape [1,3,8,8]"),
        (np.zeros((2, 3, 8, 8), np.float64), "expects dtype float32 but the data holds float64"),
    ],
)
def test_npy_errors(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(CalibrationDataError) as info:
        open_calibration_data(tmp_path / "bad.npy", STATIC)
    assert message in _one_line(info)


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(CalibrationDataError) as info:
        open_calibration_data(tmp_path / "nope.npy", STATIC)
    assert _one_line(info) == f"calibration data not found: {tmp_path / 'nope.npy'}"
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(CalibrationDataError, match="unsupported calibration data"):
        open_calibration_data(tmp_path / "data.txt", STATIC)
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(CalibrationDataError, match="single-input models only"):
        open_calibration_data(tmp_path / "x.npy", TWO)
    with pytest.raises(CalibrationDataError, match="apply to image folders only"):
        open_calibration_data(tmp_path / "x.npy", _model({"x": ["N", 4]}), preprocess=Preprocess())


# --------------------------------------------------------------------------- .npz
def test_npz(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.ones((3, 4), np.float32), b=np.zeros((3, 2), np.float32))
    reader = open_calibration_data(tmp_path / "d.npz", TWO, batch_size=2)
    assert isinstance(reader, NpzData) and reader.num_samples == 3
    batches = list(reader)
    assert [sorted(b) for b in batches] == [["a", "b"], ["a", "b"]]
    assert batches[1]["a"].shape == (1, 4)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"a": np.ones((3, 4), np.float32)}, "missing input(s) 'b'"),
        (
            {"a": np.ones((3, 4), np.float32), "b": np.ones((3, 2), np.float32), "c": np.ones(3, np.float32)},
            "unknown input name(s) 'c'; model inputs are 'a', 'b'",
        ),
        (
            {"a": np.ones((3, 4), np.float32), "b": np.ones((2, 2), np.float32)},
            "different sample counts (a=3, b=2)",
        ),
        ({"a": np.ones((3, 4), np.float32), "b": np.ones((3, 2), np.int64)}, "'b' expects dtype float32"),
    ],
)
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(CalibrationDataError) as info:
        NpzData(tmp_path / "d.npz", TWO)
    assert message in _one_line(info)


# --------------------------------------------------------------------------- iterables and validation
def test_iterable_of_dicts_and_arrays():
    batches = [{"a": np.ones((2, 4), np.float32), "b": np.ones((2, 2), np.float32)}] * 3
    reader = open_calibration_data(batches, TWO)
    assert isinstance(reader, IterableData) and reader.num_samples == 6
    assert len(list(reader)) == 3 and reader.data_sha256 == IterableData(list(batches), TWO).data_sha256
    arrays = [np.zeros((2, 3, 8, 8), np.float32), np.ones((1, 3, 8, 8), np.float32)]
    single = IterableData(arrays, DYNAMIC)
    assert [b["images"].shape[0] for b in single] == [2, 1]
    assert single.data_sha256 != IterableData(arrays[:1], DYNAMIC).data_sha256
    one_shot = IterableData((a for a in arrays), DYNAMIC)
    assert one_shot.num_samples is None and one_shot.data_sha256 is None
    with pytest.raises(CalibrationDataError, match="count 0"):
        IterableData([], DYNAMIC)


def test_in_memory_arrays():
    samples = np.arange(5 * 3 * 8 * 8, dtype=np.float32).reshape(5, 3, 8, 8)
    reader = open_calibration_data(samples, DYNAMIC, batch_size=2, limit=3)
    assert isinstance(reader, ArrayData) and reader.num_samples == 3
    assert [b["images"].shape[0] for b in reader] == [2, 1]
    assert reader.data_sha256 == ArrayData(samples[:3].copy(), DYNAMIC).data_sha256
    assert reader.data_sha256 != ArrayData(samples, DYNAMIC).data_sha256
    pair = open_calibration_data({"a": np.ones((3, 4), np.float32), "b": np.ones((3, 2), np.float32)}, TWO)
    assert pair.num_samples == 3 and pair.batch_size == 1
    with pytest.raises(CalibrationDataError, match="bare array fits single-input models only"):
        ArrayData(np.ones((3, 4), np.float32), TWO)
    with pytest.raises(CalibrationDataError, match="missing input\\(s\\) 'b'"):
        ArrayData({"a": np.ones((3, 4), np.float32)}, TWO)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({"a": np.ones((2, 4), np.float32)}, "missing input(s) 'b'"),
        (
            {"a": np.ones((2, 4), np.float32), "b": np.ones((2, 2), np.float32), "z": 1},
            "unknown input name(s) 'z'",
        ),
        (
            {"a": np.ones((2, 5), np.float32), "b": np.ones((2, 2), np.float32)},
            "'a' expects shape [?,4] but got [2,5]",
        ),
        (
            {"a": np.ones((2, 4), np.float16), "b": np.ones((2, 2), np.float32)},
            "expects dtype float32 but got float16",
        ),
        (np.ones((2, 4), np.float32), "a bare array fits single-input models only"),
    ],
)
def test_validate_batch_errors(batch, message):
    with pytest.raises(CalibrationDataError) as info:
        validate_batch(batch, model_input_specs(TWO), "batches[0]")
    text = _one_line(info)
    assert text.startswith("batches[0]: ") and message in text


# --------------------------------------------------------------------------- hashes
def test_file_hash_covers_names_and_contents_not_location(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    np.save(first / "calib.npy", np.ones((2, 3, 8, 8), np.float32))
    shutil.copytree(first, second)
    reference = NpyData(first / "calib.npy", DYNAMIC)
    assert reference.data_sha256 == NpyData(second / "calib.npy", DYNAMIC).data_sha256  # moved folder
    np.save(second / "calib.npy", np.full((2, 3, 8, 8), 2, np.float32))
    assert reference.data_sha256 != NpyData(second / "calib.npy", DYNAMIC).data_sha256  # new contents
    (first / "calib.npy").rename(first / "other.npy")
    assert reference.data_sha256 != NpyData(first / "other.npy", DYNAMIC).data_sha256  # new name
    description = reference.describe()
    assert description["kind"] == "npy" and description["num_samples"] == 2
    assert description["preprocess"] is None and len(description["preprocess_sha256"]) == 64


def test_preprocess_hash_and_validation():
    base = Preprocess()
    assert base.sha256() == Preprocess(mean=[0.0], std=1.0).sha256()  # normalised to tuples
    assert base.sha256() != Preprocess(resize="resize").sha256()
    assert base.sha256() != Preprocess(pad_value=0).sha256()
    assert base.describe()["mean"] == [0.0]
    for bad, message in (
        ({"resize": "crop"}, "resize must be one of"),
        ({"std": (1, 0, 1)}, "std must not"),
        ({"mean": (1, 2)}, "1 or 3 values"),
        ({"size": (0, 4)}, "size must be"),
    ):
        with pytest.raises(CalibrationDataError, match=message):
            Preprocess(**bad)


# --------------------------------------------------------------------------- images
def test_letterbox_geometry_by_hand():
    # 480x640 into 640x640: ratio min(640/480, 640/640) = 1 -> 480x640, pad 160 rows: top round(80 - .1) = 80
    assert letterbox_geometry((480, 640), (640, 640)) == (480, 640, 80, 0)
    # 100x50 into 64x64: ratio 0.64 -> 64x32, pad 32 columns -> left round(16 - .1) = 16
    assert letterbox_geometry((100, 50), (64, 64)) == (64, 32, 0, 16)
    # odd padding: 3 extra rows -> top round(1.5 - .1) = 1, two rows below
    assert letterbox_geometry((5, 8), (8, 8)) == (5, 8, 1, 0)


def test_resize_bilinear_by_hand():
    ramp = np.array([[[0.0], [10.0]]])  # 1x2x1
    # half-pixel centres, 2 -> 4 columns: source x = (d + .5) / 2 - .5 = -.25, .25, .75, 1.25,
    # clamped to [0, 1] -> values 0, 2.5, 7.5, 10
    np.testing.assert_allclose(resize_bilinear(ramp, 1, 4)[0, :, 0], [0.0, 2.5, 7.5, 10.0])
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(resize_bilinear(image, 2, 2), image.astype(np.float32))


def test_preprocess_image_letterbox_nchw():
    image = np.zeros((2, 4, 3), np.uint8)
    image[..., 0] = 255  # pure red
    out = preprocess_image(image, Preprocess(), (4, 4))
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    # 2x4 into 4x4: no resize, one pad row above and below with 114/255
    np.testing.assert_allclose(out[:, 0], 114 / 255, rtol=1e-6)
    np.testing.assert_allclose(out[:, 3], 114 / 255, rtol=1e-6)
    np.testing.assert_allclose(out[0, 1:3], 1.0)  # red channel first (RGB)
    np.testing.assert_allclose(out[1:, 1:3], 0.0)
    options = Preprocess(channel_order="BGR", layout="NHWC", mean=(0.5,), std=(0.5,))
    bgr = preprocess_image(image, options, (4, 4))
    assert bgr.shape == (4, 4, 3)
    np.testing.assert_allclose(bgr[1:3, :, 2], 1.0)  # (1 - .5) / .5, red now last
    np.testing.assert_allclose(bgr[1:3, :, 0], -1.0)


def test_image_folder_errors(tmp_path):
    with pytest.raises(CalibrationDataError, match="calibration data not found"):
        ImageFolderData(tmp_path / "missing", STATIC)
    with pytest.raises(CalibrationDataError) as info:
        open_calibration_data(tmp_path, STATIC)
    assert "no images (.jpg/.jpeg/.png/.bmp) found (count 0)" in _one_line(info)
    (tmp_path / "a.png").write_bytes(b"not really a png")
    with pytest.raises(CalibrationDataError, match="dynamic height/width"):
        ImageFolderData(tmp_path, _model({"images": [1, 3, "H", "W"]}))
    with pytest.raises(CalibrationDataError, match="does not match input"):
        ImageFolderData(tmp_path, STATIC, Preprocess(size=(16, 16)))
    with pytest.raises(CalibrationDataError, match="images need a 4-D input"):
        ImageFolderData(tmp_path, _model({"images": [1, 64]}))


@pytest.mark.skipif(HAS_PIL, reason="Pillow is installed")
def test_image_folder_without_pillow(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(CalibrationDataError) as info:
        open_calibration_data(tmp_path, STATIC)
    assert _one_line(info) == PILLOW_MISSING == "reading images needs Pillow: pip install pillow"


@pytest.mark.skipif(not HAS_PIL, reason="needs Pillow")
def test_image_folder_with_pillow(tmp_path):
    from PIL import Image

    for index in range(3):
        pixels = np.full((6, 12, 3), 40 * index, np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{index}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    reader = open_calibration_data(tmp_path, DYNAMIC, batch_size=2)
    assert reader.num_samples == 3 and reader.preprocess.size == (8, 8)
    batches = list(reader)
    assert [b["images"].shape for b in batches] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    # 6x12 letterboxed into 8x8 -> 4x8 image rows 2..5, pad rows 0,1,6,7
    np.testing.assert_allclose(batches[1]["images"][0, :, 3], 80 / 255, rtol=1e-6)
    np.testing.assert_allclose(batches[1]["images"][0, :, 0], 114 / 255, rtol=1e-6)
    assert reader.describe()["preprocess"]["size"] == [8, 8]
    (tmp_path / "broken.png").write_bytes(b"garbage")
    with pytest.raises(CalibrationDataError, match="cannot decode image"):
        list(ImageFolderData(tmp_path, DYNAMIC))


def _mapped_rss_kb(path) -> int:
    """Resident kB of this process's mappings of `path` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if "-" in line.split(" ", 1)[0]:
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc/self/smaps")
def test_npy_pages_do_not_stay_resident(tmp_path) -> None:
    """Reading a memory-mapped .npy batch by batch keeps at most about one batch of it in memory."""
    path = tmp_path / "big.npy"
    np.save(path, np.ones((64, 3, 128, 128), np.float32))  # 12 MiB, 192 KiB per sample
    data = NpyData(path, [InputSpec("x", (1, 3, 128, 128), np.dtype(np.float32))])
    for _ in data:
        pass
    assert _mapped_rss_kb(path) < 1024, "the mapped file stayed resident"
