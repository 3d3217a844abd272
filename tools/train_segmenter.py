"""Train the bundled DB-style text segmenter (dev only: needs ``pip install torch==2.13.0``).

A PP-LCNetV3-like depthwise backbone at reduced width for 128x128 inputs: every conv is a "learnable rep
layer" (while training: a kxk conv+BN branch, a 1x1 conv+BN branch and an identity BatchNorm when shapes
allow; for export folded into one conv with bias), followed by a learnable scalar affine (Mul, Add), then
HardSwish and another learnable scalar affine. A DBFPN neck (1x1 lateral convs without BatchNorm or bias,
nearest upsample + Add top-down, 3x3 convs to a quarter of the channels, upsample to 1/4 scale, one
Concat), and a DB probability head (3x3 conv, BN, Relu, ConvTranspose 2x2/2, BN, Relu, ConvTranspose 2x2/2,
Sigmoid) giving a full-resolution text probability map. Trained with BCE + Dice on
:mod:`qdq_compiler.zoo.text_seg`, exported to ONNX opset 17 in eval mode: rep branches folded by this script,
Conv+BatchNorm folded by the exporter; the BatchNorms after the ConvTransposes stay BatchNormalization nodes.

    nice -n 10 python tools/train_segmenter.py --out qdq_compiler/data/segmenter/segmenter.onnx \
        --log tools/train_log_segmenter.txt

``--recipe wide`` trains the same topology into the activation statistics of long-trained PP-OCR models
(per-channel ranges spread over decades, a neck Concat with members from +-3 to +-3000), the model that
reproduces issue 15's INT8 failure (:func:`apply_wide_gains`, docs/models.md):

    nice -n 19 python tools/train_segmenter.py --recipe wide --epochs 12 \
        --out qdq_compiler/data/segmenter/segmenter_wide.onnx    # log: tools/train_log_segmenter_wide.txt
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from qdq_compiler.zoo.text_seg import IMAGE_SIZE, generate

# (kernel, input channels, output channels, stride) per backbone stage; each stage's output (strides
# 4, 8, 16, 32) feeds the neck.
STAGES = {
    "b2": ((3, 8, 16, 2), (3, 16, 16, 1)),
    "b3": ((3, 16, 32, 2), (3, 32, 32, 1)),
    "b4": ((3, 32, 64, 2), (5, 64, 64, 1), (5, 64, 64, 1)),
    "b5": ((5, 64, 128, 2), (5, 128, 128, 1)),
}
STEM = 8
NECK = 32
KXK_BRANCHES = 1


class Affine(nn.Module):
    """Learnable scalar scale and bias (PP-LCNetV3's "learnable affine block"): ``x * scale + bias``."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.bias


class Act(nn.Module):
    """HardSwish followed by a learnable affine."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Hardswish()
        self.lab = Affine()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lab(self.act(x))


def conv_bn(c1: int, c2: int, k: int, s: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c2))


def _fold(
    conv: nn.Conv2d | None, bn: nn.BatchNorm2d, c1: int, groups: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel [c2, c1/groups, k, k] and bias of conv (None: identity) followed by eval-mode BatchNorm."""
    std = torch.sqrt(bn.running_var + bn.eps)
    if conv is None:
        per = c1 // groups
        w = torch.zeros(c1, per, k, k)
        for i in range(c1):
            w[i, i % per, k // 2, k // 2] = 1.0
    else:
        w = conv.weight.detach()
        pad = (k - w.shape[-1]) // 2
        w = F.pad(w, [pad, pad, pad, pad])
    t = (bn.weight / std).detach()
    return w * t.view(-1, 1, 1, 1), (bn.bias - bn.running_mean * bn.weight / std).detach()


class RepLayer(nn.Module):
    """Re-parameterisable conv: kxk branches + 1x1 branch + identity BN, then affine and optional Act."""

    def __init__(self, c1: int, c2: int, k: int, s: int, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.c1, self.c2, self.k, self.s, self.groups = c1, c2, k, s, groups
        self.kxk = nn.ModuleList(conv_bn(c1, c2, k, s, groups) for _ in range(KXK_BRANCHES))
        self.scale = conv_bn(c1, c2, 1, s, groups) if k > 1 else None
        self.identity = nn.BatchNorm2d(c1) if c1 == c2 and s == 1 else None
        self.fused: nn.Conv2d | None = None
        self.lab = Affine()
        self.act = Act() if act else nn.Identity()
        # --recipe wide only (set by apply_wide_gains): fixed per-channel gains of the branch sum (out_gain)
        # and of the input (in_gain, groups == 1 only), folded into the conv by fuse().
        self.out_gain: torch.Tensor | None = None
        self.in_gain: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            y = self.fused(x)
        else:
            if self.in_gain is not None:
                x = x * self.in_gain.view(1, -1, 1, 1)
            y = sum(b(x) for b in self.kxk)
            if self.scale is not None:
                y = y + self.scale(x)
            if self.identity is not None:
                y = y + self.identity(x)
            if self.out_gain is not None:
                y = y * self.out_gain.view(1, -1, 1, 1)
        return self.act(self.lab(y))

    @torch.no_grad()
    def fuse(self) -> None:
        """Replace the branches by one kxk conv with bias (exact in eval mode)."""
        parts = [_fold(b[0], b[1], self.c1, self.groups, self.k) for b in self.kxk]
        if self.scale is not None:
            parts.append(_fold(self.scale[0], self.scale[1], self.c1, self.groups, self.k))
        if self.identity is not None:
            parts.append(_fold(None, self.identity, self.c1, self.groups, self.k))
        conv = nn.Conv2d(self.c1, self.c2, self.k, self.s, self.k // 2, groups=self.groups, bias=True)
        weight, bias = sum(p[0] for p in parts), sum(p[1] for p in parts)
        if self.in_gain is not None:
            weight = weight * self.in_gain.view(1, -1, 1, 1)
        if self.out_gain is not None:
            weight, bias = weight * self.out_gain.view(-1, 1, 1, 1), bias * self.out_gain
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        self.fused = conv
        del self.kxk
        self.kxk = nn.ModuleList()
        self.scale = self.identity = None


class GainConv(nn.Conv2d):
    """A Conv2d (parameters and init of ``nn.Conv2d``) whose kernel is multiplied by fixed per-output and
    per-input channel gains while training (``--recipe wide``); :meth:`fold` bakes them into the kernel."""

    out_gain: torch.Tensor | None = None
    in_gain: torch.Tensor | None = None

    def kernel(self) -> torch.Tensor:
        w = self.weight
        if self.in_gain is not None:
            w = w * self.in_gain.view(1, -1, 1, 1)
        if self.out_gain is not None:
            w = w * self.out_gain.view(-1, 1, 1, 1)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        if bias is not None and self.out_gain is not None:
            bias = bias * self.out_gain
        return self._conv_forward(x, self.kernel(), bias)

    @torch.no_grad()
    def fold(self) -> None:
        w = self.kernel().detach().clone()
        if self.bias is not None and self.out_gain is not None:
            self.bias.mul_(self.out_gain)
        self.weight.copy_(w)
        self.out_gain = self.in_gain = None


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, k: int, c1: int, c2: int, s: int) -> None:
        super().__init__(RepLayer(c1, c1, k, s, groups=c1), RepLayer(c1, c2, 1, 1))


class LCNetBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, STEM, 3, 2, 1), Act())
        self.stages = nn.ModuleDict(
            {
                name: nn.Sequential(*(DepthwiseSeparable(*cfg) for cfg in cfgs))
                for name, cfgs in STAGES.items()
            }
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages.values():
            x = stage(x)
            feats.append(x)
        return feats


class DBFPN(nn.Module):
    """PaddleOCR's DBFPN: no BatchNorm or bias, top-down nearest upsample + Add, one Concat at 1/4."""

    def __init__(self, chs: list[int], c: int) -> None:
        super().__init__()
        self.ins = nn.ModuleList(GainConv(ci, c, 1, bias=False) for ci in chs)
        self.ps = nn.ModuleList(GainConv(c, c // 4, 3, padding=1, bias=False) for _ in chs)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        c2, c3, c4, c5 = (conv(f) for conv, f in zip(self.ins, feats))
        c4 = c4 + F.interpolate(c5, scale_factor=2.0, mode="nearest")
        c3 = c3 + F.interpolate(c4, scale_factor=2.0, mode="nearest")
        c2 = c2 + F.interpolate(c3, scale_factor=2.0, mode="nearest")
        p2, p3, p4, p5 = (conv(f) for conv, f in zip(self.ps, (c2, c3, c4, c5)))
        p5 = F.interpolate(p5, scale_factor=8.0, mode="nearest")
        p4 = F.interpolate(p4, scale_factor=4.0, mode="nearest")
        p3 = F.interpolate(p3, scale_factor=2.0, mode="nearest")
        return torch.cat([p5, p4, p3, p2], 1)


class DBHead(nn.Module):
    """Probability branch of DBNet's head: logits while training, Sigmoid in export mode."""

    def __init__(self, c: int) -> None:
        super().__init__()
        m = c // 4
        self.body = nn.Sequential(
            GainConv(c, m, 3, padding=1, bias=False),
            nn.BatchNorm2d(m),
            nn.ReLU(),
            nn.ConvTranspose2d(m, m, 2, 2),
            nn.BatchNorm2d(m),
            nn.ReLU(),
            nn.ConvTranspose2d(m, 1, 2, 2),
        )
        self.export = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return torch.sigmoid(y) if self.export else y


class DBNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = LCNetBackbone()
        self.neck = DBFPN([cfgs[-1][2] for cfgs in STAGES.values()], NECK)
        self.head = DBHead(NECK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.backbone(x)))


def reparameterized(model: DBNet) -> DBNet:
    """An eval-mode copy with every :class:`RepLayer` folded to one conv."""
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, RepLayer):
            m.fuse()
        elif isinstance(m, GainConv):
            m.fold()
    return model


def _log_uniform(rng: np.random.Generator, n: int, decades: float) -> torch.Tensor:
    return torch.from_numpy(10.0 ** rng.uniform(-decades / 2, decades / 2, n)).float()


def apply_wide_gains(
    model: DBNet, rng: np.random.Generator, decades: float, neck_gains: list[float], head_comp: float
) -> None:
    """``--recipe wide``: fixed gains that give the exported model a long-trained model's activation ranges.

    Every backbone rep layer's branch sum (its BatchNorms' gamma and beta together) is multiplied per output
    channel by a gain drawn log-uniformly over ``decades`` decades; a conv that mixes channels (1x1 rep layer,
    the neck's lateral 1x1 convs) reads its input through the inverse gains, so every channel keeps its
    weight in the function (a depthwise reader needs none: its own BatchNorm renormalises each channel).
    The neck's 3x3 output convs (p2, p3, p4, p5, in that order) are multiplied by ``neck_gains`` and the
    head's conv reads each of them, Concat member by member, through ``gain ** -head_comp``. The gains are
    constant, not trained: training the rest with Adam is the same as initialising the BatchNorm
    gammas/betas and the neck weights at these scales with learning rates scaled alike. All are folded into
    the exported convs (the exported graph has the default recipe's nodes).
    """
    layers = [m for m in model.backbone.modules() if isinstance(m, RepLayer)]
    prev: torch.Tensor | None = None  # the gain of the previous layer's output channels
    for layer in layers:
        if layer.groups == 1 and prev is not None:
            layer.in_gain = 1.0 / prev
        layer.out_gain = _log_uniform(rng, layer.c2, decades)
        prev = layer.out_gain
    last = [stage[-1][-1].out_gain for stage in model.backbone.stages.values()]
    for conv, gain in zip(model.neck.ins, last):
        conv.in_gain = 1.0 / gain
    members = []
    for conv, g in zip(model.neck.ps, neck_gains):
        conv.out_gain = torch.full((conv.out_channels,), float(g))
        members.append(torch.full((conv.out_channels,), float(g) ** -head_comp))
    # torch.cat order in DBFPN.forward is p5, p4, p3, p2 while ps is ordered p2..p5
    head = model.head.body[0]
    assert isinstance(head, GainConv)
    head.in_gain = torch.cat(members[::-1])


# -------------------------------------------------------------------------------------------------- data
def load_split(split: str, count: int, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """``(images [n,H,W,3] uint8, masks [n,H,W] uint8)``, cached as .npz."""
    cache = cache_dir / f"text_seg_{split}_{count}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        z = np.load(cache)
        return z["images"], z["masks"]
    samples = list(generate(split, count))
    images, masks = np.stack([s.image for s in samples]), np.stack([s.mask for s in samples])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, images=images, masks=masks)
    return images, masks


def make_batch(
    images: np.ndarray, masks: np.ndarray, idx: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented batch: images [B,3,H,W] in [0,1], masks [B,1,H,W]; flips and brightness/contrast jitter."""
    xs, ys = [], []
    for n in idx:
        img, m = images[n], masks[n]
        if rng.random() < 0.5:
            img, m = img[:, ::-1], m[:, ::-1]
        if rng.random() < 0.5:
            img, m = img[::-1], m[::-1]
        x = img.astype(np.float32)
        if rng.random() < 0.5:
            x = np.clip(x * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20), 0, 255)
        xs.append(x / 255.0)
        ys.append(m.astype(np.float32))
    x = torch.from_numpy(np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2)))
    return x, torch.from_numpy(np.ascontiguousarray(np.stack(ys)[:, None]))


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + dice


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """``(IoU of the map binarised at 0.5 vs the masks over all pixels, max |neck Concat input|)``."""
    model.eval()
    inter = union = 0
    peak = 0.0
    for s in range(0, len(images), 64):
        x = torch.from_numpy(images[s : s + 64].astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
        feats = model.backbone(x)
        fused = model.neck(feats)
        peak = max(peak, float(fused.abs().max()))
        pred = (torch.sigmoid(model.head(fused)) > 0.5).numpy()[:, 0]
        gt = masks[s : s + 64].astype(bool)
        inter += int((pred & gt).sum())
        union += int((pred | gt).sum())
    return inter / max(union, 1), peak


def export_onnx(model: DBNet, path: Path) -> None:
    """ONNX opset 17 of the folded eval-mode model, with ``qdq_compiler.model_kind`` = segmentation."""
    model = reparameterized(model)
    model.head.export = True
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["prob"],
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"qdq_compiler.model_kind": "segmentation"})
    onnx.save(proto, str(path))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("qdq_compiler/data/segmenter/segmenter.onnx"))
    ap.add_argument("--log", type=Path, default=None, help="default tools/train_log_segmenter[_RECIPE].txt")
    ap.add_argument(
        "--recipe",
        choices=("default", "wide"),
        default="default",
        help="default: the shipped segmenter.onnx; wide: long-trained activation ranges (see docs/models.md)",
    )
    ap.add_argument("--decades", type=float, default=2.5, help="wide: spread of the per-channel gains")
    ap.add_argument("--neck-gains", default="40,10,3,1", help="wide: gains of p2,p3,p4,p5")
    ap.add_argument("--head-comp", type=float, default=0.5, help="wide: head reads member k via gain**-this")
    ap.add_argument("--affine-lr-mult", type=float, default=10.0, help="wide: learning-rate factor, affines")
    ap.add_argument("--checkpoint", type=Path, default=None, help="save the unfolded state_dict (.pt) here")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "qdq_zoo_cache")
    ap.add_argument("--train-count", type=int, default=4000)
    ap.add_argument("--val-count", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument(
        "--optim",
        choices=("adamw", "adam-l2"),
        default="adamw",
        help="adamw: AdamW decay 0.01 (ignored with --recipe wide: its own Adam groups)",
    )
    ap.add_argument("--l2", type=float, default=5e-5, help="coupled L2 on conv weights with --optim adam-l2")
    ap.add_argument(
        "--max-minutes", type=float, default=25.0, help="stop early after this wall time (0: off)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is faster than 2 when other jobs share the cores)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.log is None:
        suffix = "" if args.recipe == "default" else f"_{args.recipe}"
        args.log = Path(f"tools/train_log_segmenter{suffix}.txt")

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    logf = args.log.open("w")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    t0 = time.time()
    log(f"args: {vars(args)}")
    train_x, train_y = load_split("train", args.train_count, args.cache_dir)
    val_x, val_y = load_split("val", args.val_count, args.cache_dir)
    log(
        f"data: train {len(train_x)}, val {len(val_x)} images, text pixels {train_y.mean():.3f} "
        f"({time.time() - t0:.0f}s)"
    )
    model = DBNet()
    if args.recipe == "wide":  # own generator: the default recipe's random streams stay untouched
        gains = [float(g) for g in args.neck_gains.split(",")]
        apply_wide_gains(model, np.random.default_rng([args.seed, 1]), args.decades, gains, args.head_comp)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M parameters while training")
    affine = [
        p
        for n, p in model.named_parameters()
        if ".lab." in n or n.endswith("lab.scale") or n.endswith("lab.bias")
    ]
    ids = {id(p) for p in affine}
    rest = [p for p in model.parameters() if id(p) not in ids]
    if args.recipe == "wide":  # Adam, coupled L2 on backbone convs only, affines at a higher learning rate
        bconvs = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.ndim == 4]
        bids = {id(p) for p in bconvs} | ids
        free = [p for p in model.parameters() if id(p) not in bids]
        opt = torch.optim.Adam(
            [
                {"params": bconvs, "weight_decay": args.l2},
                {"params": free, "weight_decay": 0.0},
                {"params": affine, "weight_decay": 0.0, "lr_mult": args.affine_lr_mult},
            ],
            lr=args.lr,
        )
    elif args.optim == "adamw":  # decoupled weight decay on all but the affines (run 1)
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            [{"params": rest, "weight_decay": 0.01}, {"params": affine, "weight_decay": 0.0}], lr=args.lr
        )
    else:  # PaddleOCR's DB recipe: Adam with a small coupled L2 on conv weights, none on BN/affines/biases
        convs = [p for p in rest if p.ndim == 4]
        ids |= {id(p) for p in convs}
        others = [p for p in model.parameters() if id(p) not in ids] + affine
        opt = torch.optim.Adam(
            [{"params": convs, "weight_decay": args.l2}, {"params": others, "weight_decay": 0.0}], lr=args.lr
        )
    steps_per_epoch = len(train_x) // args.batch
    total = steps_per_epoch * args.epochs
    warmup = min(200, total // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        q = (step - warmup) / max(1, total - warmup)
        return args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * q)))

    step, stopped = 0, False
    for epoch in range(args.epochs):
        model.train()
        perm = rng.permutation(len(train_x))
        te, tot, n = time.time(), 0.0, 0
        for bi in range(steps_per_epoch):
            idx = perm[bi * args.batch : (bi + 1) * args.batch]
            x, y = make_batch(train_x, train_y, idx, rng)
            for g in opt.param_groups:
                g["lr"] = lr_at(step) * g.get("lr_mult", 1.0)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            tot, n, step = tot + loss.item(), n + 1, step + 1
            if args.max_minutes and time.time() - t0 > args.max_minutes * 60:
                stopped = True
                break
        iou, peak = evaluate(model, val_x, val_y)
        log(
            f"epoch {epoch + 1}/{args.epochs} loss {tot / n:.4f} lr {lr_at(step - 1):.2e} "
            f"{time.time() - te:.0f}s "
            f"total {(time.time() - t0) / 60:.1f}min | val IoU {iou:.4f} neck concat max |x| {peak:.1f}"
        )
        if stopped:
            log(f"stopped early after {args.max_minutes} min")
            break
    if args.checkpoint:
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.checkpoint)
    folded = reparameterized(model)
    iou_f, _ = evaluate(folded, val_x, val_y)
    with torch.no_grad():
        x = torch.from_numpy(val_x[:8].astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
        diff = float((model.eval()(x) - folded(x)).abs().max())
    log(f"rep branches folded: val IoU {iou_f:.4f}, max |logit difference| vs unfolded {diff:.2e}")
    export_onnx(model, args.out)
    log(
        f"exported {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB) "
        f"after {(time.time() - t0) / 60:.1f} min"
    )
    logf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
