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


def wave_numbers(pairs: list[ConvPair], sweeps: int) -> np.ndarray:
    """The wave of each step of `sweeps` sweeps over `pairs`, at step id ``sweep * len(pairs) + index``.

    Steps are placed in sweep order, each one wave after the last step that touched one of its two convs.
    So the steps of a wave touch disjoint convs (any order, or all at once, gives the same arrays), and
    each conv sees its steps in sweep order: the waves compute exactly what the sweeps one pair at a time
    do. A chain of pairs gets waves of up to `sweeps` steps (sweep t + 1 trails sweep t by two pairs),
    independent pairs share waves."""
    convs: dict[ir.Node, int] = {}
    ends = [
        (convs.setdefault(pair.first, len(convs)), convs.setdefault(pair.second, len(convs)))
        for pair in pairs
    ]
    last = [-1] * len(convs)
    waves: list[int] = []
    for _ in range(sweeps):
        for first, second in ends:
            wave = 1 + (last[first] if last[first] > last[second] else last[second])
            last[first] = last[second] = wave
            waves.append(wave)
    return np.array(waves, dtype=np.int64)


class _Banks:
    """The working arrays of :func:`run_sweeps`: one stacked array per (shape, dtype), a row per input.

    A batch of steps gathers its rows by index and scatters its results back: no per-step arrays, lists
    or dictionaries. Biases are kept flat (as a step writes them)."""

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.where: list[tuple[int, int]] = []  # per key id: (bank, row)
        self._ids: dict[Key, int] = {}
        self._banks: dict[tuple[Any, ...], int] = {}
        self._rows: list[list[np.ndarray]] = []
        self.data: list[np.ndarray] = []
        self.rows = np.zeros(0, dtype=np.int64)  # per key id: its row (after freeze)

    def add(self, key: Key, array: np.ndarray) -> int:
        """The key's id, giving it a row holding `array` the first time."""
        known = self._ids.get(key)
        if known is not None:
            return known
        bank = self._banks.setdefault((array.shape, array.dtype), len(self._banks))
        if bank == len(self._rows):
            self._rows.append([])
        self.where.append((bank, len(self._rows[bank])))
        self._rows[bank].append(array)
        self._ids[key] = len(self.keys)
        self.keys.append(key)
        return self._ids[key]

    def freeze(self) -> None:
        """Stack each bank's rows (no more keys after this)."""
        self.data = [np.stack(rows) for rows in self._rows]
        self.rows = np.array([row for _, row in self.where], dtype=np.int64)
        self._rows = []

    def bank(self, key_id: int) -> int:
        """The bank of a key."""
        return self.where[key_id][0]

    def row(self, key_id: int) -> np.ndarray:
        """The key's current array (a view into its bank)."""
        bank, row = self.where[key_id]
        return self.data[bank][row]


class _Plan:
    """Per pair: its signature (steps of one signature stack) and the key ids of its first weight, second
    weight and first bias (-1: none)."""

    def __init__(self, pairs: list[ConvPair], mismatched: set[int], weights: WorkingWeights) -> None:
        self.banks = _Banks()
        signatures: dict[tuple[Any, ...], int] = {}
        self.kinds: list[tuple[int, int, int, int]] = []  # per signature: group, banks of w1, w2, bias
        count = len(pairs)
        self.signature = np.zeros(count, dtype=np.int64)
        self.keys = np.full((3, count), -1, dtype=np.int64)
        for index, pair in enumerate(pairs):
            if index in mismatched:
                continue
            first_w, second_w = weights.read(pair.first, 1), weights.read(pair.second, 1)
            bias = weights.read(pair.first, 2)
            assert first_w is not None and second_w is not None and pair.group is not None
            ids = [self.banks.add((pair.first, 1), first_w), self.banks.add((pair.second, 1), second_w)]
            if bias is not None:  # as the step reads it: flat, broadcast to the channels
                flat = bias.reshape(-1)
                if flat.shape != first_w.shape[:1]:  # one value for every channel: as bias / scale reads it
                    flat = np.broadcast_to(flat, first_w.shape[:1])
                ids.append(self.banks.add((pair.first, 2), flat))
            banks = tuple(self.banks.bank(key) for key in ids)
            kind = (pair.group, *banks, *([-1] * (3 - len(banks))))
            self.signature[index] = signatures.setdefault(kind, len(signatures))
            if len(self.kinds) < len(signatures):
                self.kinds.append(kind)  # type: ignore[arg-type]
            self.keys[: len(ids), index] = ids
        self.banks.freeze()


class _Sweeps:
    """What :func:`run_sweeps` keeps of its steps: each step's scale (per signature, a row per step in
    step-id order, so a sweep's steps are a block of rows), the sweeps completed, and the undo log of the
    batches that ran steps ahead of the last completed sweep."""

    def __init__(self, count: int, steps: np.ndarray, kinds: np.ndarray, channels: list[int]) -> None:
        self.count = count  # pairs
        self.done = 0  # sweeps completed
        self.largest: list[float] = []  # per completed sweep
        # per batch run ahead: its highest sweep, its steps' sweeps, and (bank, rows, old arrays)
        self.undo: list[tuple[int, np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]] = []
        by_kind = np.lexsort((steps, kinds))
        self.ids = [steps[by_kind[kinds[by_kind] == kind]] for kind in range(len(channels))]
        self.scales = [np.ones((len(ids), width)) for ids, width in zip(self.ids, channels, strict=True)]
        self.row = np.empty(len(steps), dtype=np.int64)  # per step (in the order of `steps`): its row
        for kind, ids in enumerate(self.ids):
            self.row[by_kind[kinds[by_kind] == kind]] = np.arange(len(ids))

    def blocks(self, sweeps: slice) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per signature: the step ids and scales of the steps of `sweeps` (a range of sweep numbers)."""
        found = []
        for ids, scales in zip(self.ids, self.scales, strict=True):
            low, high = np.searchsorted(ids, [sweeps.start * self.count, sweeps.stop * self.count])
            if high > low and scales.shape[1]:
                found.append((ids[low:high], scales[low:high]))
        return found


def run_sweeps(
    pairs: list[ConvPair],
    rewriter: Rewriter,
    options: CrossLayerEqualization.Options,
    weights: WorkingWeights,
) -> None:
    """Up to `options.iterations` sweeps of :func:`equalize_pair` over `pairs`, stopping after the first
    whose largest change is at most `options.tolerance`: the same arrays as one pair at a time, computed
    in waves (:func:`wave_numbers`) with each wave's steps of one signature stacked into one numpy
    computation on rows of :class:`_Banks`. A wave may run steps of sweeps after one that turns out to
    converge; those are undone. The rescaled arrays go to `weights`, ranked by first touch."""
    mismatched = {index for index, pair in enumerate(pairs) if not _channels_match(pair, weights)}
    sweeps, count = options.iterations, len(pairs)
    plan = _Plan(pairs, mismatched, weights)
    waves = wave_numbers(pairs, sweeps)
    last_wave = waves.reshape(sweeps, count).max(axis=1) if count else np.full(sweeps, -1)
    step_pairs = np.tile(np.arange(count), sweeps)
    steps = np.flatnonzero(~np.isin(step_pairs, sorted(mismatched)))
    steps = steps[np.lexsort((plan.signature[step_pairs[steps]], waves[steps]))]
    step_waves, step_kinds = waves[steps], plan.signature[step_pairs[steps]]
    channels = [plan.banks.data[kind[1]].shape[1] for kind in plan.kinds]
    state = _Sweeps(count, steps, step_kinds, channels)
    cuts = (np.flatnonzero((np.diff(step_waves) != 0) | (np.diff(step_kinds) != 0)) + 1).tolist()
    starts = [0, *cuts] if len(steps) else []
    step_sweeps = steps // max(count, 1)
    highest = np.maximum.reduceat(step_sweeps, starts).tolist() if starts else []
    step_rows = plan.banks.rows[plan.keys[:, step_pairs[steps]]]  # a missing bias (-1) is never read
    converged = False
    last_waves = last_wave.tolist()
    batches = zip(
        starts,
        [*cuts, len(steps)][: len(starts)],
        step_waves[starts].tolist(),
        step_kinds[starts].tolist(),
        highest,
        strict=True,
    )
    for start, end, wave, kind, ahead in batches:
        while not converged and state.done < sweeps and last_waves[state.done] < wave:
            converged = _complete_sweep(pairs, mismatched, rewriter, options.tolerance, plan, state)
        if converged:
            break
        part = slice(start, end)
        undo = state.undo if ahead > state.done else None  # steps ahead of the sweep under way
        rows = step_rows[:, part]
        scale = _equalize_steps(
            rows, plan.kinds[kind], plan.banks.data, options.max_scale, undo, ahead, step_sweeps[part]
        )
        state.scales[kind][state.row[part]] = scale
    while not converged and state.done < sweeps:
        converged = _complete_sweep(pairs, mismatched, rewriter, options.tolerance, plan, state)
    _hand_over(plan, state, weights)
    if not converged:
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
    plan: _Plan,
    state: _Sweeps,
) -> bool:
    """Account for sweep `state.done`, all of whose steps ran; True when it converged (the steps of later
    sweeps already run are then undone)."""
    sweep = state.done
    for index in sorted(mismatched):
        rewriter.notify_match_failure(
            pairs[index].second, "input channels do not match the first conv's outputs"
        )
    largest, rescaled = 0.0, 0
    for _, scales in state.blocks(slice(sweep, sweep + 1)):
        changes = np.abs(scales - 1.0).max(axis=1)  # a step's change; NaN if any channel's is
        largest = max(largest, float(np.fmax.reduce(changes, initial=0.0)))  # a NaN change is passed over
        rescaled += int(np.count_nonzero(scales != 1.0))  # a step that changed nothing has none
    state.largest.append(largest)
    if rescaled:
        rewriter.count("num-channels-rescaled", rescaled)
    rewriter.count("num-sweeps")
    state.done += 1
    if largest <= tolerance:
        rewriter.count("converged")  # 1 when the last sweep changed no scale by more than tolerance
        for _, step_sweeps, saved in reversed(state.undo):
            later = step_sweeps > sweep
            for bank, rows, old in saved:
                plan.banks.data[bank][rows[later]] = old[later]
        return True
    state.undo = [entry for entry in state.undo if entry[0] > sweep + 1]  # sweep + 1 now stands
    return False


def _channels_match(pair: ConvPair, weights: WorkingWeights) -> bool:
    """Whether the second conv reads as many channels as the first makes (shapes never change here)."""
    first_w, second_w = weights.read(pair.first, 1), weights.read(pair.second, 1)
    assert first_w is not None and second_w is not None
    if pair.group is None:
        pair.group = int(attribute_value(pair.second, "group", 1))
    return second_w.shape[1] * pair.group == first_w.shape[0] and second_w.shape[0] % pair.group == 0


def _equalize_steps(
    rows: np.ndarray,
    kind: tuple[int, int, int, int],
    banks: list[np.ndarray],
    max_scale: float,
    undo: list[tuple[int, np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]] | None,
    highest: int,
    sweeps: np.ndarray,
) -> np.ndarray:
    """:func:`equalize_pair`'s arithmetic for steps of one signature on disjoint convs, stacked: the same
    elementwise operations in the same types, so the same bits. `rows` holds each step's bank rows of its
    first weight, second weight and bias (rows 0, 1, 2). Returns the scales (a row per step). A step that
    changes nothing (all scales 1) writes its arrays back unchanged: x / 1 and x * 1 are exact.
    With `undo`, the arrays replaced are logged there (with `highest` and the steps' `sweeps`)."""
    group, first_bank, second_bank, bias_bank = kind
    if first_bank == second_bank:  # one gather and one |w| for both convs of every step
        both = banks[first_bank][rows[:2]]
        firsts, seconds = both[0], both[1]
        magnitudes = np.abs(both)
        first_abs, second_abs = magnitudes[0], magnitudes[1]
    else:
        firsts, seconds = banks[first_bank][rows[0]], banks[second_bank][rows[1]]
        first_abs, second_abs = np.abs(firsts), np.abs(seconds)
    count, channels = firsts.shape[0], firsts.shape[1]
    if channels == 0:
        return np.ones((count, 0))
    # |w| and max are exact in float32; the ranges widen to float64 exactly for the division
    r1 = first_abs.reshape(count, channels, -1).max(axis=2)
    out2, per_group_in = seconds.shape[1], seconds.shape[2]
    grouped = seconds.reshape(count, group, out2 // group, per_group_in, -1)
    r2 = second_abs.reshape(grouped.shape).max(axis=(2, 4)).reshape(count, channels)
    scale = np.ones((count, channels))
    np.divide(r1, r2, out=scale, where=np.minimum(r1, r2) > 0, dtype=np.float64)  # both ranges > 0
    np.sqrt(scale, out=scale)
    np.minimum(np.maximum(scale, 1.0 / max_scale, out=scale), max_scale, out=scale)
    factors = scale.reshape(count, group, 1, per_group_in, 1)
    new_seconds = (grouped * factors).astype(seconds.dtype).reshape(seconds.shape)
    spatial = (1,) * (firsts.ndim - 2)
    new_firsts = (firsts / scale.reshape(count, channels, *spatial)).astype(firsts.dtype)
    if undo is not None:
        saved = [(first_bank, rows[0], firsts), (second_bank, rows[1], seconds)]
    banks[first_bank][rows[0]] = new_firsts
    banks[second_bank][rows[1]] = new_seconds
    if bias_bank >= 0:
        biases = banks[bias_bank][rows[2]]
        banks[bias_bank][rows[2]] = (biases / scale).astype(biases.dtype)
        if undo is not None:
            saved.append((bias_bank, rows[2], biases))
    if undo is not None:
        undo.append((highest, sweeps, saved))
    return scale


def _hand_over(plan: _Plan, state: _Sweeps, weights: WorkingWeights) -> None:
    """Give `weights` every input a standing step changed, ranked by that first step (sweep, pair, slot):
    each conv sees its steps in sweep order, so the smallest is the first touch."""
    standing = [
        ids[np.abs(scales - 1.0).max(axis=1) != 0.0] for ids, scales in state.blocks(slice(0, state.done))
    ]
    if not standing:
        return
    changed = np.concatenate(standing)
    never = np.iinfo(np.int64).max
    first_touch = np.full(len(plan.banks.keys), never)
    for slot in range(3):
        keys = plan.keys[slot, changed % state.count]
        present = keys >= 0
        np.minimum.at(first_touch, keys[present], changed[present] * 3 + slot)
    touched = np.flatnonzero(first_touch < never)
    for key_id in touched[np.argsort(first_touch[touched])].tolist():
        node, index = plan.banks.keys[key_id]
        weights.set(node, index, plan.banks.row(key_id), rank=(int(first_touch[key_id]),))


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
