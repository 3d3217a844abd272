"""YOLOv7-tiny (backbone, SPP, FPN/PAN neck, three-scale detect head) built with :class:`GraphBuilder`.

Layer names follow the indices of the upstream ``yolov7-tiny.yaml`` (``backbone.0`` .. ``backbone.28``,
``head.29`` .. ``head.76``, ``detect.0`` .. ``detect.2``). With ``export_style=True`` the graph also carries
the decode subgraph and the noise a PyTorch export leaves behind (Shape arithmetic, Identity, Dropout,
a duplicated constant) for the constant-folding and canonicalisation passes to clean up.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from qdq_compiler.models.builder import GraphBuilder

NUM_ANCHORS = 3
STRIDES = (8, 16, 32)
ANCHORS = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)
INT64_MAX = 9223372036854775807
FIRST_HEAD_LAYER = 29  # yaml index of the first head (SPP) layer
PROBE_MAX_RESOLUTION = 160  # BN statistics are calibrated on at most 160x160 probes (a multiple of 32)


def scale_channels(channels: int, width: float) -> int:
    """Scale a base channel count by ``width``: at least 8, rounded up to a multiple of 8."""
    return max(8, math.ceil(channels * width / 8) * 8)


class _YoloBuilder:
    """Layer-indexed construction mirroring the upstream yaml (``self.layers[i]`` is layer ``i``)."""

    def __init__(self, b: GraphBuilder, images: str, width: float, act: str) -> None:
        self.b = b
        self.images = images
        self.width = width
        self.act = act
        self.layers: list[str] = []

    def _scope(self) -> str:
        return self._scope_of(len(self.layers))

    def _src(self, frm: int) -> str:
        return self.layers[frm] if self.layers else self.images  # layer 0 reads the input

    def conv(self, frm: int, c: int, k: int, s: int = 1, in_act: str | None = None) -> str:
        """Conv-BN-act layer reading layer ``frm`` (relative when negative)."""
        with self.b.scope(self._scope()):
            y = self.b.conv_bn_act(
                self._src(frm), scale_channels(c, self.width), k, s, act=self.act, in_act=in_act
            )
        self.layers.append(y)
        return y

    def maxpool(self, frm: int, k: int, s: int) -> str:
        """MaxPool layer (k=2/s=2 downsampling, or stride-1 same-padded SPP pool)."""
        with self.b.scope(self._scope()):
            y = self.b.maxpool(self._src(frm), k, s, p=(k // 2 if s == 1 else 0), name="maxpool")
        self.layers.append(y)
        return y

    def concat(self, frms: list[int]) -> str:
        """Channel Concat layer."""
        with self.b.scope(self._scope()):
            y = self.b.concat([self._src(f) for f in frms], axis=1, name="concat")
        self.layers.append(y)
        return y

    def upsample(self, frm: int) -> str:
        """Nearest x2 Resize layer."""
        with self.b.scope(self._scope()):
            y = self.b.resize_nearest(self._src(frm), 2, name="resize")
        self.layers.append(y)
        return y

    def elan(self, frm: int, c: int, c_out: int) -> str:
        """ELAN-tiny: two 1x1 branches, two chained 3x3 convs on the second, Concat of 4, 1x1 conv."""
        self.conv(frm, c, 1)
        self.conv(-2 if frm == -1 else frm, c, 1)
        self.conv(-1, c, 3)
        self.conv(-1, c, 3)
        self.concat([-1, -2, -3, -4])
        return self.conv(-1, c_out, 1)

    def noise(self, index: int, kind: str) -> None:
        """Insert a no-op (``Identity``/``Dropout``) behind layer ``index`` and reroute its consumers."""
        with self.b.scope(f"{self._scope_of(index)}.export"):
            if kind == "identity":
                y = self.b.identity(self.layers[index], name="identity")
            else:
                y = self.b.dropout(self.layers[index], name="dropout")
        self.layers[index] = y

    @staticmethod
    def _scope_of(index: int) -> str:
        return f"backbone.{index}" if index < FIRST_HEAD_LAYER else f"head.{index}"


def _backbone_and_neck(y: _YoloBuilder, export_style: bool) -> list[str]:
    """Build layers 0..76 and return the three head-input feature maps (P3, P4, P5)."""
    y.conv(-1, 32, 3, 2, in_act="linear")  # 0 P1/2
    y.conv(-1, 64, 3, 2)  # 1 P2/4
    y.elan(-1, 32, 64)  # 2-7
    y.maxpool(-1, 2, 2)  # 8 P3/8
    y.elan(-1, 64, 128)  # 9-14
    if export_style:
        y.noise(14, "identity")
    y.maxpool(-1, 2, 2)  # 15 P4/16
    y.elan(-1, 128, 256)  # 16-21
    y.maxpool(-1, 2, 2)  # 22 P5/32
    y.elan(-1, 256, 512)  # 23-28
    # SPP (29-37)
    y.conv(-1, 256, 1)  # 29
    y.conv(-2, 256, 1)  # 30
    y.maxpool(-1, 5, 1)  # 31
    y.maxpool(-2, 9, 1)  # 32
    y.maxpool(-3, 13, 1)  # 33
    y.concat([-1, -2, -3, -4])  # 34
    y.conv(-1, 256, 1)  # 35
    y.concat([-1, -7])  # 36
    y.conv(-1, 256, 1)  # 37
    if export_style:
        y.noise(37, "identity")
    # FPN top-down
    y.conv(-1, 128, 1)  # 38
    y.upsample(-1)  # 39
    y.conv(21, 128, 1)  # 40
    y.concat([-1, -2])  # 41
    y.elan(-1, 64, 128)  # 42-47
    y.conv(-1, 64, 1)  # 48
    y.upsample(-1)  # 49
    y.conv(14, 64, 1)  # 50
    y.concat([-1, -2])  # 51
    y.elan(-1, 32, 64)  # 52-57
    # PAN bottom-up
    y.conv(-1, 128, 3, 2)  # 58
    y.concat([-1, 47])  # 59
    y.elan(-1, 64, 128)  # 60-65
    y.conv(-1, 256, 3, 2)  # 66
    y.concat([-1, 37])  # 67
    y.elan(-1, 128, 256)  # 68-73
    if export_style:
        y.noise(73, "dropout")
    y.conv(57, 128, 3)  # 74
    y.conv(65, 256, 3)  # 75
    y.conv(73, 512, 3)  # 76
    return y.layers[74:77]


def _gather_dims(b: GraphBuilder, x: str, axes: list[int]) -> list[str]:
    """PyTorch-export shape arithmetic: ``Shape -> Gather(axis) -> Unsqueeze`` for each of ``axes``."""
    rank = len(b.shape(x))
    shp = b.node("Shape", [x], [(rank,)], name="shape", out_dtype=onnx.TensorProto.INT64)[0]
    unsq_axes = b.const(np.asarray([0], np.int64), "unsqueeze_axes", dtype=np.int64)
    dims = []
    for ax in axes:
        idx = b.const(np.asarray(ax, np.int64), f"gather{ax}.index", dtype=np.int64)
        g = b.node("Gather", [shp, idx], [()], name=f"gather{ax}", out_dtype=onnx.TensorProto.INT64, axis=0)[
            0
        ]
        dims.append(
            b.node(
                "Unsqueeze", [g, unsq_axes], [(1,)], name=f"unsqueeze{ax}", out_dtype=onnx.TensorProto.INT64
            )[0]
        )
    return dims


def _dynamic_reshape(
    b: GraphBuilder, x: str, parts: list[str | int], out_shape: tuple[int, ...], name: str
) -> str:
    """Reshape whose target is a ``Concat`` of gathered dims (tensor names) and int constants."""
    with b.scope(name):
        ins = [
            p if isinstance(p, str) else b.const(np.asarray([p], np.int64), f"dim{i}", dtype=np.int64)
            for i, p in enumerate(parts)
        ]
        target = b.node(
            "Concat", ins, [(len(parts),)], name="concat", out_dtype=onnx.TensorProto.INT64, axis=0
        )[0]
    return b.node("Reshape", [x, target], [out_shape], name=name)[0]


def _decode(b: GraphBuilder, p: str, scale: int, duplicate_const: bool) -> str:
    """YOLO box decode like the PyTorch export: ``xy=(2s-0.5+grid)*stride``, ``wh=(2s)**2*anchor``."""
    _, na, ny, nx, _ = b.shape(p)
    yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    grid = np.stack((xv, yv), axis=-1).reshape(1, 1, ny, nx, 2).astype(np.float32)
    anchor_grid = np.asarray(ANCHORS[scale], np.float32).reshape(1, na, 1, 1, 2)
    two = b.const(2.0, "two", dedup=not duplicate_const)
    xy = b.slice(p, [0], [2], [4], name="slice_xy")
    wh = b.slice(p, [2], [4], [4], name="slice_wh")
    conf = b.slice(p, [4], [INT64_MAX], [4], name="slice_conf")
    xy = b.mul(xy, two, name="xy.mul2")
    xy = b.sub(xy, b.const(0.5, "half"), name="xy.sub")
    xy = b.add(xy, b.const(grid, "grid"), name="xy.add_grid")
    xy = b.mul(xy, b.const(float(STRIDES[scale]), "stride"), name="xy.mul_stride")
    wh = b.mul(wh, two, name="wh.mul2")
    wh = b.pow(wh, b.const(2.0, "exponent"), name="wh.pow")
    wh = b.mul(wh, b.const(anchor_grid, "anchor_grid"), name="wh.mul_anchor")
    return b.concat([xy, wh, conf], axis=-1, name="cat")


def _detect(b: GraphBuilder, feats: list[str], num_classes: int, export_style: bool) -> str:
    """Three-scale detect head: 1x1 conv, reshape/transpose, sigmoid, (decode), concat into ``output``."""
    no = 5 + num_classes
    outs = []
    for i, f in enumerate(feats):
        with b.scope(f"detect.{i}"):
            x = b.conv(f, NUM_ANCHORS * no, 1, 1, p=0, bias=True, name="conv", gain=1.0, bias_std=0.5)
            _, _, ny, nx = b.shape(x)
            shape5 = (1, NUM_ANCHORS, no, ny, nx)
            if export_style:
                bs, gy, gx = _gather_dims(b, x, [0, 2, 3])
                x = _dynamic_reshape(b, x, [bs, NUM_ANCHORS, no, gy, gx], shape5, "view")
            else:
                x = b.reshape(x, shape5, name="view")
            x = b.transpose(x, [0, 1, 3, 4, 2], name="permute")
            x = b.sigmoid(x, name="sigmoid")
            if export_style:
                x = _decode(b, x, i, duplicate_const=(i == 1))
                x = _dynamic_reshape(b, x, [bs, -1, no], (1, NUM_ANCHORS * ny * nx, no), "flatten")
            else:
                x = b.reshape(x, (1, -1, no), name="flatten")
        outs.append(x)
    return b.concat(outs, axis=1, name="detect.concat")


def build_yolov7_tiny(
    width: float = 0.25,
    resolution: int = 160,
    num_classes: int = 3,
    seed: int = 0,
    export_style: bool = True,
    act: str = "leaky",
) -> onnx.ModelProto:
    """YOLOv7-tiny with channels scaled by ``width``; input ``images`` ``[1,3,res,res]``, output ``output``.

    ``output`` is ``[1, 3*(s8^2 + s16^2 + s32^2), 5 + num_classes]``. ``act`` is ``"leaky"`` or ``"silu"``.
    ``export_style`` adds the box decode and PyTorch-export noise (Shape/Gather/Unsqueeze/Concat reshape
    targets, Identity, Dropout, one duplicated constant initializer).
    """
    if resolution % 32:
        raise ValueError(f"resolution must be a multiple of 32, got {resolution}")
    if act not in ("leaky", "silu"):
        raise ValueError(f"act must be 'leaky' or 'silu', got {act!r}")
    b = GraphBuilder("yolov7_tiny", seed=seed)
    probe_res = min(resolution, PROBE_MAX_RESOLUTION)
    images = b.add_input("images", (1, 3, resolution, resolution), probe_shape=(1, 3, probe_res, probe_res))
    y = _YoloBuilder(b, images, width, act)
    feats = _backbone_and_neck(y, export_style)
    out = _detect(b, feats, num_classes, export_style)
    b.add_output(b.rename_tensor(out, "output"))
    return b.build()
