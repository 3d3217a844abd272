"""equalize-channels: data-driven per-channel equalisation where a per-channel scale is absorbed exactly.

An activation tensor T read only by Convs is quantized per tensor; when its channels' ranges spread over
decades (long-trained PP-LCNet-style backbones: a scalar affine ``a * HardSwish(x) + b`` after per-channel
gains folded into the conv before it), the small channels fall below one INT8 step and the next conv's
large weights for them amplify the error. If the producer of T can multiply channel c by s_c exactly and
every reader divides its input-channel-c weights by s_c, the float function is unchanged:

- **trailing affine** (``affine``): T = Mul(x, a) [then Add(., b)] with constant a, b: they become
  per-channel [1, C, 1, 1] constants a * s_c, b * s_c (whatever precedes the Mul, HardSwish included);
- **Concat members** (``concat``): T = Concat(axis 1) of members, each produced by a Conv with constant
  weights (its output channels' weights and bias times s_c) or by a trailing affine, possibly through a
  Resize (any mode: it acts on each channel linearly), each link read by nothing else.

Readers must all be Convs with constant 4-D weights reading T as their data input (a depthwise reader:
its channel's weights; zero padding stays exact). s_c balances T's per-channel |max| r_a (measured on the
calibration data in float) against the readers' per-input-channel weight range r_w as in Nagel et al. 2019:
s_c = sqrt(r_w_c / r_a_c); when every reader is depthwise (its weights quantized per channel anyway) the
activation ranges are equalised fully, s_c = 1 / r_a_c. s is normalised so T's largest channel keeps its
range, and clipped to [1 / max-scale, max-scale].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.calib import open_calibration_data
from qdq_compiler.calib.channel_amax import channel_amax
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import to_proto
from qdq_compiler.ir.editing import constant_array, is_constant
from qdq_compiler.ir.op_facts import is_onnx_op
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.conv_channels import input_channel_ranges, scale_input_channels
from qdq_compiler.rewrite import Rewriter
from qdq_compiler.rewrite.patterns import attribute_value

RESAMPLING_OPS = ("Resize", "Upsample")


@dataclass
class Segment:
    """Channels [offset, offset + count) of T, scaled by editing ``node`` (a Mul, with its Add, or a Conv)."""

    node: ir.Node
    add: ir.Node | None
    offset: int
    count: int


@dataclass
class Site:
    """One tensor T to equalise: its producing segments and its reading Convs."""

    value: ir.Value
    segments: list[Segment]
    readers: list[ir.Node]


@register_pass
class EqualizeChannels(Pass):
    """Rescale the channels of conv inputs whose producer absorbs a per-channel scale exactly."""

    name = "equalize-channels"
    summary = (
        "Data-driven channel equalisation of conv inputs produced by a scalar affine (Mul/Add after an "
        "activation) or a Concat of convs: per-channel producer constants, inverse reader weights (the float "
        "function is unchanged; needs calibration data)."
    )

    @dataclass(frozen=True)
    class Options:
        affine: bool = True  # tensors produced by a trailing constant Mul [+ Add]
        concat: bool = True  # Concats of conv (or affine) members, through Resize
        samples: int = 16  # calibration batches read to measure the per-channel ranges
        max_scale: float = 1e3  # no channel is rescaled by more than this factor (or less than its inverse)

        def __post_init__(self) -> None:
            if self.samples < 1:
                raise ValueError(f"samples must be at least 1, got {self.samples}")
            if not self.max_scale >= 1.0:
                raise ValueError(f"max-scale must be at least 1, got {self.max_scale}")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        rewriter = Rewriter(model.graph)
        sites = [
            site
            for value in _candidate_values(model.graph)
            if (site := match_site(value, self.options.affine, self.options.concat)) is not None
        ]
        rewriter.count("num-sites", len(sites))
        if not sites:
            return PassResult(modified=False, statistics=rewriter.statistics)
        if ctx.calibration_data is None:  # a calibration cache alone: its statistics are of equalised tensors
            raise QdqcError(
                f"equalize-channels measures the channel ranges of {len(sites)} tensor(s) on calibration "
                "data: give --calib DATA (with --calib-cache, the data the cache was made from), or a "
                "pipeline without equalize-channels"
            )
        proto = to_proto(model)
        data = open_calibration_data(ctx.calibration_data, proto)
        if not data.reiterable:
            ctx.logger.warning("equalize-channels: the calibration data can be read only once; left as it is")
            return PassResult(modified=False, statistics=rewriter.statistics)
        names = [site.value.name or "" for site in sites]
        ranges = channel_amax(proto, names, data, limit=self.options.samples)
        weights = _Working()
        for site in sites:
            measured = ranges.get(site.value.name or "")
            if measured is None:
                continue
            scale = channel_scales(site, measured, weights, self.options.max_scale)
            if scale is not None:
                apply_scales(site, scale, weights)
                rewriter.count("num-channels-rescaled", int(np.count_nonzero(scale != 1.0)))
        weights.write(rewriter)
        rewriter.remove_unused_initializers()
        return PassResult(modified=rewriter.modified, statistics=rewriter.statistics)


def _candidate_values(graph: ir.Graph) -> list[ir.Value]:
    """Every value read by at least one node, in graph order of its producer."""
    return [value for node in graph for value in node.outputs if value.name and list(value.uses())]


def _conv_weight(conv: ir.Node) -> np.ndarray | None:
    """A Conv's constant float 4-D weight (with a constant or absent bias), else None."""
    if not is_onnx_op(conv, "Conv") or len(conv.inputs) < 2:
        return None
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    if bias is not None and not is_constant(bias):
        return None
    weight = constant_array(conv.inputs[1])
    if weight is None or weight.ndim != 4 or weight.dtype not in (np.float32, np.float64):
        return None
    return weight


def _channels(value: ir.Value) -> int | None:
    shape = value.shape
    if shape is None or len(shape) != 4 or not isinstance(shape[1], int):
        return None
    return int(shape[1])


def match_site(value: ir.Value, affine: bool, concat: bool) -> Site | None:
    """The site of T = ``value`` when every reader is a Conv on its data input and its producer can scale
    each channel exactly; else None."""
    if value.is_graph_output():
        return None
    readers = []
    for user, index in value.uses():
        if index != 0 or _conv_weight(user) is None:
            return None
        readers.append(user)
    channels = _channels(value)
    if channels is None or not readers:
        return None
    for reader in readers:
        weight = _conv_weight(reader)
        assert weight is not None
        if weight.shape[1] * int(attribute_value(reader, "group", 1)) != channels:
            return None
    producer = value.producer()
    if is_onnx_op(producer, "Concat"):
        if not concat:
            return None
        segments = _segments(value, 0, affine_ok=affine, top=True)
    elif is_onnx_op(producer, "Mul", "Add") and affine:
        segments = _segments(value, 0, affine_ok=True, top=True)
    else:
        return None
    if segments is None or sum(s.count for s in segments) != channels:
        return None
    return Site(value, segments, readers)


def _segments(value: ir.Value, offset: int, affine_ok: bool, top: bool) -> list[Segment] | None:
    """How the producer chain of ``value`` scales its channels (starting at channel ``offset``)."""
    if not top and (value.is_graph_output() or len(list(value.uses())) != 1):
        return None
    producer = value.producer()
    if producer is None:
        return None
    count = _channels(value)
    if is_onnx_op(producer, "Concat"):
        axis = int(attribute_value(producer, "axis", 1))
        if axis not in (1, -3):
            return None
        found: list[Segment] = []
        for member in producer.inputs:
            if member is None or len(list(member.uses())) != 1:
                return None
            inner = _segments(member, offset, affine_ok, top=False)
            if inner is None:
                return None
            found.extend(inner)
            offset += sum(s.count for s in inner)
        return found
    if is_onnx_op(producer, *RESAMPLING_OPS):
        source = producer.inputs[0]
        return None if source is None else _segments(source, offset, affine_ok, top=False)
    if count is None:
        return None
    if is_onnx_op(producer, "Conv") and not top:
        weight = _conv_weight(producer)
        if weight is None or weight.shape[0] != count:
            return None
        return [Segment(producer, None, offset, count)]
    if not affine_ok:
        return None
    mul: ir.Node | None = producer
    add: ir.Node | None = None
    if is_onnx_op(producer, "Add"):
        add = producer
        product = _variable_input(producer)
        if product is None:
            return None
        mul = product.producer()
        if not is_onnx_op(mul, "Mul") or len(list(product.uses())) != 1 or product.is_graph_output():
            return None
    if mul is None or not is_onnx_op(mul, "Mul") or _variable_input(mul) is None:
        return None
    if not all(_channel_constant(c, count) for c in _constant_inputs(mul) + _constant_inputs(add)):
        return None
    return [Segment(mul, add, offset, count)]


def _constant_inputs(node: ir.Node | None) -> list[np.ndarray]:
    if node is None:
        return []
    return [array for value in node.inputs if (array := constant_array(value)) is not None]


def _variable_input(node: ir.Node) -> ir.Value | None:
    """The one non-constant input of a binary op with one constant, else None."""
    if len(node.inputs) != 2:
        return None
    variable = [value for value in node.inputs if value is not None and not is_constant(value)]
    return variable[0] if len(variable) == 1 else None


def _channel_constant(array: np.ndarray, channels: int) -> bool:
    """A float constant that stays within [1, C, 1, 1] when broadcast against one: scalar or per-channel."""
    if array.dtype not in (np.float32, np.float64) or array.ndim > 4:
        return False
    try:
        shape = np.broadcast_shapes(array.shape, (1, channels, 1, 1))
    except ValueError:
        return False
    return shape == (1, channels, 1, 1)


class _Working:
    """Arrays of the scaled inputs per (node, input index), written to the graph once."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[ir.Node, int], np.ndarray] = {}

    def read(self, node: ir.Node, index: int) -> np.ndarray | None:
        array = self.arrays.get((node, index))
        if array is None and len(node.inputs) > index:
            array = constant_array(node.inputs[index])
        return array

    def set(self, node: ir.Node, index: int, array: np.ndarray) -> None:
        self.arrays[(node, index)] = array

    def write(self, rewriter: Rewriter) -> None:
        for (node, index), array in self.arrays.items():
            old = node.inputs[index]
            base = old.name if old is not None and old.name else f"{node.name}.{index}"
            rewriter.set_input(node, index, rewriter.add_constant(array, f"{base}.channel_equalized"))


def channel_scales(site: Site, amax: np.ndarray, weights: _Working, max_scale: float) -> np.ndarray | None:
    """s_c for the site (None when every channel keeps 1)."""
    depthwise_only = True
    weight_range = np.zeros_like(amax)
    for reader in site.readers:
        weight = weights.read(reader, 1)
        assert weight is not None
        group = int(attribute_value(reader, "group", 1))
        if group == 1 or weight.shape[1] != 1:
            depthwise_only = False
        per_input = input_channel_ranges(weight, group).astype(np.float64)
        top = per_input.max()
        if top > 0:
            weight_range = np.maximum(weight_range, per_input / top)
    usable = (amax > 0) & (weight_range > 0)
    if not usable.any():
        return None
    scale = np.ones_like(amax)
    if depthwise_only:
        scale[usable] = 1.0 / amax[usable]
    else:
        scale[usable] = np.sqrt(weight_range[usable] / amax[usable])
    scale *= amax.max() / float((scale * amax).max())
    scale[~usable] = 1.0
    scale = np.clip(scale, 1.0 / max_scale, max_scale)
    return None if np.all(scale == 1.0) else scale


def apply_scales(site: Site, scale: np.ndarray, weights: _Working) -> None:
    """T's channel c times scale[c] at its producers, every reader's input-channel-c weights over it."""
    for segment in site.segments:
        part = scale[segment.offset : segment.offset + segment.count]
        if segment.add is None and is_onnx_op(segment.node, "Conv"):
            weight = weights.read(segment.node, 1)
            assert weight is not None
            weights.set(segment.node, 1, (weight * part.reshape(-1, 1, 1, 1)).astype(weight.dtype))
            bias = weights.read(segment.node, 2) if len(segment.node.inputs) > 2 else None
            if bias is not None and segment.node.inputs[2] is not None:
                weights.set(segment.node, 2, (bias.reshape(-1) * part).astype(bias.dtype))
            continue
        for node in (segment.node, segment.add):
            if node is None:
                continue
            index = 0 if is_constant(node.inputs[0]) else 1
            constant = weights.read(node, index)
            assert constant is not None
            per_channel = np.broadcast_to(constant, (1, segment.count, 1, 1)) * part.reshape(1, -1, 1, 1)
            weights.set(node, index, per_channel.astype(constant.dtype))
    for reader in site.readers:
        weight = weights.read(reader, 1)
        assert weight is not None
        group = int(attribute_value(reader, "group", 1))
        weights.set(reader, 1, scale_input_channels(weight, group, 1.0 / scale).astype(weight.dtype))
