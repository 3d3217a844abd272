"""Bad inputs through the qdqc command line: each is one line on stderr, the expected exit code, no
traceback, no "internal error", and every file in the workspace unchanged (no partial output, no temp file).

`python tests/test_bad_inputs.py` prints the table (case | exit code | message) in Markdown.

How the file-system cases are made while the tests run as root (root ignores permission bits):
- read-only: a read-only tmpfs mount (needs CAP_SYS_ADMIN; skipped otherwise);
- no permission: `chattr +i` on the folder as root (EPERM even for root), `chmod 0555` otherwise;
- disk full: a 64 KiB tmpfs filled up (needs CAP_SYS_ADMIN; the always-run ENOSPC test in test_cli.py
  injects the error into the final write instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.cli import main
from qdq_compiler.models import TEST_MODELS


# --------------------------------------------------------------------------- workspace
def tiny_model(seed: int = 0, width: int = 4) -> onnx.ModelProto:
    """Conv-Relu-Conv-Relu-Conv on a [1,3,8,8] input: the first two convs get quantized."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i, (cin, cout) in enumerate([(3, width), (width, width), (width, 2)]):
        weight = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"b{i}"))
        conv = helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4)
        nodes.append(conv)
        x = f"c{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 2, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def make_workspace(root: Path) -> dict[str, str]:
    """The input files the cases use; returns the names the case arguments refer to."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {
        name: root / name
        for name in (
            "model.onnx",
            "big.onnx",
            "chain.onnx",
            "other.onnx",
            "calib.npy",
            "calib.npz",
            "badkeys.npz",
            "int.npy",
            "empty.onnx",
            "random.onnx",
            "truncated.onnx",
            "text.onnx",
            "corrupt.stats",
            "stats.qdqc",
            "ext.onnx",
            "syntax_error.py",
            "raises.py",
            "imports_missing.py",
            "dir",
            "empty_images",
            "images",
        )
    }
    onnx.save_model(tiny_model(), files["model.onnx"])
    onnx.save_model(tiny_model(width=48), files["big.onnx"])
    onnx.save_model(TEST_MODELS["chain_500"](), files["chain.onnx"])  # its IR dump takes several pages
    onnx.save_model(tiny_model(seed=1), files["other.onnx"])
    samples = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.save(files["calib.npy"], samples)
    np.savez(files["calib.npz"], x=samples)
    np.savez(files["badkeys.npz"], images=samples)
    np.save(files["int.npy"], (samples * 100).astype(np.int32))
    files["empty.onnx"].write_bytes(b"")
    files["random.onnx"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["truncated.onnx"].write_bytes(files["model.onnx"].read_bytes()[:300])
    files["text.onnx"].write_text("this is a text file, not a model\n")
    files["corrupt.stats"].write_bytes(b"PK\x03\x04 not really a zip")
    onnx.save_model(
        tiny_model(),
        files["ext.onnx"],
        save_as_external_data=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    files["syntax_error.py"].write_text("def broken(:\n")
    files["raises.py"].write_text("raise RuntimeError('plugin exploded at import')\n")
    files["imports_missing.py"].write_text("import qdqc_no_such_module_xyz\n")
    for folder in ("dir", "empty_images", "images"):
        files[folder].mkdir()
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(files["images"] / "cat.png")
    quiet = ["-q", "calibrate", str(files["model.onnx"]), "--calib", str(files["calib.npy"])]
    assert main([*quiet, "-o", str(files["stats.qdqc"])]) == 0
    names = {name.replace(".", "_"): str(path) for name, path in files.items()}
    names["root"] = str(root)
    return names


# --------------------------------------------------------------------------- special places
def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, check=False
    )
    return done.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True, check=False)


@contextlib.contextmanager
def read_only_folder(root: Path) -> Iterator[str | None]:
    """A read-only tmpfs mount, or None where mounting is not allowed."""
    where = root / "ro"
    if not _mount_tmpfs(where, "ro,size=64k"):
        yield None
        return
    try:
        yield str(where)
    finally:
        _umount(where)


@contextlib.contextmanager
def full_folder(root: Path) -> Iterator[str | None]:
    """A 64 KiB tmpfs with no space left, or None where mounting is not allowed."""
    where = root / "full"
    if not _mount_tmpfs(where, "size=64k"):
        yield None
        return
    try:
        _fill(where)
        yield str(where)
    finally:
        _umount(where)


def _fill(where: Path, leave_free: int = 0) -> None:
    """Write zeros into ``where/filler`` until the file system is full, then free ``leave_free`` bytes."""
    with contextlib.suppress(OSError), open(where / "filler", "wb") as filler:
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()
    if leave_free:
        os.truncate(where / "filler", (where / "filler").stat().st_size - leave_free)


@contextlib.contextmanager
def nearly_full_folder(root: Path) -> Iterator[str | None]:
    """A 64 KiB tmpfs with one page free: the preflight's one-byte probe fits, a model does not."""
    where = root / "nearly_full"
    if not _mount_tmpfs(where, "size=64k"):
        yield None
        return
    try:
        _fill(where, leave_free=4096)
        yield str(where)
    finally:
        _umount(where)


@contextlib.contextmanager
def locked_folder(root: Path) -> Iterator[str | None]:
    """A folder nobody may create files in: chmod 0555, or (root ignores that) the immutable attribute."""
    where = root / "locked"
    where.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        where.chmod(0o555)
        try:
            yield str(where)
        finally:
            where.chmod(0o755)
        return
    done = subprocess.run(["chattr", "+i", str(where)], capture_output=True, check=False)
    if done.returncode != 0:
        yield None
        return
    try:
        yield str(where)
    finally:
        subprocess.run(["chattr", "-i", str(where)], capture_output=True, check=False)


def _link(kind: str, target: str, name: str) -> Callable[[dict[str, str]], dict[str, str]]:
    """A setup making `name` a hard link or a symlink to the workspace file `target`."""

    def setup(names: dict[str, str]) -> dict[str, str]:
        link = Path(names["root"]) / name
        if not link.exists():
            (os.link if kind == "hard" else os.symlink)(names[target], link)
        return {name.replace(".", "_"): str(link)}

    return setup


def _fifo(names: dict[str, str]) -> dict[str, str]:
    """A named pipe in the workspace (stands for /dev/null and other non-regular files, safely)."""
    fifo = Path(names["root"]) / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    return {"fifo": str(fifo)}


# --------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    code: int
    message: str
    setup: Callable[[dict[str, str]], dict[str, str]] | None = None
    may_write: str | None = None  # a folder where a partial output may stay (debug dumps)


def C(name: str, args: str, code: int, message: str, setup=None, may_write=None) -> Case:  # noqa: N802
    return Case(name, tuple(shlex.split(args)), code, message, setup, may_write)


COMPILE = "compile {model_onnx} --calib {calib_npy}"
CASES = [
    # item 3: output locations, checked before any work
    C("-o in a read-only folder", COMPILE + " -o {ro}/out.onnx", 2, "Read-only file system"),
    C("-o in a folder without write permission", COMPILE + " -o {locked}/out.onnx", 2, "cannot write"),
    C("-o on a full disk", COMPILE + " -o {full}/out.onnx", 2, "No space left on device"),
    C("-o where nothing can be written (/proc)", COMPILE + " -o /proc/qdqc/out.onnx", 2, "cannot write"),
    C("-o DIR (an existing folder)", COMPILE + " -o {dir}", 2, "is a directory"),
    C("-o DIR/ (trailing slash)", COMPILE + " -o {root}/new/", 2, "ends with '/'"),
    C("-o a named pipe", COMPILE + " -o {fifo}", 2, "is not a regular file", _fifo),
    C("-o '' (empty)", COMPILE + " -o ''", 2, "-o is empty"),
    C("-o under a file (model.onnx/out.onnx)", COMPILE + " -o {model_onnx}/out.onnx", 2, "is not a folder"),
    C(
        "calibrate -o in a read-only folder",
        "calibrate {model_onnx} --calib {calib_npy} -o {ro}/s.qdqc",
        2,
        "Read-only file system",
    ),
    C("calibrate -o DIR", "calibrate {model_onnx} --calib {calib_npy} -o {dir}", 2, "is a directory"),
    C(
        "opt -o on a full disk",
        "opt {model_onnx} --pipeline canonicalize -o {full}/out.onnx",
        2,
        "No space left on device",
    ),
    C(
        "--ir-dump-dir fills up during the run",
        "opt {chain_onnx} --pipeline canonicalize,fold-bn -o {root}/o.onnx --ir-dump-dir {nearly_full}/dumps",
        2,
        "No space left on device",
        may_write="{nearly_full}/dumps",
    ),
    C(
        "disk fills up while the model is written",
        "opt {big_onnx} --pipeline canonicalize -o {nearly_full}/out.onnx",
        2,
        "cannot write {nearly_full}/out.onnx: No space left on device",
    ),
    C(
        "--ir-dump-dir in a read-only folder",
        "opt {model_onnx} --pipeline canonicalize -o {root}/o.onnx --ir-dump-dir {ro}/dumps",
        2,
        "Read-only file system",
    ),
    C(
        "--ir-dump-dir where nothing can be written",
        "opt {model_onnx} --pipeline canonicalize -o {root}/o.onnx --ir-dump-dir /proc/qdqc-dumps",
        2,
        "cannot write",
    ),
    C(
        "--reproducer-dir without write permission",
        COMPILE + " -o {root}/o.onnx --reproducer-dir {locked}/r",
        2,
        "cannot write",
    ),
    C(
        "--ir-dump-dir is a file",
        "opt {model_onnx} --pipeline canonicalize -o {root}/o.onnx --ir-dump-dir {calib_npy}",
        2,
        "is a file",
    ),
    C("demo --out-dir where nothing can be written", "demo --out-dir /proc/qdqc-demo", 2, "cannot write"),
    # item 3: a command never overwrites its input
    C(
        "calibrate -o the model",
        "calibrate {model_onnx} --calib {calib_npy} -o {model_onnx}",
        2,
        "is the input model",
    ),
    C("compile -o the model", COMPILE + " -o {model_onnx}", 2, "is the input model"),
    C("compile -o the calibration .npy", COMPILE + " -o {calib_npy}", 2, "is the calibration data"),
    C(
        "compile -o the calibration cache it reads",
        "compile {model_onnx} --calib-cache {stats_qdqc} -o {stats_qdqc}",
        2,
        "is the calibration cache",
    ),
    C(
        "compile -o a hard link to the model",
        COMPILE + " -o {hardlink_onnx}",
        2,
        "is the input model",
        _link("hard", "model_onnx", "hardlink.onnx"),
    ),
    C(
        "compile -o a symlink to the .npz",
        "compile {model_onnx} --calib {calib_npz} -o {symlink_npz}",
        2,
        "is the calibration data",
        _link("sym", "calib_npz", "symlink.npz"),
    ),
    C(
        "compile -o an image in the calibration folder",
        "compile {model_onnx} --calib {images} -o {images}/cat.png",
        2,
        "is the calibration data",
    ),
    C(
        "opt -o the model's external data file",
        "opt {ext_onnx} --pipeline canonicalize -o {root}/ext.onnx.data",
        2,
        "external data of the input model",
    ),
    C("build -o the model", "build {model_onnx} --print-trtexec -o {model_onnx}", 2, "is the input model"),
    # item 3: plugins that fail to import
    C(
        "plugin file missing",
        COMPILE + " -o {root}/o.onnx --load-pass-plugin {root}/nope.py",
        2,
        "pass plugin file not found",
    ),
    C(
        "plugin with a syntax error",
        COMPILE + " -o {root}/o.onnx --load-pass-plugin {syntax_error_py}",
        2,
        "syntax_error.py",
    ),
    C(
        "plugin raising at import",
        "opt {model_onnx} --pipeline canonicalize -o {root}/o.onnx --load-pass-plugin {raises_py}",
        2,
        "raises.py",
    ),
    C(
        "plugin importing a missing module",
        "passes --load-pass-plugin {imports_missing_py}",
        2,
        "imports_missing.py",
    ),
    C(
        "plugin module not installed",
        "passes --load-pass-plugin qdqc_no_such_plugin_xyz",
        2,
        "cannot import pass plugin module 'qdqc_no_such_plugin_xyz'",
    ),
    # models
    C(
        "missing model",
        "compile {root}/missing.onnx --calib {calib_npy} -o {root}/o.onnx",
        2,
        "model file not found",
    ),
    C("a folder as model", "inspect {dir}", 2, "got a directory"),
    C("empty model file", "inspect {empty_onnx}", 2, "holds no ONNX graph"),
    C(
        "random bytes as model",
        "opt {random_onnx} --pipeline canonicalize -o {root}/o.onnx",
        2,
        "cannot read",
    ),
    C(
        "truncated model",
        COMPILE.replace("{model_onnx}", "{truncated_onnx}") + " -o {root}/o.onnx",
        2,
        "cannot read",
    ),
    C("a text file as model", "inspect {text_onnx}", 2, "cannot read"),
    C("lint of a missing file", "lint {root}/missing.onnx", 2, "model file not found"),
    C("explain of a corrupt file", "explain {random_onnx}", 2, "cannot read"),
    # pipelines and options
    C("unknown pass", "opt {model_onnx} --pipeline fold-bm -o {root}/o.onnx", 2, "unknown pass 'fold-bm'"),
    C("bad pass option", "opt {model_onnx} --pipeline fold-bn{{x=1}} -o {root}/o.onnx", 2, "no option 'x'"),
    C("bad --method", COMPILE + " -o {root}/o.onnx --method kl", 2, "unknown calibration"),
    C("missing -o", COMPILE, 2, "Missing option"),
    C("unknown command", "frobnicate", 2, "No such command"),
    C(
        "bad --shapes for build",
        "build {model_onnx} --print-trtexec --shapes garbage",
        2,
        "needs 'name:dims'",
    ),
    # calibration data and cache
    C("no calibration data", "compile {model_onnx} -o {root}/o.onnx", 2, "calibration data is required"),
    C(
        "missing calibration data path",
        "compile {model_onnx} --calib {root}/nope.npy -o {root}/o.onnx",
        2,
        "nope.npy",
    ),
    C(
        "empty calibration folder",
        "compile {model_onnx} --calib {empty_images} -o {root}/o.onnx",
        2,
        "no images",
    ),
    C(".npz with wrong keys", "compile {model_onnx} --calib {badkeys_npz} -o {root}/o.onnx", 2, "'x'"),
    C(
        "calibration data of the wrong dtype",
        "compile {model_onnx} --calib {int_npy} -o {root}/o.onnx",
        2,
        "expects dtype float32",
    ),
    C(
        "a model as calibration data",
        "compile {model_onnx} --calib {model_onnx} -o {root}/o.onnx",
        2,
        "unsupported calibration data",
    ),
    C(
        "calibration cache of another model",
        "compile {other_onnx} --calib-cache {stats_qdqc} -o {root}/o.onnx",
        2,
        "stale calibration cache",
    ),
    C(
        "corrupt calibration cache",
        "compile {model_onnx} --calib-cache {corrupt_stats} -o {root}/o.onnx",
        2,
        "is not a calibration cache",
    ),
    C("calibrate without --calib", "calibrate {model_onnx} -o {root}/s.qdqc", 2, "calibrate needs --calib"),
    C(
        "sensitivity with a missing --eval path",
        "sensitivity {model_onnx} --calib {calib_npy} --eval {root}/nope.npz",
        2,
        "nope.npz",
    ),
    C("report-engine of a missing file", "report-engine {root}/nope.json", 2, "layer report not found"),
    C("eval with a missing --data", "eval {model_onnx} {other_onnx} --data {root}/nope.npy", 2, "nope.npy"),
    C(
        "eval with an empty image folder",
        "eval {model_onnx} {other_onnx} --data {empty_images}",
        2,
        "no images",
    ),
    C(
        "eval of models whose inputs differ",
        "eval {model_onnx} {chain_onnx} --data {calib_npy}",
        2,
        "the two models' inputs differ",
    ),
    C(
        "eval of a model whose kind its outputs do not tell",
        "eval {model_onnx} {other_onnx} --data {calib_npy}",
        2,
        "give --kind",
    ),
    C(
        "eval --json onto the INT8 model",
        "eval {model_onnx} {other_onnx} --data {calib_npy} --json {other_onnx}",
        2,
        "the input is never overwritten",
    ),
]


# --------------------------------------------------------------------------- running a case
@contextlib.contextmanager
def special_places(root: Path) -> Iterator[dict[str, str | None]]:
    with contextlib.ExitStack() as stack:
        yield {
            "ro": stack.enter_context(read_only_folder(root)),
            "full": stack.enter_context(full_folder(root)),
            "nearly_full": stack.enter_context(nearly_full_folder(root)),
            "locked": stack.enter_context(locked_folder(root)),
        }


def fill(case: Case, names: dict[str, str | None]) -> list[str] | None:
    """The case's arguments with the workspace names filled in; None if a place it needs is unavailable."""
    if case.setup is not None:
        names = {**names, **case.setup(names)}  # type: ignore[arg-type]
    args = []
    for arg in case.args:
        for key, value in names.items():
            if "{" + key + "}" in arg and value is None:
                return None
        args.append(arg.format(**names).replace("{{", "{").replace("}}", "}"))
    return args


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (symlinks by target path), to show that nothing changed."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            state[str(path)] = "-> " + os.readlink(path)
        elif path.is_fifo():
            state[str(path)] = "fifo"
        elif path.is_file():
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[str(path)] = "dir"
    return state


def run_case(case: Case, args: list[str], names: dict[str, str | None]) -> tuple[int, str, list[str]]:
    """Run qdqc with `args`; returns exit code, stderr and the workspace files it changed, then undoes
    those changes (a folder the case may write into is not counted)."""
    root = Path(str(names["root"]))
    before = snapshot(root)
    contents = {name: Path(name).read_bytes() for name, kind in before.items() if len(kind) == 64}
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            code = main(args)
        after = snapshot(root)
    finally:
        restore(root, before, contents)
    allowed = case.may_write.format(**names) if case.may_write else None
    changed = sorted(
        path
        for path in set(before) | set(after)
        if before.get(path) != after.get(path) and not (allowed and path.startswith(allowed))
    )
    return code, err.getvalue(), changed


def restore(root: Path, before: dict[str, str], contents: dict[str, bytes]) -> None:
    """Undo what a failing case did to the workspace, so that one failure does not spill into the next."""
    for path in sorted(root.rglob("*"), reverse=True):
        if str(path) not in before:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for name, data in contents.items():
        path = Path(name)
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    names = make_workspace(root / "ws")
    with special_places(root / "ws") as places:
        yield {**names, **places}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line(case: Case, workspace) -> None:
    args = fill(case, workspace)
    if args is None:
        pytest.skip("needs a tmpfs mount or chattr, which this machine does not allow")
    code, err, changed = run_case(case, args, workspace)
    lines = err.strip().splitlines()
    assert code == case.code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("qdqc: error: "), err
    assert case.message.format(**workspace) in lines[0], err
    assert "Traceback" not in err and "internal error" not in err
    assert changed == [], f"the command changed files: {changed}"


def test_the_table_has_at_least_30_cases() -> None:
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- the Markdown table
def markdown_table() -> str:
    """Run every case and return the table `case | exit code | message` in Markdown."""
    rows = ["| case | exit code | message |", "|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="qdqc-bad-inputs-") as tmp:
        root = Path(tmp) / "ws"
        names = make_workspace(root)
        with special_places(root) as places:
            names = {**names, **places}
            for case in CASES:
                args = fill(case, names)
                if args is None:
                    rows.append(f"| {case.name} | skipped | (needs tmpfs mount / chattr) |")
                    continue
                code, err, _ = run_case(case, args, names)
                message = err.strip().replace(tmp, "$TMP").replace("|", "\\|")
                rows.append(f"| {case.name} | {code} | `{message}` |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(print(markdown_table()))
