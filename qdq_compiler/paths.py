"""Checks on the files a command reads and writes, made before any work starts.

An output path must be writable (its folder exists or can be made, accepts a new file, has room for one
byte) and must not be one of the files the command reads (model, its external data, calibration data,
calibration cache, plugin files): same path, symlink or hard link alike. Also the permission bits of files
written atomically (a temporary file made by ``mkstemp`` is 0600; outputs get 0666 minus the umask).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import onnx

from qdq_compiler.errors import QdqcError


class OutputPathError(QdqcError, OSError):
    """An output path is empty, a directory, not writable, full, or one of the command's inputs (an OSError
    too, for callers of save_model / save_cache that catch those)."""


def new_file_mode() -> int:
    """Permission bits a newly created file gets under the current umask (0666 minus the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_error(path: str | os.PathLike[str], exc: OSError) -> OutputPathError:
    """A one-line error for an OSError raised while writing ``path`` (no space, read-only, ...)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputPathError(f"cannot write {os.fspath(path)}: {reason}")


def write_atomic(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file beside it (made with its folder if missing),
    flushed to disk, given the permissions the umask allows, then renamed over ``path``.

    An OSError (no space, read-only, ...) becomes one :class:`OutputPathError` line, and leaves neither a
    temporary file nor a changed ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, new_file_mode())  # mkstemp made it 0600
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputPathError):
            raise write_error(path, exc) from None
        raise


def check_output_file(path: str, option: str = "-o") -> Path:
    """Refuse an output file path that cannot be written; returns it as a Path.

    Refused: an empty path, an existing directory, device, pipe or socket, a path whose folder is a file,
    and a folder that does not accept a new file (read-only, no permission, full).
    """
    if not path:
        raise OutputPathError(f"{option} is empty: give the path of the file to write")
    target = Path(path)
    if path.endswith(("/", os.sep)):
        raise OutputPathError(f"{option} {path} ends with '/': give the path of the file to write")
    if _is_dir(target):
        raise OutputPathError(f"{option} {path} is a directory: give the path of the file to write")
    if _exists(target) and not target.is_file():  # the rename would replace a device, pipe or socket
        raise OutputPathError(
            f"{option} {path} is not a regular file (a device, pipe or socket): give the "
            "path of the file to write"
        )
    _check_writable_folder(target.parent, f"{option} {path}")
    return target


def check_output_dir(path: str, option: str) -> Path:
    """Refuse an output folder that cannot be made or written (the folder may not exist yet)."""
    if not path:
        raise OutputPathError(f"{option} is empty: give a folder")
    folder = Path(path)
    if _exists(folder) and not _is_dir(folder):
        raise OutputPathError(f"{option} {path} is a file, not a folder")
    _check_writable_folder(folder, f"{option} {path}")
    return folder


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. no permission to look into a parent
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _check_writable_folder(folder: Path, what: str) -> None:
    """The nearest existing ancestor of ``folder`` must be a directory that accepts a new one-byte file."""
    existing = Path(os.path.abspath(folder))
    while not _exists(existing) and existing != existing.parent:
        existing = existing.parent
    if not _is_dir(existing):
        raise OutputPathError(f"cannot write {what}: {existing} is not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".qdqc-probe-", dir=existing)
    except OSError as exc:
        raise OutputPathError(
            f"cannot write {what}: cannot create a file in {existing}: {exc.strerror or exc}"
        ) from None
    try:
        os.write(handle, b"\0")
        os.fsync(handle)
    except OSError as exc:
        reason = exc.strerror or exc
        raise OutputPathError(f"cannot write {what}: writing in {existing} fails: {reason}") from None
    finally:
        os.close(handle)
        os.unlink(probe)


def refuse_overwriting_inputs(
    outputs: Mapping[str, str | os.PathLike[str]], inputs: Iterable[tuple[str, str | os.PathLike[str]]]
) -> None:
    """Refuse any output (option -> path) that is the same file as an input (label, path).

    Same file means same device and inode: the path itself, a symlink or a hard link to it. An input that
    is a folder (images) stands for every file in it.
    """
    existing = {option: path for option, path in outputs.items() if path and _exists(Path(path))}
    if not existing:
        return  # a new file cannot be an input
    identities = {option: _identity(Path(path)) for option, path in existing.items()}
    for label, source in inputs:
        for file in _files_of(Path(source)):
            identity = _identity(file)
            for option, output_identity in identities.items():
                if identity is not None and identity == output_identity:
                    shown = f"{source}" if file == Path(source) else f"{file} (in {source})"
                    raise OutputPathError(
                        f"{option} {existing[option]} is the {label} {shown}: the input is never "
                        "overwritten; write elsewhere"
                    )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _files_of(path: Path) -> list[Path]:
    if _is_dir(path):
        return [p for p in path.rglob("*") if p.is_file()]
    return [path]


def model_files(model_path: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """The model file and the external data files it names, labelled for messages."""
    path = Path(model_path)
    files = [("input model", path)]
    if not path.is_file():
        return files
    from qdq_compiler.ir.io import all_tensors  # here: the model loader imports this module

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable: the model loader reports it later
        return files
    locations = sorted(
        {
            entry.value
            for tensor in all_tensors(proto.graph)
            for entry in tensor.external_data
            if entry.key == "location"
        }
    )
    files += [("external data of the input model", path.parent / location) for location in locations]
    return files


def command_inputs(model: str | None, opts: Mapping[str, object]) -> list[tuple[str, Path]]:
    """Every file a pipeline command reads: the model (and external data), --calib, --calib-cache, --eval
    and plugin files, as (label, path)."""
    inputs = model_files(model) if model else []
    labelled = (
        ("calib", "calibration data"),
        ("calib_cache", "calibration cache"),
        ("eval_data", "evaluation data"),
        ("check_data", "self-check data"),
    )
    for key, label in labelled:
        value = opts.get(key)
        if value:
            inputs.append((label, Path(str(value))))
    plugins = opts.get("load_pass_plugin")  # click gives a multiple option as a tuple
    for plugin in plugins if isinstance(plugins, (list, tuple)) else ():
        if str(plugin).endswith(".py") or _exists(Path(str(plugin))):
            inputs.append(("pass plugin", Path(str(plugin))))
    return inputs


def preflight(
    model: str | None,
    opts: Mapping[str, object],
    files: Mapping[str, str | None],
    folders: Mapping[str, str | None] | None = None,
) -> None:
    """Check a command's outputs before it does any work: each output file (option -> path; None: not
    given, '-': stdout) and folder is writable, and no output file is one of the command's inputs."""
    written = {option: path for option, path in files.items() if path is not None and path != "-"}
    for option, path in written.items():
        check_output_file(path, option)
    for option, folder in (folders or {}).items():
        if folder is not None:
            check_output_dir(folder, option)
    refuse_overwriting_inputs(written, command_inputs(model, opts))
