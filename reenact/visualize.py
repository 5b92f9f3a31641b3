"""Debug pictures: landmarks and parsing maps drawn over a photo (for `reenact landmarks`)."""

from __future__ import annotations

import cv2
import numpy as np

from reenact import align, parsing
from reenact.landmarks import Face


def draw_faces(image: np.ndarray, faces: list[Face]) -> np.ndarray:
    """Copy of `image` (RGB uint8) with each face's parsing map blended in, its 478 points
    dotted, irises ringed and its index and pose written beside it."""
    out = image.copy()
    scale = max(image.shape[:2]) / 1000
    for i, face in enumerate(faces):
        out = _overlay_parsing(out, face)
        r = max(1, round(1.2 * scale))
        for x, y in face.xy:
            cv2.circle(out, (round(float(x)), round(float(y))), r, (0, 255, 120), -1, cv2.LINE_AA)
        x0, y0, _, _ = face.bbox
        p = face.pose
        label = f"#{i} yaw {p.yaw:+.0f} pitch {p.pitch:+.0f} roll {p.roll:+.0f}"
        cv2.putText(out, label, (round(x0), max(12, round(y0 - 6 * scale))), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * max(scale, 0.6), (255, 255, 0), max(1, round(scale)), cv2.LINE_AA)
    return out


def _overlay_parsing(image: np.ndarray, face: Face, alpha: float = 0.45) -> np.ndarray:
    crop = align.align(face.points, 512)
    pm = parsing.parsing_map(crop.points_to_crop(face.points), 512)
    colour = parsing.colorize(pm)
    return align.paste_back(image, colour, crop, parsing.face_mask(pm) * alpha
                            + pm[parsing.INDEX["contour"]] * (1 - alpha))


def parsing_panel(image: np.ndarray, face: Face, size: int = 256) -> np.ndarray:
    """[aligned crop | parsing map colours] for one face, size×(2·size)×3."""
    crop = align.align(face.points, size)
    pm = parsing.parsing_map(crop.points_to_crop(face.points), size)
    return np.hstack([crop.extract(image), parsing.colorize(pm)])
