"""Reading `--labels`: class indices (classifier), COCO json (detector), mask files (segmentation).

Labels are matched to samples by name: an image's path inside the --data folder (e.g. ``00012.jpg``), or a
sample's index (``0``, ``1``, ...) for .npy/.npz data. Every error is one line naming the file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qdq_compiler.errors import QdqcError

MASK_SUFFIXES = (".png", ".npy")


def _existing(path: str | Path, want_dir: bool = False) -> Path:
    label_path = Path(path)
    if not label_path.exists():
        raise QdqcError(f"--labels {label_path}: no such file or folder")
    if want_dir != label_path.is_dir():
        raise QdqcError(f"--labels {label_path}: expected a {'folder' if want_dir else 'file'}")
    return label_path


def _missing(names: Sequence[str], known: set[str] | dict, where: Path) -> None:
    absent = [name for name in names if name not in known]
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        raise QdqcError(f"--labels {where}: no label for sample {absent[0]!r}{more}")


def _class_index(value: object, name: str, where: Path, classes: Sequence[str] = ()) -> int:
    if isinstance(value, str) and value.strip() in classes:
        return list(classes).index(value.strip())
    try:
        index = int(str(value).strip())
    except ValueError:
        known = " or one of the classes " + ", ".join(classes) if classes else ""
        raise QdqcError(
            f"--labels {where}: the class of {name!r} is {value!r}, not a class index{known}"
        ) from None
    if index < 0:
        raise QdqcError(f"--labels {where}: class {index} of {name!r} is negative")
    return index


def check_class_range(labels: np.ndarray, names: Sequence[str], where: str | Path, num_classes: int) -> None:
    """Refuse a class index the model's ``num_classes`` scores cannot give."""
    outside = np.flatnonzero(labels >= num_classes)
    if outside.size:
        first = int(outside[0])
        raise QdqcError(
            f"--labels {where}: class {labels[first]} of {names[first]!r} is outside 0..{num_classes - 1} "
            f"(the model scores {num_classes} classes)"
        )


def load_class_labels(path: str | Path, names: Sequence[str]) -> np.ndarray:
    """Class index of every sample from a JSON object ``{name: index}`` or a CSV of ``name,index`` rows
    (an optional header row is skipped)."""
    where = _existing(path)
    text = where.read_text(encoding="utf-8", errors="replace")
    mapping: dict[str, object]
    if where.suffix.lower() == ".json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise QdqcError(f"--labels {where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(loaded, dict):
            raise QdqcError(f"--labels {where}: expected a JSON object mapping file name to class index")
        mapping, classes = _json_table(loaded)
    elif where.suffix.lower() == ".csv":
        rows = [row for row in csv.reader(text.splitlines()) if row]
        if rows and len(rows[0]) >= 2 and not rows[0][1].strip().lstrip("-").isdigit():
            rows = rows[1:]  # a header such as "file,class"
        if any(len(row) != 2 for row in rows):
            raise QdqcError(f"--labels {where}: expected CSV rows 'file name,class index'")
        mapping, classes = {row[0].strip(): row[1] for row in rows}, []
    else:
        raise QdqcError(f"--labels {where}: classifier labels are a .json or .csv mapping file name to class")
    _missing(names, mapping, where)
    return np.asarray([_class_index(mapping[name], name, where, classes) for name in names], np.int64)


def _json_table(loaded: dict) -> tuple[dict[str, object], list[str]]:
    """The name -> class table of a labels JSON, and its class names: either the object itself, or
    ``{"classes": [names], "labels": {file: index or name}}`` (the bundled classifier's val.json)."""
    table, classes = loaded.get("labels"), loaded.get("classes", [])
    if isinstance(table, dict) and isinstance(classes, list):
        return {str(key): value for key, value in table.items()}, [str(name) for name in classes]
    return {str(key): value for key, value in loaded.items()}, []


def load_coco(path: str | Path, names: Sequence[str]) -> tuple[dict, list[int]]:
    """The COCO json and the image id of every sample (matched on ``file_name``)."""
    where = _existing(path)
    try:
        coco = json.loads(where.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise QdqcError(f"--labels {where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    fields = ("images", "annotations", "categories")
    if not isinstance(coco, dict) or not all(isinstance(coco.get(key), list) for key in fields):
        raise QdqcError(f"--labels {where}: a detector's labels are COCO json with {', '.join(fields)} lists")
    try:
        ids = {str(image["file_name"]): int(image["id"]) for image in coco["images"]}
    except (KeyError, TypeError, ValueError):
        raise QdqcError(f"--labels {where}: every COCO image needs a file_name and an integer id") from None
    _missing(names, ids, where)
    return coco, [ids[name] for name in names]


def mask_files(path: str | Path, names: Sequence[str]) -> list[Path]:
    """The mask of every sample: for sample ``a/b.jpg`` the file ``a/b.png`` or ``a/b.npy`` in the folder."""
    folder = _existing(path, want_dir=True)
    files = []
    for name in names:
        stem = Path(name).with_suffix("")
        found = [folder / f"{stem}{suffix}" for suffix in MASK_SUFFIXES]
        found = [candidate for candidate in found if candidate.is_file()]
        if not found:
            raise QdqcError(f"--labels {folder}: no mask {stem}.png or {stem}.npy for sample {name!r}")
        files.append(found[0])
    return files


def load_masks(files: Sequence[Path], size: tuple[int, ...]) -> np.ndarray:
    """``[N, H, W]`` boolean masks of the model's map size ``size`` (a pixel is foreground when non-zero)."""
    masks = []
    for path in files:
        mask = _read_mask(path)
        if mask.ndim == 3 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.shape != tuple(size):
            raise QdqcError(
                f"--labels {path}: mask of shape {list(mask.shape)}; the model's map is {list(size)}"
            )
        masks.append(mask != 0)
    return np.stack(masks)


def _read_mask(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False))
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (OSError, ValueError) as exc:
        raise QdqcError(f"--labels {path}: cannot read the mask ({exc})") from None
