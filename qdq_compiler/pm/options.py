"""Typed pass options: text <-> dataclass values, kebab-case names in text."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from qdq_compiler.errors import PipelineError


def kebab(name: str) -> str:
    """Python field name to pipeline-text option name."""
    return name.replace("_", "-")


def field_types(options_cls: type) -> dict[str, Any]:
    """Resolved type hints of an Options dataclass (string annotations evaluated)."""
    return typing.get_type_hints(options_cls)


def parse_value(text: str, annotation: Any, where: str) -> Any:
    """Convert the option text `text` to a value of `annotation` (bool, int, float, str, tuple, Optional)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        if text in ("none", "None", "") and len(non_none) < len(args):
            return None
        return parse_value(text, non_none[0], where)
    if origin in (tuple, list):
        inner = args[0] if args else str
        items = split_list(text)
        return tuple(parse_value(item, inner, where) for item in items)
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise PipelineError(f"{where}: expected true or false, got '{text}'")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise PipelineError(f"{where}: expected an integer, got '{text}'") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise PipelineError(f"{where}: expected a number, got '{text}'") from None
    if typing.get_origin(annotation) is typing.Literal:
        if text not in args:
            raise PipelineError(f"{where}: expected one of {', '.join(args)}, got '{text}'")
        return text
    return unquote(text)


def split_list(text: str) -> list[str]:
    """`[a,b]` or `a` into items; commas inside quotes or brackets do not split."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    if not body.strip():
        return []
    return [item.strip() for item in split_top_level(body, ",")]


def split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside quotes, brackets and braces."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def unquote(text: str) -> str:
    """Strip one level of matching quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def format_value(value: Any) -> str:
    """Inverse of parse_value for printing pipelines."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if value is None:
        return "none"
    text = str(value)
    if any(c in text for c in ",{}[]= '\""):
        return '"' + text + '"'
    return text


def build_options(options_cls: type, given: dict[str, str], pass_name: str) -> Any:
    """Instantiate an Options dataclass from kebab-case text options; unknown names list the valid ones."""
    fields = {kebab(f.name): f for f in dataclasses.fields(options_cls)}
    types = field_types(options_cls)
    values: dict[str, Any] = {}
    for key, text in given.items():
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "none"
            raise PipelineError(f"pass '{pass_name}' has no option '{key}' (valid options: {valid})")
        field = fields[key]
        values[field.name] = parse_value(text, types[field.name], f"{pass_name}{{{key}}}")
    try:
        return options_cls(**values)
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"pass '{pass_name}': {exc}") from None
