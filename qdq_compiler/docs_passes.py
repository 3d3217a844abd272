"""Generate docs/passes.md from the pass registry: `python -m qdq_compiler.docs_passes > docs/passes.md`.

Lists the built-in passes (installed plugins are left out: they document themselves, and `qdqc passes`
shows them) with their summary, docstring, options and the named pipelines that run them.
tests/test_docs.py regenerates the page and fails when the file differs.
"""

from __future__ import annotations

import inspect
import sys
import typing

from qdq_compiler.pm import all_passes, all_pipelines, parse_pipeline
from qdq_compiler.pm.base import Pass
from qdq_compiler.pm.options import field_types, format_value, kebab

COMMAND = "python -m qdq_compiler.docs_passes > docs/passes.md"
BUILTIN_PREFIX = "qdq_compiler.passes."


def builtin_passes() -> dict[str, type[Pass]]:
    """The registered passes defined in qdq_compiler.passes, by name."""
    return {name: cls for name, cls in all_passes().items() if cls.__module__.startswith(BUILTIN_PREFIX)}


def pipelines_running(name: str) -> list[str]:
    """The named pipelines whose expansion runs pass `name`."""
    return [
        pipeline
        for pipeline in all_pipelines()
        if any(pass_.name == name for pass_ in parse_pipeline(pipeline))
    ]


def render() -> str:
    """The whole page."""
    passes = builtin_passes()
    lines = [
        "# Passes",
        "",
        f"<!-- Generated from the pass registry by `{COMMAND}`; do not edit. -->",
        "",
        "Every built-in pass, with its options (`name{option=value,...}` in a pipeline) and the named",
        "pipelines that run it (`pipelines.md`). `qdqc passes` prints the same list, installed plugins",
        "included; `writing-passes.md` explains how to add one.",
        "",
        "| pass | summary |",
        "|---|---|",
    ]
    lines += [f"| [`{name}`](#{name}) | {_cell(cls.summary)} |" for name, cls in passes.items()]
    for name, cls in passes.items():
        lines += ["", f"## {name}", "", cls.summary, ""]
        doc = inspect.cleandoc(cls.__doc__ or "")
        if doc and doc != cls.summary:
            lines += [doc, ""]
        lines += _options(cls)
        used = pipelines_running(name)
        lines.append("Run by: " + (", ".join(f"`{p}`" for p in used) if used else "no named pipeline") + ".")
    return "\n".join(lines) + "\n"


def _options(cls: type[Pass]) -> list[str]:
    """The options table of a pass, or a line saying it takes none."""
    types = field_types(cls.Options)
    if not types:
        return ["Options: none.", ""]
    defaults = cls.Options()
    rows = ["| option | type | default |", "|---|---|---|"]
    for field_name, annotation in types.items():
        plain = isinstance(annotation, type) and not typing.get_args(annotation)
        type_name = annotation.__name__ if plain else str(annotation).replace("typing.", "")
        default = format_value(getattr(defaults, field_name))
        rows.append(f"| `{kebab(field_name)}` | `{_cell(type_name)}` | `{_cell(default)}` |")
    return [*rows, ""]


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
