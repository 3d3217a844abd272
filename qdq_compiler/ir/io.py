"""Load ONNX files or ModelProtos into the IR and save them back, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from qdq_compiler.errors import ModelLoadError
from qdq_compiler.ir.validate import check_graph_wiring, check_tensor_data, check_weighted_ranks
from qdq_compiler.paths import new_file_mode, write_error

# Models whose weights exceed this size are saved with an external data file beside them.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000


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
        proto = onnx.load(str(path), load_external_data=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path} as ONNX: {_one_line(exc)}") from exc
    return _from_proto(proto, str(path))


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

    Large models (over ~1.8 GB of weights) get their tensors in `<name>.data` beside the file.
    """
    path = Path(path)
    proto = to_proto(model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        os.chmod(tmp_name, new_file_mode())  # mkstemp made it 0600; an output gets what the umask allows
        needs_external = not _fits_bytesize(proto) or proto.ByteSize() > EXTERNAL_DATA_THRESHOLD_BYTES
        if needs_external:
            data_name = path.name + ".data"
            onnx.save_model(
                proto, tmp_name, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name
            )
        else:
            with open(tmp_name, "wb") as handle:
                handle.write(proto.SerializeToString())
        os.replace(tmp_name, path)
    except OSError as exc:  # no space left, read-only, ...: one line, no partial file
        raise write_error(path, exc) from None
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def _fits_bytesize(proto: onnx.ModelProto) -> bool:
    """ByteSize() fails for protos over 2 GB; report whether it can be asked."""
    try:
        proto.ByteSize()
    except ValueError:
        return False
    return True


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
