"""`reconstruct`: project a stage (or any module path) of a supported CNN back to pixel space."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.graph_mirror import make_mirror, point_channels
from deconvnet.core.mirror import check_rule
from deconvnet.core.precision import full_float32
from deconvnet.core.seeds import Keep, check_keep, select_seeds
from deconvnet.core.validation import check_images


@full_float32()
def reconstruct(
    model: nn.Module, images: Tensor, stage: int | str, keep: Keep = "all", rule: str = "deconvnet"
) -> Tensor:
    """Deconvnet reconstruction of a stage's kept activations, in input pixels.

    images [B, 3, H, W] (the model's normalised input space) -> [B, 3, H, W], or [K, 3, H, W] for a
    sequence of K channels (B == 1). keep: "all", "max", a channel int, or a channel sequence.
    stage: 1..5, a stage name ("pool3", "layer2"), or any module path of the model's traced graph
    whose output is a feature map ("layer3.1", "blocks.4").
    rule: "deconvnet" (Zeiler & Fergus), "backprop" (the plain gradient), "guided".
    The model is left exactly as it was: no hooks, no inplace changes, no copies of its weights.
    """
    check_rule(rule)
    if not isinstance(stage, str):
        stage_of(model, stage)  # an int in 1..5 (None is not a stage here)
    mirror = make_mirror(model, stage, rule)  # validates the model, its graph and the stage
    check_images(images, model)
    keep = check_keep(keep, point_channels(model, stage), images.shape[0])
    weight = next(model.parameters())
    with torch.no_grad():
        record = mirror.record(images.to(device=weight.device, dtype=weight.dtype))
        if keep == "all":
            out = mirror.project_map(record)
        else:
            out = mirror.project(record, select_seeds(record.output, keep), frame="image")
    return out.to(images.device)
