"""Options of a named pipeline (`trt-int8{target=trt11}`): each one sets options of the passes it routes to.

A command-line flag is the same thing: `--target trt11` sets the pipeline option `target`. An option sets a
pass option only where the pipeline text left it unset; where the text set it to another value, that is an
error naming both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from qdq_compiler.errors import PipelineError
from qdq_compiler.pm.base import Pass
from qdq_compiler.pm.options import field_types, format_value, kebab
from qdq_compiler.pm.registry import get_builtin_pass, get_pass


@dataclass(frozen=True)
class PipelineOption:
    """One option of a named pipeline, and the CLI flag that sets it (if any)."""

    name: str  # kebab-case, as written in `trt-int8{name=value}`
    routes: tuple[tuple[str, str], ...]  # (pass name, Options field): every such pass in the pipeline gets it
    help: str
    flag: str | None = None  # e.g. "--exclude-op"
    off_flag: str | None = None  # a boolean option on by default: the flag that turns it off ("--one-pass")

    @property
    def flag_param(self) -> str | None:
        """The flag's click parameter name (`exclude_op`), or None."""
        return self.flag[2:].replace("-", "_") if self.flag else None

    def annotation(self) -> Any:
        """The type of the value: that of the first routed pass option."""
        pass_name, field_name = self.routes[0]
        return field_types(get_pass(pass_name).Options)[field_name]

    def default(self) -> Any:
        """The value the routed (built-in) pass option has when nothing sets it."""
        pass_name, field_name = self.routes[0]
        return getattr(get_builtin_pass(pass_name).Options(), field_name)

    def routed_passes(self) -> list[str]:
        return list(dict.fromkeys(pass_name for pass_name, _ in self.routes))


def entry_text(name: str, key: str, value: Any) -> str:
    """`name{key=value}`: how the text that set one option is named in messages."""
    return f"{name}{{{key}={format_value(value)}}}"


def flag_text(option: PipelineOption, value: Any) -> str:
    """`--target trt11`, `--io-fp16`, `--exclude a --exclude b`: a flag as the user typed it."""
    if isinstance(value, bool):
        return str(option.flag if value or option.off_flag is None else option.off_flag)
    if isinstance(value, tuple):
        return " ".join(f"{option.flag} {item}" for item in value)
    return f"{option.flag} {value}"


def set_option(passes: list[Pass], option: PipelineOption, value: Any, source: str) -> None:
    """Set `option` to `value` in every routed pass of `passes`, where the text did not set it already.

    `source` names what asks for it (`--target trt10`, `trt-int8{target=trt11}`). A routed option already
    set explicitly to another value raises a one-line PipelineError naming both; a pipeline without any
    routed pass raises too (the option would do nothing).
    """
    touched = False
    for pass_ in passes:
        for pass_name, field_name in option.routes:
            if pass_.name != pass_name:
                continue
            touched = True
            current = getattr(pass_.options, field_name)
            if field_name in pass_.explicit_options:
                if current != value:
                    raise PipelineError(
                        f"{source} contradicts {pass_.explicit_options[field_name]} in the pipeline"
                    )
                continue
            try:
                pass_.options = dataclasses.replace(pass_.options, **{field_name: value})
            except (TypeError, ValueError) as exc:
                raise PipelineError(f"{source}: {exc}") from None
            pass_.explicit_options = {**pass_.explicit_options, field_name: source}
    if not touched:
        names = " or ".join(option.routed_passes())
        raise PipelineError(f"{source} configures {names}, which this pipeline does not run")


def settle_pipeline(passes: list[Pass]) -> list[Pass]:
    """Let each pass adjust the passes before it (`legalize-trt{target=trt11}` raises upgrade-opset's min)."""
    for index, pass_ in enumerate(passes):
        pass_.adjust_earlier_passes(passes[:index])
    return passes


def explicit_text(pass_: Pass, field_name: str) -> str:
    """What set a pass option explicitly, or `name{key=value}` when nothing did."""
    value = getattr(pass_.options, field_name)
    return pass_.explicit_options.get(field_name, entry_text(pass_.name, kebab(field_name), value))
