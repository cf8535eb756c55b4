"""`attribute`: the map of a class score (or a unit) through the whole network, by one rule.

rule="backprop": the gradient d score / d image (Simonyan et al. 2014, "saliency").
rule="guided":   guided backpropagation (Springenberg et al. 2015).
rule="deconvnet": Zeiler & Fergus' deconvnet carried through the classifier.
`gradient_x_image` multiplies the gradient by the input (Shrikumar et al. 2016).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deconvnet.core.geometry import stage_sizes
from deconvnet.core.mirror import check_rule
from deconvnet.core.precision import full_float32
from deconvnet.core.targets import Rows, resolve_target
from deconvnet.core.validation import check_count, check_images
from deconvnet.gradient.passes import CHUNK_SIZE, Forward, GradientPass


def prepare(
    model: nn.Module, images: Tensor, target: object, rule: str, chunk_size: int
) -> tuple[Tensor, Rows, GradientPass]:
    """Validate the common arguments before heavy work -> (images on the model's device and
    dtype, unresolved rows, the pass)."""
    check_count("chunk_size", chunk_size)
    check_rule(rule)
    check_images(images, model)
    rows = resolve_target(model, target, images.shape[0], stage_sizes(model, *images.shape[-2:]))
    weight = next(model.parameters())
    return (images.to(device=weight.device, dtype=weight.dtype), rows, GradientPass(model, rule, rows))


def forward_resolved(gradient_pass: GradientPass, x: Tensor, rows: Rows) -> tuple[Forward, Rows]:
    """One forward pass of x and the rows resolved on it."""
    forward = gradient_pass.forward(x)
    return forward, gradient_pass.resolve(forward, rows)


@full_float32()
def attribute(
    model: nn.Module,
    images: Tensor,
    target: object = None,
    rule: str = "backprop",
    *,
    chunk_size: int = CHUNK_SIZE,
) -> Tensor:
    """The map of each target's score in input pixels, from ONE forward pass.

    images [B, 3, H, W] (the model's normalised input) -> [B, 3, H, W], or [K, 3, H, W] for a list
    of K targets of one image. target: see `deconvnet.core.targets` (None: the predicted
    class; class scores are the unnormalised logits). The mirror runs through features, the exact
    adjoint of adaptive average pooling, and the classifier (Linear -> tied transpose, Dropout ->
    identity: the eval-mode function whatever the training flag, ReLU -> the rule). Under
    "backprop" this equals torch.autograd.grad of the score; under "guided" / "deconvnet" Captum's
    GuidedBackprop / Deconvolution. chunk_size rows go down together (memory bound).
    The model is left exactly as it was: no hooks, no inplace changes, no copies of its weights.
    """
    x, rows, gradient_pass = prepare(model, images, target, rule, chunk_size)
    with torch.no_grad():
        forward, rows = forward_resolved(gradient_pass, x, rows)
        out = gradient_pass.backward(forward, rows, chunk_size=chunk_size)
    return out.to(images.device)


def gradient_x_image(model: nn.Module, images: Tensor, target: object = None) -> Tensor:
    """Gradient x input (Shrikumar et al. 2016): images * attribute(rule="backprop").

    images [B, 3, H, W] -> [B, 3, H, W] (or [K, 3, H, W] for K targets of one image).
    """
    grad = attribute(model, images, target, "backprop")
    return grad * images.to(grad.dtype)
