"""Composable objectives (lucid/lucent style): functions of one forward pass's activations that
give one value per image, `[B]`, to be maximised.

    obj = channel(3, [5, 9]) - 0.1 * total_variation()      # image 0 -> channel 5, image 1 -> 9
    obj = -class_logit(281)                                  # negated: decrease the score

Objectives add, subtract, scale by numbers and negate; each knows the points (`probe.probe`) it
reads, so the forward pass goes only as deep as needed. Arguments that name a channel, a unit or a
class take one int (the same for every image) or one per image (each image its own objective).
Input-space penalties (Lp norm, alpha norm, total variation) are objectives of the "input" point:
subtract them with a weight.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from deconvnet.core.probe import pre_point, split_channel

Activations = dict
PerImage = int | Sequence[int]


@dataclass(frozen=True)
class Objective:
    """`fn(activations) -> [B]`, the points it reads, and a name for histories and provenance."""

    fn: Callable[[Activations], Tensor]
    points: frozenset
    name: str

    def __call__(self, activations: Activations) -> Tensor:
        return self.fn(activations)

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Real):
            if other == 0:
                return self
            raise ValueError(f"objective: only 0 or another Objective can be added, got {other!r}")
        _check_objective(other)
        return Objective(
            lambda a: self(a) + other(a), self.points | other.points, f"{self.name} + {other.name}"
        )

    __radd__ = __add__  # sum([...]) starts from 0

    def __neg__(self) -> Objective:
        return Objective(lambda a: -self(a), self.points, f"-({self.name})")

    def __sub__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Real):
            return self + other  # 0 is accepted, anything else named in the error
        _check_objective(other)
        return self + (-other)

    def __mul__(self, weight: float) -> Objective:
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise ValueError(f"objective: weight must be a real number, got {weight!r}")
        w = float(weight)
        return Objective(lambda a: w * self(a), self.points, f"{w:g} * ({self.name})")

    __rmul__ = __mul__


def _check_objective(value: object) -> None:
    if not isinstance(value, Objective):
        raise ValueError(f"objective: expected an Objective, got {type(value).__name__}")


def _per_image(values: PerImage, batch: int, device: torch.device, name: str) -> Tensor:
    """[B] long tensor: one int for every image, or a sequence with exactly one per image."""
    if isinstance(values, numbers.Integral):
        return torch.full((batch,), int(values), dtype=torch.long, device=device)
    values = list(values)
    if len(values) != batch:
        raise ValueError(
            f"{name}: {len(values)} values for a batch of {batch} images (give one int, or one per image)"
        )
    return torch.tensor(values, dtype=torch.long, device=device)


def _pick_channel(activations: Activations, stage: int | str, channels: PerImage) -> Tensor:
    """[B, C, h, w] -> [B, h, w], image b's map of its own channel."""
    a = activations[stage]
    index = _per_image(channels, a.shape[0], a.device, "channel")
    return a[torch.arange(a.shape[0], device=a.device), index]


def channel(stage: int | str, channel: PerImage | None = None, border: int = 0) -> Objective:
    """Mean of the channel's map without `border` units on each side (Keras example: 2).
    `stage` is any point of a feature map; lucent's "blocks.4:42" names the channel too."""
    stage, named = split_channel(stage)
    channel = named if channel is None else channel
    if channel is None:
        raise ValueError(
            "channel: expected a channel (an int, one per image, or '<point>:<channel>'), got None"
        )

    def fn(a: Activations) -> Tensor:
        m = _pick_channel(a, stage, channel)
        if border:
            m = m[:, border : m.shape[1] - border, border : m.shape[2] - border]
        return m.mean(dim=(1, 2))

    return Objective(fn, frozenset({stage}), f"channel(stage={stage}, {channel}, border={border})")


def unit(stage: int | str, channel: PerImage, y: int, x: int) -> Objective:
    """One unit's activation a[c, y, x] (the same position for every image)."""

    def fn(a: Activations) -> Tensor:
        return _pick_channel(a, stage, channel)[:, y, x]

    return Objective(fn, frozenset({stage}), f"unit(stage={stage}, {channel}, y={y}, x={x})")


def preactivation(
    stage: int | str, channel: PerImage, window: tuple[int, int, int, int] | None = None
) -> Objective:
    """The largest value of the channel's map before the point's last ReLU (`probe.pre_point`:
    on VGG the stage's last convolution), within window (top, left, bottom, right) of that map if given: it has a
    gradient where the stage's own output is 0 everywhere, and once it is > 0 so is the output."""
    point = pre_point(stage)

    def fn(a: Activations) -> Tensor:
        m = _pick_channel(a, point, channel)
        if window is not None:
            m = m[:, window[0] : window[2], window[1] : window[3]]
        return m.flatten(1).amax(dim=1)

    return Objective(fn, frozenset({point}), f"preactivation(stage={stage}, {channel}, {window})")


def class_logit(cls: PerImage) -> Objective:
    """The raw class score S_c (the logit before softmax; Simonyan et al. 2014)."""

    def fn(a: Activations) -> Tensor:
        logits = a["logits"]
        index = _per_image(cls, logits.shape[0], logits.device, "class")
        return logits.gather(1, index[:, None])[:, 0]

    return Objective(fn, frozenset({"logits"}), f"class_logit({cls})")


def class_log_probability(cls: PerImage) -> Objective:
    """log softmax(logits)_c: raising it lowers every other class (used for fooling images)."""

    def fn(a: Activations) -> Tensor:
        logp = torch.log_softmax(a["logits"], dim=1)
        index = _per_image(cls, logp.shape[0], logp.device, "class")
        return logp.gather(1, index[:, None])[:, 0]

    return Objective(fn, frozenset({"logits"}), f"class_log_probability({cls})")


def energy(stage: int | str, channel: PerImage | None = None) -> Objective:
    """0.5 ||a||^2 of the stage's maps (or of one channel's): Deep Dream's objective."""

    def fn(a: Activations) -> Tensor:
        m = a[stage] if channel is None else _pick_channel(a, stage, channel)
        return 0.5 * m.pow(2).flatten(1).sum(dim=1)

    return Objective(fn, frozenset({stage}), f"energy(stage={stage}, channel={channel})")


def feature_match(stage: int | str, target: Tensor) -> Objective:
    """-||phi(x) - phi0||^2 / ||phi0||^2 per image (Mahendran & Vedaldi 2015); target = phi0,
    [B or 1, ...] like the stage's activations. Maximising it inverts the representation."""
    phi0 = target.detach()
    norm = phi0.pow(2).flatten(1).sum(dim=1).clamp_min(torch.finfo(phi0.dtype).tiny)

    def fn(a: Activations) -> Tensor:
        return -(a[stage] - phi0).pow(2).flatten(1).sum(dim=1) / norm

    return Objective(fn, frozenset({stage}), f"feature_match(stage={stage})")


# ------------------------------------------------------------------- input-space penalties ([B])


def lp_norm(p: float = 6.0) -> Objective:
    """keras-vis LpNorm: (sum |x|^p)^(1/p) / (number of values per image)."""

    def fn(a: Activations) -> Tensor:
        x = a["input"].flatten(1)
        return x.abs().pow(p).sum(dim=1).pow(1.0 / p) / x.shape[1]

    return Objective(fn, frozenset({"input"}), f"lp_norm(p={p:g})")


def alpha_norm(alpha: float = 6.0, bound: float = 1.0) -> Objective:
    """Mahendran & Vedaldi's normalised alpha norm: sum over pixels of ||x_ij||^alpha (the colour
    vector's Euclidean norm) / (H W bound^alpha)."""

    def fn(a: Activations) -> Tensor:
        x = a["input"]
        powered = _safe_pow(x.pow(2).sum(dim=1), alpha / 2)  # ||x_ij||^alpha
        return powered.flatten(1).sum(dim=1) / (x.shape[2] * x.shape[3] * bound**alpha)

    return Objective(fn, frozenset({"input"}), f"alpha_norm(alpha={alpha:g}, bound={bound:g})")


def _safe_pow(squares: Tensor, exponent: float) -> Tensor:
    """squares ** exponent with a finite gradient at 0 for exponents below 1 (TV with beta < 2)."""
    if exponent >= 1:
        return squares.pow(exponent)
    return squares.clamp_min(1e-30).pow(exponent)


def total_variation(beta: float = 2.0, bound: float = 1.0) -> Objective:
    """Mahendran & Vedaldi's TV^beta: sum over pixels and colours of
    ((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2)^(beta / 2) / (H W bound^beta), over the
    pixels that have both neighbours."""

    def fn(a: Activations) -> Tensor:
        x = a["input"]
        dx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
        dy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
        sq = dx.pow(2) + dy.pow(2)
        return _safe_pow(sq, beta / 2).flatten(1).sum(dim=1) / (x.shape[2] * x.shape[3] * bound**beta)

    return Objective(fn, frozenset({"input"}), f"total_variation(beta={beta:g}, bound={bound:g})")


def l2_norm() -> Objective:
    """||x||_2^2 per image (Simonyan et al.'s class-model regulariser as a penalty)."""

    def fn(a: Activations) -> Tensor:
        return a["input"].pow(2).flatten(1).sum(dim=1)

    return Objective(fn, frozenset({"input"}), "l2_norm()")
