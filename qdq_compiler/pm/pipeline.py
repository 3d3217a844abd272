"""Pipeline text: `canonicalize,fold-bn,place-qdq{policy=trt}` parsed into passes and printed back."""

from __future__ import annotations

import dataclasses
from typing import Any

from qdq_compiler.errors import PipelineError
from qdq_compiler.pm.base import Pass
from qdq_compiler.pm.options import build_options, format_value, kebab, split_top_level, unquote
from qdq_compiler.pm.registry import get_pass, get_pipeline


def parse_pipeline(text: str) -> list[Pass]:
    """Instantiate the passes of a pipeline text; a named pipeline expands to its text."""
    passes: list[Pass] = []
    for raw in split_top_level(text.strip(), ","):
        entry = raw.strip()
        if not entry:
            if text.strip():
                raise PipelineError(f"empty pass name in pipeline '{text}'")
            continue
        name, options = _split_entry(entry)
        named = get_pipeline(name) if not options else None
        if named is not None:
            passes.extend(parse_pipeline(named))
            continue
        cls = get_pass(name)
        passes.append(cls(build_options(cls.Options, options, name)))
    return passes


def _split_entry(entry: str) -> tuple[str, dict[str, str]]:
    """`name{a=1,b=x}` into ("name", {"a": "1", "b": "x"})."""
    if "{" not in entry:
        return entry, {}
    if not entry.endswith("}"):
        raise PipelineError(f"unbalanced braces in '{entry}'")
    name, body = entry.split("{", 1)
    options: dict[str, str] = {}
    for item in split_top_level(body[:-1], ","):
        if not item.strip():
            continue
        if "=" not in item:
            raise PipelineError(f"option '{item.strip()}' of pass '{name}' needs a value (key=value)")
        key, value = item.split("=", 1)
        options[key.strip()] = unquote(value.strip()) if not value.strip().startswith("[") else value.strip()
    return name.strip(), options


def format_entry(name: str, options: Any) -> str:
    """One pass as text; only options that differ from their defaults are printed."""
    if options is None or not dataclasses.is_dataclass(options):
        return name
    defaults = type(options)()
    changed = [
        f"{kebab(f.name)}={format_value(getattr(options, f.name))}"
        for f in dataclasses.fields(options)
        if getattr(options, f.name) != getattr(defaults, f.name)
    ]
    return f"{name}{{{','.join(changed)}}}" if changed else name


def format_pipeline(passes: list[Pass]) -> str:
    """Pipeline text that parses back to the same passes and options."""
    return ",".join(format_entry(p.name, p.options) for p in passes)
