"""What a gradient-family map explains, resolved once for an image: the predicted (or given) class,
or the strongest unit of a stage or channel, with its score; shared by the saliency grid and the
sanity checks so that both explain exactly what the methods explain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.core.geometry import stage_sizes
from deconvnet.core.targets import Rows, Unit, resolve_target
from deconvnet.gradient.passes import Forward, GradientPass


def explained_score(gradient_pass: GradientPass, forward: Forward, rows: Rows) -> float:
    """The resolved row's score on a forward pass: a logit, or a unit's activation."""
    if rows.kind == "class":
        return float(gradient_pass.logits(forward)[0, int(rows.classes[0])])
    output = forward.record.outputs[rows.stage]
    return float(output[0, int(rows.channel[0]), int(rows.y[0]), int(rows.x[0])])


def resolve_explained(
    net: nn.Module, x: Tensor, target: int | Unit | None, names: Sequence[str] | None
) -> tuple[dict[str, Any], Rows, GradientPass]:
    """The target each method explains for image x [1, 3, H, W], resolved by one forward pass
    exactly as the methods resolve it (`GradientPass.resolve`): the predicted class, or the
    position of the strongest unit."""
    rows = resolve_target(net, target, 1, stage_sizes(net, *x.shape[-2:]))
    gradient_pass = GradientPass(net, "backprop", rows)
    with torch.no_grad():
        forward = gradient_pass.forward(x)
        rows = gradient_pass.resolve(forward, rows)
        score = explained_score(gradient_pass, forward, rows)
    if rows.kind == "class":
        c = int(rows.classes[0])
        explained = {
            "kind": "class",
            "class": c,
            "class_name": names[c] if names else None,
            "predicted": target is None,
            "score": score,
        }
    else:  # strongest: of the whole stage, of the given channel, or None (a given position)
        strongest = "stage" if target.channel is None else "channel" if target.y is None else None
        explained = {
            "kind": "unit",
            "stage": rows.stage,
            "channel": int(rows.channel[0]),
            "y": int(rows.y[0]),
            "x": int(rows.x[0]),
            "activation": score,
            "strongest": strongest,
        }
    return explained, rows, gradient_pass


def describe_explained(explained: Mapping[str, Any]) -> str:
    """'class 281 (tabby)', 'predicted class 281 (tabby)' or 'stage 5 ch 12 (3, 4)'."""
    if explained["kind"] == "class":
        name = f" ({explained['class_name']})" if explained.get("class_name") else ""
        lead = "predicted class" if explained.get("predicted") else "class"
        return f"{lead} {explained['class']}{name}"
    return f"stage {explained['stage']} ch {explained['channel']} ({explained['y']}, {explained['x']})"
