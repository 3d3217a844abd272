"""A small, deterministic graph builder over ``onnx.helper`` for writing test CNNs.

Every tensor created through :class:`GraphBuilder` has its static shape tracked, so builders can
compute output shapes themselves and the emitted model needs no ``value_info`` (``onnx.shape_inference``
recovers it). Weights come from a seeded ``numpy`` generator, so building twice with the same seed gives
byte-identical models.

With ``probe=True`` the builder also pushes a seeded random float64 "probe" batch through the layers it
knows (conv, BN, activations, pools, concat, ...) and sets every BatchNormalization's running mean/var
from the statistics it actually sees (with a small random perturbation, rounded to 4 significant digits
so the result does not depend on BLAS last-bit differences). Like a trained network, activations then stay
O(1) however deep the graph is, also for non-homogeneous activations such as SiLU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

Shape = tuple[int, ...]

DEFAULT_OPSET = 17
DEFAULT_IR_VERSION = 8
PRODUCER_NAME = "qdq_compiler.models"
LEAKY_ALPHA = 0.1

# Gain that keeps the second moment of a conv's output at ~1 when its input came out of this activation
# (He-style: Var(w) = gain**2 / fan_in, gain**2 = 1 / E[act(z)**2] for z ~ N(0, 1)).
ACT_GAIN = {
    "relu": math.sqrt(2.0),
    "leaky": math.sqrt(2.0 / (1.0 + LEAKY_ALPHA**2)),
    "silu": 1.0 / math.sqrt(0.3557),
    "linear": 1.0,
}

_NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
}


def _conv_out(size: int, k: int, s: int, p_begin: int, p_end: int) -> int:
    """Output length of a convolution/pooling window along one axis (dilation 1, floor mode)."""
    return (size + p_begin + p_end - k) // s + 1


def _round_sig(a: np.ndarray, digits: int = 4) -> np.ndarray:
    """Round every value to ``digits`` significant decimal digits (platform-independent)."""
    return np.asarray([float(f"{v:.{digits}g}") for v in np.asarray(a, np.float64).ravel()]).reshape(a.shape)


def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, s: int, p: int, groups: int) -> np.ndarray:
    """Reference NCHW convolution (square kernel, symmetric padding, dilation 1) for the probe."""
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    cg, og = x.shape[1] // groups, w.shape[0] // groups
    parts = [
        np.tensordot(win[:, g * cg : (g + 1) * cg], w[g * og : (g + 1) * og], axes=([1, 4, 5], [1, 2, 3]))
        for g in range(groups)
    ]
    y = np.concatenate(parts, axis=-1).transpose(0, 3, 1, 2)
    return y if b is None else y + b[None, :, None, None]


def _np_maxpool(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    """Reference NCHW max pooling for the probe."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    return sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(-2, -1))


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic sigmoid for the probe."""
    return 1.0 / (1.0 + np.exp(-x))


class GraphBuilder:
    """Accumulates nodes, initializers and shapes of one ONNX graph with scoped, unique, readable names."""

    def __init__(
        self,
        graph_name: str = "graph",
        seed: int = 0,
        opset: int = DEFAULT_OPSET,
        dedup_constants: bool = True,
        probe: bool = True,
        probe_batch: int = 4,
    ) -> None:
        """Create an empty graph.

        ``dedup_constants`` makes :meth:`const` reuse equal initializers; ``probe`` calibrates BN statistics
        on a seeded probe input of batch ``probe_batch`` (see the module docstring).
        """
        self.graph_name = graph_name
        self.probe = probe
        self.probe_batch = probe_batch
        self.values: dict[str, np.ndarray] = {}
        self._probe_rng = np.random.default_rng([seed, 0x5EED])
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.dedup_constants = dedup_constants
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.shapes: dict[str, Shape] = {}
        self.dtypes: dict[str, int] = {}
        self._used: set[str] = set()
        self._scope: list[str] = []
        self._const_cache: dict[tuple[str, Shape, bytes], str] = {}

    # ----------------------------------------------------------------------------------------- naming
    @contextmanager
    def scope(self, name: str | int) -> Iterator[None]:
        """Prefix every name created inside the ``with`` block by ``name.`` (scopes nest)."""
        self._scope.append(str(name))
        try:
            yield
        finally:
            self._scope.pop()

    def unique_name(self, base: str) -> str:
        """Return ``scope.base`` made unique over all node and tensor names (``_1``, ``_2`` ... suffixes)."""
        full = ".".join([*self._scope, base]) if base else ".".join(self._scope)
        name, i = full, 1
        while name in self._used:
            name = f"{full}_{i}"
            i += 1
        self._used.add(name)
        return name

    def shape(self, x: str) -> Shape:
        """Static shape of tensor ``x``."""
        return self.shapes[x]

    # ------------------------------------------------------------------------------- graph plumbing
    def value(self, x: str) -> np.ndarray | None:
        """Probe value of tensor ``x`` (float64) or ``None`` when it is not tracked."""
        return self.values.get(x)

    def _probe_op(self, out: str, fn: Callable[..., np.ndarray], *ins: str) -> str:
        """Record ``fn(*probe values of ins)`` as the probe value of ``out`` when all inputs are known."""
        if self.probe:
            vals = [self.values.get(i) for i in ins]
            if all(v is not None for v in vals):
                self.values[out] = fn(*vals)
        return out

    def add_input(
        self,
        name: str,
        shape: Sequence[int],
        elem_type: int = TensorProto.FLOAT,
        probe_shape: Sequence[int] | None = None,
    ) -> str:
        """Declare a graph input with a static shape (``probe_shape`` may shrink the probe's spatial size;
        the probe batch size is always ``probe_batch``)."""
        if self.probe and elem_type == TensorProto.FLOAT:
            probe_dims = (self.probe_batch, *tuple(probe_shape or shape)[1:])
            self.values[name] = self._probe_rng.standard_normal(probe_dims)
        self._used.add(name)
        self.shapes[name] = tuple(shape)
        self.dtypes[name] = elem_type
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def add_output(self, x: str) -> str:
        """Mark existing tensor ``x`` as a graph output (with its tracked type and shape)."""
        self.outputs.append(helper.make_tensor_value_info(x, self.dtypes[x], list(self.shapes[x])))
        return x

    def rename_tensor(self, old: str, new: str) -> str:
        """Rename a node-produced tensor everywhere it is used (e.g. to give a graph output a fixed name)."""
        if new in self._used:
            raise ValueError(f"name {new!r} already used")
        self._used.add(new)
        for n in self.nodes:
            for seq in (n.input, n.output):
                for i, v in enumerate(seq):
                    if v == old:
                        seq[i] = new
        self.shapes[new] = self.shapes.pop(old)
        self.dtypes[new] = self.dtypes.pop(old)
        if old in self.values:
            self.values[new] = self.values.pop(old)
        return new

    def initializer(self, array: np.ndarray, name: str) -> str:
        """Add ``array`` as an initializer named ``scope.name`` (always a new tensor) and return its name."""
        array = np.asarray(array)
        full = self.unique_name(name)
        self.initializers.append(numpy_helper.from_array(array, full))
        self.shapes[full] = tuple(array.shape)
        self.dtypes[full] = _NP_TO_ONNX[array.dtype]
        if self.probe and array.dtype == np.float32:
            self.values[full] = array.astype(np.float64)
        return full

    def const(
        self,
        array: np.ndarray | Sequence[float] | float,
        name: str,
        dtype=np.float32,
        dedup: bool | None = None,
    ) -> str:
        """Add a constant initializer; equal constants share one tensor unless deduplication is off."""
        arr = np.asarray(array, dtype=dtype)
        if dedup is None:
            dedup = self.dedup_constants
        key = (arr.dtype.str, tuple(arr.shape), arr.tobytes())
        if dedup and key in self._const_cache:
            return self._const_cache[key]
        out = self.initializer(arr, name)
        self._const_cache.setdefault(key, out)
        return out

    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        out_shapes: Sequence[Shape],
        name: str | None = None,
        outputs: Sequence[str] | None = None,
        out_dtype: int = TensorProto.FLOAT,
        **attrs,
    ) -> list[str]:
        """Append a node; output tensors are named after the node unless ``outputs`` gives names."""
        node_name = self.unique_name(name or op_type.lower())
        if outputs is None:
            outputs = (
                [node_name]
                if len(out_shapes) == 1
                else [self.unique_name(f"{name or op_type.lower()}.out{i}") for i in range(len(out_shapes))]
            )
        else:
            for o in outputs:
                self._used.add(o)
        for o, s in zip(outputs, out_shapes, strict=True):
            self.shapes[o] = tuple(int(d) for d in s)
            self.dtypes[o] = out_dtype
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=node_name, **attrs))
        return list(outputs)

    def build(
        self, producer_name: str = PRODUCER_NAME, ir_version: int = DEFAULT_IR_VERSION
    ) -> onnx.ModelProto:
        """Assemble the graph into a ``ModelProto`` (no value_info; shape inference recovers it)."""
        graph = helper.make_graph(self.nodes, self.graph_name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.opset)],
            producer_name=producer_name,
        )
        model.ir_version = ir_version
        return model

    # ---------------------------------------------------------------------------------- layers
    def conv(
        self,
        x: str,
        out_ch: int,
        k: int,
        s: int = 1,
        p: int | None = None,
        groups: int = 1,
        bias: bool = True,
        name: str = "conv",
        gain: float = ACT_GAIN["relu"],
        bias_std: float = 0.05,
    ) -> str:
        """2-D convolution with He-style init ``std = gain / sqrt(fan_in)``; ``p`` defaults to ``k // 2``."""
        n, c, h, w = self.shapes[x]
        if c % groups or out_ch % groups:
            raise ValueError(f"channels {c}->{out_ch} not divisible by groups={groups}")
        p = k // 2 if p is None else p
        fan_in = (c // groups) * k * k
        weight = self.rng.standard_normal((out_ch, c // groups, k, k)) * (gain / math.sqrt(fan_in))
        b = self.rng.standard_normal(out_ch) * bias_std if bias else None
        inputs = [x, self.initializer(weight.astype(np.float32), f"{name}.weight")]
        if b is not None:
            inputs.append(self.initializer(b.astype(np.float32), f"{name}.bias"))
        out_shape = (n, out_ch, _conv_out(h, k, s, p, p), _conv_out(w, k, s, p, p))
        y = self.node(
            "Conv",
            inputs,
            [out_shape],
            name=name,
            kernel_shape=[k, k],
            strides=[s, s],
            pads=[p, p, p, p],
            dilations=[1, 1],
            group=groups,
        )[0]
        return self._probe_op(
            y, lambda xv, wv, *bv: _np_conv(xv, wv, bv[0] if bv else None, s, p, groups), *inputs
        )

    def batchnorm(self, x: str, name: str = "bn", eps: float = 1e-3) -> str:
        """Inference BatchNormalization with non-trivial gamma/beta/mean/var whose net scale stays ~1.

        With a probe value for ``x`` the running mean/var are its per-channel statistics (perturbed);
        otherwise they are random and ``gamma`` is set so that ``gamma / sqrt(var)`` stays near 1.
        """
        c = self.shapes[x][1]
        xv = self.values.get(x)
        if xv is not None:
            axes = (0, *range(2, xv.ndim))
            mu, sd = xv.mean(axis=axes), xv.std(axis=axes)
            mean = _round_sig(mu + self.rng.normal(0.0, 0.05, c) * sd)
            var = _round_sig(np.maximum(sd * sd, 1e-4) * self.rng.uniform(0.8, 1.25, c))
            gamma = self.rng.uniform(0.7, 1.4, c)
        else:
            mean = self.rng.normal(0.0, 0.1, c)
            var = self.rng.uniform(0.25, 2.0, c)
            gamma = np.sqrt(var + eps) * self.rng.uniform(0.8, 1.25, c)
        beta = self.rng.normal(0.0, 0.2, c)
        params = [
            self.initializer(a.astype(np.float32), f"{name}.{suffix}")
            for a, suffix in ((gamma, "weight"), (beta, "bias"), (mean, "running_mean"), (var, "running_var"))
        ]
        y = self.node(
            "BatchNormalization", [x, *params], [self.shapes[x]], name=name, epsilon=eps, momentum=0.97
        )[0]

        def bn(xv, g, b, m, v):
            sh = (1, -1) + (1,) * (xv.ndim - 2)
            return (xv - m.reshape(sh)) / np.sqrt(v.reshape(sh) + eps) * g.reshape(sh) + b.reshape(sh)

        return self._probe_op(y, bn, x, *params)

    def act(self, x: str, kind: str, name: str = "act") -> str:
        """Activation by kind: ``relu``, ``leaky`` (alpha 0.1), ``silu`` (Sigmoid + Mul) or ``linear``."""
        if kind == "relu":
            return self.relu(x, name=name)
        if kind == "leaky":
            y = self.node("LeakyRelu", [x], [self.shapes[x]], name=name, alpha=LEAKY_ALPHA)[0]
            return self._probe_op(y, lambda v: np.where(v > 0, v, LEAKY_ALPHA * v), x)
        if kind == "silu":
            sig = self.sigmoid(x, name=f"{name}.sigmoid")
            return self.mul(x, sig, name=f"{name}.mul")
        if kind == "linear":
            return x
        raise ValueError(f"unknown activation {kind!r}")

    def conv_bn_act(
        self,
        x: str,
        out_ch: int,
        k: int,
        s: int = 1,
        act: str = "silu",
        p: int | None = None,
        groups: int = 1,
        in_act: str | None = None,
        name: str | None = None,
    ) -> str:
        """Conv (no bias) + BatchNormalization + activation, named ``[name.]conv/bn/act`` in the scope.

        ``in_act`` is the activation that produced ``x`` (sets the init gain; defaults to ``act``).
        """
        if name is not None:
            with self.scope(name):
                return self.conv_bn_act(x, out_ch, k, s, act=act, p=p, groups=groups, in_act=in_act)
        gain = ACT_GAIN[in_act or act]
        y = self.conv(x, out_ch, k, s, p=p, groups=groups, bias=False, name="conv", gain=gain)
        y = self.batchnorm(y, name="bn")
        return self.act(y, act, name="act")

    def clip(self, x: str, lo: float, hi: float, name: str = "clip") -> str:
        """Clip with constant ``min``/``max`` inputs (``clip(x, 0, 6)`` is ReLU6)."""
        ins = [x, self.const(lo, "clip_min"), self.const(hi, "clip_max")]
        return self._probe_op(
            self.node("Clip", ins, [self.shapes[x]], name=name)[0], lambda v: np.clip(v, lo, hi), x
        )

    def relu(self, x: str, name: str = "relu") -> str:
        """Relu."""
        return self._probe_op(
            self.node("Relu", [x], [self.shapes[x]], name=name)[0], lambda v: np.maximum(v, 0.0), x
        )

    def sigmoid(self, x: str, name: str = "sigmoid") -> str:
        """Sigmoid."""
        return self._probe_op(self.node("Sigmoid", [x], [self.shapes[x]], name=name)[0], _np_sigmoid, x)

    def identity(self, x: str, name: str = "identity") -> str:
        """Identity (export noise)."""
        return self._probe_op(self.node("Identity", [x], [self.shapes[x]], name=name)[0], lambda v: v, x)

    def dropout(self, x: str, name: str = "dropout") -> str:
        """Dropout with no ratio/training_mode inputs, i.e. a no-op at inference."""
        return self._probe_op(self.node("Dropout", [x], [self.shapes[x]], name=name)[0], lambda v: v, x)

    def maxpool(self, x: str, k: int, s: int, p: int = 0, name: str = "maxpool") -> str:
        """MaxPool with a square kernel and symmetric padding."""
        n, c, h, w = self.shapes[x]
        out = (n, c, _conv_out(h, k, s, p, p), _conv_out(w, k, s, p, p))
        y = self.node(
            "MaxPool", [x], [out], name=name, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p]
        )[0]
        return self._probe_op(y, lambda v: _np_maxpool(v, k, s, p), x)

    def global_avg_pool(self, x: str, name: str = "gap") -> str:
        """GlobalAveragePool to ``[N, C, 1, 1]``."""
        n, c = self.shapes[x][:2]
        y = self.node("GlobalAveragePool", [x], [(n, c, 1, 1)], name=name)[0]
        return self._probe_op(y, lambda v: v.mean(axis=(2, 3), keepdims=True), x)

    def flatten(self, x: str, axis: int = 1, name: str = "flatten") -> str:
        """Flatten to 2-D around ``axis``."""
        s = self.shapes[x]
        y = self.node("Flatten", [x], [(math.prod(s[:axis]), math.prod(s[axis:]))], name=name, axis=axis)[0]
        return self._probe_op(y, lambda v: v.reshape(math.prod(v.shape[:axis]), -1), x)

    def gemm(self, x: str, out_features: int, name: str = "fc", gain: float = 1.0) -> str:
        """Fully connected layer as ``Gemm(x, W, b, transB=1)`` with ``W`` of shape ``[out, in]``."""
        m, k = self.shapes[x]
        w = self.rng.standard_normal((out_features, k)) * (gain / math.sqrt(k))
        b = self.rng.standard_normal(out_features) * 0.05
        wn = self.initializer(w.astype(np.float32), f"{name}.weight")
        bn = self.initializer(b.astype(np.float32), f"{name}.bias")
        y = self.node("Gemm", [x, wn, bn], [(m, out_features)], name=name, transB=1)[0]
        return self._probe_op(y, lambda xv, wv, bv: xv @ wv.T + bv, x, wn, bn)

    def concat(self, xs: Sequence[str], axis: int = 1, name: str = "concat") -> str:
        """Concat along ``axis``."""
        shapes = [self.shapes[x] for x in xs]
        rank = len(shapes[0])
        ax = axis % rank
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        dtype = self.dtypes[xs[0]]
        y = self.node("Concat", list(xs), [tuple(out)], name=name, axis=axis, out_dtype=dtype)[0]
        return self._probe_op(y, lambda *vs: np.concatenate(vs, axis=axis), *xs)

    _NP_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Pow": np.power}

    def _binary(self, op: str, a: str, b: str, name: str) -> str:
        out = tuple(np.broadcast_shapes(self.shapes[a], self.shapes[b]))
        y = self.node(op, [a, b], [out], name=name, out_dtype=self.dtypes[a])[0]
        return self._probe_op(y, self._NP_BINARY[op], a, b)

    def add(self, a: str, b: str, name: str = "add") -> str:
        """Elementwise Add with numpy broadcasting."""
        return self._binary("Add", a, b, name)

    def sub(self, a: str, b: str, name: str = "sub") -> str:
        """Elementwise Sub with numpy broadcasting."""
        return self._binary("Sub", a, b, name)

    def mul(self, a: str, b: str, name: str = "mul") -> str:
        """Elementwise Mul with numpy broadcasting."""
        return self._binary("Mul", a, b, name)

    def pow(self, a: str, b: str, name: str = "pow") -> str:
        """Elementwise Pow with numpy broadcasting."""
        return self._binary("Pow", a, b, name)

    def resize_nearest(self, x: str, scale: int = 2, name: str = "resize") -> str:
        """Opset-13 Resize with a ``scales`` input: nearest, asymmetric, floor (PyTorch ``Upsample``)."""
        n, c, h, w = self.shapes[x]
        scales = self.const([1.0, 1.0, float(scale), float(scale)], f"{name}.scales")
        y = self.node(
            "Resize",
            [x, "", scales],
            [(n, c, h * scale, w * scale)],
            name=name,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )[0]
        return self._probe_op(y, lambda v: v.repeat(scale, axis=2).repeat(scale, axis=3), x)

    def reshape(self, x: str, shape: Sequence[int], name: str = "reshape") -> str:
        """Reshape to a constant target ``shape`` (``-1`` and ``0`` handled as in ONNX)."""
        target = self.const(np.asarray(shape, dtype=np.int64), f"{name}.shape", dtype=np.int64)
        return self.node(
            "Reshape",
            [x, target],
            [resolve_reshape(self.shapes[x], shape)],
            name=name,
            out_dtype=self.dtypes[x],
        )[0]

    def transpose(self, x: str, perm: Sequence[int], name: str = "transpose") -> str:
        """Transpose by ``perm``."""
        s = self.shapes[x]
        return self.node("Transpose", [x], [tuple(s[i] for i in perm)], name=name, perm=list(perm))[0]

    def slice(
        self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int], name: str = "slice"
    ) -> str:
        """Slice with constant starts/ends/axes (step 1)."""
        out = list(self.shapes[x])
        for st, en, ax in zip(starts, ends, axes, strict=True):
            out[ax] = len(range(out[ax])[st:en])
        ins = [
            x,
            self.const(np.asarray(starts, np.int64), f"{name}.starts", dtype=np.int64),
            self.const(np.asarray(ends, np.int64), f"{name}.ends", dtype=np.int64),
            self.const(np.asarray(axes, np.int64), f"{name}.axes", dtype=np.int64),
        ]
        return self.node("Slice", ins, [tuple(out)], name=name, out_dtype=self.dtypes[x])[0]


def resolve_reshape(in_shape: Shape, target: Sequence[int]) -> Shape:
    """Resolve an ONNX Reshape target (``0`` copies the input dim, one ``-1`` is inferred)."""
    out = [in_shape[i] if d == 0 else int(d) for i, d in enumerate(target)]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(in_shape) // known
    if math.prod(out) != math.prod(in_shape):
        raise ValueError(f"cannot reshape {in_shape} to {tuple(target)}")
    return tuple(out)
