"""Face crops of a photo turned by a few yaw angles with the default engine (a synthetic target:
the photo's own landmarks rotated about the head), as one RGB strip saved with numpy.

docs/turn-example.jpg stacks two strips of examples/ref.jpg at -30,-20,20,30 degrees: the code
before the revealed-side handling (commit 0106edd, run from a checkout of it) above, the current
code below:

  PYTHONPATH=CHECKOUT python tools/turn_sheet.py examples/ref.jpg old.npy -30,-20,20,30
  python tools/turn_sheet.py examples/ref.jpg new.npy -30,-20,20,30
"""

import sys

import cv2
import numpy as np

from reenact import geometry as g
from reenact.config import InferenceConfig
from reenact.landmarks import Face, Landmarker
from reenact.pipeline import Reenactor, load_reference


def main(photo: str, out: str, angles: str) -> None:
    ref = load_reference(photo, Landmarker())
    pts = ref.face.points.astype(np.float64)
    fit = g.fit_head(pts)
    canon = fit.inverse_apply(pts)
    (x0, y0), (x1, y1) = pts[:, :2].min(0), pts[:, :2].max(0)
    side = int(1.5 * max(x1 - x0, y1 - y0))
    engine = Reenactor(ref, InferenceConfig(engine="fusion"))
    tiles = []
    for angle in (float(a) for a in angles.split(",")):
        t = np.radians(angle)
        turn = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
        target = g.Similarity(fit.scale, fit.rotation @ turn, fit.translation).apply(canon)
        frame = engine.render(Face(target.astype(np.float32)))
        crop = cv2.getRectSubPix(frame, (side, side), (float(x0 + x1) / 2, float(y0 + y1) / 2))
        tiles.append(cv2.resize(crop, (240, 240), interpolation=cv2.INTER_AREA))
    np.save(out, np.hstack(tiles))


if __name__ == "__main__":
    main(*sys.argv[1:4])
