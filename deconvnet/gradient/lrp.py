"""Layer-wise relevance propagation through the mirror (Bach et al. 2015; Montavon et al. 2019; docs/lrp.md).

The target's score is the relevance at the top: the logit's value at the target class (a unit's
value, a channel's map for unit / channel targets), zero elsewhere. It travels down the model's
traced graph in reverse execution order, each node sending it to its inputs by a rule
(docs/lrp.md): convolutions and linear layers by the composite's rules (`lrp_rules`), with the
batch norm after a convolution merged into it; residual adds in proportion to each summand
(zennit's Norm rule); average pooling by the Norm rule; ReLU, ReLU6 and batch norm pass it on;
max pooling, concatenations, flattening and dropout by their gradient (the mirror's adjoint).
One forward pass serves K targets, and each layer's rule terms are computed once per image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.core.geometry import stage_sizes
from deconvnet.core.graph import Op
from deconvnet.core.graph_mirror import GraphMirror
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.graph_ops import GraphRecord, adjoint, rows_of, unfolded
from deconvnet.core.precision import full_float32
from deconvnet.core.targets import Rows, resolve_target
from deconvnet.core.validation import check_count, check_images, check_model_values, check_real
from deconvnet.data.models import preprocessing
from deconvnet.gradient.lrp_rules import (
    Affine,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Rule,
    ZBox,
    ZPlus,
    norm_relevance,
    stabilize,
)
from deconvnet.gradient.passes import CHUNK_SIZE, target_signal

AFFINE_KINDS = ("conv", "conv_same", "linear")
PASS_KINDS = ("relu", "relu6", "bn", "bn_act")  # zennit: Pass on activations and batch norms
NORM_KINDS = ("avgpool", "adaptive_avgpool")  # zennit: Norm on average pooling


@dataclass(frozen=True)
class Rules:
    """The rule of the first layer (the one reading the image), of the other convolutions, of the
    linear layers, and the Norm rule's stabilizer (sums and average pooling)."""

    first: Rule
    conv: Rule
    linear: Rule
    stabilizer: float

    def of(self, op: Op, first: str) -> Rule:
        if op.name == first:
            return self.first
        return self.linear if op.kind == "linear" else self.conv


def box_rules(model: nn.Module, o: dict[str, Any]) -> Rules:
    conv = Gamma(o["gamma"], o["stabilizer"])
    return Rules(ZBox(o["low"], o["high"], o["stabilizer"]), conv, Epsilon(o["epsilon"]), o["stabilizer"])


def plus_rules(flat: bool) -> Callable[[nn.Module, dict[str, Any]], Rules]:
    def make(model: nn.Module, o: dict[str, Any]) -> Rules:
        conv = ZPlus(stabilizer=o["stabilizer"])
        first = Flat(o["stabilizer"]) if flat else conv
        return Rules(first, conv, Epsilon(o["epsilon"]), o["stabilizer"])

    return make


def alpha_beta_rules(model: nn.Module, o: dict[str, Any]) -> Rules:
    conv = AlphaBeta(2.0, 1.0, o["stabilizer"])
    return Rules(conv, conv, Epsilon(o["epsilon"]), o["stabilizer"])


# zennit's composites: name -> (rules, the options they take)
COMPOSITES: dict[str, tuple[Callable[[nn.Module, dict[str, Any]], Rules], tuple[str, ...]]] = {
    "epsilon_gamma_box": (box_rules, ("epsilon", "gamma", "stabilizer", "low", "high")),
    "epsilon_plus_flat": (plus_rules(True), ("epsilon", "stabilizer")),
    "epsilon_alpha2_beta1": (alpha_beta_rules, ("epsilon", "stabilizer")),
    "epsilon_plus": (plus_rules(False), ("epsilon", "stabilizer")),
}
DEFAULTS = {"epsilon": 1e-6, "gamma": 0.25, "stabilizer": 1e-6}
RULE_OPTIONS = ("epsilon", "gamma", "stabilizer", "low", "high")  # every composite's, in all


def rule_options(composite: str | None = None) -> tuple[str, ...]:
    """The rule options `composite` takes (None: those of any composite)."""
    return RULE_OPTIONS if composite is None else COMPOSITES[composite][1]


def input_box(model: nn.Module, name: str, value: object, dtype: torch.dtype) -> Tensor:
    """[1, 3, 1, 1] bound of the valid inputs: the model's weights' (value - mean) / std for colour
    value 0 (low) or 1 (high) when `value` is None, else a number or a tensor of 3 (or 1) values."""
    if value is None:
        try:
            p = preprocessing(model)
        except ValueError as error:
            raise ValueError(
                f"{name}: the box of valid inputs comes from the model's weights' normalisation, "
                f"which is unknown here ({error}); pass low= and high= (numbers or 3 values per colour)"
            ) from None
        colour = 0.0 if name == "low" else 1.0
        return torch.tensor([(colour - m) / s for m, s in zip(p.mean, p.std)], dtype=dtype).view(1, 3, 1, 1)
    if isinstance(value, Tensor) and value.numel() in (1, 3) and bool(torch.isfinite(value).all()):
        return value.detach().to(dtype=dtype, device="cpu").reshape(1, -1, 1, 1)
    return torch.tensor(check_real(name, value, low=-float("inf")), dtype=dtype).view(1, 1, 1, 1)


def check_composite(
    model: nn.Module, composite: object, options: dict[str, Any], dtype: torch.dtype
) -> Rules:
    """The composite's rules with `options` (epsilon, gamma, stabilizer, low, high as it takes
    them); ValueError naming what is not accepted, before any work."""
    if not isinstance(composite, str) or composite not in COMPOSITES:
        raise ValueError(f"composite: expected one of {', '.join(COMPOSITES)}, got {composite!r}")
    make, accepted = COMPOSITES[composite]
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise ValueError(
            f"rule_options: composite {composite!r} does not take {', '.join(unknown)}; "
            f"it accepts {', '.join(accepted)}"
        )
    o = DEFAULTS | {k: v for k, v in options.items() if k not in ("low", "high")}
    for name in ("epsilon", "stabilizer", "gamma"):
        o[name] = check_real(name, o[name], low=0.0)
    if "low" in accepted:
        o["low"] = input_box(model, "low", options.get("low"), dtype)
        o["high"] = input_box(model, "high", options.get("high"), dtype)
        if not bool((o["low"] < o["high"]).all()):
            raise ValueError(f"low, high: the box needs low < high, got {o['low'].flatten().tolist()} "
                             f"and {o['high'].flatten().tolist()}")  # fmt: skip
    return make(model, o)


def first_layer(graph: ModelGraph) -> str:
    """The first convolution or linear node in execution order (zennit's special first layer)."""
    return next(op.name for op in graph.ops if op.kind in AFFINE_KINDS)


def seed_relevance(values: dict[str, Tensor], top: str, rows: Rows) -> Tensor:
    """[M, ...] relevance at the top node: the target's value there, zero elsewhere."""
    return target_signal(values[top], rows) * rows_of(values[top], rows.image)


@dataclass
class RelevancePass:
    """The graph, the values of one forward pass, and the rules: relevance from `top` down."""

    graph: ModelGraph
    values: dict[str, Tensor]
    record: GraphRecord
    rules: Rules
    top: str
    first: str  # the first layer's node (`first_layer`)

    def node(self, op: Op, relevance: Tensor, image: Tensor) -> list[Tensor]:
        """Relevance [M, ...] at the node's output -> at each of its inputs (op.inputs order)."""
        if op.kind in PASS_KINDS:
            return [relevance]
        xs = [
            rows_of(self.values[name], image) if op.kind == "add" else self.values[name] for name in op.inputs
        ]
        if op.kind in AFFINE_KINDS:
            layer = Affine.of(unfolded(op) if op.name == self.top else op, xs[0].dtype)
            rule = self.rules.of(op, self.first)
            return [rule.relevance(layer, xs[0], relevance, image)]
        if op.kind == "add":
            total = rows_of(self.values[op.name], image)
            return norm_relevance(xs, total, relevance, self.rules.stabilizer)
        if op.kind in NORM_KINDS:
            s = relevance / stabilize(rows_of(self.values[op.name], image), self.rules.stabilizer)
            return [rows_of(xs[0], image) * adjoint(op, s, self.record, "backprop", image)[0]]
        return adjoint(op, relevance, self.record, "backprop", image)

    def run(self, relevance: Tensor, image: Tensor) -> Tensor:
        """[M, ...] relevance at the top node for rows of images `image` [M] -> [M, 3, H, W]."""
        arriving: dict[str, Tensor] = {self.top: relevance}
        for op in reversed(self.graph.ops[: self.graph.position[self.top] + 1]):
            r = arriving.pop(op.name, None)
            if r is None or op.kind == "input":
                if op.kind == "input":
                    return (
                        r
                        if r is not None
                        else relevance.new_zeros(len(image), *self.values[op.name].shape[1:])
                    )
                continue
            for name, part in zip(op.inputs, self.node(op, r, image)):
                arriving[name] = arriving[name] + part if name in arriving else part
        raise ValueError(f"stage: no path leads from {self.top} to the input")


@full_float32()
def lrp(
    model: nn.Module,
    images: Tensor,
    target: object = None,
    composite: str = "epsilon_gamma_box",
    *,
    chunk_size: int = CHUNK_SIZE,
    **rule_options: Any,
) -> Tensor:
    """Layer-wise relevance propagation of each target: images [B, 3, H, W] -> [B, 3, H, W]
    relevance at the input ([K, 3, H, W] for K targets of one image, one forward pass).

    composite (zennit's names and definitions, docs/lrp.md#composites):
      "epsilon_gamma_box"    z^B on the first convolution (the box [low, high] of valid inputs:
                             by default the weights' normalisation of colours 0 and 1), gamma on
                             the other convolutions, epsilon on linear layers;
      "epsilon_plus_flat"    flat on the first convolution, z+ on the others, epsilon on linear;
      "epsilon_alpha2_beta1" alpha = 2, beta = 1 on convolutions, epsilon on linear;
      "epsilon_plus"         z+ on convolutions, epsilon on linear.
    rule_options: epsilon (1e-6, epsilon rule), gamma (0.25), stabilizer (1e-6, every other
    rule), low / high (epsilon_gamma_box). Batch norm after a convolution is merged into it and
    residual adds share relevance in proportion to their summands, as zennit's canonizers do.
    The sum of the map equals the target's score where every rule conserves relevance (no
    biases, no stabilizer); biases absorb their share. The model is left untouched.
    """
    check_count("chunk_size", chunk_size)
    check_images(images, model)
    check_model_values(model)
    weight = next(model.parameters())
    rules = check_composite(model, composite, rule_options, weight.dtype)
    rows = resolve_target(model, target, images.shape[0], stage_sizes(model, *images.shape[-2:]))
    # the mirror's forward pass up to the target's node, keeping every node's value (the rules
    # read every layer's input) and the pooling switches; "deconvnet": no ReLU masks are kept
    mirror = GraphMirror(model, None if rows.kind == "class" else rows.stage, "deconvnet")
    graph, top = mirror.graph, mirror.top
    x = images.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        record = mirror.record(x, keep=tuple(op.name for op in mirror.ops))
        values = record.values
        rows = rows.resolve(values[graph.output] if rows.kind == "class" else None, values[top])
        relevance_pass = RelevancePass(graph, values, record, rules, top, first_layer(graph))
        out = torch.cat(
            [
                relevance_pass.run(seed_relevance(values, top, part), part.image)
                for part in (rows[s : s + chunk_size] for s in range(0, len(rows), chunk_size))
            ]
        )
    return out.to(images.device)
