"""Every gradient-family method under one name, for experiments and sweeps.

explain(model, images, method, target) -> the method's map: [B, 3, H, W] for pixel maps, [B, H, W]
for Grad-CAM. Each method is registered once, in `METHODS`; the options it takes (samples / noise
for SmoothGrad, steps for integrated gradients, stage for Grad-CAM, ...) are read from its
function's signature (`OPTIONS`). `explain` refuses an option the method does not take;
`options_for` picks a method's options out of one option set shared by a sweep over methods.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
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
# the parameters every method shares, given by `explain` itself
EXPLAIN_PARAMETERS = ("model", "images", "target")


def accepted_options(function: Method) -> tuple[str, ...]:
    """The keyword options a registered method takes: its signature's parameters other than
    model, images and target, less those its `METHODS` entry fixes (a partial's `rule`)."""
    fixed = function.keywords if isinstance(function, partial) else {}
    return tuple(
        name
        for name in inspect.signature(function).parameters
        if name not in EXPLAIN_PARAMETERS and name not in fixed
    )


# which options each method takes
OPTIONS: dict[str, tuple[str, ...]] = {name: accepted_options(function) for name, function in METHODS.items()}


def check_method(method: object) -> str:
    """The method name, or ValueError listing the accepted ones."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return method


def check_options(method: str, options: Mapping[str, Any]) -> None:
    """ValueError naming the options `method` does not take, the method, and the ones it does."""
    unknown = [name for name in options if name not in OPTIONS[method]]
    if unknown:
        accepted = ", ".join(OPTIONS[method]) or "none"
        raise ValueError(
            f"options: method {method!r} does not take {', '.join(unknown)}; it accepts {accepted}"
        )


def options_for(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of `options` that `method` takes (one option set serves a sweep over methods)."""
    takes = OPTIONS[check_method(method)]
    return {name: value for name, value in options.items() if name in takes}


def explain(model: nn.Module, images: Tensor, method: str, target: object = None, **options: Any) -> Tensor:
    """The `method`'s map of `target` for images [B, 3, H, W]: [B, 3, H, W] (Grad-CAM [B, H, W]).
    An option the method does not take is a ValueError, raised before any computation (a sweep
    over methods passes `options_for(method, options)`)."""
    check_options(check_method(method), options)
    return METHODS[method](model, images, target, **options)
