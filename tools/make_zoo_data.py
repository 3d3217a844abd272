"""Write the bundled calibration and validation data of the classifier and the text segmenter.

python tools/make_zoo_data.py     # qdq_compiler/data/{classifier,segmenter}/{calib,val,...}
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from qdq_compiler.zoo import shapes_cls, text_seg

DATA = Path(__file__).resolve().parent.parent / "qdq_compiler" / "data"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DATA, help="the package's data folder")
    ap.add_argument("--calib", type=int, default=64, help="calibration images per model")
    ap.add_argument("--val-classifier", type=int, default=300, help="classifier validation images")
    ap.add_argument("--val-segmenter", type=int, default=100, help="segmenter validation images")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality")
    args = ap.parse_args(argv)
    cls, seg = args.out / "classifier", args.out / "segmenter"
    for folder in (cls / "calib", cls / "val", seg / "calib", seg / "val", seg / "val_masks"):
        shutil.rmtree(folder, ignore_errors=True)
    shapes_cls.write_split(cls / "calib", "calib", args.calib, args.quality)
    shapes_cls.write_split(
        cls / "val", "val", args.val_classifier, args.quality, labels_json=cls / "val.json"
    )
    text_seg.write_split(seg / "calib", "calib", args.calib, args.quality)
    text_seg.write_split(seg / "val", "val", args.val_segmenter, args.quality, mask_dir=seg / "val_masks")
    print(f"wrote {args.calib} calib / {args.val_classifier} val images to {cls}")
    print(f"wrote {args.calib} calib / {args.val_segmenter} val images and masks to {seg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
