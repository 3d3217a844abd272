"""Error types. Every error a user can cause derives from QdqcError and prints as one line."""

from __future__ import annotations


class QdqcError(Exception):
    """Base class of errors that the CLI reports as one line without a traceback."""


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


class ChecksFailed(QdqcError):
    """The command worked and found problems (lint errors, explain on a model without Q/DQ): exit 1."""

    exit_code = 1
