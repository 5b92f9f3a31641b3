"""SFace rebuilt as torch ops (differentiable identity loss) and a differentiable 112×112 warp.

`SFaceTorch` runs the very ONNX graph of `sface.SFaceONNX` through `onnx_torch.OnnxGraphModule`
(same initializers, same op order), so its embeddings match ONNX Runtime's to ~1e-6. It is frozen:
its weights are non-persistent buffers and BatchNorm/Dropout always run in inference mode.

Typical identity loss (images N×3×H×W RGB in 0..255, five points from the driver/source landmarks):

    sface = SFaceTorch()
    e_gen = sface(warp_to_112_torch(generated, points))
    e_src = sface(warp_to_112_torch(source, points_src)).detach()
    loss = (1 - (e_gen * e_src).sum(1)).mean()

If your images are in [-1, 1], pass `(x + 1) * 127.5`.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from reenact.auxnets.onnx_torch import OnnxGraphModule
from reenact.auxnets.sface import ALIGNED_SIZE, TEMPLATE_112, load_sface_model

__all__ = ["SFaceTorch", "similarity_transform_torch", "warp_to_112_torch"]


class SFaceTorch(nn.Module):
    """SFace as a torch module.

    Args (keyword-only):
        path: an SFace .onnx file; default: the verified cached one (fetched on first use).
    Input:  N×3×112×112 float RGB in 0..255 (an aligned face; the graph subtracts 127.5, × 1/128).
    Output: N×128 float, L2-normalised rows (cosine = dot product).
    Raises:
        MissingWeights: the weights cannot be fetched or are not the expected graph.
    """

    def __init__(self, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.graph = OnnxGraphModule(model=load_sface_model(path))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.dim() != 4 or tuple(faces.shape[1:]) != (3, ALIGNED_SIZE, ALIGNED_SIZE):
            raise ValueError(f"expected N×3×112×112 faces, got {tuple(faces.shape)}")
        return F.normalize(self.graph(faces), dim=1)


def similarity_transform_torch(src: torch.Tensor, dst: torch.Tensor | None = None) -> torch.Tensor:
    """Batched least-squares similarity src → dst (no reflection), closed form, differentiable.

    In 2-D the Umeyama solution is the complex least-squares fit z_dst ≈ a·z_src + b with
    a = Σ conj(z_s) z_d / Σ |z_s|² (centred points), so no SVD is needed.

    Args:
        src: N×K×2 points (x, y); dst: K×2 or N×K×2 (default: the SFace 112 template).
    Returns:
        N×2×3 matrices M with dst ≈ M @ [x, y, 1], in src's dtype.
    """
    if dst is None:
        dst = torch.as_tensor(TEMPLATE_112, dtype=src.dtype, device=src.device)
    dst = dst.expand(src.shape[0], -1, -1) if dst.dim() == 2 else dst
    mu_s, mu_d = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
    s, d = src - mu_s, dst - mu_d  # N×K×2, centred
    den = (s**2).sum(dim=(1, 2)).clamp_min(1e-12)
    a_re = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(1) / den
    a_im = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1) / den
    rot = torch.stack([torch.stack([a_re, -a_im], -1), torch.stack([a_im, a_re], -1)], -2)  # N×2×2
    t = mu_d.squeeze(1) - (rot @ mu_s.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([rot, t.unsqueeze(-1)], dim=-1)


def warp_to_112_torch(images: torch.Tensor, five_points: torch.Tensor) -> torch.Tensor:
    """Warp faces to the 112×112 template with `affine_grid`/`grid_sample` (gradients flow).

    Geometry matches `sface.align_112` (cv2.warpAffine, pixel centres at integers, bilinear, zeros
    outside); values differ from OpenCV only by its 1/32-pixel fixed-point interpolation.

    Args:
        images: N×C×H×W float (any value range; the output keeps it), e.g. RGB 0..255 for SFace.
        five_points: N×5×2 pixel (x, y) points in template order (`sface.five_points_from_mesh`).
    Returns:
        N×C×112×112, same dtype/device as `images`.
    """
    n, _, h, w = images.shape
    pts = five_points.to(device=images.device, dtype=torch.float64)
    mat = similarity_transform_torch(pts)  # N×2×3, image px → template px
    full = torch.eye(3, dtype=torch.float64, device=images.device).repeat(n, 1, 1)
    full[:, :2] = mat
    inv = torch.linalg.inv(full)  # template px → image px
    out_px = torch.tensor([[ALIGNED_SIZE / 2, 0, (ALIGNED_SIZE - 1) / 2],
                           [0, ALIGNED_SIZE / 2, (ALIGNED_SIZE - 1) / 2],
                           [0, 0, 1]], dtype=torch.float64, device=images.device)  # norm → px
    in_norm = torch.tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]],
                           dtype=torch.float64, device=images.device)  # px → norm
    theta = (in_norm @ inv @ out_px)[:, :2].to(images.dtype)
    grid = F.affine_grid(theta, [n, images.shape[1], ALIGNED_SIZE, ALIGNED_SIZE], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
