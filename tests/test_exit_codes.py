"""Exit codes: 0 success, 1 the command worked and found problems, 2 it could not do its job because of its
input, 3 a qdqc bug, 4 TensorRT is not installed, 130 aborted; `qdqc --help` and the README list them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.cli import cli, main

README = Path(__file__).resolve().parents[1] / "README.md"


def uint8_qdq_model() -> onnx.ModelProto:
    """x -> Q(uint8, zero-point 128) -> DQ -> Relu: TensorRT refuses UINT8 and non-zero zero-points."""
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq"),
        helper.make_node("Relu", ["dq"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "uint8_qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_lint_exits_1_on_violations_and_2_on_a_file_it_cannot_read(tmp_path, capsys) -> None:
    bad, unreadable = tmp_path / "bad.onnx", tmp_path / "garbage.onnx"
    onnx.save_model(uint8_qdq_model(), bad)
    unreadable.write_bytes(b"\x08\x07 not a model at all" * 50)
    assert main(["lint", str(bad)]) == 1
    assert "error" in capsys.readouterr().out
    assert main(["lint", str(unreadable)]) == 2
    assert capsys.readouterr().err.startswith("qdqc: error: ")
    assert main(["lint", str(tmp_path / "missing.onnx")]) == 2


def test_error_classes_carry_their_exit_codes() -> None:
    from qdq_compiler.errors import ChecksFailed, QdqcError

    assert QdqcError("x").exit_code == 2
    assert ChecksFailed("x").exit_code == 1 and isinstance(ChecksFailed("x"), QdqcError)


def test_a_bad_pipeline_and_a_usage_error_exit_2(tmp_path, capsys) -> None:
    model = tmp_path / "m.onnx"
    onnx.save_model(uint8_qdq_model(), model)
    assert main(["opt", str(model), "--pipeline", "fold-bm", "-o", str(tmp_path / "o.onnx")]) == 2
    assert "unknown pass 'fold-bm'" in capsys.readouterr().err
    assert main(["opt", str(model), "-o", str(tmp_path / "o.onnx")]) == 2  # --pipeline missing
    assert "Missing option" in capsys.readouterr().err


def test_an_internal_error_exits_3(tmp_path, capsys, monkeypatch) -> None:
    import qdq_compiler.cli as cli_module

    def broken(*args, **kwargs):
        raise KeyError("a qdqc bug")

    monkeypatch.setattr(cli_module, "load_model", broken)
    assert main(["inspect", str(tmp_path / "m.onnx")]) == 3
    assert capsys.readouterr().err.startswith("qdqc: internal error: KeyError")


def test_build_without_tensorrt_exits_4_and_prints_the_trtexec_line(tmp_path, capsys, monkeypatch) -> None:
    from qdq_compiler.detect import bundled

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, installed or not
    engine = tmp_path / "m.engine"
    assert main(["build", str(bundled.model_path()), "-o", str(engine)]) == 4
    captured = capsys.readouterr()
    assert captured.out.startswith("trtexec --onnx=") and "TensorRT is not available" in captured.err
    assert not engine.exists()


def _table(text: str) -> dict[int, str]:
    """code -> meaning from the first Markdown table whose header is `| exit code | meaning |`."""
    rows = re.findall(
        r"^\|\s*`?(\d+)`?\s*\|\s*(.+?)\s*\|\s*$",
        text.split("| exit code | meaning |", 1)[1],
        flags=re.MULTILINE,
    )
    codes: dict[int, str] = {}
    for code, meaning in rows:
        if int(code) in codes:
            break
        codes[int(code)] = meaning
    return codes


def test_help_and_readme_list_every_exit_code(capsys) -> None:
    from qdq_compiler.errors import EXIT_CODES

    assert [code for code, _ in EXIT_CODES] == [0, 1, 2, 3, 4, 130]
    for args in (["--help"], ["compile", "--help"]):
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "Exit codes:" in out, args
        for code, meaning in EXIT_CODES:
            assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}$", out, flags=re.MULTILINE), (code, out)
    assert _table(README.read_text()) == {code: meaning for code, meaning in EXIT_CODES}


def test_every_command_lists_the_exit_codes_in_its_help() -> None:
    import click

    for name, command in cli.commands.items():
        with click.Context(command, info_name=name) as ctx:
            assert "Exit codes:" in command.get_help(ctx), name


@pytest.mark.parametrize("args", [["passes"], ["--version"]])
def test_success_exits_0(args, capsys) -> None:
    assert main(args) == 0
