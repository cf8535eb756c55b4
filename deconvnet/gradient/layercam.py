"""LayerCAM (Jiang et al., IEEE TIP 2021) at a stage: docs/methods.md#layercam.

A = the stage's maps (as Grad-CAM's, `deconvnet.gradient.gradcam`), g = d score / dA (the
target's logit). Each position gets its own weight, the positive part of its gradient:

    map = relu(sum_k relu(g_k) * A_k)      (elementwise products)

upsampled bilinearly (align_corners=False), not normalised. pytorch-grad-cam's `LayerCAM` computes
the same sum before normalising it to [0, 1].
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.precision import full_float32
from deconvnet.gradient.gradcam import gradient_cam
from deconvnet.gradient.passes import CHUNK_SIZE


def layercam_weighting(grads: Tensor, acts: Tensor) -> Tensor:
    """sum_k relu(g_k) * A_k: grads, acts [M, C, h, w] -> [M, 1, h, w]."""
    return (F.relu(grads) * acts).sum(1, keepdim=True)


@full_float32()
def layercam(
    model: nn.Module, images: Tensor, target: object = None, stage: int = 5, *, chunk_size: int = CHUNK_SIZE
) -> Tensor:
    """LayerCAM of each target at `stage`, from one forward pass: images [B, 3, H, W] -> [B, H, W]
    ([K, H, W] for K targets of one image), non-negative, not normalised, at the input size.
    stage and target as `gradcam` takes them (units and channels included)."""
    return gradient_cam(model, images, target, stage, chunk_size, layercam_weighting)
