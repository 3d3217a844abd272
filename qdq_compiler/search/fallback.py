"""Fallback to a target: keep the fewest MACs float (FP16 on trt11) that bring the model to an accuracy goal.

The search measures variants with the evaluation engine (:mod:`qdq_compiler.search.engine`), each batch of
independent variants in one :meth:`Executor.map`:

1. **baseline**: all INT8 (what compile writes without the search); done if it reaches the goal.
2. **rank**: every unit alone kept float. A unit is one INT8 layer, or a *scale group*: the INT8 layers
   whose activation inputs TensorRT must give one scale (a Concat's consumers, layers reading the same
   tensor...; :func:`qdq_compiler.quant.scale_groups.scale_groups`), which can only gain together.
3. **add** (greedy with re-measurement): each round measures the current float set plus each of the
   ``beam`` units with the largest last-measured gain, and keeps the best (fewest MACs on ties). Gains are
   measured on the cumulative model, so damage spread over many layers, or two layers hiding the same
   error, is seen as it is. The first round whose best variant reaches the goal ends this phase (the
   variant reaching it with the fewest float MACs is kept).
4. **drop**: each round measures the float set without each of its units, and drops the largest unit
   whose removal still reaches the goal, until none can go.

Every phase stops when ``budget`` evaluations are spent. The steps are data (:class:`SearchStep`), so a
report can draw the fallback curve. The choice depends only on the measurements, so on no executor.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx_ir as ir

from qdq_compiler.ir.access import input_of
from qdq_compiler.quant.decisions import layer_decisions
from qdq_compiler.quant.scale_groups import scale_groups, underlying_tensor
from qdq_compiler.search.engine import EvalSetup, Measurement, Variant
from qdq_compiler.targets import predict_fusions

__all__ = [
    "DEFAULT_BEAM",
    "FallbackResult",
    "Goal",
    "SearchStep",
    "Unit",
    "fallback_units",
    "search_fallback",
]

DEFAULT_BEAM = 4


@dataclass(frozen=True)
class Goal:
    """``sqnr``: SQNR over all outputs at least ``target`` dB; ``metric-drop``: the task metric at most
    ``target`` below FP32's (``reference``)."""

    kind: str  # "sqnr" or "metric-drop"
    target: float
    reference: float | None = None  # FP32's metric (metric-drop)
    metric_name: str = ""

    def score(self, measured: Measurement) -> float:
        """Higher is better; NaN (outputs with NaN or Inf, no metric) counts as the worst."""
        value = measured.sqnr_db if self.kind == "sqnr" else measured.metric
        return -math.inf if value is None or math.isnan(value) else value

    def reached(self, measured: Measurement) -> bool:
        if self.kind == "sqnr":
            return self.score(measured) >= self.target
        assert self.reference is not None
        return self.reference - self.score(measured) <= self.target + 1e-12

    def describe(self) -> str:
        if self.kind == "sqnr":
            return f"SQNR >= {self.target:g} dB"
        return f"{self.metric_name} >= {self.reference:.4f} - {self.target:g} (FP32 {self.reference:.4f})"


@dataclass(frozen=True)
class Unit:
    """Layers kept float together: one layer, or a scale group's INT8 layers."""

    label: str
    layers: tuple[str, ...]
    macs: int


@dataclass(frozen=True)
class SearchStep:
    """One measured state of the search: which unit it added or dropped, and where that left the model."""

    phase: str  # "baseline", "add" or "drop"
    unit: str  # the unit's label ("" for the baseline)
    float_layers: tuple[str, ...]  # layers the search keeps float at this step (cumulative)
    sqnr_db: float
    metric: float | None
    int8_mac_share: float
    reached: bool


@dataclass(frozen=True)
class FallbackResult:
    """The search's steps, the single-unit ranking, and its choice."""

    goal: Goal
    steps: list[SearchStep]
    ranking: list[tuple[Unit, Measurement]]  # every unit measured alone, best first
    chosen: tuple[str, ...]  # layers to keep float (empty: all INT8 reaches the goal)
    reached: bool
    evaluations: int
    final: Measurement  # the chosen variant's measurement (the best seen when the goal was not reached)
    budget_spent: bool = False


def fallback_units(model: ir.Model) -> list[Unit]:
    """The compiled model's INT8 layers one by one (unique names only), then its scale groups of two or
    more INT8 layers, in graph order."""
    decisions = layer_decisions(model)
    counts = Counter(node.name for node in model.graph)
    macs = {layer.name: layer.macs or 0 for layer in predict_fusions(model).layers}
    int8 = [name for name, d in decisions.items() if d.int8 and name and counts[name] == 1]
    units = [Unit(name, (name,), macs.get(name, 0)) for name in int8]
    group_of: dict[int, int] = {}
    for index, group in enumerate(scale_groups(model.graph)):
        for tensor in group:
            group_of[id(tensor)] = index
    # layers reading tensors of one scale group, or one tensor (one quantizer), in graph order
    members: dict[tuple[str, int], list[str]] = defaultdict(list)
    wanted = set(int8)
    for node in model.graph:
        if node.name in wanted and node.inputs and node.inputs[0] is not None:
            tensor = underlying_tensor(input_of(node, 0))
            key = ("group", group_of[id(tensor)]) if id(tensor) in group_of else ("tensor", id(tensor))
            members[key].append(node.name)
    for layers in members.values():
        if len(layers) > 1:
            label = f"group({layers[0]} +{len(layers) - 1})"
            units.append(Unit(label, tuple(layers), sum(macs.get(name, 0) for name in layers)))
    return units


class _Budget:
    def __init__(self, limit: int | None) -> None:
        self.limit, self.used = limit, 0

    def take(self, wanted: int) -> int:
        allowed = wanted if self.limit is None else max(0, min(wanted, self.limit - self.used))
        self.used += allowed
        return allowed

    @property
    def spent(self) -> bool:
        return self.limit is not None and self.used >= self.limit


def search_fallback(
    setup: EvalSetup,
    units: Sequence[Unit],
    goal: Goal,
    measure: Callable[[Sequence[Variant]], list[Measurement]],
    baseline: Measurement,
    budget: int | None = None,
    beam: int = DEFAULT_BEAM,
    on_step: Callable[[SearchStep], None] | None = None,
) -> FallbackResult:
    """Search the float set reaching ``goal`` with the fewest float MACs (see the module docstring).

    ``measure`` is an executor's :meth:`map`; ``baseline`` the all-INT8 measurement (counted as one
    evaluation); ``on_step`` sees every step as it is taken.
    """
    spend = _Budget(budget)
    spend.take(1)
    steps: list[SearchStep] = []

    def record(phase: str, unit: str, layers: tuple[str, ...], measured: Measurement) -> None:
        step = SearchStep(
            phase,
            unit,
            layers,
            measured.sqnr_db,
            measured.metric,
            measured.int8_mac_share,
            goal.reached(measured),
        )
        steps.append(step)
        if on_step is not None:
            on_step(step)

    record("baseline", "", (), baseline)
    macs = {name: unit.macs for unit in units if len(unit.layers) == 1 for name in unit.layers}

    def cost(layers: Sequence[str]) -> int:
        return sum(macs.get(name, 0) for name in set(layers))

    def result(chosen: tuple[str, ...], final: Measurement, reached: bool, ranking: list) -> FallbackResult:
        return FallbackResult(goal, steps, ranking, chosen, reached, spend.used, final, spend.spent)

    if goal.reached(baseline):
        return result((), baseline, True, [])

    # rank: every unit alone
    ranked_units = list(units)[: spend.take(len(units))]
    alone = measure([Variant(unit.layers) for unit in ranked_units])
    base_score = goal.score(baseline)
    gain = {unit.label: goal.score(m) - base_score for unit, m in zip(ranked_units, alone, strict=True)}
    ranking = sorted(
        zip(ranked_units, alone, strict=True),
        key=lambda pair: (-goal.score(pair[1]), pair[0].macs, pair[0].label),
    )

    # add: greedy on the cumulative model
    current: tuple[str, ...] = ()
    current_measure = baseline
    best_seen = baseline
    reached: Measurement | None = None
    pool = {unit.label: unit for unit, _ in ranking}
    while reached is None and not spend.spent:
        open_units = [unit for unit in pool.values() if not set(unit.layers) <= set(current)]
        if not open_units:
            break
        open_units.sort(key=lambda unit: (-gain[unit.label], unit.macs, unit.label))
        trial = open_units[: spend.take(min(beam, len(open_units)))]
        if not trial:
            break
        candidates = [tuple(sorted(set(current) | set(unit.layers))) for unit in trial]
        measured = measure([Variant(layers) for layers in candidates])
        before = goal.score(current_measure)
        for unit, m in zip(trial, measured, strict=True):
            gain[unit.label] = goal.score(m) - before
        options = list(zip(trial, candidates, measured, strict=True))
        reaching = [option for option in options if goal.reached(option[2])]
        if reaching:
            unit, layers, m = min(reaching, key=lambda o: (cost(o[1]), -goal.score(o[2]), o[0].label))
        else:
            unit, layers, m = min(options, key=lambda o: (-goal.score(o[2]), cost(o[1]), o[0].label))
        current, current_measure = layers, m
        record("add", unit.label, current, m)
        if goal.score(m) > goal.score(best_seen):
            best_seen = m
        if goal.reached(m):
            reached = m
    if reached is None:
        best_layers = best_seen.variant.float_layers
        return result(best_layers, best_seen, False, ranking)

    # drop: remove what is not needed any more, largest first
    while not spend.spent and len(current) > 0:
        held = [unit for unit in pool.values() if set(unit.layers) <= set(current)]
        held.sort(key=lambda unit: (-unit.macs, unit.label))
        trial = held[: spend.take(len(held))]
        if not trial:
            break
        candidates = [tuple(name for name in current if name not in unit.layers) for unit in trial]
        measured = measure([Variant(layers) for layers in candidates])
        dropped = next(
            (option for option in zip(trial, candidates, measured, strict=True) if goal.reached(option[2])),
            None,
        )
        if dropped is None:
            break
        unit, current, reached = dropped
        record("drop", unit.label, current, reached)
    return result(current, reached, True, ranking)
