"""reenact: one-shot face reenactment.

Data flow: media → landmarks (mediapipe, 478 points) → parsing maps (shape encoder E)
→ engine (classical warp | generators F+D | FusionNet blend) → paste-back → media.

From Python (docs/api.md): `anim = reenact.load("ref.jpg")`, then `anim.image(pose)`,
`anim.frames(frames)` or `anim.video(driver, output)`. Importing this package stays cheap:
`load` and `Animator` import the pipeline (mediapipe, OpenCV, ONNX Runtime) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reenact.errors import (
    CorruptMedia,
    Interrupted,
    MediaError,
    MissingWeights,
    NoFaceFound,
    OutputError,
    ReenactError,
    UnsupportedMedia,
    UsageError,
)

if TYPE_CHECKING:  # type checkers see the real signatures; at run time they load lazily
    from reenact.api import Animator, Image, load

__version__ = "0.1.0"

__all__ = [
    "Animator", "Image", "load", "__version__",
    "ReenactError", "UsageError", "NoFaceFound", "MediaError", "UnsupportedMedia", "CorruptMedia",
    "OutputError", "MissingWeights", "Interrupted",
]

_LAZY = {"Animator", "Image", "load"}


def __getattr__(name: str):
    """`reenact.load` / `reenact.Animator` / `reenact.Image`, imported on first access (PEP 562)."""
    if name in _LAZY:
        from reenact import api

        return getattr(api, name)
    raise AttributeError(f"module 'reenact' has no attribute {name!r}")
