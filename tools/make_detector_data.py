"""Write the bundled synthetic detection data (calibration and validation splits) or a YOLO data set.

python tools/make_detector_data.py                      # qdq_compiler/data/detector/{calib,val,val.json}
python tools/make_detector_data.py --yolo /tmp/shapes   # train/val images + YOLO txt + COCO json
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from qdq_compiler.detect import CLASS_NAMES
from qdq_compiler.detect.synthetic import write_split

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "qdq_compiler" / "data" / "detector"


def write_bundled(out: Path, calib: int, val: int, quality: int) -> None:
    """``out/calib/*.jpg`` (unlabelled), ``out/val/*.jpg`` and ``out/val.json`` (COCO)."""
    for sub in ("calib", "val"):
        shutil.rmtree(out / sub, ignore_errors=True)
    write_split(out / "calib", "calib", calib, quality=quality)
    write_split(out / "val", "val", val, quality=quality, coco_json=out / "val.json")


def write_yolo(root: Path, train: int, val: int, quality: int) -> None:
    """A YOLO-layout data set: ``images/{train,val}`` with txt labels beside them, COCO json, data.yaml."""
    for split, count in (("train", train), ("val", val)):
        write_split(
            root / "images" / split,
            split,
            count,
            quality=quality,
            yolo=True,
            coco_json=root / f"{split}.json",
        )
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASS_NAMES))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundled data folder")
    ap.add_argument("--calib", type=int, default=64, help="calibration images")
    ap.add_argument("--val", type=int, default=128, help="validation images")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality")
    ap.add_argument("--yolo", type=Path, default=None, help="write a YOLO data set here instead")
    ap.add_argument("--train", type=int, default=6000, help="training images (with --yolo)")
    args = ap.parse_args(argv)
    if args.yolo is not None:
        write_yolo(args.yolo, args.train, args.val, args.quality)
        print(f"wrote {args.train} train / {args.val} val images to {args.yolo}")
    else:
        write_bundled(args.out, args.calib, args.val, args.quality)
        print(f"wrote {args.calib} calib / {args.val} val images and val.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
