"""Pictures for the report: face thumbnails and contact sheets (rows = drivers, columns = references).

Thumbnails are square, axis-aligned crops around a face box (no rotation, so head roll stays
visible), resized to `side`. An output is cropped with its *reference's* face box: outputs are
frames in the reference's framing, and a fixed box shows how the head moved.
"""

from __future__ import annotations

import cv2
import numpy as np

CONTEXT = 1.7  # thumbnail side / largest face-box side
GREY = 40  # background of sheets and of thumbnail areas outside the picture


def face_box(points: np.ndarray | None, shape: tuple[int, ...]) -> tuple[float, float, float]:
    """(cx, cy, side) of the square thumbnail box for a face (or the centred square of the image)."""
    h, w = shape[:2]
    if points is None:
        return w / 2, h / 2, float(min(h, w))
    x0, y0 = np.min(points[:, :2], 0)
    x1, y1 = np.max(points[:, :2], 0)
    side = CONTEXT * max(x1 - x0, y1 - y0)
    return float(x0 + x1) / 2, float(y0 + y1) / 2, float(side)


def thumbnail(image: np.ndarray, box: tuple[float, float, float], side: int = 160) -> np.ndarray:
    """side×side×3 uint8 crop of `image` around `box` (outside the image: flat dark grey, so
    the picture's real border stays visible)."""
    cx, cy, s = box
    k = side / max(s, 1.0)
    m = np.array([[k, 0, side / 2 - k * cx], [0, k, side / 2 - k * cy]], np.float64)
    src = image
    if k < 0.5:  # shrink first: warpAffine has no area filter
        src = cv2.resize(image, None, fx=2 * k, fy=2 * k, interpolation=cv2.INTER_AREA)
        m[:, :2] /= 2 * k
    return cv2.warpAffine(src, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(GREY, GREY, GREY))


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    size = 0.35 * tile.shape[0] / 128
    cv2.rectangle(out, (0, tile.shape[0] - int(18 * size / 0.35)), (tile.shape[1], tile.shape[0]), (0, 0, 0), -1)
    cv2.putText(out, text[:22], (3, tile.shape[0] - int(5 * size / 0.35)), cv2.FONT_HERSHEY_SIMPLEX, size,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(references: list[np.ndarray], drivers: list[np.ndarray],
                  cells: dict[tuple[int, int], np.ndarray], *, ref_labels: list[str] | None = None,
                  drv_labels: list[str] | None = None, title: str = "", gap: int = 4) -> np.ndarray:
    """Grid picture: first row the references, first column the drivers, cell (r, c) the output
    for driver r and reference c (missing cells stay dark). All tiles are side×side×3 uint8."""
    side = (references or drivers)[0].shape[0]
    rows, cols = len(drivers) + 1, len(references) + 1
    head = 22 if title else 0
    sheet = np.full((head + rows * side + (rows + 1) * gap, cols * side + (cols + 1) * gap, 3), GREY, np.uint8)

    def put(r: int, c: int, tile: np.ndarray) -> None:
        y, x = head + gap + r * (side + gap), gap + c * (side + gap)
        sheet[y:y + side, x:x + side] = tile

    for c, tile in enumerate(references):
        put(0, c + 1, _label(tile, ref_labels[c]) if ref_labels else tile)
    for r, tile in enumerate(drivers):
        put(r + 1, 0, _label(tile, drv_labels[r]) if drv_labels else tile)
    for (r, c), tile in cells.items():
        put(r + 1, c + 1, tile)
    if title:
        cv2.putText(sheet, title, (gap, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    for i, text in enumerate(("columns: references", "rows: drivers")):
        cv2.putText(sheet, text, (gap + 2, head + gap + side // 2 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35 * side / 128, (200, 200, 200), 1, cv2.LINE_AA)
    return sheet


def crop_rows(rows: list[dict[str, np.ndarray]], columns: list[tuple[str, str]], *, side: int = 96,
              gap: int = 4) -> np.ndarray:
    """A sheet of small crops: one row per dict, one column per (key, label); the first row holds
    the labels. Missing crops stay grey."""
    header = [_label(np.full((side // 3 * 2, side, 3), GREY, np.uint8), label) for _, label in columns]
    lines = [np.hstack([np.pad(h, ((0, 0), (gap, 0), (0, 0)), constant_values=GREY) for h in header])]
    for row in rows:
        tiles = []
        for key, _ in columns:
            crop = row.get(key)
            tile = np.full((side, side, 3), GREY, np.uint8) if crop is None else \
                cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
            tiles.append(np.pad(tile, ((gap, 0), (gap, 0), (0, 0)), constant_values=GREY))
        lines.append(np.hstack(tiles))
    return np.vstack(lines)
