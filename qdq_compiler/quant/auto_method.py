"""``--method auto`` in the calibrate pass: a method per scale group, validated on the model's outputs.

1. Every candidate method's amax of every auto-calibrated tensor, from the one statistics pass.
2. The **per-tensor mix**: each scale group (or lone tensor) takes the candidate with the best local SQNR
   (:mod:`qdq_compiler.calib.auto`), one candidate for all members of a group.
3. **Validation** (``validate=true``): the mix and every candidate used for all auto tensors (the
   "global" variants) are variants of the evaluation engine (:mod:`qdq_compiler.search.method_auto`):
   each is compiled by the real pipeline from the one statistics pass and measured against the float
   model's cached outputs on the first ``samples`` samples of ``--eval`` (else of the calibration data),
   in-process, in a pool or on Ray, before the pipeline runs. Their end scores reach this pass as
   ``PassContext.auto_validation`` (:class:`AutoValidation`); the best variant is kept, a global one on a
   tie, so the kept model is the measured one.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from qdq_compiler.calib import MethodPlan, MethodSpec, TensorStats, compute_amax
from qdq_compiler.calib.auto import (
    AUTO,
    DEFAULT_CANDIDATES,
    DEFAULT_TOLERANCE_DB,
    LocalChoice,
    check_candidates,
    choose_for_group,
    choose_for_tensor,
)
from qdq_compiler.calib.methods import parse_method_spec
from qdq_compiler.quant.scale_groups import scale_groups

MIX = "per-tensor"  # the name of the per-tensor (per scale group) mix among the variants
AUTO_METADATA_KEY = "qdq_compiler.calibration_auto"


@dataclass(frozen=True)
class AutoOptions:
    """The options of an ``auto{...}`` spec, the candidates parsed."""

    candidates: tuple[MethodSpec, ...]
    tolerance: float = DEFAULT_TOLERANCE_DB
    validate: bool = True
    samples: int = 64
    score: str = "sqnr"  # or "metric": qdqc eval's task metric against FP32 first, SQNR on ties

    @classmethod
    def of(cls, spec: MethodSpec) -> AutoOptions:
        params = spec.kwargs
        texts = tuple(str(text) for text in params.get("candidates", DEFAULT_CANDIDATES))  # type: ignore[union-attr]
        check_candidates(texts)
        return cls(
            candidates=tuple(parse_method_spec(text) for text in texts),
            tolerance=float(params.get("tolerance", DEFAULT_TOLERANCE_DB)),
            validate=bool(params.get("validate", True)),
            samples=int(params.get("samples", 64)),
            score=str(params.get("score", "sqnr")),
        )


@dataclass(frozen=True)
class VariantScore:
    """One variant: its name, the auto tensors that chose it in the mix, its mean local SQNR over the auto
    tensors, and its end SQNR (None when not validated)."""

    name: str
    tensors_in_mix: int
    local_sqnr_db: float
    end_sqnr_db: float | None = None
    end_metric: float | None = None  # the task metric against FP32 (score=metric)


@dataclass
class AutoOutcome:
    """What auto chose: the amax of every calibrated tensor, the variant kept, the mix's method per tensor."""

    amax: dict[str, float]
    chosen: str
    methods: dict[str, str]  # auto tensor -> the method of the kept variant
    mix_methods: dict[str, str]  # auto tensor -> its method in the per-tensor mix
    variants: list[VariantScore] = field(default_factory=list)
    validated: bool = False
    samples: int = 0
    held_out: bool = False  # validated on evaluation data rather than on the calibration data
    metric: str | None = None  # the task metric's name when score=metric

    def counts(self) -> dict[str, int]:
        """Auto tensors per method in the kept result."""
        counted: dict[str, int] = {}
        for method in self.methods.values():
            counted[method] = counted.get(method, 0) + 1
        return dict(sorted(counted.items()))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready record (rounded, so the same inputs give the same bytes)."""
        return {
            "chosen": self.chosen,
            "validated": self.validated,
            "samples": self.samples,
            "validation_data": "evaluation" if self.held_out else "calibration",
            "metric": self.metric,
            "tensors_per_method": self.counts(),
            "variants": [
                {
                    "name": v.name,
                    "tensors_in_mix": v.tensors_in_mix,
                    "local_sqnr_db": _rounded(v.local_sqnr_db),
                    "end_sqnr_db": _rounded(v.end_sqnr_db),
                    "end_metric": _rounded(v.end_metric),
                }
                for v in self.variants
            ],
            "methods": dict(sorted(self.methods.items())),
        }


def _rounded(value: float | None) -> float | str | None:
    if value is None:
        return None
    return round(value, 4) if math.isfinite(value) else str(value)


# --------------------------------------------------------------------------- end scores
@dataclass(frozen=True)
class VariantResult:
    """A variant's end scores: SQNR (dB, all outputs) and, with score=metric, the task metric."""

    sqnr_db: float
    metric: float | None = None
    metric_name: str | None = None

    def key(self, by_metric: bool) -> tuple[float, float]:
        """Larger is better: the metric first (score=metric; unmeasured counts lowest), then SQNR."""
        metric = self.metric if self.metric is not None and by_metric else -math.inf
        return (metric, self.sqnr_db)


@dataclass(frozen=True)
class AutoValidation:
    """End scores of auto's variants (each candidate for every auto tensor, and the per-tensor mix), measured
    by the evaluation engine (:mod:`qdq_compiler.search.method_auto`) before the pipeline runs; calibrate
    reads them from ``PassContext.auto_validation`` and keeps the best. No scores: keep the mix unvalidated
    without a warning (the engine's own compiles, or a warning already given)."""

    scores: Mapping[str, VariantResult] = field(default_factory=dict)
    samples: int = 0
    held_out: bool = False  # measured on evaluation data rather than on the calibration data


UNVALIDATED = AutoValidation()


# --------------------------------------------------------------------------- the choice
def auto_tensors(plan: MethodPlan, names: Sequence[str], op_types: Mapping[str, Iterable[str]]) -> list[str]:
    """The tensors ``plan`` calibrates with auto."""
    return [name for name in names if plan.method_for(name, op_types.get(name, ())).name == AUTO]


def lead_auto_spec(
    plan: MethodPlan, names: Sequence[str], op_types: Mapping[str, Iterable[str]]
) -> MethodSpec:
    """The auto spec whose options apply: the plan's default when it is auto, else the first override's."""
    default = parse_method_spec(plan.default)
    if default.name == AUTO:
        return default
    return plan.method_for(names[0], op_types.get(names[0], ()))


def _units(graph: ir.Graph, auto: Sequence[str], calibrated: set[str]) -> list[list[str]]:
    """Scale groups (their calibrated members) that hold an auto tensor, then the other auto tensors alone."""
    units, grouped, wanted = [], set(), set(auto)
    for group in scale_groups(graph):
        members = [value.name for value in group if value.name in calibrated]
        if len(members) > 1 and any(name in wanted for name in members):
            units.append(members)
            grouped.update(members)
    return units + [[name] for name in auto if name not in grouped]


def choose_auto(
    model: ir.Model,
    stats: Mapping[str, TensorStats],
    fixed_amax: Mapping[str, float],
    auto: Sequence[str],
    options: AutoOptions,
    validation: AutoValidation | None,
    logger: logging.Logger,
    guard: Callable[[dict[str, float]], object] = lambda amax: None,
) -> AutoOutcome:
    """Choose the amax of the ``auto`` tensors (``fixed_amax`` holds every other calibrated tensor's).

    ``validation`` holds the engine's end scores of every variant (None: nobody measured them, which is
    warned about); ``guard`` fixes up an amax dict in place (all-zero tensors) before a variant is kept.
    """
    candidates = [str(spec) for spec in options.candidates]
    amax_of = {name: [compute_amax(stats[name], spec) for spec in options.candidates] for name in auto}
    auto_set = set(auto)
    mix_index: dict[str, int] = {}
    local_scores: dict[str, tuple[float, ...]] = {}
    for unit in _units(model.graph, auto, set(fixed_amax) | auto_set):
        members = [name for name in unit if name in auto_set]
        if len(unit) == 1:
            choice = choose_for_tensor(stats[unit[0]], amax_of[unit[0]], options.tolerance)
        else:
            fixed = max((fixed_amax[name] for name in unit if name not in auto_set), default=0.0)
            choice = choose_for_group(
                {name: stats[name] for name in members},
                {name: amax_of[name] for name in members},
                options.tolerance,
                fixed,
            )
        for name in members:
            mix_index[name] = choice.chosen
            local_scores[name] = _own_scores(stats[name], amax_of[name], options.tolerance)
    mix_methods = {name: candidates[mix_index[name]] for name in sorted(auto)}
    variants = {
        text: {**fixed_amax, **{name: amax_of[name][i] for name in auto}} for i, text in enumerate(candidates)
    }
    variants[MIX] = {**fixed_amax, **{name: amax_of[name][mix_index[name]] for name in auto}}
    for amax in variants.values():
        guard(amax)
    scores = [
        VariantScore(
            text,
            sum(1 for method in mix_methods.values() if method == text),
            _mean_db([local_scores[name][i] for name in auto]),
        )
        for i, text in enumerate(candidates)
    ]
    scores.append(VariantScore(MIX, len(auto), _mean_db([local_scores[n][mix_index[n]] for n in auto])))
    outcome = AutoOutcome(
        amax=variants[MIX], chosen=MIX, methods=dict(mix_methods), mix_methods=mix_methods, variants=scores
    )
    if not options.validate:
        return outcome
    if validation is None:
        logger.warning(
            "method auto: its choice was not validated (the evaluation engine validates it before the "
            "pipeline runs: qdqc compile / sensitivity, or qdq_compiler.search.validate_method_auto); "
            "keeping the per-tensor mix"
        )
        return outcome
    names = list(variants)
    missing = [name for name in names if name not in validation.scores]
    if missing and validation.scores:
        raise ValueError(f"auto validation lacks the variant(s) {', '.join(missing)}")  # engine bug
    if missing:
        return outcome
    end = [validation.scores[name] for name in names]
    by_metric = options.score == "metric"
    # the first of equal scores: a single method before the mix
    best = max(range(len(names)), key=lambda i: (end[i].key(by_metric), -i))
    outcome.variants = [
        VariantScore(score.name, score.tensors_in_mix, score.local_sqnr_db, end[i].sqnr_db, end[i].metric)
        for i, score in enumerate(scores)
    ]
    outcome.validated, outcome.samples, outcome.held_out = True, validation.samples, validation.held_out
    outcome.metric = end[0].metric_name
    outcome.chosen = names[best]
    outcome.amax = variants[names[best]]
    if names[best] != MIX:
        outcome.methods = {name: names[best] for name in sorted(auto)}
    return outcome


def _own_scores(stats: TensorStats, amaxes: Sequence[float], tolerance: float) -> tuple[float, ...]:
    choice: LocalChoice = choose_for_tensor(stats, amaxes, tolerance)
    return choice.scores_db


def _mean_db(values: Sequence[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return float(np.mean(finite)) if finite else math.inf


# --------------------------------------------------------------------------- report
def format_auto_table(outcome: AutoOutcome) -> str:
    """The per-method table the calibrate pass logs at info level."""
    lines = [
        f"method auto: kept {outcome.chosen!r}"
        + (
            f" (end SQNR on {outcome.samples} batch(es) of the "
            + ("evaluation data)" if outcome.held_out else "calibration data: in-sample, --eval is safer)")
            if outcome.validated
            else " (not validated)"
        ),
        f"  {'variant':<24} {'tensors in mix':>14} {'local SQNR dB':>14} {'end SQNR dB':>12}"
        + (f" {outcome.metric:>12}" if outcome.metric else ""),
    ]
    for variant in outcome.variants:
        end = "-" if variant.end_sqnr_db is None else f"{variant.end_sqnr_db:.2f}"
        mark = "  <- kept" if variant.name == outcome.chosen else ""
        local = f"{variant.local_sqnr_db:.2f}"
        metric = ""
        if outcome.metric:
            metric = " " + ("-" if variant.end_metric is None else f"{variant.end_metric:.4f}").rjust(12)
        lines.append(f"  {variant.name:<24} {variant.tensors_in_mix:>14} {local:>14} {end:>12}{metric}{mark}")
    return "\n".join(lines)


def record_auto(model: ir.Model, outcome: AutoOutcome) -> bool:
    """Record the outcome (JSON) in the model's metadata; True when it changed."""
    text = json.dumps(outcome.to_json(), sort_keys=True, separators=(",", ":"))
    changed = model.metadata_props.get(AUTO_METADATA_KEY) != text
    model.metadata_props[AUTO_METADATA_KEY] = text
    return changed
