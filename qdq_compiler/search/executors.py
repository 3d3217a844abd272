"""Where the variants run: in this process, in a local process pool, or on a Ray cluster.

Every executor takes one :class:`~qdq_compiler.search.engine.EvalSetup` when it starts (sent to each worker
once), measures a list of independent variants with :meth:`Executor.map` and returns the measurements in
the order of the list, whichever worker finished first. The measurements depend only on the setup and the
variant, so the executor and the number of workers change the wall time, never the result.

    with make_executor(setup, workers=4) as executor:          # or ray="auto" / "ray://host:10001"
        measurements = executor.map([Variant(("conv1",)), Variant(("conv2",))])

A worker holds the setup (statistics, evaluation batches, float outputs) and one variant's model and batch
outputs at a time.
"""

from __future__ import annotations

import abc
import concurrent.futures
import logging
import multiprocessing
import os
import pickle
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from qdq_compiler.calib.collect import cpu_count
from qdq_compiler.errors import QdqcError
from qdq_compiler.search.engine import EvalSetup, Evaluator, Measurement, Variant

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "Executor",
    "InProcessExecutor",
    "PoolExecutor",
    "RayExecutor",
    "default_workers",
    "make_executor",
]

DEFAULT_MAX_WORKERS = 8
LOCAL_RAY = "local"  # --ray without an address: start a local Ray instance


def default_workers() -> int:
    """One worker per core this process may use, at most :data:`DEFAULT_MAX_WORKERS`."""
    return min(cpu_count(), DEFAULT_MAX_WORKERS)


class Executor(abc.ABC):
    """Measures variants over one setup; a context manager that stops its workers on exit."""

    name = "executor"
    workers = 1

    @abc.abstractmethod
    def map(self, variants: Sequence[Variant]) -> list[Measurement]:
        """The measurement of every variant, in the order given."""

    def close(self) -> None:  # noqa: B027 (nothing to stop for an executor running in this process)
        """Stop the workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Every variant in this process, one after the other."""

    name = "in-process"

    def __init__(self, setup: EvalSetup) -> None:
        self.evaluator = Evaluator(setup)

    def map(self, variants: Sequence[Variant]) -> list[Measurement]:
        return [self.evaluator(variant) for variant in variants]


_worker_evaluator: Evaluator | None = None  # the setup of a pool worker process


def _start_worker(setup_bytes: bytes) -> None:
    global _worker_evaluator
    from qdq_compiler.pm import load_passes

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_passes()
    _worker_evaluator = Evaluator(pickle.loads(setup_bytes))


def _measure_in_worker(variant: Variant) -> Measurement:
    assert _worker_evaluator is not None, "the pool worker was not started with a setup"
    return _worker_evaluator(variant)


class PoolExecutor(Executor):
    """A local pool of ``workers`` processes (spawned: a fresh interpreter each, no onnxruntime state shared
    by fork); each gets the setup once."""

    name = "pool"

    def __init__(self, setup: EvalSetup, workers: int) -> None:
        if workers < 1:
            raise QdqcError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(pickle.dumps(setup, protocol=pickle.HIGHEST_PROTOCOL),),
        )

    def map(self, variants: Sequence[Variant]) -> list[Measurement]:
        try:
            return list(self.pool.map(_measure_in_worker, variants))
        except concurrent.futures.process.BrokenProcessPool:
            raise QdqcError("a --workers process died (out of memory?); try fewer --workers") from None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _RayWorker:
    """A Ray actor holding one setup (made a remote class by :class:`RayExecutor`)."""

    def __init__(self, setup: EvalSetup) -> None:
        from qdq_compiler.pm import load_passes

        load_passes()
        self.evaluator = Evaluator(setup)

    def measure(self, variant: Variant) -> Measurement:
        return self.evaluator(variant)


def start_ray(address: str, workers: int | None) -> bool:
    """Connect to Ray at ``address`` (:data:`LOCAL_RAY`: start a local instance of ``workers`` CPUs, no
    dashboard). True when this call started it (then :func:`ray.shutdown` is ours to call)."""
    try:
        import ray
    except ImportError:
        raise QdqcError("--ray needs Ray: pip install -e '.[ray]'") from None
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "configure_logging": False,
    }
    try:
        if address == LOCAL_RAY:
            ray.init(num_cpus=workers or default_workers(), **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise QdqcError(f"--ray {address}: cannot connect ({str(exc).splitlines()[0]})") from None
    return True


class RayExecutor(Executor):
    """Actors on a Ray cluster (a local one for :data:`LOCAL_RAY`), one CPU each: as many as ``workers``,
    else as many as the cluster has CPUs. The setup goes to the object store once."""

    name = "ray"

    def __init__(self, setup: EvalSetup, address: str = LOCAL_RAY, workers: int | None = None) -> None:
        import ray
        from ray.util import ActorPool

        self.started = start_ray(address, workers)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers or cpus, cpus))
        setup_ref = ray.put(setup)
        actor: Any = ray.remote(num_cpus=1)(_RayWorker)
        self.actors: list[Any] = [actor.remote(setup_ref) for _ in range(self.workers)]
        self.pool = ActorPool(self.actors)

    def map(self, variants: Sequence[Variant]) -> list[Measurement]:
        return ray_results(
            self.pool.map(lambda worker, variant: worker.measure.remote(variant), list(variants))
        )

    def close(self) -> None:
        import ray

        for worker in self.actors:
            ray.kill(worker)
        self.actors = []
        if self.started:
            ray.shutdown()


def ray_results(results: Any) -> list:
    """The results of Ray tasks as a list (``results``: an iterable, or a function returning one, such as
    ``lambda: ray.get(refs)``); a user error raised in a worker is raised here as itself."""
    from ray.exceptions import RayTaskError

    try:
        return list(results() if callable(results) else results)
    except RayTaskError as exc:
        if isinstance(exc.cause, QdqcError):
            raise exc.cause from None
        raise


def make_executor(setup: EvalSetup, workers: int | None = None, ray: str | None = None) -> Executor:
    """Ray when ``ray`` is an address (or :data:`LOCAL_RAY`), else a pool of ``workers`` processes (default:
    one per core), in this process for one worker."""
    if ray is not None:
        return RayExecutor(setup, ray, workers)
    count = default_workers() if workers is None else workers
    if count <= 1:
        return InProcessExecutor(setup)
    return PoolExecutor(setup, count)
