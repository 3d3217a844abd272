"""The evaluation data: batches read like calibration data (calib/data.py), and each sample's name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from qdq_compiler.calib import CalibrationData, ImageFolderData, open_calibration_data
from qdq_compiler.calib.data import Batch, model_input_specs
from qdq_compiler.calib.errors import CalibrationError
from qdq_compiler.calib.preprocess import Preprocess
from qdq_compiler.errors import QdqcError

EXIF_ORIENTATION = 0x0112  # the EXIF tag ImageOps.exif_transpose reads


@dataclass(frozen=True)
class EvalData:
    """The data to run batch by batch (:meth:`batches`), one name per sample (an image's path inside the
    folder, else its index), and for an image folder its preprocessing and the folder itself (detector labels
    need the original image sizes)."""

    data: CalibrationData
    names: list[str]
    source: str
    image_root: Path | None = None
    preprocess: Preprocess | None = None

    def batches(self) -> Iterator[Batch]:
        """The batches, read as they are needed; a sample that cannot be read is a one-line error."""
        try:
            yield from self.data
        except CalibrationError as exc:
            raise QdqcError(f"--data: {exc}") from None

    def image_size(self, index: int) -> tuple[int, int]:
        """(height, width) of sample ``index``'s image as preprocessing saw it: upright by its EXIF
        orientation, as the image reader turns it (without decoding the pixels)."""
        from PIL import Image

        if self.image_root is None:
            raise ValueError("not an image folder")
        with Image.open(self.image_root / self.names[index]) as image:
            width, height = image.size
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn
        return (width, height) if turned else (height, width)


def check_same_inputs(fp32: onnx.ModelProto, int8: onnx.ModelProto) -> None:
    """Refuse two models whose inputs differ in name, dtype or shape: one data set cannot feed both."""
    ours, theirs = model_input_specs(fp32), model_input_specs(int8)
    if ours != theirs:
        fp32_text = ", ".join(f"{s.name} {s.dtype}{s.shape_text()}" for s in ours)
        int8_text = ", ".join(f"{s.name} {s.dtype}{s.shape_text()}" for s in theirs)
        raise QdqcError(f"the two models' inputs differ: FP32 has {fp32_text}; INT8 has {int8_text}")


def open_eval_data(
    source: str, model: onnx.ModelProto, batch_size: int | None = None, limit: int | None = None
) -> EvalData:
    """Read ``source`` (a folder of images, a .npy or an .npz, as `--calib` takes) for ``model``."""
    try:
        data = open_calibration_data(source, model, batch_size=batch_size, limit=limit)
    except CalibrationError as exc:
        raise QdqcError(f"--data: {exc}") from None
    if isinstance(data, ImageFolderData):
        names = [path.relative_to(data.root).as_posix() for path in data.files]
        return EvalData(data, names, source, image_root=data.root, preprocess=data.preprocess)
    count = data.num_samples or 0
    return EvalData(data, [str(index) for index in range(count)], source)
