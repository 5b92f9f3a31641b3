"""Face-mesh geometry shared by every stage: index groups, the canonical face, rigid fits, head pose.

Landmarks are mediapipe face-mesh points with iris refinement: (478, 3) float32 arrays with
x, y in pixels of the image they were found in and z the mesh's relative depth in the same pixel
units (mediapipe's normalised z times the image width; larger z = farther from the camera).
The coordinate frame is x → image right, y → image down, z → into the image (right-handed).

The canonical face (`assets/canonical_face.npz`, built by `tools/make_canonical_face.py`) is a
frontal, left-right symmetric mean face in that frame, centred on its centroid and scaled so that
the outer eye corners are 1 unit apart. It defines head pose (yaw = pitch = roll = 0) and the
"canonical frame" in which expressions are compared with the pose removed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

N_LANDMARKS = 478

# Index groups of mediapipe's 478-point mesh. "Right"/"left" are the subject's: the subject's right
# eye appears on the image's left in a frontal photo.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
              375, 321, 405, 314, 17, 84, 181, 91, 146)
LIPS_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308,
              324, 318, 402, 317, 14, 87, 178, 88, 95)
UPPER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
             308, 415, 310, 311, 312, 13, 82, 81, 80, 191, 78)
LOWER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291,
             308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78)
RIGHT_EYE = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
RIGHT_IRIS = (468, 469, 470, 471, 472)  # centre first, then the 4 rim points
LEFT_IRIS = (473, 474, 475, 476, 477)
NOSE_TIP = 1
NOSE = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 326, 327, 294, 278, 344, 440, 275,
        45, 220, 115, 48, 64, 98, 97, 122, 351, 196, 419, 3, 248, 236, 456, 198, 420)

# Eye corners and lid midpoints used for apertures (outer, inner, upper-lid, lower-lid).
RIGHT_EYE_KEY = (33, 133, 159, 145)
LEFT_EYE_KEY = (263, 362, 386, 374)
MOUTH_KEY = (61, 291, 13, 14)  # corners, inner upper-lip and inner lower-lip midpoints

# Points that move little with expression: used for rigid fits (pose, alignment).
RIGID = (33, 133, 263, 362, 168, 6, 197, 195, 5, 4, 1, 98, 327, 10, 151, 9, 8,
         234, 454, 127, 356, 93, 323, 162, 389, 21, 251, 54, 284, 103, 332, 67, 297, 109, 338)


@dataclass(frozen=True)
class Canonical:
    """The canonical face: `points` (478, 3) float64 and `mirror` (478,) int, the index of each
    point's left-right mirror partner (used to flip landmarks with an image)."""

    points: np.ndarray
    mirror: np.ndarray


@functools.lru_cache(maxsize=1)
def canonical() -> Canonical:
    """Load the bundled canonical face (cached)."""
    with resources.files("reenact.assets").joinpath("canonical_face.npz").open("rb") as f:
        data = np.load(f)
        return Canonical(points=data["points"].astype(np.float64), mirror=data["mirror"].astype(np.int64))


@dataclass(frozen=True)
class Similarity:
    """x' = scale · R · x + t for (N, 3) points (row vectors: x' = scale · x @ R.T + t)."""

    scale: float
    rotation: np.ndarray  # 3×3, det +1
    translation: np.ndarray  # (3,)

    def apply(self, pts: np.ndarray) -> np.ndarray:
        return self.scale * pts @ self.rotation.T + self.translation

    def inverse_apply(self, pts: np.ndarray) -> np.ndarray:
        return ((pts - self.translation) @ self.rotation) / self.scale


def fit_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> Similarity:
    """Least-squares similarity (Umeyama) taking `src` onto `dst`, both (N, D) with D = 2 or 3.

    Returns a 3-D `Similarity` (for D = 2 the rotation acts in the xy-plane). Reflections are
    excluded. Raises ValueError for fewer than 2 points or a degenerate (zero-spread) source.
    """
    if len(src) < 2 or src.shape != dst.shape:
        raise ValueError("need two matching point sets of at least 2 points")
    dim = src.shape[1]
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s0, d0 = src - mu_s, dst - mu_d
    var_s = float(w @ (s0 ** 2).sum(1))
    if var_s <= 1e-12:
        raise ValueError("degenerate source points")
    cov = (d0 * w[:, None]).T @ s0
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(dim)
    fix[-1, -1] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ fix @ vt
    scale = float((sig * np.diag(fix)).sum() / var_s)
    rot3, t3 = np.eye(3), np.zeros(3)
    rot3[:dim, :dim] = rot
    t3[:dim] = mu_d - scale * rot @ mu_s
    return Similarity(scale=scale, rotation=rot3, translation=t3)


@dataclass(frozen=True)
class HeadPose:
    """Head pose in degrees. yaw > 0: the face turns towards the image's right; pitch > 0: chin
    down (looking down); roll > 0: the head tilts clockwise in the image. Absolute pitch carries
    the canonical face's bias; compare poses rather than trusting it."""

    yaw: float
    pitch: float
    roll: float

    def as_array(self) -> np.ndarray:
        return np.array([self.yaw, self.pitch, self.roll], dtype=np.float64)


def rotation_to_pose(rot: np.ndarray) -> HeadPose:
    """Decompose R = Rz(roll) · Ry(yaw) · Rx(pitch) (angles in degrees)."""
    yaw = np.degrees(np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(rot[2, 1], rot[2, 2]))
    roll = np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))
    return HeadPose(yaw=float(-yaw), pitch=float(pitch), roll=float(roll))


def pose_to_rotation(pose: HeadPose) -> np.ndarray:
    """Inverse of `rotation_to_pose`."""
    y, p, r = np.radians([-pose.yaw, pose.pitch, pose.roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def fit_head(points: np.ndarray) -> Similarity:
    """Rigid+scale fit of the canonical face onto observed (478, 3) landmarks (rigid points only)."""
    idx = np.array(RIGID)
    return fit_similarity(canonical().points[idx], np.asarray(points, np.float64)[idx])


def head_pose(points: np.ndarray) -> HeadPose:
    """Yaw, pitch, roll (degrees) of observed (478, 3) landmarks."""
    return rotation_to_pose(fit_head(points).rotation)


def to_canonical(points: np.ndarray, fit: Similarity | None = None) -> np.ndarray:
    """Remove pose and scale: (478, 3) observed → (478, 3) in the canonical frame."""
    fit = fit_head(points) if fit is None else fit
    return fit.inverse_apply(np.asarray(points, np.float64))


def mirror_points(points: np.ndarray, width: float) -> np.ndarray:
    """Landmarks of the horizontally flipped image of width `width` (re-indexed so that each
    index keeps its anatomical meaning)."""
    out = np.asarray(points, np.float64).copy()
    out[:, 0] = (width - 1) - out[:, 0]
    return out[canonical().mirror]


def face_scale(points: np.ndarray) -> float:
    """Outer-eye-corner distance in the canonical fit's units (pixels for image landmarks)."""
    return float(fit_head(points).scale)
