"""Load ONNX files or ModelProtos into the IR and save them back, atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir

from qdq_compiler.errors import ModelLoadError, QdqcError
from qdq_compiler.ir.external import weights_nbytes
from qdq_compiler.ir.validate import check_graph_wiring, check_tensor_data, check_weighted_ranks
from qdq_compiler.paths import write_atomic, write_error

# Models whose weights exceed this size are saved with an external data file beside them.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000
# model.meta key: the external data files (resolved paths) the model was loaded from
EXTERNAL_FILES_META_KEY = "qdqc.external_data_files"


def load_model(source: str | os.PathLike | onnx.ModelProto | bytes) -> ir.Model:
    """Parse a path (external data included), a ModelProto or serialized bytes into an IR model.

    The source is never modified: a ModelProto is deep-copied before conversion.
    """
    if isinstance(source, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
        return _from_proto(proto, "<ModelProto>")
    if isinstance(source, bytes):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(source)
        except Exception as exc:  # protobuf raises DecodeError, a private type
            raise ModelLoadError(f"cannot parse ONNX bytes: {exc}") from exc
        return _from_proto(proto, "<bytes>")
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"expected an ONNX file, got a directory: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path} as ONNX: {_one_line(exc)}") from exc
    files = _external_data_files(proto, path)
    model = _from_proto(proto, str(path))
    if files:
        try:
            _read_external_weights(model, path.parent)
        except Exception as exc:
            raise ModelLoadError(f"cannot read the external data of {path}: {_one_line(exc)}") from exc
        model.meta[EXTERNAL_FILES_META_KEY] = sorted(str(file) for file in files)
    return model


def _read_external_weights(model: ir.Model, folder: Path) -> None:
    """Read every external initializer straight into a numpy array (one copy of the weights in memory).

    onnx's own loader would put the bytes into the proto first (two copies while loading), and every later
    read of a proto-backed tensor copies its bytes again. Tensor attributes (rare) stay external and are
    read from ``folder`` when used.
    """
    ir.external_data.set_base_dir(model.graph, folder)
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if not isinstance(tensor, ir.ExternalTensor):
                continue
            array = tensor.numpy().copy()  # numpy() maps the file; the copy lets it go
            tensor.release()
            value.const_value = ir.Tensor(
                array,
                dtype=tensor.dtype,
                name=tensor.name,
                doc_string=tensor.doc_string,
                metadata_props=dict(tensor.metadata_props),
            )


def all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes of ``graph`` and of its nodes' subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from all_tensors(subgraph)


def _external_data_files(proto: onnx.ModelProto, path: Path) -> set[Path]:
    """The external data files ``proto`` (loaded from ``path``) refers to; each must exist and be long enough.

    A missing or short file is a one-line :class:`ModelLoadError` naming the file and the tensor.
    """
    files: set[Path] = set()
    for tensor in all_tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        file = (path.parent / location).resolve()
        if not location or not file.is_file():
            raise ModelLoadError(
                f"{path}: external data file {location!r} of tensor {tensor.name!r} not found "
                f"(looked for {file}); keep the data file beside the model"
            )
        end = int(info.get("offset") or 0) + int(info.get("length") or 0)
        if end > file.stat().st_size:
            raise ModelLoadError(
                f"{path}: external data file {location!r} is {file.stat().st_size} bytes, but tensor "
                f"{tensor.name!r} ends at byte {end} (truncated or not this model's data)"
            )
        files.add(file)
    return files


def _from_proto(proto: onnx.ModelProto, origin: str) -> ir.Model:
    if not proto.HasField("graph") or len(proto.graph.node) == 0 and len(proto.graph.output) == 0:
        raise ModelLoadError(f"{origin} holds no ONNX graph (empty or not a model file)")
    check_tensor_data(proto, origin)
    check_graph_wiring(proto, origin)
    try:
        model = ir.from_proto(proto)
    except Exception as exc:
        raise ModelLoadError(f"{origin} is not a valid ONNX model: {_one_line(exc)}") from exc
    check_weighted_ranks(model.graph, origin)
    return model


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """Serialize the IR model into a ModelProto (the IR is left untouched)."""
    return ir.to_proto(model)


def save_model(model: ir.Model, path: str | os.PathLike) -> Path:
    """Write the model to `path` atomically: a temporary file in the same folder, then a rename.

    Large models (over ~1.8 GB of weights) get their tensors in `<name>.data` beside the file, see
    :func:`_save_with_external_data` for what is guaranteed about the pair.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None
    if weights_nbytes(model) > EXTERNAL_DATA_THRESHOLD_BYTES:
        _save_with_external_data(model, path)
        return path
    write_atomic(path, to_proto(model).SerializeToString())
    return path


def external_data_path(path: str | os.PathLike) -> Path:
    """Where :func:`save_model` puts the external data of a large model saved to ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def _save_with_external_data(model: ir.Model, path: Path) -> None:
    """Write `path` and `<name>.data` (every tensor over 256 bytes, packed in graph order) beside it.

    Both files are first written completely into a temporary folder beside `path` (onnx-ir writes the
    tensors one by one, from the IR, without a second copy of the weights). Then an existing `path` is
    removed, the data file is renamed into place (replacing a stale one), and `path` last. So a failure or
    a kill while writing leaves the old files untouched, and `path` never appears next to a `.data` that is
    not its own; a kill in the moment between the renames leaves no `path` at all (never a mismatched pair).
    The input's external data is never written: a target data file that the model was loaded from is refused.
    """
    data_path = external_data_path(path)
    sources = {Path(name) for name in model.meta.get(EXTERNAL_FILES_META_KEY, [])}
    if data_path.resolve() in sources:
        raise QdqcError(
            f"writing {path} would overwrite {data_path.name}, the external data the input model reads; "
            "choose another output name"
        )
    try:
        folder = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        staged = Path(folder) / path.name
        ir.save(model, staged, external_data=data_path.name)
        if path.exists() or path.is_symlink():
            path.unlink()
        os.replace(Path(folder) / data_path.name, data_path)
        os.replace(staged, path)
    except OSError as exc:  # no space left, read-only, ...: one line, the old pair left as it was
        raise write_error(path, exc) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
