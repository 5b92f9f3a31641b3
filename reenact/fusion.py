"""FusionNet: blend the generator's output with the classical warp where the warp is reliable.

The warp engine reproduces the reference's own pixels (sharp, identity-exact) but only where the
reference shows the surface; the generator (F + D) synthesises everything else (hair and jaw
following a new contour, the far side at a turned head, teeth). The blend, in the model crop:

    mask   = feather(erode(remap(R_ref, backward map) · R_target))
    output = GAN · (1 − mask) + warp · mask

R = the parsing map's face region (`parsing.face_mask`: skin, brows, eyes, irises, nose, lips)
*minus the mouth interior*, so teeth and the inside of an opening mouth always come from the
generator. R_ref is the reference's region carried to the target by the warp's own backward map
(what the warp can show); R_target is the target's region (where a face should be). Their product
is eroded by `size/32` px (2σ) and feathered with a Gaussian of sigma σ = `size/64` px, so the
seam lies inside the face and is soft.
"""

from __future__ import annotations

import cv2
import numpy as np

from reenact import align, parsing


def face_region(pm: np.ndarray) -> np.ndarray:
    """(S, S) float32: the face inside its oval, without the mouth interior."""
    return np.clip(parsing.face_mask(pm) - pm[parsing.INDEX["mouth"]], 0.0, 1.0)


def fusion_mask(ref_region: np.ndarray, target_points: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Blend weight of the warp (S×S float32 in [0, 1]); see module doc.

    ref_region: `face_region` of the reference crop; target_points: (478, 3) crop landmarks;
    map_x, map_y: `warp.backward_map(source, target_points)`."""
    size = ref_region.shape[0]
    carried = cv2.remap(ref_region, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = carried * face_region(parsing.parsing_map(target_points, size))
    r = max(1, round(size / 32))  # erosion of 2σ keeps the feathered seam inside the face
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return align.feathered_mask(mask, feather=size / 64)


def blend(gan: np.ndarray, warped: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """GAN · (1 − mask) + warp · mask, RGB uint8 S×S×3."""
    m = mask[..., None]
    return np.clip(gan * (1.0 - m) + warped * m + 0.5, 0, 255).astype(np.uint8)
