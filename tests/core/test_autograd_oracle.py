"""Under rule="backprop" the mirror must equal torch.autograd.grad of the kept activations."""

from __future__ import annotations

import pytest
import torch

import deconvnet
from deconvnet.core.architecture import stage as stage_of

SIZES = {"VGG": [(32, 32), (45, 61)], "AlexNet": [(63, 63), (67, 90), (101, 77)]}
KEEPS = ["all", "max", 3, [0, 5, 7, 5]]


def _point_seed(a: torch.Tensor, b: int, c: int | None) -> torch.Tensor:
    """A zero tensor like `a` with a[b]'s strongest activation (of channel c, or of all) kept."""
    seed = torch.zeros_like(a)
    block = a[b] if c is None else a[b, c]
    flat = int(block.flatten().argmax())
    (seed[b] if c is None else seed[b, c]).view(-1)[flat] = block.flatten()[flat]
    return seed


def _autograd_reference(model, x, stage, keep):
    index = stage_of(model, stage).index
    xg = x.clone().requires_grad_(True)
    a = model.features[: index + 1](xg)
    d = a.detach()
    if keep == "all":
        seeds = [d]
    elif keep == "max":
        seeds = [sum(_point_seed(d, b, None) for b in range(d.shape[0]))]
    elif isinstance(keep, int):
        seeds = [sum(_point_seed(d, b, keep) for b in range(d.shape[0]))]
    else:
        seeds = [_point_seed(d, 0, c) for c in keep]
    grads = [torch.autograd.grad(a, xg, s, retain_graph=True)[0] for s in seeds]
    return torch.cat(grads)


@pytest.mark.parametrize("stage", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("keep", KEEPS, ids=str)
def test_backprop_rule_equals_autograd(model64, stage, keep):
    gen = torch.Generator().manual_seed(stage)
    for h, w in SIZES[type(model64).__name__]:
        batch = 1 if isinstance(keep, list) else 2
        x = torch.randn(batch, 3, h, w, generator=gen, dtype=torch.float64)
        got = deconvnet.reconstruct(model64, x, stage, keep=keep, rule="backprop")
        want = _autograd_reference(model64, x, stage, keep)
        assert got.shape == want.shape == ((len(keep) if isinstance(keep, list) else batch), 3, h, w)
        assert want.abs().max() > 0, "the reference must not be trivially zero"
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
