"""Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017) at one of the paper's stages.

A = the stage's output maps (on VGG16 the pooled map of a conv block: stage 5 is pool5, 7x7 at
224; Selvaraju et al. take relu5_3, 14x14, whose channel weights are exactly 1/4 of pool5's).
weights_k = spatial mean of d score / d A_k; map = relu(sum_k weights_k A_k), upsampled to the
input bilinearly (align_corners=False). Guided Grad-CAM = guided backprop x that map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.architecture import is_chain
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.precision import full_float32
from deconvnet.core.targets import Rows
from deconvnet.gradient.attribute import forward_resolved, prepare
from deconvnet.gradient.passes import CHUNK_SIZE, Forward, GradientPass


def check_cam_stage(model: nn.Module, stage: object, rows: Rows) -> tuple[int, int | str]:
    """(stage number, where its maps are: the feature index on VGG / AlexNet, the graph node on
    every other model); ValueError for a stage without conv maps or above a unit target."""
    try:
        info = stage_of(model, stage)
    except ValueError:
        raise ValueError(
            f"stage: Grad-CAM needs the conv maps of one of the paper's stages, an int in 1..5, got {stage!r}"
        ) from None
    if rows.kind != "class" and rows.stage < info.number:
        raise ValueError(
            f"stage: the target lies at stage {rows.stage}, below the Grad-CAM stage "
            f"{info.number}; choose a stage in 1..{rows.stage}"
        )
    return info.number, info.index if is_chain(model) else ModelGraph.of(model).paths[info.path]


def cam_maps(
    gradient_pass: GradientPass,
    forward: Forward,
    rows: Rows,
    point: tuple[int, int | str],
    size: tuple[int, int],
    chunk_size: int,
) -> Tensor:
    """Resolved rows -> [M, H, W] Grad-CAM maps at the input size, at `point` (check_cam_stage)."""
    stage, index = point
    grads = gradient_pass.backward(forward, rows, until=index, chunk_size=chunk_size)
    acts = forward.record.outputs[stage][rows.image.to(grads.device)]
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(1, keepdim=True))
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]


@full_float32()
def gradcam(
    model: nn.Module, images: Tensor, target: object = None, stage: int = 5, *, chunk_size: int = CHUNK_SIZE
) -> Tensor:
    """Grad-CAM of each target at `stage`: images [B, 3, H, W] -> [B, H, W] ([K, H, W] for K
    targets of one image), non-negative, at the input size."""
    x, rows, gradient_pass = prepare(model, images, target, "backprop", chunk_size)
    point = check_cam_stage(model, stage, rows)
    with torch.no_grad():
        forward, rows = forward_resolved(gradient_pass, x, rows)
        out = cam_maps(gradient_pass, forward, rows, point, tuple(x.shape[-2:]), chunk_size)
    return out.to(images.device)


@full_float32()
def guided_gradcam(
    model: nn.Module, images: Tensor, target: object = None, stage: int = 5, *, chunk_size: int = CHUNK_SIZE
) -> Tensor:
    """Guided backprop x Grad-CAM, from one forward pass: [B, 3, H, W] -> [B, 3, H, W]."""
    x, rows, guided = prepare(model, images, target, "guided", chunk_size)
    point = check_cam_stage(model, stage, rows)
    with torch.no_grad():
        forward, rows = forward_resolved(guided, x, rows)  # guided's record has every mask
        backprop = GradientPass(model, "backprop", rows)
        cam = cam_maps(backprop, forward, rows, point, tuple(x.shape[-2:]), chunk_size)
        out = guided.backward(forward, rows, chunk_size=chunk_size) * cam[:, None]
    return out.to(images.device)
