"""Calibration statistics of a large dataset, collected by several workers and merged.

:func:`collect_sharded` gives the statistics that ``calib.collect_statistics`` gives in one process, bit for
bit, with the model runs spread over workers:

* one pass (growing histograms): the first batches (normally just the first) are binned here, in order,
  until every histogram has its range; that range fixes the bin width. Every worker then bins its share of
  the remaining batches into histograms of that width (:meth:`TensorStats.empty_like`), which grow by
  appending bins and merge bin pairs when they pass ``max_bins``. Counting with a fixed width is
  order-free and pair merging is exact, so merging the workers' histograms (the finer coarsened to the
  coarser width first, :meth:`TensorStats.merge`) gives the one-pass histogram exactly.
* two passes (``exact``): the workers find each tensor's extremes, merged to the absmax; then they bin over
  exactly ``[0, absmax]`` (fixed bins), and fixed-bin histograms merge by adding counts.

``run_shards(seeds, shards)`` does the work: it streams every shard (a list of batches) into a copy of
``seeds`` and returns one statistics dict per shard; :func:`ray_shard_runner` does so as Ray tasks, and
tests pass an in-process one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from qdq_compiler.calib.collect import accumulate_statistics, collect_statistics
from qdq_compiler.calib.errors import CalibrationDataError
from qdq_compiler.calib.histogram import DEFAULT_NUM_BINS, TensorStats, check_same_pass

__all__ = ["ShardRunner", "collect_sharded", "local_shard_runner", "ray_shard_runner"]

Stats = dict[str, TensorStats]
Batch = Mapping[str, np.ndarray] | np.ndarray
ShardRunner = Callable[[Stats, Iterator[list[Batch]]], list[Stats]]
SHARD_BATCHES = 8  # batches sent to a worker at a time


def _shards(batches: Iterable[Batch], size: int) -> Iterator[list[Batch]]:
    iterator = iter(batches)
    while shard := list(itertools.islice(iterator, size)):
        yield shard


def _merge_all(into: Stats, parts: Iterable[Stats]) -> None:
    for part in parts:
        for name, stats in part.items():
            into[name].merge(stats)


def collect_sharded(
    model: onnx.ModelProto,
    tensor_names: Sequence[str],
    batches: Iterable[Batch],
    run_shards: ShardRunner,
    num_bins: int = DEFAULT_NUM_BINS,
    exact: bool = False,
    shard_batches: int = SHARD_BATCHES,
) -> Stats:
    """``collect_statistics(model, tensor_names, batches, num_bins, exact=exact)``, the batches binned by
    ``run_shards`` in shards of ``shard_batches``."""
    names = list(dict.fromkeys(tensor_names))
    if exact:
        first = {name: TensorStats(num_bins, name=name, histogram=False) for name in names}
        _merge_all(first, run_shards(first, _shards(batches, shard_batches)))
        if not any(item.count + item.nan_count + item.inf_count for item in first.values()):
            raise CalibrationDataError("calibration data produced no batches (count 0)")
        fixed = {name: TensorStats(num_bins, name=name, fixed_range=first[name].absmax) for name in names}
        _merge_all(fixed, run_shards(fixed, _shards(batches, shard_batches)))
        for name in names:
            try:
                check_same_pass(first[name], fixed[name])
            except ValueError as exc:
                raise CalibrationDataError(f"exact calibration: the second pass differs: {exc}") from None
        return fixed
    iterator = iter(batches)
    seed_batches: list[Batch] = []
    seed: Stats = {}
    while not seed or any(item.binning == "grow" and item.range == 0.0 for item in seed.values()):
        batch = next(iterator, None)
        if batch is None:
            break
        seed_batches.append(batch)  # the first batches fix the bin widths: binned here, in order
        seed = collect_statistics(model, names, seed_batches, num_bins=num_bins, workers=1)
    if not seed:
        raise CalibrationDataError("calibration data produced no batches (count 0)")
    empty = {name: stats.empty_like() for name, stats in seed.items()}
    _merge_all(seed, run_shards(empty, _shards(iterator, shard_batches)))
    return seed


def local_shard_runner(model: onnx.ModelProto) -> ShardRunner:
    """Bins each shard in this process (what a Ray worker does, for tests and one machine)."""

    def run(seeds: Stats, shards: Iterator[list[Batch]]) -> list[Stats]:
        results = []
        for shard in shards:
            stats = {name: item.copy() for name, item in seeds.items()}
            accumulate_statistics(model, stats, shard)
            results.append(stats)
        return results

    return run


def _bin_shard(model: bytes, seeds: Stats, shard: list[Batch]) -> Stats:
    """A Ray task: ``shard`` binned into a copy of ``seeds``."""
    stats = {name: item.copy() for name, item in seeds.items()}
    accumulate_statistics(onnx.load_from_string(model), stats, shard)
    return stats


def ray_shard_runner(model: onnx.ModelProto, workers: int) -> ShardRunner:
    """Bins shards as Ray tasks (Ray already started), at most ``2 * workers`` in flight so the data stream
    through; the results come back in shard order. Tasks, not actors: their worker processes stay in Ray's
    pool, where the evaluation actors start next without starting new interpreters."""
    import ray

    from qdq_compiler.search.executors import ray_results

    model_ref = ray.put(model.SerializeToString())
    task: Any = ray.remote(num_cpus=1)(_bin_shard)

    def run(seeds: Stats, shards: Iterator[list[Batch]]) -> list[Stats]:
        seeds_ref = ray.put(seeds)
        pending: list[Any] = []
        results: list[Stats] = []
        for shard in shards:
            pending.append(task.remote(model_ref, seeds_ref, shard))
            if len(pending) >= 2 * workers:
                done, pending = pending[:workers], pending[workers:]
                results += ray_results(lambda done=done: ray.get(done))
        return results + ray_results(lambda: ray.get(pending))

    return run


def sharded_collector(run_shards_for: Callable[[onnx.ModelProto], ShardRunner]) -> Callable[..., Stats]:
    """A ``PassContext.statistics_collector``: calibrate's statistics by :func:`collect_sharded`."""

    def collect(
        model: onnx.ModelProto,
        tensor_names: Sequence[str],
        batches: Iterable[Batch],
        num_bins: int = DEFAULT_NUM_BINS,
        progress: object = None,
        exact: bool = False,
        workers: int | None = None,
    ) -> Stats:
        return collect_sharded(model, tensor_names, batches, run_shards_for(model), num_bins, exact)

    return collect
