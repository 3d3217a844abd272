"""Pausing Python's cyclic garbage collector around work that builds large graphs."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block; the collector's state is restored after it.

    Compiling, copying or rewriting a graph allocates many objects that stay alive (nodes, values,
    tensors), and every collection walks them again to find little garbage: on a 20k-node graph the
    collections took about a second of a pipeline run. Reference counting still frees everything that
    is not in a cycle; the cycles left behind (erased nodes and their values) wait for the first
    collection after the block, as they waited for the end of a run before. Nested blocks are free.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
