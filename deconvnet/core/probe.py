"""One differentiable forward pass that keeps the activations an objective reads.

Points are named: "input" (the image the model saw, after transforms), a stage number 1..5 (the
paper's layer output, docs/stages.md), "pre1".."pre5" (the output of that stage's last
convolution, before its ReLU), "fc6" / "fc7" (the classifier's hidden layers after
their ReLU) and "logits". The pass runs `model.features` module by module only as far as the
deepest point asked for; the classifier runs with Dropout as the identity (its eval-mode function,
whatever the training flag), so the caller's model is used as it is and never changed: no hooks,
no flags, no copies.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from deconvnet.core.architecture import stages

POINTS_DOC = 'a stage 1..5, "pre1".."pre5", "fc6", "fc7", "logits" or "input"'
HIDDEN = ("fc6", "fc7")
PRE = tuple(f"pre{s}" for s in range(1, 6))  # a stage's last convolution, before its ReLU


def check_point(model: nn.Module, point: object) -> int | str:
    """`point` if the probe can read it on `model`, else ValueError naming the accepted points."""
    if point in ("input", "logits", *HIDDEN, *PRE):
        return point  # type: ignore[return-value]
    if isinstance(point, int) and not isinstance(point, bool) and 1 <= point <= 5:
        return point
    raise ValueError(f"stage: expected {POINTS_DOC}, got {point!r}")


def _run_classifier(model: nn.Module, h: Tensor, wanted: set, out: dict) -> None:
    """avgpool -> flatten -> classifier; ReLU outputs after Linear 1 and 2 are "fc6", "fc7"."""
    h = torch.flatten(model.avgpool(h), 1)
    linears = 0
    for module in model.classifier:
        if isinstance(module, nn.Dropout):
            continue  # the eval-mode function
        if isinstance(module, nn.Linear):
            linears += 1
            h = module(h)
        elif isinstance(module, nn.ReLU):
            h = torch.relu(h)
            if linears in (1, 2) and HIDDEN[linears - 1] in wanted:
                out[HIDDEN[linears - 1]] = h
        else:
            raise ValueError(
                f"model.classifier: {type(module).__name__} is not supported "
                "(expected Linear, ReLU and Dropout)"
            )
    out["logits"] = h


def head_logits(model: nn.Module, features_out: Tensor) -> Tensor:
    """[B, C, h, w] output of `model.features` -> [B, classes]: avgpool, flatten, classifier with
    Dropout as the identity (its eval-mode function, whatever the training flag)."""
    out: dict[int | str, Tensor] = {}
    _run_classifier(model, features_out, set(), out)
    return out["logits"]


def _apply(module: nn.Module, pieces: list[Tensor], budget: int | None) -> list[Tensor]:
    """One feature module over the batch held in pieces; the pieces are joined once the whole
    output fits in `budget` bytes (None: always one piece)."""
    # ReLU out of place: a stage output kept here must not be overwritten by a later layer
    out = [torch.relu(p) if isinstance(module, nn.ReLU) else module(p) for p in pieces]
    total = sum(o.numel() * o.element_size() for o in out)
    return [torch.cat(out)] if len(out) > 1 and (budget is None or total <= budget) else out


def probe(
    model: nn.Module, images: Tensor, points: Iterable[int | str], budget: int | None = None
) -> dict[int | str, Tensor]:
    """[B, 3, H, W] -> {point: activation} for every asked point, with the autograd graph kept.

    Stage outputs are [B, C, h, w]; "fc6", "fc7" [B, 4096]; "logits" [B, classes]. With
    `budget` (bytes), layers whose whole output is larger run on pieces of the batch that are
    joined once the maps are small: the same values, without allocating huge blocks.
    """
    wanted = {check_point(model, p) for p in points}
    index_of = {s.index: s.number for s in stages(model)}
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    pre_of = {max(c for c in convs if c <= s.index): f"pre{s.number}" for s in stages(model)}
    head = bool(wanted & {"logits", *HIDDEN})
    last = (
        len(model.features) - 1
        if head
        else max(
            [s.index for s in stages(model) if s.number in wanted or f"pre{s.number}" in wanted], default=-1
        )
    )
    out: dict[int | str, Tensor] = {"input": images}
    pieces = [images]
    if budget is not None and images.shape[0] > 1:
        first = next(m for m in model.features if isinstance(m, nn.Conv2d))
        per_image = first.out_channels * images[0, 0].numel() * images.element_size()
        pieces = list(images.split(max(1, budget // per_image)))
    for i, module in enumerate(model.features):
        if i > last:
            break
        pieces = _apply(module, pieces, budget)
        for name in (index_of.get(i), pre_of.get(i)):
            if name in wanted:
                out[name] = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    if head:
        _run_classifier(model, pieces[0] if len(pieces) == 1 else torch.cat(pieces), wanted, out)
    return {p: out[p] for p in wanted}


def point_key(point: int | str) -> str:
    """A cell's key: 'stage3' or 'fc6'."""
    return f"stage{point}" if isinstance(point, int) else str(point)
