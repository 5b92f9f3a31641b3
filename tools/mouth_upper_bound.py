"""Upper bound of a mouth redraw on the clips self-reenactment protocol.

In self-reenactment the driver frame *is* the ground truth, so pasting the driver's own mouth
region into the warp's render, on every frame, shows how far any mouth generator blended over
that region could lower the mouth-crop metrics. The driver-mouth baseline of `reenact eval` is
replaced in-process by such a paste (fitted by an affine map of all lip points, no colour change):

  --mask area  the lips, inner mouth and the skin around them (the region of `model.blend = "area"`:
               the outer lip contour grown by 1/8 of the crop, feathered, faded at the crop edge)
  --mask box   the whole 64² mouth crop (faded at its edge)

Everything after `--` goes to `reenact eval`, e.g.

  python tools/mouth_upper_bound.py --mask area -- --protocol clips --engines warp,driver-mouth \
      --no-fid --limit 60 -o runs/upper-area -y

The `driver-mouth` rows of that report are then the bound (not the baseline).
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from reenact import geometry as g
from reenact import redraw, regions

SIZE = 64


def truth_paste(mask_kind: str):
    def paste(rgb, target, ref, driver, scale):
        box = regions.mouth_box(target, SIZE, scale)
        pts = box.points(target)
        lips = list(g.LIPS_OUTER) + list(g.LIPS_INNER)
        d_box = regions.mouth_box(driver.points, SIZE * 2)
        fit, _ = cv2.estimateAffine2D(d_box.points(driver.points)[lips, :2].astype(np.float32),
                                      pts[lips, :2].astype(np.float32), method=cv2.LMEDS)
        if fit is None:
            return rgb
        mouth = cv2.warpAffine(d_box.extract(driver.image), fit, (SIZE, SIZE), flags=cv2.INTER_AREA,
                               borderMode=cv2.BORDER_REPLICATE)
        edge = np.minimum(np.arange(SIZE), np.arange(SIZE)[::-1]).astype(np.float32)
        fade = np.clip((edge - 1) / (SIZE / 12), 0.0, 1.0)
        window = np.minimum.outer(fade, fade)
        if mask_kind == "area":
            outer = regions.fill_polygon(SIZE, pts[list(g.LIPS_OUTER)]).astype(np.float32)
            window = regions.grow(outer, SIZE / 8, SIZE / 16) * window
        return box.paste(rgb, mouth, window.astype(np.float32))
    return paste


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mask", choices=("area", "box"), required=True)
    args = parser.parse_args(argv[:split])
    redraw.driver_mouth = truth_paste(args.mask)  # what the driver-mouth engine calls per frame
    from reenact.cli import main as reenact_main

    sys.argv = ["reenact", "eval", *argv[split + 1:]]
    reenact_main()


if __name__ == "__main__":
    main()
