"""Every gradient-family method under one name, for experiments and sweeps.

explain(model, images, method, target) -> the method's map: [B, 3, H, W] for pixel maps, [B, H, W]
for Grad-CAM. Options reach the method they belong to (samples / noise for SmoothGrad, steps for
integrated gradients, stage for Grad-CAM).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor, nn

from deconvnet.gradient.attribute import attribute, gradient_x_image
from deconvnet.gradient.gradcam import gradcam, guided_gradcam
from deconvnet.gradient.integrated import integrated_gradients
from deconvnet.gradient.smoothgrad import smoothgrad

Method = Callable[..., Tensor]

METHODS: dict[str, Method] = {
    "gradient": partial(attribute, rule="backprop"),
    "guided": partial(attribute, rule="guided"),
    "deconvnet": partial(attribute, rule="deconvnet"),
    "smoothgrad_gradient": partial(smoothgrad, rule="backprop"),
    "smoothgrad_guided": partial(smoothgrad, rule="guided"),
    "smoothgrad_deconvnet": partial(smoothgrad, rule="deconvnet"),
    "gradcam": gradcam,
    "guided_gradcam": guided_gradcam,
    "integrated_gradients": integrated_gradients,
    "gradient_x_image": gradient_x_image,
}
# which options each method takes
OPTIONS: dict[str, tuple[str, ...]] = {
    **{
        name: ("samples", "noise", "squared", "seed", "batch_size")
        for name in METHODS
        if name.startswith("smoothgrad")
    },
    "gradcam": ("stage",),
    "guided_gradcam": ("stage",),
    "integrated_gradients": ("baseline", "steps", "batch_size"),
}


def check_method(method: object) -> str:
    """The method name, or ValueError listing the accepted ones."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return method


def explain(model: nn.Module, images: Tensor, method: str, target: object = None, **options: Any) -> Tensor:
    """The `method`'s map of `target` for images [B, 3, H, W]. Options the method does not take
    are ignored (so one option set serves a sweep over methods)."""
    takes = OPTIONS.get(check_method(method), ())
    return METHODS[method](model, images, target, **{k: v for k, v in options.items() if k in takes})
