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
    is not in a cycle; the cycles left behind (erased nodes and their values) wait for the collector's
    next full collection. Nested blocks are free.

    On leaving, what the block made is moved to the oldest generation unscanned (``gc.freeze`` then
    ``gc.unfreeze``, when nothing else froze objects): left in the youngest, it would all be walked by
    the young collection that the first allocation after the block triggers.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()
