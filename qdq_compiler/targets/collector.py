"""Pause Python's cyclic garbage collector around work on a whole model (lint, fusion prediction)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (restored after): copying, rewriting and checking a big graph
    allocate many objects that stay alive, and each collection would walk the whole graph again to find
    no garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
