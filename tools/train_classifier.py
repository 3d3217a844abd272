"""Train the bundled MobileNetV3-small-style classifier (dev only: needs ``pip install torch==2.13.0``).

MobileNetV3-small topology at reduced width for 96x96 inputs: a 3x3 stride-2 stem with HardSwish, inverted
residual blocks (1x1 expand, depthwise 3x3/5x5, squeeze-excitation GlobalAveragePool -> 1x1 conv -> Relu ->
1x1 conv -> HardSigmoid -> Mul, 1x1 project), Relu in the early blocks and HardSwish later, a 1x1 conv,
global pooling and a two-Gemm head. The first block works on 8 channels (its 1x1 expand reads 8, its project
writes 8, its SE pair squeezes to 8). Trained from scratch on :mod:`qdq_compiler.zoo.shapes_cls` and exported
to ONNX opset 17 in eval mode, so BatchNorm is folded into the convs (as deployment exports usually are).

    nice -n 10 python tools/train_classifier.py --out qdq_compiler/data/classifier/classifier.onnx \
        --log tools/train_log_classifier.txt
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
from torch import nn

from qdq_compiler.detect import CLASS_NAMES
from qdq_compiler.zoo.shapes_cls import IMAGE_SIZE, generate

NC = len(CLASS_NAMES)
# (kernel, expanded channels, output channels, squeeze-excitation, activation, stride); stem writes 8.
BLOCKS = (
    (3, 16, 8, True, "relu", 2),
    (3, 32, 16, False, "relu", 2),
    (3, 40, 16, False, "relu", 1),
    (5, 64, 24, True, "hswish", 2),
    (5, 96, 24, True, "hswish", 1),
    (5, 96, 32, True, "hswish", 1),
    (5, 128, 48, True, "hswish", 2),
    (5, 192, 48, True, "hswish", 1),
)
STEM, LAST, HIDDEN = 8, 192, 128


def act(name: str) -> nn.Module:
    return nn.Hardswish() if name == "hswish" else nn.ReLU()


class ConvBnAct(nn.Sequential):
    def __init__(
        self, c1: int, c2: int, k: int = 1, s: int = 1, groups: int = 1, a: str | None = "relu"
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c2),
        ]
        if a is not None:
            layers.append(act(a))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """GlobalAveragePool -> 1x1 conv -> Relu -> 1x1 conv -> HardSigmoid -> Mul."""

    def __init__(self, c: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


def squeeze_channels(c: int) -> int:
    return max(8, (c // 4 + 4) // 8 * 8)


class InvertedResidual(nn.Module):
    def __init__(self, c1: int, k: int, exp: int, c2: int, se: bool, a: str, s: int) -> None:
        super().__init__()
        self.residual = s == 1 and c1 == c2
        layers: list[nn.Module] = [ConvBnAct(c1, exp, 1, a=a)]
        layers.append(ConvBnAct(exp, exp, k, s, groups=exp, a=a))
        if se:
            layers.append(SqueezeExcite(exp, squeeze_channels(exp)))
        layers.append(ConvBnAct(exp, c2, 1, a=None))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV3Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBnAct(3, STEM, 3, 2, a="hswish")]
        c = STEM
        for k, exp, out, se, a, s in BLOCKS:
            layers.append(InvertedResidual(c, k, exp, out, se, a, s))
            c = out
        layers.append(ConvBnAct(c, LAST, 1, a="hswish"))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Linear(LAST, HIDDEN), nn.Hardswish(), nn.Dropout(0.1), nn.Linear(HIDDEN, NC)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


# -------------------------------------------------------------------------------------------------- data
def load_split(split: str, count: int, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """``(images [n,H,W,3] uint8, labels [n])``, cached as .npz."""
    cache = cache_dir / f"shapes_cls_{split}_{count}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        z = np.load(cache)
        return z["images"], z["labels"]
    samples = list(generate(split, count))
    images = np.stack([s.image for s in samples])
    labels = np.asarray([s.label for s in samples], np.int64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, images=images, labels=labels)
    return images, labels


def make_batch(images: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Augmented batch [B,3,H,W] in [0,1]: dihedral flips (the classes are flip-invariant) and jitter."""
    xs = []
    for n in idx:
        img = images[n]
        k = int(rng.integers(0, 8))
        if k & 1:
            img = img[:, ::-1]
        if k & 2:
            img = img[::-1]
        if k & 4:
            img = img.transpose(1, 0, 2)
        x = img.astype(np.float32)
        if rng.random() < 0.5:
            x = np.clip(x * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20), 0, 255)
        xs.append(x / 255.0)
    return torch.from_numpy(np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2)))


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(images), 128):
        x = torch.from_numpy(images[s : s + 128].astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
        correct += int((model(x).argmax(1).numpy() == labels[s : s + 128]).sum())
    return correct / len(images)


def export_onnx(model: nn.Module, path: Path) -> None:
    """ONNX opset 17 from the eval-mode model: Conv+BatchNorm folded, ``qdq_compiler.model_kind`` set."""
    model = copy.deepcopy(model).eval()
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
            output_names=["logits"],
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(
        proto, {"qdq_compiler.model_kind": "classifier", "qdq_compiler.classes": ",".join(CLASS_NAMES)}
    )
    onnx.save(proto, str(path))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("qdq_compiler/data/classifier/classifier.onnx"))
    ap.add_argument("--log", type=Path, default=Path("tools/train_log_classifier.txt"))
    ap.add_argument("--checkpoint", type=Path, default=None, help="save the state_dict (.pt) here")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "qdq_zoo_cache")
    ap.add_argument("--train-count", type=int, default=8000)
    ap.add_argument("--val-count", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--optim", choices=("adamw", "adam-l2"), default="adamw", help="adamw: AdamW decay 0.02")
    ap.add_argument("--l2", type=float, default=1e-5, help="coupled L2 on weights with --optim adam-l2")
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
    log(f"data: train {len(train_x)}, val {len(val_x)} images ({time.time() - t0:.0f}s)")
    model = MobileNetV3Small()
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M parameters")
    if args.optim == "adamw":  # decoupled weight decay 0.02 on everything (run 1)
        opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.02)
    else:  # torchvision's recipe style: a small coupled L2 on conv/linear weights, none on BN and biases
        weights = [p for p in model.parameters() if p.ndim > 1]
        ids = {id(p) for p in weights}
        others = [p for p in model.parameters() if id(p) not in ids]
        opt = torch.optim.Adam(
            [{"params": weights, "weight_decay": args.l2}, {"params": others, "weight_decay": 0.0}],
            lr=args.lr,
        )
    steps_per_epoch = len(train_x) // args.batch
    total = steps_per_epoch * args.epochs
    warmup = min(200, total // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        q = (step - warmup) / max(1, total - warmup)
        return args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * q)))

    crit = nn.CrossEntropyLoss(label_smoothing=0.05)
    step, stopped = 0, False
    for epoch in range(args.epochs):
        model.train()
        perm = rng.permutation(len(train_x))
        te, tot, n = time.time(), 0.0, 0
        for bi in range(steps_per_epoch):
            idx = perm[bi * args.batch : (bi + 1) * args.batch]
            x, y = make_batch(train_x, idx, rng), torch.from_numpy(train_y[idx])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot, n, step = tot + loss.item(), n + 1, step + 1
            if args.max_minutes and time.time() - t0 > args.max_minutes * 60:
                stopped = True
                break
        acc = accuracy(model, val_x, val_y)
        log(
            f"epoch {epoch + 1}/{args.epochs} loss {tot / n:.4f} lr {lr_at(step - 1):.2e} "
            f"{time.time() - te:.0f}s "
            f"total {(time.time() - t0) / 60:.1f}min | val top-1 {acc:.4f}"
        )
        if stopped:
            log(f"stopped early after {args.max_minutes} min")
            break
    if args.checkpoint:
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.checkpoint)
    export_onnx(model, args.out)
    log(
        f"exported {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB) "
        f"after {(time.time() - t0) / 60:.1f} min"
    )
    logf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
