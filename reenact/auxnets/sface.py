"""SFace identity embeddings (OpenCV Zoo, Apache-2.0): alignment, ONNX Runtime inference, cosine.

SFace is a MobileFaceNet-like network (9.7 M parameters) trained with the SFace loss; it maps a face
aligned to OpenCV's 112×112 five-point template to a 128-d embedding. Two faces are the same person
when the cosine of their L2-normalised embeddings exceeds `SAME_PERSON_THRESHOLD` (0.363, OpenCV's
value for this model).

Conventions (those of `cv2.FaceRecognizerSF`, which feeds `blobFromImage(aligned, swapRB=True)`):
  - aligned faces are RGB uint8 112×112×3; the graph itself computes (x − 127.5) / 128;
  - five points are, in image-left-to-right order: left eye, right eye, nose tip, left mouth
    corner, right mouth corner, as (x, y) pixel coordinates (pixel centres at integers).

This module needs numpy, OpenCV and onnxruntime only. The differentiable torch rebuild of the same
network, `SFaceTorch`, and the torch warp `warp_to_112_torch` live in `sface_torch.py` and are
re-exported here lazily: importing this module does not import torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from reenact.auxnets.fetch import fetch
from reenact.errors import MissingWeights, ReenactError

if TYPE_CHECKING:  # pragma: no cover
    from reenact.auxnets.sface_torch import SFaceTorch, warp_to_112_torch

__all__ = [
    "SAME_PERSON_THRESHOLD",
    "TEMPLATE_112",
    "SFaceONNX",
    "SFaceTorch",
    "align_112",
    "cosine",
    "five_points_from_mesh",
    "load_sface_model",
    "similarity_transform",
    "warp_to_112_torch",
]

SAME_PERSON_THRESHOLD = 0.363  # cosine; OpenCV Zoo's SFace threshold (FR_COSINE)

# OpenCV's 112×112 target points for SFace, from FaceRecognizerSFImpl::getSimilarityTransformMatrix
# in opencv/modules/objdetect/src/face_recognize.cpp (the same numbers as InsightFace's ArcFace
# template `arcface_dst`). Rows: left eye, right eye, nose tip, left mouth corner, right mouth
# corner (image left to right), columns (x, y) in pixels.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
ALIGNED_SIZE = 112

# mediapipe face-mesh indices. The mesh is anatomical: 468 is the centre of the subject's right iris,
# which appears on the image LEFT of an upright face (33/133 are that eye's corners); 61 is the
# subject's right mouth corner, also image-left. 1 is the nose tip (pronasale).
_IRIS_IMAGE_LEFT, _IRIS_IMAGE_RIGHT = 468, 473
_EYE_CORNERS_IMAGE_LEFT, _EYE_CORNERS_IMAGE_RIGHT = (33, 133), (362, 263)
_NOSE_TIP = 1
_MOUTH_IMAGE_LEFT, _MOUTH_IMAGE_RIGHT = 61, 291


def five_points_from_mesh(lmk: np.ndarray) -> np.ndarray:
    """The 5 alignment points from mediapipe face-mesh landmarks.

    Args:
        lmk: (478, 2) pixel (x, y) landmarks (refine_landmarks=True, iris centres 468/473 used as
            eye centres) or (468, 2) (eye centre = mean of the two eye corners).
    Returns:
        (5, 2) float32: image-left eye, image-right eye, nose tip, image-left and image-right mouth
        corner, ready for `align_112`.
    Raises:
        ValueError: wrong shape.
    """
    lmk = np.asarray(lmk, dtype=np.float32)
    if lmk.ndim != 2 or lmk.shape[1] < 2 or lmk.shape[0] not in (468, 478):
        raise ValueError(f"expected (478, 2) or (468, 2) face-mesh landmarks, got {lmk.shape}")
    lmk = lmk[:, :2]
    if lmk.shape[0] == 478:
        left_eye, right_eye = lmk[_IRIS_IMAGE_LEFT], lmk[_IRIS_IMAGE_RIGHT]
    else:
        left_eye = lmk[list(_EYE_CORNERS_IMAGE_LEFT)].mean(axis=0)
        right_eye = lmk[list(_EYE_CORNERS_IMAGE_RIGHT)].mean(axis=0)
    points = [left_eye, right_eye, lmk[_NOSE_TIP], lmk[_MOUTH_IMAGE_LEFT], lmk[_MOUTH_IMAGE_RIGHT]]
    return np.stack(points).astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray = TEMPLATE_112) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) src → dst.

    Umeyama (1991), the estimator OpenCV's FaceRecognizerSF uses.

    Args:
        src: (K, 2) source points; dst: (K, 2) target points (default: the 112 template).
    Returns:
        (2, 3) float64 matrix M with dst ≈ M @ [x, y, 1].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.array([1.0, -1.0 if np.linalg.det(cov) < 0 else 1.0])
    rot = u @ np.diag(d) @ vt
    var_src = (sc**2).sum() / len(src)
    scale = float((s * d).sum() / var_src) if var_src > 0 else 1.0
    mat = np.empty((2, 3), dtype=np.float64)
    mat[:, :2] = scale * rot
    mat[:, 2] = mu_d - scale * rot @ mu_s
    return mat


def align_112(image_rgb: np.ndarray, five_points: np.ndarray) -> np.ndarray:
    """Warp a face to the 112×112 SFace/ArcFace template, as cv2.FaceRecognizerSF.alignCrop does.

    Args:
        image_rgb: H×W×3 uint8 RGB image.
        five_points: (5, 2) pixel (x, y) points in template order (see module docstring).
    Returns:
        112×112×3 uint8 RGB (bilinear, black outside the image).
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 image, got {image_rgb.dtype} {image_rgb.shape}")
    mat = similarity_transform(np.asarray(five_points, dtype=np.float64).reshape(5, 2))
    return cv2.warpAffine(image_rgb, mat, (ALIGNED_SIZE, ALIGNED_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of embeddings, row by row (inputs are re-normalised, so raw ones work).

    Args:
        a, b: (128,) or (N, 128) arrays (broadcasting like numpy).
    Returns:
        a float for two vectors, else an (N,) float32 array; > SAME_PERSON_THRESHOLD ⇒ same person.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    out = (a * b).sum(axis=-1)
    return float(out) if out.ndim == 0 else out


def load_sface_model(path: str | os.PathLike[str] | None = None) -> Any:
    """The SFace ONNX graph as an `onnx.ModelProto`, made batchable.

    The published graph fixes the batch to 1 and lists its initializers as graph inputs (IR 6);
    here the batch dimension becomes symbolic ("N") and initializers are dropped from the inputs, so
    ONNX Runtime can treat them as constants. The file on disk is not modified.

    Raises:
        MissingWeights: the file cannot be fetched, read or parsed.
    """
    import onnx  # only needed when a model is actually built

    path = Path(path) if path is not None else fetch("sface")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...; all mean "unusable file"
        raise MissingWeights(f"cannot read the SFace ONNX file {path}: {exc}") from None
    graph = model.graph
    inits = {init.name for init in graph.initializer}
    keep = [inp for inp in graph.input if inp.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)
    for value in (*graph.input, *graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = "N"
    return model


class SFaceONNX:
    """SFace in ONNX Runtime (no torch). Thread-compatible: one session per instance.

    Args (keyword-only):
        path: an SFace .onnx file; default: the verified cached one (fetched on first use).
        device: "cpu", "cuda" or "auto" (CUDA where an NVIDIA driver is present and onnxruntime
            has the CUDA provider, else CPU); `self.providers` says what was started.
        threads: intra-op threads for the CPU provider (0 = onnxruntime's default).
    """

    def __init__(self, *, path: str | os.PathLike[str] | None = None, device: str = "auto",
                 threads: int = 0) -> None:
        import onnxruntime as ort  # here, so `import reenact.auxnets.sface` stays light

        model = load_sface_model(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        from reenact.runtime import providers

        wanted = providers(ort.get_available_providers(), device)
        self._session = ort.InferenceSession(model.SerializeToString(), options, providers=wanted)
        self.providers = self._session.get_providers()  # what onnxruntime actually started
        if device == "cuda" and "CUDAExecutionProvider" not in self.providers:
            raise ReenactError("CUDA requested for SFace but onnxruntime could not start its CUDA provider",
                               "install onnxruntime-gpu matching the CUDA/cuDNN here, or use device='cpu'")
        self._input = self._session.get_inputs()[0].name  # "data"
        self._output = self._session.get_outputs()[0].name  # "fc1"

    def embed(self, faces: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """Embeddings of aligned faces.

        Args:
            faces: N×112×112×3 RGB uint8 (or a list of 112×112×3), e.g. from `align_112`.
        Returns:
            (N, 128) float32, L2-normalised rows.
        Raises:
            ValueError: wrong shape.
        """
        faces = np.asarray(faces)
        if faces.ndim == 3:
            faces = faces[None]
        if faces.ndim != 4 or faces.shape[1:] != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
            raise ValueError(f"expected N×112×112×3 aligned faces, got {faces.shape}")
        out = np.empty((len(faces), 128), dtype=np.float32)
        for start in range(0, len(faces), batch_size):
            blob = faces[start:start + batch_size].astype(np.float32).transpose(0, 3, 1, 2)  # N×3×112×112
            out[start:start + batch_size] = self._session.run([self._output], {self._input: blob})[0]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def __getattr__(name: str) -> Any:
    """Lazy re-export of the torch half (imports torch only when asked for)."""
    if name in ("SFaceTorch", "warp_to_112_torch"):
        from reenact.auxnets import sface_torch  # imports torch

        return getattr(sface_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
