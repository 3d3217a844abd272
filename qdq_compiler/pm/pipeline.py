"""Pipeline text: `canonicalize,fold-bn,place-qdq{policy=trt}` parsed into passes and printed back."""

from __future__ import annotations

import dataclasses
from typing import Any

from qdq_compiler.errors import PipelineError
from qdq_compiler.pm.base import Pass
from qdq_compiler.pm.options import build_options, format_value, kebab, parse_value, split_top_level, unquote
from qdq_compiler.pm.pipeline_options import PipelineOption, set_option, settle_pipeline
from qdq_compiler.pm.registry import NamedPipeline, get_named_pipeline, get_pass


def parse_pipeline(text: str) -> list[Pass]:
    """Instantiate the passes of a pipeline text; a named pipeline expands to its text, with its options.

    Each pass remembers which options the text set (`explicit_options`); then each pass adjusts the passes
    before it (`Pass.adjust_earlier_passes`).
    """
    passes: list[Pass] = []
    for raw in split_top_level(text.strip(), ","):
        entry = raw.strip()
        if not entry:
            if text.strip():
                raise PipelineError(f"empty pass name in pipeline '{text}'")
            continue
        name, options = _split_entry(entry)
        named = get_named_pipeline(name)
        if named is not None:
            passes.extend(_expand_named(name, named, options))
            continue
        cls = get_pass(name)
        explicit = {key.replace("-", "_"): f"{name}{{{key}={value}}}" for key, value in options.items()}
        passes.append(cls(build_options(cls.Options, options, name), explicit))
    return settle_pipeline(passes)


def pipeline_options(named: NamedPipeline, passes: list[Pass] | None = None) -> list[PipelineOption]:
    """The options a named pipeline takes: those that route to a pass it runs."""
    names = {p.name for p in (passes if passes is not None else parse_pipeline(named.text))}
    return [option for option in named.options if any(route[0] in names for route in option.routes)]


def _expand_named(name: str, named: NamedPipeline, given: dict[str, str]) -> list[Pass]:
    """The passes of a named pipeline with its options `given` as text (`target=trt11`) applied."""
    passes = parse_pipeline(named.text)
    if not given:
        return passes
    valid = {option.name: option for option in pipeline_options(named, passes)}
    for key, text in given.items():
        if key not in valid:
            listed = ", ".join(valid) or "none"
            raise PipelineError(f"pipeline '{name}' has no option '{key}' (valid options: {listed})")
        option = valid[key]
        value = parse_value(text, option.annotation(), f"{name}{{{key}}}")
        set_option(passes, option, value, f"{name}{{{key}={text}}}")
    return settle_pipeline(passes)


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
    if not dataclasses.is_dataclass(options) or isinstance(options, type):  # None, or not an Options instance
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
