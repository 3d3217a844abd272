"""Error types and exit codes. Every error a user can cause derives from QdqcError and prints as one line."""

from __future__ import annotations

# The exit codes of every qdqc command (`qdqc --help` and the README's table show this list).
EXIT_OK = 0
EXIT_CHECKS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 3
EXIT_NO_TENSORRT = 4
EXIT_ABORTED = 130
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (
        EXIT_CHECKS_FAILED,
        "the command ran and found problems (lint violations, --check-strict, explain of a float model)",
    ),
    (EXIT_BAD_INPUT, "the command could not do its job: bad model, data, option or path"),
    (EXIT_INTERNAL_ERROR, "internal error, a bug in qdqc (-vv shows the traceback)"),
    (EXIT_NO_TENSORRT, "build: TensorRT is not installed (the trtexec line is printed)"),
    (EXIT_ABORTED, "aborted (Ctrl-C)"),
)


class QdqcError(Exception):
    """Base class of errors that the CLI reports as one line without a traceback (exit 2: the input is
    at fault)."""

    exit_code = EXIT_BAD_INPUT


class ChecksFailed(QdqcError):
    """The command did its job and found problems (lint errors, `--check-strict` self-check warnings,
    `explain` on a model without Q/DQ): one line, exit 1."""

    exit_code = EXIT_CHECKS_FAILED


class ModelLoadError(QdqcError):
    """The input model is missing, unreadable, corrupt or unsupported."""


class PipelineError(QdqcError):
    """A pipeline text, pass name or pass option is invalid."""


class PassFailure(QdqcError):
    """A pass raised while running; names the pass, the pipeline so far and the node involved."""

    def __init__(self, pass_name: str, pipeline_so_far: str, cause: BaseException, node: str | None = None):
        where = f" at node '{node}'" if node else ""
        super().__init__(
            f"pass '{pass_name}' failed{where}: {cause} (pipeline so far: {pipeline_so_far or '<empty>'})"
        )
        self.pass_name = pass_name
        self.pipeline_so_far = pipeline_so_far
        self.cause = cause
        self.node = node


class VerificationError(QdqcError):
    """The IR breaks an invariant (dangling value, cycle, duplicate name, checker failure)."""
