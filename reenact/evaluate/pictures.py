"""Decoded protocol pictures (image files and video frames) and their faces, loaded once.

Video frames are read in one streaming pass per video (only the wanted frames are kept), so a
protocol that samples a clip at a stride decodes it once. Faces come from the image-mode
landmarker (largest face), the same detector that measures the outputs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Iterator

import numpy as np

from reenact import media
from reenact.errors import MediaError
from reenact.evaluate.protocols import Item
from reenact.landmarks import Face, Landmarker


def read_items(items: Iterable[Item]) -> Iterator[tuple[Item, np.ndarray | None]]:
    """(item, RGB uint8 image) for each item, in input order for image files and grouped per video
    for frames; None for a frame past the video's end or an unreadable file."""
    frames: dict[str, dict[int, list[Item]]] = defaultdict(lambda: defaultdict(list))
    for it in dict.fromkeys(items):
        if it.frame is None:
            try:
                yield it, media.read_image(it.path)
            except MediaError:
                yield it, None
        else:
            frames[it.path][it.frame].append(it)
    for path, wanted in frames.items():
        yield from _video_frames(path, wanted)


def _video_frames(path: str, wanted: dict[int, list[Item]]) -> Iterator[tuple[Item, np.ndarray | None]]:
    last = max(wanted)
    seen: set[int] = set()
    try:
        with media.VideoReader(path) as video:
            for i, rgb in enumerate(video):
                for it in wanted.get(i, ()):
                    seen.add(i)
                    yield it, rgb
                if i >= last:
                    break
    except MediaError:
        pass
    for i, its in wanted.items():
        if i not in seen:
            yield from ((it, None) for it in its)


class Pictures:
    """Images and largest faces of a set of items (`load` once, then look up)."""

    def __init__(self, landmarker: Landmarker) -> None:
        self._lm = landmarker
        self._images: dict[Item, np.ndarray | None] = {}
        self._faces: dict[Item, Face | None] = {}

    def load(self, items: Iterable[Item], progress: Callable[[int], None] | None = None) -> None:
        """Decode every item and detect its face (calls `progress(done)` after each)."""
        for n, (it, rgb) in enumerate(read_items(it for it in items if it not in self._images), 1):
            self._images[it] = rgb
            faces = self._lm.detect(rgb) if rgb is not None else []
            self._faces[it] = faces[0] if faces else None
            if progress:
                progress(n)

    def image(self, item: Item) -> np.ndarray | None:
        return self._images.get(item)

    def face(self, item: Item) -> Face | None:
        return self._faces.get(item)
