"""Shared pytest options and fixtures."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qdq_compiler.examples import image_like_batch
from qdq_compiler.models import TEST_MODELS


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite golden/*.expected files from the current output instead of comparing "
        "(CHECK-style cases have no .expected: their checks run as usual and nothing is written).",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def yolo_path(tmp_path):
    """The YOLOv7-tiny test model (160 px) saved as ONNX."""
    path = tmp_path / "yolo.onnx"
    onnx.save_model(TEST_MODELS["yolov7_tiny"](), path)
    return path


@pytest.fixture
def calib_path(tmp_path):
    """Four image-like calibration samples for it, as a .npy."""
    path = tmp_path / "calib.npy"
    np.save(path, image_like_batch(4, 160))
    return path


@pytest.fixture
def classifier_path():
    """The bundled MobileNetV3-small-style classifier (``images`` [1,3,96,96] -> ``logits`` [1,4])."""
    from qdq_compiler.zoo.bundled import CLASSIFIER

    return CLASSIFIER.model_path()


@pytest.fixture
def classifier_calib():
    """Its 64 bundled calibration JPEGs (a folder)."""
    from qdq_compiler.zoo.bundled import CLASSIFIER

    return CLASSIFIER.calib_dir()


@pytest.fixture
def segmenter_path():
    """The bundled DB-style text segmenter (``images`` [1,3,128,128] -> ``prob`` [1,1,128,128])."""
    from qdq_compiler.zoo.bundled import SEGMENTER

    return SEGMENTER.model_path()


@pytest.fixture
def segmenter_calib():
    """Its 64 bundled calibration JPEGs (a folder)."""
    from qdq_compiler.zoo.bundled import SEGMENTER

    return SEGMENTER.calib_dir()


@pytest.fixture(scope="module")
def se_block_prepared() -> onnx.ModelProto:
    """The SE-block idiom after `prepare`: the float model whose tensors calibrate reads, by name."""
    from qdq_compiler.ir import load_model, to_proto
    from qdq_compiler.pipelines import PREPARE
    from qdq_compiler.pm import PassContext, PassManager, load_passes

    load_passes()
    model = load_model(TEST_MODELS["se_block"]())
    PassManager(PREPARE).run(model, PassContext())
    return to_proto(model)
