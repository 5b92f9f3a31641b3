"""reenact: one-shot face reenactment.

Data flow: media → landmarks (mediapipe, 478 points) → parsing maps (shape encoder E)
→ engine (classical warp | generators F+D | FusionNet blend) → paste-back → media.
"""

__version__ = "0.1.0"
