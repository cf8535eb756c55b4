"""Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017) at one of the paper's stages.

A = the stage's output maps (on VGG16 the pooled map of a conv block: stage 5 is pool5, 7x7 at
224; Selvaraju et al. take relu5_3, 14x14, whose channel weights are exactly 1/4 of pool5's).
weights_k = spatial mean of d score / d A_k; map = relu(sum_k weights_k A_k), upsampled to the
input bilinearly (align_corners=False). Guided Grad-CAM = guided backprop x that map.
Grad-CAM++ (`gradcam_plus_plus`) and LayerCAM (`layercam`) share everything here but the channel
weighting (`Weighting`): docs/methods.md#gradient-family.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.architecture import PROBE_SIDE, is_chain
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.architecture import stages as stages_of
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.precision import full_float32
from deconvnet.core.targets import Rows
from deconvnet.gradient.attribute import forward_resolved, prepare
from deconvnet.gradient.passes import CHUNK_SIZE, Forward, GradientPass


def check_cam_point(model: nn.Module, path: str, rows: Rows) -> tuple[None, str]:
    """(None, graph node) of a module path of a graph model whose output is a feature map."""
    graph = ModelGraph.of(model)
    node = graph.paths.get(path)
    if node is None or len(graph.shapes(1, 3, PROBE_SIDE, PROBE_SIDE)[node]) != 4:
        raise ValueError(
            f"stage: Grad-CAM needs feature maps: a stage (1..5 or its name) or a module path whose "
            f"output is a [B, C, h, w] map, got {path!r}"
        )
    if rows.kind != "class":
        raise ValueError("stage: Grad-CAM at a module path that is not a stage takes class targets")
    return None, node


def check_cam_stage(model: nn.Module, stage: object, rows: Rows) -> tuple[int | None, int | str]:
    """(stage number, where its maps are: the feature index on VGG / AlexNet, the graph node on
    every other model, where `stage` may also be any module path with a feature map (number
    None)); ValueError for a stage without conv maps or above a unit target."""
    if (
        isinstance(stage, str)
        and not is_chain(model)
        and stage not in {name for s in stages_of(model) for name in (s.name, s.path)}
    ):
        return check_cam_point(model, stage, rows)
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


Weighting = Callable[[Tensor, Tensor], Tensor]
"""How a CAM method weighs the stage's maps: (grads, acts) [M, C, h, w] -> [M, 1, h, w], the map
before its ReLU (grads: d score / d A of each row, acts: A of the row's image)."""


def gradcam_weighting(grads: Tensor, acts: Tensor) -> Tensor:
    """Grad-CAM: sum_k w_k A_k with w_k = spatial mean of g_k; [M, C, h, w] x 2 -> [M, 1, h, w]."""
    return (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True)


def cam_at_input(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """relu of weighted maps [M, 1, h, w], upsampled bilinearly (align_corners=False) -> [M, H, W]."""
    return F.interpolate(F.relu(cam), size=size, mode="bilinear", align_corners=False)[:, 0]


def cam_maps(
    gradient_pass: GradientPass,
    forward: Forward,
    rows: Rows,
    point: tuple[int, int | str],
    size: tuple[int, int],
    chunk_size: int,
    weighting: Weighting = gradcam_weighting,
) -> Tensor:
    """Resolved rows -> [M, H, W] CAM maps at the input size, at `point` (check_cam_stage):
    relu(weighting(d score / d A, A)) at the stage's resolution, upsampled."""
    stage, index = point
    grads = gradient_pass.backward(forward, rows, until=index, chunk_size=chunk_size)
    maps = forward.record.outputs[stage] if stage is not None else forward.record.values[index]
    acts = maps[rows.image.to(grads.device)]
    return cam_at_input(weighting(grads, acts), size)


def gradient_cam(
    model: nn.Module, images: Tensor, target: object, stage: object, chunk_size: int, weighting: Weighting
) -> Tensor:
    """A gradient-weighted CAM of each target at `stage`, from one forward pass: images
    [B, 3, H, W] -> [B, H, W] ([K, H, W] for K targets of one image) on images.device."""
    x, rows, gradient_pass = prepare(model, images, target, "backprop", chunk_size)
    point = check_cam_stage(model, stage, rows)
    gradient_pass.keep = (point[1],) if point[0] is None else ()
    with torch.no_grad():
        forward, rows = forward_resolved(gradient_pass, x, rows)
        out = cam_maps(gradient_pass, forward, rows, point, tuple(x.shape[-2:]), chunk_size, weighting)
    return out.to(images.device)


@full_float32()
def gradcam(
    model: nn.Module, images: Tensor, target: object = None, stage: int = 5, *, chunk_size: int = CHUNK_SIZE
) -> Tensor:
    """Grad-CAM of each target at `stage`: images [B, 3, H, W] -> [B, H, W] ([K, H, W] for K
    targets of one image), non-negative, at the input size."""
    return gradient_cam(model, images, target, stage, chunk_size, gradcam_weighting)


@full_float32()
def guided_gradcam(
    model: nn.Module, images: Tensor, target: object = None, stage: int = 5, *, chunk_size: int = CHUNK_SIZE
) -> Tensor:
    """Guided backprop x Grad-CAM, from one forward pass: [B, 3, H, W] -> [B, 3, H, W]."""
    x, rows, guided = prepare(model, images, target, "guided", chunk_size)
    point = check_cam_stage(model, stage, rows)
    guided.keep = (point[1],) if point[0] is None else ()
    with torch.no_grad():
        forward, rows = forward_resolved(guided, x, rows)  # guided's record has every mask
        backprop = GradientPass(model, "backprop", rows)
        cam = cam_maps(backprop, forward, rows, point, tuple(x.shape[-2:]), chunk_size)
        out = guided.backward(forward, rows, chunk_size=chunk_size) * cam[:, None]
    return out.to(images.device)
