"""Warnings a pass gives the user: once per pass context, with short lists of names.

`qdqc sensitivity` runs place-qdq and calibrate once per variant over one context; a warning about the
user's options or data (an exclusion that matches nothing, all-zero tensors) is given the first time only.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from qdq_compiler.pm import PassContext

NAMES_SHOWN = 3

# id(context) -> (weak reference to it, messages already given); stale entries are dropped when seen
_GIVEN: dict[int, tuple[weakref.ref, set[str]]] = {}


def first_names(names: Sequence[str], limit: int = NAMES_SHOWN) -> str:
    """``'a', 'b', 'c' and 2 more``: the first few names of a list, quoted."""
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def warn_once(ctx: PassContext, message: str, *args: Any) -> None:
    """``ctx.logger.warning(message, *args)`` unless this context has given the same text already."""
    text = message % args if args else message
    entry = _GIVEN.get(id(ctx))
    if entry is None or entry[0]() is not ctx:
        for key in [key for key, (ref, _) in _GIVEN.items() if ref() is None]:
            del _GIVEN[key]
        entry = (weakref.ref(ctx), set())
        _GIVEN[id(ctx)] = entry
    if text in entry[1]:
        return
    entry[1].add(text)
    ctx.logger.warning("%s", text)
