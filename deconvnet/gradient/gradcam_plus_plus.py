"""Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv:1710.11063) at a stage: docs/methods.md#grad-cam.

A = the stage's maps (as Grad-CAM's, `deconvnet.gradient.gradcam`), Y = the target's score (its
logit), g = dY / dA. The paper weighs each position of a map by alpha and takes the score
S = exp(Y), whose derivatives are all closed-form in g:

    dS/dA = S g,   d2S/dA2 = S g^2,   d3S/dA3 = S g^3    (elementwise, Y locally linear in A
                                                          through ReLU networks)

so their Eq. 10, alpha = d2S / (2 d2S + sum_ab A_ab d3S), becomes Eq. 19 (the S factors cancel):

    alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab g_kij^3)    (alpha = 0 where that is 0 / 0)
    w_k = sum_ij alpha_kij relu(g_kij),   map = relu(sum_k w_k A_k)

The weights drop the positive factor S of relu(dS/dA) = S relu(g): one factor per target, it
only scales the map. Eq. 19 holds for that exponential score only (for another score, e.g. a
softmax probability, the paper's general Eq. 10 needs the true higher derivatives); this module
follows Eq. 19 as written, the score being exp(logit). pytorch-grad-cam's `GradCAMPlusPlus`
computes the same Eq. 19 (its issues #369, #541 and #557 question the formula; #369 asks for
Eq. 10 instead), except that it adds 1e-6 to the denominator, which shrinks
alpha where g^2 is not far above 1e-6 (small gradients, e.g. random weights), and that it
normalises the map to [0, 1]. Here the map is not normalised, upsampled bilinearly
(align_corners=False) like Grad-CAM's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.precision import full_float32
from deconvnet.gradient.gradcam import gradient_cam
from deconvnet.gradient.passes import CHUNK_SIZE


def plus_plus_weighting(grads: Tensor, acts: Tensor) -> Tensor:
    """sum_k w_k A_k with Eq. 19's w_k (module doc): grads, acts [M, C, h, w] -> [M, 1, h, w]."""
    squared = grads * grads
    denominator = 2 * squared + acts.sum(dim=(2, 3), keepdim=True) * squared * grads
    defined = denominator != 0
    alpha = torch.where(defined, squared / torch.where(defined, denominator, 1), 0)
    weights = (alpha * F.relu(grads)).sum(dim=(2, 3), keepdim=True)
    return (weights * acts).sum(1, keepdim=True)


@full_float32()
def gradcam_plus_plus(
    model: nn.Module, images: Tensor, target: object = None, stage: int = 5, *, chunk_size: int = CHUNK_SIZE
) -> Tensor:
    """Grad-CAM++ (Eq. 19) of each target at `stage`, from one forward pass: images [B, 3, H, W]
    -> [B, H, W] ([K, H, W] for K targets of one image), non-negative, not normalised, at the
    input size. stage and target as `gradcam` takes them (units and channels included)."""
    return gradient_cam(model, images, target, stage, chunk_size, plus_plus_weighting)
