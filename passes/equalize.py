"""equalize: cross-layer equalisation of Conv pairs (Nagel et al. 2019, "Data-Free Quantization").

Per-channel weight quantization already gives each output channel of a conv its own scale, but the
activation between two convs is quantized per tensor: one channel with a range 100x the others spends the
whole INT8 grid. For Conv1 -> f -> Conv2 with f positively homogeneous (f(s*x) = s*f(x) for s > 0:
Relu, LeakyRelu, PReLU, Clip(x, 0, +inf), or no activation at all), scaling Conv1's output channel i by
1/s_i and Conv2's input channel i by s_i leaves the float function unchanged. Choosing
s_i = sqrt(r1_i / r2_i), with r1_i the range of Conv1's output channel i and r2_i that of Conv2's input
channel i, makes both ranges sqrt(r1_i * r2_i): equal per channel, the spread divided evenly between the
two layers. Depthwise backbones gain most: a depthwise conv's channels have nothing to share a range with.

Clip(x, 0, 6) (Relu6) is not positively homogeneous: its ceiling would have to move per channel, so such
pairs are left alone (the reason is logged at debug).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.editing import constant_array, is_constant
from qdq_compiler.ir.op_facts import is_onnx_op
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.conv_channels import input_channel_ranges, scale_input_channels
from qdq_compiler.rewrite import Rewriter, sole_user
from qdq_compiler.rewrite.patterns import attribute_value

logger = logging.getLogger("qdqc")
HOMOGENEOUS_ACTIVATIONS = ("Relu", "LeakyRelu", "PRelu", "Clip")


@dataclass
class ConvPair:
    """Conv1 -> (activation) -> Conv2, the second reading the first's output alone."""

    first: ir.Node
    activation: ir.Node | None
    second: ir.Node
    group: int | None = None  # the second conv's group, read once


@register_pass
class CrossLayerEqualization(Pass):
    """Rescale Conv pairs joined by a positively homogeneous activation so their channel ranges match."""

    name = "equalize"
    summary = (
        "Cross-layer equalisation: rescale Conv pairs joined by Relu/LeakyRelu/PReLU so each channel's "
        "weight range is shared evenly (the float function is unchanged)."
    )

    @dataclass(frozen=True)
    class Options:
        iterations: int = 8  # sweeps over all pairs; chains of three or more convs need several
        max_scale: float = 1e4  # no channel is rescaled by more than this factor (or less than its inverse)
        tolerance: float = 1e-3  # stop when no scale of a sweep differs from 1 by more than this

        def __post_init__(self) -> None:
            if self.iterations < 1:
                raise ValueError(f"iterations must be at least 1, got {self.iterations}")
            if not self.max_scale >= 1.0:
                raise ValueError(f"max-scale must be at least 1, got {self.max_scale}")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        rewriter = Rewriter(model.graph)
        pairs = [pair for node in model.graph if (pair := match_pair(node, rewriter)) is not None]
        rewriter.count("num-pairs", len(pairs))
        weights = WorkingWeights()
        run_sweeps(pairs, rewriter, self.options, weights)
        weights.write(rewriter)
        if pairs:
            rewriter.remove_unused_initializers()
        return PassResult(modified=bool(pairs), statistics=rewriter.statistics)


def _is_homogeneous(node: ir.Node, rewriter: Rewriter) -> bool:
    """True for activations with f(s*x) = s*f(x), s > 0 (Clip only as Clip(x, 0, +inf) or Clip(x, 0))."""
    if node.op_type != "Clip":
        return True  # Relu, LeakyRelu, PRelu (whatever the slope's shape: it acts on the sign only)
    low = constant_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    high = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if low is None or float(low) != 0.0:
        return rewriter.notify_match_failure(node, "Clip's minimum is not 0")
    if high is not None and np.isfinite(high).all():
        return rewriter.notify_match_failure(node, "Clip has a finite maximum (Relu6 is not homogeneous)")
    return True


def _constant_weights(conv: ir.Node) -> bool:
    """Conv with constant 4-D weight (and bias, if any): the only convs whose channels can be rescaled."""
    weight = conv.inputs[1] if len(conv.inputs) > 1 else None
    if not is_constant(weight) or weight is None or weight.shape is None or len(weight.shape) != 4:
        return False
    if weight.dtype not in (ir.DataType.FLOAT, ir.DataType.DOUBLE):
        return False
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    return bias is None or is_constant(bias)


def match_pair(node: ir.Node, rewriter: Rewriter) -> ConvPair | None:
    """The pair that starts at Conv `node`, or None (with the reason logged at debug)."""
    if not is_onnx_op(node, "Conv") or not _constant_weights(node):
        return None
    output = node.outputs[0]
    if output.is_graph_output():
        return None
    user = sole_user(output)
    activation = None
    if is_onnx_op(user, *HOMOGENEOUS_ACTIVATIONS):
        assert user is not None
        if not _is_homogeneous(user, rewriter) or user.outputs[0].is_graph_output():
            return None
        activation, user = user, sole_user(user.outputs[0])
    if not is_onnx_op(user, "Conv") or user is None or user.inputs[0] is not (activation or node).outputs[0]:
        rewriter.notify_match_failure(node, "output does not feed exactly one Conv (through one activation)")
        return None
    if not _constant_weights(user):
        rewriter.notify_match_failure(user, "second conv's weight is not constant")
        return None
    return ConvPair(node, activation, user)


Key = tuple[ir.Node, int]  # (conv, input index): its weight (1) or bias (2)


class WorkingWeights:
    """The rescaled weights and biases of the sweeps, per (node, input index), written to the graph once.

    Sweeps read and replace these arrays; only ``write`` makes initializers (one per rescaled input, never
    editing a shared weight in place), so eight sweeps over a 10k-pair chain cost numpy work, not 8x the
    IR objects. ``order`` ranks each input by the step that first touched it in sweep order."""

    def __init__(self) -> None:
        self.arrays: dict[Key, np.ndarray] = {}
        self.order: dict[Key, tuple[int, ...]] = {}
        self._originals: dict[Key, np.ndarray | None] = {}  # a loaded initializer decodes at every read

    def read(self, node: ir.Node, index: int) -> np.ndarray | None:
        """The input's current array: rescaled by an earlier step, or the graph's constant (read once)."""
        key = (node, index)
        array = self.arrays.get(key)
        if array is None:
            if key not in self._originals:
                self._originals[key] = (
                    constant_array(node.inputs[index]) if len(node.inputs) > index else None
                )
            array = self._originals[key]
        return array

    def set(self, node: ir.Node, index: int, array: np.ndarray, rank: tuple[int, ...] | None = None) -> None:
        """Replace the input's array; `rank` orders a first touch (default: the order of the calls)."""
        key = (node, index)
        if key not in self.order:
            self.order[key] = rank if rank is not None else (len(self.order),)
        self.arrays[key] = array

    def restore(self, key: Key, array: np.ndarray | None) -> None:
        """Undo a `set`: back to `array`, or untouched when None."""
        if array is None:
            del self.arrays[key]
            del self.order[key]
        else:
            self.arrays[key] = array

    def write(self, rewriter: Rewriter) -> None:
        """One fresh initializer per rescaled input, in the order the sweeps first touched them."""
        for node, index in sorted(self.arrays, key=self.order.__getitem__):
            suffix = "weight_equalized" if index == 1 else "bias_equalized"
            array = np.array(self.arrays[(node, index)])  # its own buffer, not a view of a batch
            _set_constant(rewriter, node, index, array, suffix)


def schedule(pairs: list[ConvPair], sweeps: int) -> list[list[tuple[int, int]]]:
    """The steps (sweep, pair index) of `sweeps` sweeps over `pairs` in waves.

    Steps are placed in sweep order, each one wave after the last step that touched one of its two convs.
    So the steps of a wave touch disjoint convs (any order, or all at once, gives the same arrays), and
    each conv sees its steps in sweep order: the waves compute exactly what the sweeps one pair at a time
    do. A chain of pairs gets waves of up to `sweeps` steps (sweep t + 1 trails sweep t by two pairs),
    independent pairs share waves."""
    last: dict[ir.Node, int] = {}
    waves: list[list[tuple[int, int]]] = []
    for sweep in range(sweeps):
        for index, pair in enumerate(pairs):
            wave = 1 + max(last.get(pair.first, -1), last.get(pair.second, -1))
            last[pair.first] = last[pair.second] = wave
            if wave == len(waves):
                waves.append([])
            waves[wave].append((sweep, index))
    return waves


class _Sweeps:
    """Per-sweep bookkeeping of :func:`run_sweeps`: steps left, largest change, channels rescaled, and the
    undo log of the sweeps that run ahead of the last completed one."""

    def __init__(self, sweeps: int, steps: int) -> None:
        self.left = [steps] * sweeps
        self.largest = [0.0] * sweeps
        self.rescaled = [0] * sweeps
        self.undo: dict[int, list[tuple[Key, np.ndarray | None]]] = {}
        self.done = 0  # sweeps completed


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # a step's first weight, second weight, bias


def run_sweeps(
    pairs: list[ConvPair],
    rewriter: Rewriter,
    options: CrossLayerEqualization.Options,
    weights: WorkingWeights,
) -> None:
    """Up to `options.iterations` sweeps of :func:`equalize_pair` over `pairs`, stopping after the first
    whose largest change is at most `options.tolerance`: the same arrays as one pair at a time, computed
    in waves (:func:`schedule`) with each wave's steps of one shape stacked into one numpy computation.
    A wave may run steps of sweeps after one that turns out to converge; those are undone."""
    mismatched = {index for index, pair in enumerate(pairs) if not _channels_match(pair, weights)}
    state = _Sweeps(options.iterations, len(pairs))

    def settle() -> bool:
        """Complete every sweep whose steps all ran; True once one converged."""
        while state.done < options.iterations and state.left[state.done] == 0:
            if _complete_sweep(pairs, mismatched, rewriter, options.tolerance, weights, state):
                return True
        return False

    if settle():  # no pairs: one empty sweep, converged
        return
    for wave in schedule(pairs, options.iterations):
        batches: dict[tuple[Any, ...], list[tuple[int, int, Arrays]]] = {}
        for sweep, index in wave:
            if index not in mismatched:
                pair = pairs[index]
                first_w, second_w = weights.read(pair.first, 1), weights.read(pair.second, 1)
                assert first_w is not None and second_w is not None
                arrays = (first_w, second_w, weights.read(pair.first, 2))
                batches.setdefault(_signature(pair, arrays), []).append((sweep, index, arrays))
            state.left[sweep] -= 1
        for steps in batches.values():
            _equalize_steps(pairs, steps, weights, options.max_scale, state)
        if settle():
            return
    logger.debug(
        "equalize: not converged after %d sweep(s): the last changed a scale by %.3g (tolerance %g)",
        options.iterations,
        state.largest[-1],
        options.tolerance,
    )


def _complete_sweep(
    pairs: list[ConvPair],
    mismatched: set[int],
    rewriter: Rewriter,
    tolerance: float,
    weights: WorkingWeights,
    state: _Sweeps,
) -> bool:
    """Account for sweep `state.done`, all of whose steps ran; True when it converged (the steps of later
    sweeps already run are then undone)."""
    sweep = state.done
    for index in sorted(mismatched):
        rewriter.notify_match_failure(
            pairs[index].second, "input channels do not match the first conv's outputs"
        )
    if state.rescaled[sweep]:
        rewriter.count("num-channels-rescaled", state.rescaled[sweep])
    rewriter.count("num-sweeps")
    state.done += 1
    if state.largest[sweep] <= tolerance:
        rewriter.count("converged")  # 1 when the last sweep changed no scale by more than tolerance
        for later in sorted(state.undo, reverse=True):
            for key, array in reversed(state.undo[later]):
                weights.restore(key, array)
        return True
    state.undo.pop(sweep + 1, None)  # sweep + 1 runs to its end now: its steps stand
    return False


def _channels_match(pair: ConvPair, weights: WorkingWeights) -> bool:
    """Whether the second conv reads as many channels as the first makes (shapes never change here)."""
    first_w, second_w = weights.read(pair.first, 1), weights.read(pair.second, 1)
    assert first_w is not None and second_w is not None
    if pair.group is None:
        pair.group = int(attribute_value(pair.second, "group", 1))
    return second_w.shape[1] * pair.group == first_w.shape[0] and second_w.shape[0] % pair.group == 0


def _signature(pair: ConvPair, arrays: Arrays) -> tuple[Any, ...]:
    """Steps with equal signatures stack: the group, shapes and dtypes of both weights and the bias."""
    return (pair.group, *((None if a is None else (a.shape, a.dtype)) for a in arrays))


def _equalize_steps(
    pairs: list[ConvPair],
    steps: list[tuple[int, int, Arrays]],
    weights: WorkingWeights,
    max_scale: float,
    state: _Sweeps,
) -> None:
    """:func:`equalize_pair`'s arithmetic for steps of one signature on disjoint convs, stacked: the same
    elementwise operations in the same types, so the same bits."""
    chosen = [pairs[index] for _, index, _ in steps]
    group = chosen[0].group
    assert group is not None
    firsts = np.stack([arrays[0] for _, _, arrays in steps])
    seconds = np.stack([arrays[1] for _, _, arrays in steps])
    biases = [arrays[2] for _, _, arrays in steps]
    count, channels = firsts.shape[0], firsts.shape[1]
    if channels == 0:
        return
    r1 = np.abs(firsts.reshape(count, channels, -1)).max(axis=2).astype(np.float64)
    out2, per_group_in = seconds.shape[1], seconds.shape[2]
    grouped = seconds.reshape(count, group, out2 // group, per_group_in, *seconds.shape[3:])
    r2 = np.abs(grouped.reshape(count, group, out2 // group, per_group_in, -1)).max(axis=(2, 4))
    r2 = r2.reshape(count, channels).astype(np.float64)
    usable = (r1 > 0) & (r2 > 0)
    scale = np.sqrt(np.divide(r1, r2, out=np.ones((count, channels)), where=usable))
    np.minimum(np.maximum(scale, 1.0 / max_scale, out=scale), max_scale, out=scale)
    changes = np.abs(scale - 1.0).max(axis=1)
    spatial = (1,) * (firsts.ndim - 2)
    new_firsts = (firsts / scale.reshape(count, channels, *spatial)).astype(firsts.dtype)
    factors = scale.reshape(count, group, 1, per_group_in, *spatial[1:])  # kernel dims: one fewer
    new_seconds = (grouped * factors).reshape(seconds.shape).astype(seconds.dtype)
    new_biases = None
    if biases[0] is not None:
        stacked = np.stack([bias.reshape(-1) for bias in biases if bias is not None])
        new_biases = (stacked / scale).astype(stacked.dtype)
    rescaled = np.count_nonzero(scale != 1.0, axis=1).tolist()
    rows = zip(steps, chosen, changes.tolist(), rescaled, list(new_firsts), list(new_seconds), strict=True)
    bias_rows = list(new_biases) if new_biases is not None else None
    for row, ((sweep, index, _), pair, change, count_rescaled, new_first, new_second) in enumerate(rows):
        if change == 0.0:
            continue
        state.largest[sweep] = max(state.largest[sweep], change)
        state.rescaled[sweep] += count_rescaled
        updates = [((pair.first, 1), new_first), ((pair.second, 1), new_second)]
        if bias_rows is not None:
            updates.append(((pair.first, 2), bias_rows[row]))
        undo = state.undo.setdefault(sweep, []) if sweep > state.done else None
        for slot, (key, array) in enumerate(updates):
            if undo is not None:
                undo.append((key, weights.arrays.get(key)))
            weights.set(key[0], key[1], array, rank=(sweep, index, slot))


def equalize_pair(
    pair: ConvPair, rewriter: Rewriter, max_scale: float, weights: WorkingWeights | None = None
) -> float:
    """Rescale one pair; returns the largest |s - 1| applied (0 when nothing changed).

    With ``weights`` the new arrays stay there until ``weights.write``; without, they go to the graph now.
    The arithmetic is float64 on the float32 weights (exact widening), each result rounded back once."""
    working = weights if weights is not None else WorkingWeights()
    first_w = working.read(pair.first, 1)
    second_w = working.read(pair.second, 1)
    assert first_w is not None and second_w is not None
    if pair.group is None:
        pair.group = int(attribute_value(pair.second, "group", 1))
    group = pair.group
    channels = first_w.shape[0]
    if second_w.shape[1] * group != channels or second_w.shape[0] % group:
        rewriter.notify_match_failure(pair.second, "input channels do not match the first conv's outputs")
        return 0.0
    # |w| and max are exact in float32; the ranges widen to float64 exactly, as the weights would
    r1 = np.abs(first_w.reshape(channels, -1)).max(axis=1).astype(np.float64)
    r2 = input_channel_ranges(second_w, group).astype(np.float64)
    usable = (r1 > 0) & (r2 > 0)
    scale = np.sqrt(np.divide(r1, r2, out=np.ones(channels), where=usable))
    np.minimum(np.maximum(scale, 1.0 / max_scale, out=scale), max_scale, out=scale)  # np.clip, fewer checks
    change = float(np.abs(scale - 1.0).max()) if channels else 0.0
    if change == 0.0:
        return 0.0
    # float32 / float64 widens the weights exactly: the same values as dividing their float64 copies
    working.set(pair.first, 1, (first_w / scale.reshape(-1, 1, 1, 1)).astype(first_w.dtype))
    working.set(pair.second, 1, scale_input_channels(second_w, group, scale).astype(second_w.dtype))
    bias = working.read(pair.first, 2)
    if bias is not None:
        working.set(pair.first, 2, (bias.reshape(-1) / scale).astype(bias.dtype))
    rewriter.count("num-channels-rescaled", int(np.count_nonzero(scale != 1.0)))
    if weights is None:
        working.write(rewriter)
    return change


def _set_constant(rewriter: Rewriter, node: ir.Node, index: int, array: np.ndarray, suffix: str) -> None:
    """Give `node` a fresh initializer at input `index` (a shared weight is never edited in place)."""
    old = node.inputs[index]
    base = old.name if old is not None and old.name else f"{node.name}.{index}"
    base = base.removesuffix(".weight_equalized").removesuffix(".bias_equalized")
    rewriter.set_input(node, index, rewriter.add_constant(array, f"{base}.{suffix}"))
