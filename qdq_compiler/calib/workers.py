"""One calibration pass: worker threads each run the model on a batch and bin its tensors.

A worker takes a whole batch: it runs the onnxruntime session (which releases the GIL) and then updates
every observed tensor's :class:`TensorStats`, one tensor at a time under that tensor's lock. With one
worker per core and one onnxruntime thread per run, the cores stay busy: one batch's model run goes on while
another batch is binned, and no thread waits on a slower partner inside a parallel operator.

The result does not depend on which worker finishes first: batches are binned in batch order until every
growing histogram has its range (normally just the first batch), and after that every statistic of float32
tensors is order-free (counts add up, extremes are min / max, a grown or merged histogram depends only on
the largest value; see ``histogram.py``; float64 tensors may put a value next to a bin edge one bin off).
"""

from __future__ import annotations

import concurrent.futures
import enum
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .data import validate_batch
from .histogram import TensorStats
from .progress import Progress

__all__ = ["run_pass"]


class _End(enum.Enum):
    """The end of the batches (an enum member, so ``batch is _END`` narrows the type)."""

    END = enum.auto()


_END = _End.END


class _Shared:
    """What the workers of one pass share: per-tensor locks, the binning order, a failure flag.

    Until every growing histogram has its range (normally after the first batch; later if the first
    batches hold only zeros or NaN for some tensor), batches are binned strictly in batch order.
    """

    def __init__(self, stats: Mapping[str, TensorStats], bar: Progress | None) -> None:
        self.stats = stats
        self.locks = {name: threading.Lock() for name in stats}
        self.turn = threading.Condition()
        self.next_index = 0  # the batch whose turn it is while binning is ordered
        self.failed = threading.Event()
        self.bar = bar
        self.bar_lock = threading.Lock()

    def ordered(self) -> bool:
        """True while some growing histogram has no range yet (its bins depend on which batch comes first)."""
        return any(item.binning == "grow" and item.range == 0.0 for item in self.stats.values())

    def wait_turn(self, index: int) -> bool:
        """Block until batch ``index`` may be binned; False if the pass failed meanwhile."""
        with self.turn:
            self.turn.wait_for(lambda: self.failed.is_set() or self.next_index == index or not self.ordered())
            return not self.failed.is_set()

    def done(self, index: int) -> None:
        with self.turn:
            self.next_index = max(self.next_index, index + 1)
            self.turn.notify_all()

    def fail(self) -> None:
        with self.turn:
            self.failed.set()
            self.turn.notify_all()


def _bin_batch(shared: _Shared, index: int, values: Mapping[str, np.ndarray]) -> None:
    """Update every tensor of ``values``; take whichever tensor's lock is free first."""
    pending = list(values.items())
    while pending:
        locked = (k for k, (name, _) in enumerate(pending) if shared.locks[name].acquire(blocking=False))
        free = next(locked, None)
        if free is None:  # all busy: wait for the first
            free = 0
            shared.locks[pending[0][0]].acquire()
        name, value = pending.pop(free)
        try:
            if index == 0 and not np.issubdtype(value.dtype, np.floating):
                raise ValueError(f"tensor {name!r} is {value.dtype}: only float tensors calibrate")
            shared.stats[name].update(value)
        finally:
            shared.locks[name].release()


def _work(
    shared: _Shared, session: Any, fetch: list[str], index: int, feed: Mapping[str, np.ndarray], samples: int
) -> None:
    """Run batch ``index`` and bin it when its turn comes (see :class:`_Shared`)."""
    try:
        outputs = session.run(fetch, feed) if fetch else []
        if not shared.wait_turn(index):
            return
        values = {name: feed[name] for name in shared.stats if name in feed}
        values.update((name, out) for name, out in zip(fetch, outputs, strict=True) if name in shared.stats)
        _bin_batch(shared, index, values)
        shared.done(index)
        if shared.bar is not None:
            with shared.bar_lock:
                shared.bar.update(samples)
    except BaseException:
        shared.fail()
        raise


def _samples(feed: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feed.values()))
    return int(first.shape[0]) if first.ndim else 1


def run_pass(
    session: Any,
    batches: Iterable[Mapping[str, np.ndarray] | np.ndarray],
    specs: Sequence[Any],
    fetch: list[str],
    stats: Mapping[str, TensorStats],
    bar: Progress | None,
    workers: int,
) -> int:
    """Feed every batch to ``workers`` threads; update ``stats``; return the number of batches.

    At most ``workers`` batches are in flight, and the next batch is read only when a worker is free. With
    more than one worker, a batch is copied as it is handed over, so a reader may reuse its arrays.
    Once a batch fails (or the reader does), no further batch is read or binned; after the batches in
    flight are done, the reader's error is raised, else the first worker error in batch order (batches
    that stopped because of it raise nothing).
    """
    shared = _Shared(stats, bar)
    slots = threading.Semaphore(workers)
    futures: list[concurrent.futures.Future[None]] = []
    count = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qdqc-calib") as pool:
        iterator = iter(batches)
        try:
            while True:
                slots.acquire()
                if shared.failed.is_set():
                    break
                batch = next(iterator, _END)
                if batch is _END:
                    break
                feed = validate_batch(batch, specs, f"calibration batch {count}")
                if workers > 1:
                    feed = {name: np.array(array, copy=True) for name, array in feed.items()}
                future = pool.submit(_work, shared, session, fetch, count, feed, _samples(feed))
                future.add_done_callback(lambda _: slots.release())
                futures.append(future)
                futures = [item for item in futures if not item.done() or item.exception() is not None]
                count += 1
        except BaseException:
            shared.fail()
            raise
        finally:
            concurrent.futures.wait(futures)
    for future in futures:
        future.result()  # the first failure, if any
    return count
