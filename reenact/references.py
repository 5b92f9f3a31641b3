"""k-shot reference bank: pick, per driver frame, the reference nearest in head pose.

With several photos of the person, the best one to warp or generate from is the one whose head
pose (and, as a tie-breaker, expression) is closest to the pose to render: less to invent, fewer
disocclusions (thesis §4.7.3). In video, a `Selector` adds hysteresis so the choice does not
flicker between references on small pose noise, and records which reference served which frames.
`expand` turns the command line's reference arguments (files, folders, globs) into photos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Degrees of yaw/pitch/roll difference are weighted by how much each changes the picture:
# roll is an in-plane rotation the warp reproduces exactly, so it matters least.
POSE_WEIGHTS = np.array([1.0, 1.0, 0.3])


@dataclass(frozen=True)
class Candidate:
    """What selection needs to know about one reference: its head pose (yaw, pitch, roll in
    degrees) and an optional expression descriptor (any fixed-length vector, face-scale units)."""

    pose: np.ndarray
    expression: np.ndarray | None = None


def distance(a: Candidate, b: Candidate, *, expression_weight: float = 10.0) -> float:
    """Weighted L1 pose difference in degrees + `expression_weight` × L2 expression difference
    (with descriptors in face-scale units, 0.1 of a difference ≈ 1 degree of pose)."""
    d = float(np.abs(np.asarray(a.pose) - np.asarray(b.pose)) @ POSE_WEIGHTS)
    if a.expression is not None and b.expression is not None:
        d += expression_weight * float(np.linalg.norm(np.asarray(a.expression) - np.asarray(b.expression)))
    return d


def nearest(candidates: list[Candidate], target: Candidate, *, expression_weight: float = 10.0) -> int:
    """Index of the candidate nearest to `target` (ties: the lower index)."""
    if not candidates:
        raise ValueError("no references to choose from")
    d = [distance(c, target, expression_weight=expression_weight) for c in candidates]
    return int(np.argmin(d))


@dataclass
class Selector:
    """Per-frame nearest-reference choice with hysteresis.

    The current reference is kept unless another one is nearer by more than `margin` (in the
    units of `distance`, i.e. about degrees). `segments` records (first_frame, last_frame, index)
    runs; `counts` how many frames each reference served.
    """

    candidates: list[Candidate]
    margin: float = 5.0
    expression_weight: float = 10.0
    current: int | None = None
    segments: list[list[int]] = field(default_factory=list)
    frame: int = 0

    def choose(self, target: Candidate) -> int:
        """The reference for the next frame."""
        d = [distance(c, target, expression_weight=self.expression_weight) for c in self.candidates]
        best = int(np.argmin(d))
        if self.current is None or d[best] < d[self.current] - self.margin:
            self.current = best
        self._record(self.current)
        return self.current

    def hold(self) -> int | None:
        """No driver face this frame: keep (and record) the current reference."""
        if self.current is not None:
            self._record(self.current)
        else:
            self.frame += 1
        return self.current

    def _record(self, index: int) -> None:
        if self.segments and self.segments[-1][2] == index and self.segments[-1][1] == self.frame - 1:
            self.segments[-1][1] = self.frame
        else:
            self.segments.append([self.frame, self.frame, index])
        self.frame += 1

    @property
    def counts(self) -> list[int]:
        out = [0] * len(self.candidates)
        for first, last, idx in self.segments:
            out[idx] += last - first + 1
        return out


def candidate(points: np.ndarray) -> Candidate:
    """Selection features of (478, 3) landmarks: head pose and the expression descriptor."""
    from reenact import geometry
    from reenact.expression import expression_descriptor

    return Candidate(pose=geometry.head_pose(points).as_array(), expression=expression_descriptor(points))


def expand(specs: list[str | Path]) -> list[Path]:
    """Reference photos named by `specs`: files, folders (their images, sorted by name) and glob
    patterns (e.g. "photos/anna-*.jpg", quoted so the shell leaves it alone), in order, without
    duplicates. Raises MediaError for a folder or pattern that names no image and for a missing
    path."""
    import glob

    from reenact import media
    from reenact.errors import MediaError

    out: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in media.IMAGE_SUFFIXES and q.is_file())
            if not found:
                raise MediaError(f"no photos in the folder {p}", "put .jpg/.png photos of the person there")
        elif not p.exists() and any(ch in str(spec) for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(str(spec)) if Path(q).suffix.lower() in media.IMAGE_SUFFIXES)
            if not found:
                raise MediaError(f"no photo matches {spec}", "check the pattern (quote it so the shell does not expand it)")
        else:
            found = [p]
        out += [q for q in found if q not in out]
    return out
