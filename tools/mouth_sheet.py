"""The README's mouth figure: reference | driver | warp (cavity) | --mouth driver | fusion, each
the `reenact image … --crop` render (the Python API, same code path) of one driver frame, labelled.

docs/mouth-example.jpg (examples/pose.jpg driven by frame 72 of examples/drive.mp4, both Pexels):

  python tools/mouth_sheet.py examples/pose.jpg examples/drive.mp4 72 docs/mouth-example.jpg
"""

import itertools
import sys

import cv2
import numpy as np

import reenact
from reenact import align, media
from reenact.landmarks import Landmarker

TILE = 256
BAND = 24  # label band under each tile


def labelled(image: np.ndarray, label: str) -> np.ndarray:
    tile = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
    band = np.zeros((BAND, TILE, 3), np.uint8)
    cv2.putText(band, label, (6, BAND - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([tile, band])


def face_crop(image: np.ndarray, lm: Landmarker) -> np.ndarray:
    """The face crop `--crop` renders (`align.align` of the face's landmarks)."""
    return align.align(lm.detect(image)[0].points, TILE).extract(image)


def main(photo: str, driver: str, frame: str, out: str) -> None:
    with media.VideoReader(driver) as frames:
        pose = next(itertools.islice(frames, int(frame), None))
    with Landmarker(mode="image") as lm:
        tiles = [labelled(face_crop(media.read_image(photo), lm), "reference"), labelled(face_crop(pose, lm), "driver")]
    for engine, mouth, label in (("warp", "cavity", "warp (cavity)"), ("fusion", "driver", "--mouth driver"),
                                 ("fusion", "auto", "fusion (default)")):
        with reenact.load(photo, engine=engine, crop=True, mouth=mouth) as anim:
            tiles.append(labelled(anim.image(pose), label))
    media.write_image(out, np.hstack(tiles), overwrite=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
