"""The rules of layer-wise relevance propagation, one class per rule (docs/lrp.md#rules).

Each rule sends the relevance R [M, ...] at the output of a convolution or linear layer (batch
norm merged into it, `Affine`) to its input, for rows m of image `image[m]`: with z the layer's
(modified) outputs and s = R / stabilize(z), R_in = x (W^rule)^T s, the transpose computed by the
mirror's tied transposed convolution with the rule's weight. The z terms depend on the image only,
so they are computed once per image and read by every row (K targets share them). Names, defaults
and formulas are zennit 0.5's (Anders et al.), the reference the tests compare against:

    Epsilon(epsilon)        z = W x + b, s = R / (z + epsilon sign z)
    ZPlus                   alpha = 1, beta = 0 below
    AlphaBeta(alpha, beta)  alpha (x+ W+ + x- W-)^T s+ - beta (x+ W- + x- W+)^T s-
    Gamma(gamma)            W + gamma W+ (W + gamma W-) for the positive (negative) outputs
    ZBox(low, high)         x W - low W+ - high W-, the box of valid inputs [low, high]
    Flat                    all weights 1 and inputs 1: relevance spread over the window
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.core.graph import Op
from deconvnet.core.graph_ops import bn_scale, conv_transpose_with, conv_with
from deconvnet.core.layout import channels_last_on_cpu


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """z + epsilon * sign(z), the sign of 0 taken as +1 (zennit's stabilizer): any shape."""
    return z + epsilon * ((z == 0).to(z.dtype) + z.sign())


@dataclass(frozen=True)
class Affine:
    """A convolution or linear node with the batch norm after it merged in (zennit's
    `SequentialMergeBatchNorm`): weight' = s W, bias' = s (b - mean) + beta, s = gamma / sqrt(var + eps)."""

    op: Op
    weight: Tensor
    bias: Tensor | None

    @staticmethod
    def of(op: Op, dtype: torch.dtype) -> Affine:
        """The node's weight and bias in `dtype`, its folded batch norm (op.args["bn"]) merged."""
        module, bn = op.module, op.args.get("bn")
        weight = module.weight.to(dtype)
        bias = module.bias.to(dtype) if module.bias is not None else None
        if bn is None:
            return Affine(op, weight, bias)
        scale = bn_scale(bn).to(dtype)
        shift = -bn.running_mean.to(dtype) if bias is None else bias - bn.running_mean.to(dtype)
        shift = shift * scale + (bn.bias.to(dtype) if bn.bias is not None else 0.0)
        return Affine(op, weight * scale.view(-1, *[1] * (weight.dim() - 1)), shift)

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """[N, ...] input -> [N, ...] output of the node with `weight` and `bias` instead of its own."""
        if self.op.kind == "linear":
            return F.linear(x, weight, bias)
        return conv_with(self.op, x, weight, bias)

    def transpose(self, s: Tensor, weight: Tensor, shape: tuple[int, ...]) -> Tensor:
        """weight^T s: [M, ...] at the output -> [M, *shape] at the input (shape without batch)."""
        if self.op.kind == "linear":
            return s @ weight
        s = channels_last_on_cpu(s)  # oneDNN's fast route, as the mirror runs it
        return conv_transpose_with(self.op, s, weight, tuple(shape[-2:]))


def positive(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def negative(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


class Rule:
    """A relevance rule of a convolution / linear layer."""

    def relevance(self, layer: Affine, x: Tensor, relevance: Tensor, image: Tensor) -> Tensor:
        """x [B, ...] the layer's input per image, relevance [M, ...] at its output, image [M]
        -> [M, ...] relevance at its input."""
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon (Bach et al. 2015): R_in = x W^T (R / (W x + b + epsilon sign))."""

    epsilon: float = 1e-6

    def relevance(self, layer: Affine, x: Tensor, relevance: Tensor, image: Tensor) -> Tensor:
        z = layer.forward(x, layer.weight, layer.bias)[image]
        s = relevance / stabilize(z, self.epsilon)
        return x[image] * layer.transpose(s, layer.weight, x.shape[1:])


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015), generalised to negative inputs as zennit: positive
    contributions z+ = W+ x+ + W- x- (+ b+), negative z- = W- x+ + W+ x- (+ b-);
    R_in = alpha (x+ W+^T + x- W-^T) R / z+ - beta (x+ W-^T + x- W+^T) R / z-.
    alpha = 1, beta = 0 is the z+ rule (ZPlus)."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def relevance(self, layer: Affine, x: Tensor, relevance: Tensor, image: Tensor) -> Tensor:
        w, b = layer.weight, layer.bias
        pairs = ((self.alpha, positive(w), negative(w), positive(b)),)
        if self.beta:
            pairs += ((-self.beta, negative(w), positive(w), negative(b)),)
        return signed_terms(layer, x, relevance, image, pairs, self.stabilizer)


def signed_terms(
    layer: Affine,
    x: Tensor,
    relevance: Tensor,
    image: Tensor,
    pairs: tuple[tuple[float, Tensor, Tensor, Tensor | None], ...],
    stabilizer: float,
    masks: tuple[Tensor | None, ...] = (None, None),
) -> Tensor:
    """sum over (factor, w_pos, w_neg, bias) of factor (x+ w_pos^T + x- w_neg^T) (mask R / z),
    z = w_pos x+ + bias + w_neg x-: the shared form of the alpha-beta, z+ and gamma rules. The
    negative-input terms are skipped where x has no negative value (they are exactly 0)."""
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    signed = bool((x < 0).any())
    out = None
    for (factor, w_pos, w_neg, bias), mask in zip(pairs, masks):
        z = layer.forward(xp, w_pos, bias)
        if signed:
            z = z + layer.forward(xn, w_neg, None)
        s = relevance / stabilize(z[image], stabilizer)
        s = s * mask if mask is not None else s
        part = xp[image] * layer.transpose(s, w_pos, x.shape[1:])
        if signed:
            part = part + xn[image] * layer.transpose(s, w_neg, x.shape[1:])
        out = factor * part if out is None else out + factor * part
    return out


@dataclass(frozen=True)
class ZPlus(AlphaBeta):
    """LRP-z+ (Montavon et al. 2017): AlphaBeta with alpha = 1, beta = 0."""

    alpha: float = 1.0
    beta: float = 0.0
    stabilizer: float = 1e-6


@dataclass(frozen=True)
class Gamma(Rule):
    """LRP-gamma (Montavon et al. 2019), generalised to negative inputs as zennit 0.5: where the
    output z = W x + b is positive, R / z+ with z+ = (W + gamma W+) x+ + (W + gamma W-) x- (bias
    b + gamma b+), sent down by the same weights; where it is negative, R / z- with the roles of
    W+ and W- exchanged (bias b + gamma b-)."""

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def relevance(self, layer: Affine, x: Tensor, relevance: Tensor, image: Tensor) -> Tensor:
        w, b, g = layer.weight, layer.bias, self.gamma
        up, down = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        bias_up = None if b is None else b + g * b.clamp(min=0)
        bias_down = None if b is None else b + g * b.clamp(max=0)
        z = layer.forward(x, w, b)[image]
        masks = ((z > 0).to(z.dtype), (z < 0).to(z.dtype))
        pairs = ((1.0, up, down, bias_up), (1.0, down, up, bias_down))
        return signed_terms(layer, x, relevance, image, pairs, self.stabilizer, masks)


@dataclass(frozen=True)
class ZBox(Rule):
    """LRP-z^B (Montavon et al. 2017) for inputs in the box [low, high]:
    z = W x + b - (W+ low + b+) - (W- high + b-); R_in = x W^T s - low W+^T s - high W-^T s."""

    low: Tensor
    high: Tensor
    stabilizer: float = 1e-6

    def relevance(self, layer: Affine, x: Tensor, relevance: Tensor, image: Tensor) -> Tensor:
        w, b, shape = layer.weight, layer.bias, x.shape[1:]
        low = self.low.to(x).expand(1, *shape)
        high = self.high.to(x).expand(1, *shape)
        z = (
            layer.forward(x, w, b)
            - layer.forward(low, positive(w), positive(b))
            - layer.forward(high, negative(w), negative(b))
        )
        s = relevance / stabilize(z[image], self.stabilizer)
        return (
            x[image] * layer.transpose(s, w, shape)
            - low * layer.transpose(s, positive(w), shape)
            - high * layer.transpose(s, negative(w), shape)
        )


@dataclass(frozen=True)
class Flat(Rule):
    """LRP-flat (Lapuschkin et al. 2019): every weight and input 1, no bias; each output's
    relevance spread evenly over the inputs its window covers (z = their count)."""

    stabilizer: float = 1e-6

    def relevance(self, layer: Affine, x: Tensor, relevance: Tensor, image: Tensor) -> Tensor:
        ones = torch.ones_like(layer.weight)
        z = layer.forward(torch.ones_like(x[:1]), ones, None)
        s = relevance / stabilize(z, self.stabilizer)
        return layer.transpose(s, ones, x.shape[1:])


def norm_relevance(parts: list[Tensor], total: Tensor, relevance: Tensor, stabilizer: float) -> list[Tensor]:
    """The Norm rule of sums (residual adds): each summand's share, parts[i] R / (sum parts),
    parts [M, ...] each, total their sum."""
    s = relevance / stabilize(total, stabilizer)
    return [part * s for part in parts]
