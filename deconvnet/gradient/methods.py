"""Every gradient-family method under one name, for experiments and sweeps.

explain(model, images, method, target) -> the method's map: [B, 3, H, W] for pixel maps, [B, H, W]
for Grad-CAM, Grad-CAM++, LayerCAM and Score-CAM (`CAM_METHODS`: those taking a stage). Each
method is registered once, in `METHODS`; the options it takes (samples / noise for SmoothGrad,
steps for integrated gradients, stage for the CAMs, ...) are read from its function's signature
(`OPTIONS`). `explain` refuses an option the method does not take;
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
from deconvnet.gradient.gradcam_plus_plus import gradcam_plus_plus
from deconvnet.gradient.integrated import integrated_gradients
from deconvnet.gradient.layercam import layercam
from deconvnet.gradient.lrp import lrp, rule_options
from deconvnet.gradient.scorecam import scorecam
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
    "gradcam_plus_plus": gradcam_plus_plus,
    "layercam": layercam,
    "scorecam": scorecam,
    "lrp": lrp,  # composite epsilon_gamma_box unless given
    "lrp_epsilon_plus_flat": partial(lrp, composite="epsilon_plus_flat"),
    "lrp_epsilon_alpha2_beta1": partial(lrp, composite="epsilon_alpha2_beta1"),
    "lrp_epsilon_plus": partial(lrp, composite="epsilon_plus"),
}
# the CAM methods: those taking a `stage` (a stage's maps, weighted), each map [B, H, W] but
# guided_gradcam's [B, 3, H, W] (guided backprop x Grad-CAM)
CAM_METHODS = ("gradcam", "guided_gradcam", "gradcam_plus_plus", "layercam", "scorecam")
# the methods that explain class targets only (a unit has no softmax probability to weigh masks by)
CLASS_ONLY_METHODS = ("scorecam",)
# the parameters every method shares, given by `explain` itself
EXPLAIN_PARAMETERS = ("model", "images", "target")


def keyword_options(function: Method) -> tuple[str, ...]:
    """The options a method takes through **keywords: lrp's rule options (its composite's where
    the `METHODS` entry fixes the composite)."""
    if getattr(function, "func", function) is not lrp:
        return ()
    return rule_options(function.keywords.get("composite") if isinstance(function, partial) else None)


def accepted_options(function: Method) -> tuple[str, ...]:
    """The keyword options a registered method takes: its signature's parameters other than
    model, images and target, less those its `METHODS` entry fixes (a partial's `rule`)."""
    fixed = function.keywords if isinstance(function, partial) else {}
    names: list[str] = []
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:  # lrp's **rule_options
            names.extend(keyword_options(function))
        elif name not in EXPLAIN_PARAMETERS and name not in fixed:
            names.append(name)
    return tuple(names)


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
    """The `method`'s map of `target` for images [B, 3, H, W]: [B, 3, H, W] (the CAMs [B, H, W]).
    An option the method does not take is a ValueError, raised before any computation (a sweep
    over methods passes `options_for(method, options)`)."""
    check_options(check_method(method), options)
    return METHODS[method](model, images, target, **options)
