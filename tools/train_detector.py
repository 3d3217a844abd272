"""Train the bundled sample detector (dev only: needs ``pip install torch==2.13.0``).

A reduced-width YOLOv7-tiny (ELAN Conv/Concat blocks, MaxPool downsampling, SPP with parallel MaxPools,
nearest upsampling, FPN/PAN neck, three-scale anchor head at strides 8/16/32) trained from scratch on the
synthetic ``train`` split, then exported to ONNX opset 17 with BatchNorm kept and the usual decoded head
``[1, N, 5 + nc]`` (xywh pixels, objectness, class scores).

    python tools/train_detector.py --out qdq_compiler/data/detector/detector.onnx --log tools/train_log.txt
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
import torch
from torch import nn

from qdq_compiler.detect import CLASS_NAMES, IMAGE_SIZE
from qdq_compiler.detect.decode import decode
from qdq_compiler.detect.evaluate import coco_map, to_coco_results
from qdq_compiler.detect.synthetic import coco_dict, generate

NC = len(CLASS_NAMES)
NO = 5 + NC
STRIDES = (8, 16, 32)
# Anchors (w, h in pixels) sized for the 12..72 px synthetic objects at 160x160.
ANCHORS = (
    ((12, 12), (14, 22), (22, 14)),
    ((26, 26), (24, 40), (40, 24)),
    ((48, 48), (44, 72), (72, 44)),
)
NA = 3


# ------------------------------------------------------------------------------------------------- model
def ch(c: int, width: float) -> int:
    """Scale a YOLOv7-tiny channel count by ``width`` (multiple of 8, at least 8)."""
    return max(8, math.ceil(c * width / 8) * 8)


class Conv(nn.Module):
    """Conv (no bias) + BatchNorm + LeakyReLU(0.1)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Elan(nn.Module):
    """ELAN-tiny: two 1x1 branches, two chained 3x3 convs, Concat of four, 1x1 conv."""

    def __init__(self, c1: int, c: int, c2: int) -> None:
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c), Conv(c1, c)
        self.cv3, self.cv4 = Conv(c, c, 3), Conv(c, c, 3)
        self.out = Conv(4 * c, c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x), self.cv2(x)
        c = self.cv3(b)
        d = self.cv4(c)
        return self.out(torch.cat([d, c, b, a], 1))


class Spp(nn.Module):
    """SPPCSP-tiny: a 1x1 shortcut and 1x1 -> parallel MaxPool 5/9/13 -> Concat -> 1x1, joined by 1x1."""

    def __init__(self, c1: int, c: int) -> None:
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c), Conv(c1, c)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.cv3 = Conv(4 * c, c)
        self.cv4 = Conv(2 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x), self.cv2(x)
        y = self.cv3(torch.cat([p(b) for p in reversed(self.pools)] + [b], 1))
        return self.cv4(torch.cat([y, a], 1))


class Detect(nn.Module):
    """1x1 convs per scale; in export mode reshape/permute, sigmoid and decode to ``[B, N, 5 + nc]``."""

    def __init__(self, chs: tuple[int, int, int], size: int) -> None:
        super().__init__()
        self.m = nn.ModuleList(nn.Conv2d(c, NA * NO, 1) for c in chs)
        self.export = False
        for i, s in enumerate(STRIDES):
            n = size // s
            yv, xv = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            self.register_buffer(f"grid{i}", torch.stack((xv, yv), 2).view(1, 1, n, n, 2).float(), False)
            anchor = torch.tensor(ANCHORS[i], dtype=torch.float32).view(1, NA, 1, 1, 2)
            self.register_buffer(f"anchor{i}", anchor, False)
        self._init_biases(size)

    def _init_biases(self, size: int) -> None:
        for conv, s in zip(self.m, STRIDES):
            b = conv.bias.data.view(NA, NO)
            b[:, 4] += math.log(8 / (size / s) ** 2)  # ~8 objects per image
            b[:, 5:] += math.log(0.6 / (NC - 0.99))
            conv.bias.data = b.view(-1)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        outs = []
        for i, (conv, f) in enumerate(zip(self.m, feats)):
            x = conv(f)
            bs, _, ny, nx = x.shape
            x = x.view(bs, NA, NO, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.export:
                outs.append(x)
                continue
            y = x.sigmoid()
            xy = (y[..., 0:2] * 2 - 0.5 + getattr(self, f"grid{i}")) * STRIDES[i]
            wh = (y[..., 2:4] * 2) ** 2 * getattr(self, f"anchor{i}")
            outs.append(torch.cat([xy, wh, y[..., 4:]], -1).view(bs, -1, NO))
        return torch.cat(outs, 1) if self.export else outs


class TinyYolo(nn.Module):
    """YOLOv7-tiny topology with channels scaled by ``width``."""

    def __init__(self, width: float = 0.5, size: int = IMAGE_SIZE) -> None:
        super().__init__()
        c = lambda n: ch(n, width)  # noqa: E731
        self.stem = nn.Sequential(Conv(3, c(32), 3, 2), Conv(c(32), c(64), 3, 2), Elan(c(64), c(32), c(64)))
        self.pool = nn.MaxPool2d(2, 2)
        self.b3 = Elan(c(64), c(64), c(128))
        self.b4 = Elan(c(128), c(128), c(256))
        self.b5 = Elan(c(256), c(256), c(512))
        self.spp = Spp(c(512), c(256))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.lat5, self.lat4 = Conv(c(256), c(128)), Conv(c(256), c(128))
        self.td4 = Elan(c(256), c(64), c(128))
        self.lat4b, self.lat3 = Conv(c(128), c(64)), Conv(c(128), c(64))
        self.td3 = Elan(c(128), c(32), c(64))
        self.down3 = Conv(c(64), c(128), 3, 2)
        self.bu4 = Elan(c(256), c(64), c(128))
        self.down4 = Conv(c(128), c(256), 3, 2)
        self.bu5 = Elan(c(512), c(128), c(256))
        self.h3, self.h4, self.h5 = Conv(c(64), c(128), 3), Conv(c(128), c(256), 3), Conv(c(256), c(512), 3)
        self.detect = Detect((c(128), c(256), c(512)), size)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        p3 = self.b3(self.pool(self.stem(x)))
        p4 = self.b4(self.pool(p3))
        p5 = self.spp(self.b5(self.pool(p4)))
        t4 = self.td4(torch.cat([self.up(self.lat5(p5)), self.lat4(p4)], 1))
        t3 = self.td3(torch.cat([self.up(self.lat4b(t4)), self.lat3(p3)], 1))
        o4 = self.bu4(torch.cat([self.down3(t3), t4], 1))
        o5 = self.bu5(torch.cat([self.down4(o4), p5], 1))
        return self.detect([self.h3(t3), self.h4(o4), self.h5(o5)])


# -------------------------------------------------------------------------------------------------- loss
def bbox_ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of xywh boxes ``a`` and ``b`` ([n, 4])."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(0).prod(1)
    union = a[:, 2:].prod(1) + b[:, 2:].prod(1) - inter + eps
    iou = inter / union
    cw = torch.max(a2, b2) - torch.min(a1, b1)
    c2 = (cw**2).sum(1) + eps
    rho2 = ((a[:, :2] - b[:, :2]) ** 2).sum(1)
    dang = torch.atan(b[:, 2] / (b[:, 3] + eps)) - torch.atan(a[:, 2] / (a[:, 3] + eps))
    v = (4 / math.pi**2) * dang**2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class YoloLoss:
    """YOLOv5/7-style loss: anchors matched by w/h ratio < 4, centre cell plus two neighbours, CIoU box
    loss, objectness BCE towards the (detached) IoU, class BCE on positives."""

    def __init__(self, box: float = 0.05, obj: float = 0.0625, cls: float = 0.05) -> None:
        self.w_box, self.w_obj, self.w_cls = box, obj, cls
        self.balance = (4.0, 1.0, 0.4)
        self.bce = nn.BCEWithLogitsLoss()

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``targets`` [nt, 6] = (image index, class, cx, cy, w, h) in pixels."""
        lbox = lobj = lcls = torch.zeros((), dtype=preds[0].dtype)
        for i, p in enumerate(preds):
            tobj = torch.zeros(p.shape[:4], dtype=p.dtype)
            b, a, gj, gi, tbox, anch, tcls = self._match(p, targets, i)
            if b.numel():
                ps = p[b, a, gj, gi]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anch
                iou = bbox_ciou(torch.cat([pxy, pwh], 1), tbox)
                lbox = lbox + (1 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(0).to(p.dtype)
                t = torch.zeros_like(ps[:, 5:])
                t[torch.arange(len(tcls)), tcls] = 1.0
                lcls = lcls + self.bce(ps[:, 5:], t)
            lobj = lobj + self.bce(p[..., 4], tobj) * self.balance[i]
        loss = (self.w_box * lbox + self.w_obj * lobj + self.w_cls * lcls) * preds[0].shape[0]
        return loss, torch.stack([lbox, lobj, lcls]).detach()

    @staticmethod
    def _match(p: torch.Tensor, targets: torch.Tensor, i: int):
        stride = STRIDES[i]
        _, _, ny, nx, _ = p.shape
        anchors = torch.tensor(ANCHORS[i], dtype=torch.float32) / stride  # grid units
        t = targets.clone()
        t[:, 2:] /= stride
        nt = t.shape[0]
        if nt == 0:
            z = torch.zeros(0, dtype=torch.long)
            return z, z, z, z, torch.zeros(0, 4), torch.zeros(0, 2), z
        ai = torch.arange(NA).view(NA, 1).repeat(1, nt)
        t = torch.cat([t.repeat(NA, 1, 1), ai[..., None].float()], 2)  # [na, nt, 7]
        r = t[..., 4:6] / anchors[:, None]
        t = t[torch.max(r, 1 / r).max(2)[0] < 4.0]
        gxy = t[:, 2:4]
        gxi = torch.tensor([nx, ny]) - gxy
        g = 0.5
        left, up = ((gxy % 1 < g) & (gxy > 1)).T
        right, down = ((gxi % 1 < g) & (gxi > 1)).T
        mask = torch.stack([torch.ones_like(left), left, up, right, down])
        off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * g
        t = t.repeat(5, 1, 1)[mask]
        offsets = (torch.zeros_like(gxy)[None] + off[:, None])[mask]
        gij = (t[:, 2:4] - offsets).long()
        gi = gij[:, 0].clamp(0, nx - 1)
        gj = gij[:, 1].clamp(0, ny - 1)
        tbox = torch.cat([t[:, 2:4] - torch.stack([gi, gj], 1).float(), t[:, 4:6]], 1)
        a = t[:, 6].long()
        return t[:, 0].long(), a, gj, gi, tbox, anchors[a], t[:, 1].long()


# -------------------------------------------------------------------------------------------------- data
def load_split(split: str, count: int, cache_dir: Path | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(images [n,H,W,3] uint8, labels [n] of [k,5] (class, x0, y0, x1, y1))``, cached as .npz."""
    cache = cache_dir / f"synthetic_{split}_{count}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        z = np.load(cache, allow_pickle=False)
        counts = z["counts"]
        labels = np.split(z["labels"], np.cumsum(counts)[:-1])
        return z["images"], labels
    images, labels = [], []
    for s in generate(split, count):
        images.append(s.image)
        labels.append(np.concatenate([s.classes[:, None].astype(np.float32), s.boxes], 1))
    imgs = np.stack(images)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, images=imgs, labels=np.concatenate(labels), counts=[len(x) for x in labels])
    return imgs, labels


def dihedral(img: np.ndarray, lab: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply one of the 8 flips/rotations (``k`` in 0..7) to a square HxWx3 image and its xyxy boxes."""
    size = img.shape[0]
    lab = lab.copy()
    if k & 1:  # horizontal flip
        img = img[:, ::-1]
        lab[:, [1, 3]] = size - lab[:, [3, 1]]
    if k & 2:  # vertical flip
        img = img[::-1]
        lab[:, [2, 4]] = size - lab[:, [4, 2]]
    if k & 4:  # transpose
        img = img.transpose(1, 0, 2)
        lab = lab[:, [0, 2, 1, 4, 3]]
    return np.ascontiguousarray(img), lab


def make_batch(
    images: np.ndarray, labels: list[np.ndarray], idx: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """An augmented batch: images [B,3,H,W] float in [0,1], targets [nt, 6] (img, cls, cx, cy, w, h)."""
    xs, ts = [], []
    for bi, n in enumerate(idx):
        img, lab = dihedral(images[n], labels[n], int(rng.integers(0, 8)))
        if rng.random() < 0.5:  # brightness / contrast jitter
            img = np.clip(img.astype(np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20), 0, 255)
        xs.append(img.astype(np.float32) / 255.0)
        if len(lab):
            cxcy = (lab[:, 1:3] + lab[:, 3:5]) / 2
            wh = lab[:, 3:5] - lab[:, 1:3]
            ts.append(np.concatenate([np.full((len(lab), 1), bi, np.float32), lab[:, :1], cxcy, wh], 1))
    x = torch.from_numpy(np.stack(xs).transpose(0, 3, 1, 2).copy())
    t = torch.from_numpy(np.concatenate(ts) if ts else np.zeros((0, 6), np.float32))
    return x, t


# -------------------------------------------------------------------------------------------- evaluation
class Ema:
    """Exponential moving average of the weights (decay ramps up over the first iterations)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, tau: float = 500.0) -> None:
        self.ema = copy.deepcopy(model).eval()
        self.decay, self.tau, self.updates = decay, tau, 0
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, labels: list[np.ndarray]) -> dict:
    """COCO mAP of the (export-mode) model on in-memory images with faster-coco-eval."""
    model.eval()
    model.detect.export = True
    samples = [_Sample(img, lab) for img, lab in zip(images, labels)]
    gt = coco_dict(samples, [f"{i:05d}.png" for i in range(len(samples))])
    results: list[dict] = []
    for s in range(0, len(images), 64):
        x = torch.from_numpy(images[s : s + 64].astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
        out = model(x).numpy()
        for j, det in enumerate(decode(out, conf_thres=0.001, iou_thres=0.65)):
            results.extend(to_coco_results(det, s + j + 1))
    model.detect.export = False
    return coco_map(gt, results)


class _Sample:
    """Duck-typed :class:`qdq_compiler.detect.synthetic.Sample` for :func:`coco_dict`."""

    def __init__(self, image: np.ndarray, lab: np.ndarray) -> None:
        self.image, self.boxes, self.classes = image, lab[:, 1:5], lab[:, 0].astype(np.int64)


# ---------------------------------------------------------------------------------------------- training
def export_onnx(model: nn.Module, path: Path, size: int) -> None:
    """ONNX opset 17 with BatchNorm kept (PRESERVE on an eval-mode model skips the Conv+BN fusion)."""
    model = copy.deepcopy(model).eval()
    model.detect.export = True
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and PRESERVE + constant-folding notes
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size, size),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["output"],
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=True,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("qdq_compiler/data/detector/detector.onnx"))
    ap.add_argument("--log", type=Path, default=Path("tools/train_log.txt"))
    ap.add_argument("--checkpoint", type=Path, default=None, help="save the EMA state_dict (.pt) here")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "qdq_detector_cache")
    ap.add_argument("--train-count", type=int, default=6000)
    ap.add_argument("--val-count", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=35)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop early after this wall time (0: off)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is faster than 2 when other jobs share the two cores)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
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
        f"data: train {len(train_x)} images / {sum(map(len, train_y))} boxes, val {len(val_x)} images "
        f"/ {sum(map(len, val_y))} boxes ({time.time() - t0:.0f}s)"
    )

    model = TinyYolo(args.width)
    log(f"model: width {args.width}, {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M parameters")
    ema = Ema(model)
    crit = YoloLoss()
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or n.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 5e-4 * args.batch}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.999),
    )
    steps_per_epoch = len(train_x) // args.batch
    total = steps_per_epoch * args.epochs
    warmup = min(300, total // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        q = (step - warmup) / max(1, total - warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * q)))

    step, stopped = 0, False
    for epoch in range(args.epochs):
        model.train()
        perm = rng.permutation(len(train_x))
        tot = torch.zeros(3)
        te = time.time()
        for bi in range(steps_per_epoch):
            x, t = make_batch(train_x, train_y, perm[bi * args.batch : (bi + 1) * args.batch], rng)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss, parts = crit(model(x), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            ema.update(model)
            tot += parts
            step += 1
            if args.max_minutes and time.time() - t0 > args.max_minutes * 60:
                stopped = True
                break
        n = bi + 1
        box, obj, cls = (tot / n).tolist()
        msg = (
            f"epoch {epoch + 1}/{args.epochs} box {box:.4f} obj {obj:.4f} cls {cls:.4f} "
            f"lr {lr_at(step - 1):.2e} {time.time() - te:.0f}s total {(time.time() - t0) / 60:.1f}min"
        )
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs or stopped:
            m = evaluate(ema.ema, val_x, val_y)
            msg += f" | val mAP@0.5 {m['map50']:.4f} mAP@0.5:0.95 {m['map50_95']:.4f}"
        log(msg)
        if stopped:
            log(f"stopped early after {args.max_minutes} min")
            break
    if args.checkpoint:
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ema.ema.state_dict(), args.checkpoint)
    export_onnx(ema.ema, args.out, IMAGE_SIZE)
    size_mb = os.path.getsize(args.out) / 1e6
    log(f"exported {args.out} ({size_mb:.2f} MB) after {(time.time() - t0) / 60:.1f} min")
    logf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
