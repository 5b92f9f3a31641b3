"""Helpers shared by the video benchmarks: cut clips, render, detect faces in every frame."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from reenact import media, video
from reenact.config import InferenceConfig, MotionConfig, VideoOptions
from reenact.landmarks import Landmarker

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def cut(src: Path, dst: Path, frames: int) -> Path:
    """The first `frames` frames of `src` (re-encoded, near-lossless, audio kept) → dst."""
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-frames:v", str(frames),
                    "-c:v", "libx264", "-crf", "12", "-preset", "veryfast", "-c:a", "aac", str(dst)], check=True)
    return dst


def render(ref: Path, driver: Path, out: Path, *, mode: str = "relative", smooth: bool = True,
           config: InferenceConfig | None = None) -> video.VideoSummary:
    options = VideoOptions(motion=MotionConfig(mode=mode, smooth=smooth))
    return video.reenact_video(ref, driver, out, config or InferenceConfig(), options=options, overwrite=True)


def detect_all(path: Path) -> list[np.ndarray | None]:
    """(478, 3) landmarks of the largest face in every frame (video Landmarker), None where none."""
    out: list[np.ndarray | None] = []
    with media.VideoReader(path) as frames, Landmarker(mode="video", max_faces=1) as lm:
        for frame in frames:
            faces = lm.detect(frame)
            out.append(faces[0].points.astype(np.float64) if faces else None)
    return out
