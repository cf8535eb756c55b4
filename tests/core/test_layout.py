"""The plain-layout (NCHW) route CUDA takes, run on the CPU with `plain_layout()`.

On the CPU every pass runs channels last (oneDNN's fast path); on CUDA the same code runs the
plain layout: the mirror's unpooling scatter and transposed convolutions, the graph mirror, the
forward passes of the gradient family, the optimisation family and invariance. Here the CPU is
made to take that route. Each test checks that it was taken (the memory layout PyTorch sees at
every convolution, recorded by `ConvolutionRecorder`) and that it gives the right values:
- backprop through the mirror and the graph mirror: torch.autograd.grad through the model;
- the other methods: the channels-last route, which their own test modules check against their
  independent references, to float64 rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision.models as tvm
from conftest import ConvolutionRecorder, seeded_randn
from torch import nn

import deconvnet
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.layout import plain_layout, prefers_channels_last

TOLERANCE = 1e-10  # float64: the two layouts sum in different orders, ~1e-15 relative per sum


def layouts_seen(run: Callable[[], object], plain: bool) -> tuple[object, set[bool]]:
    """run() under the plain or the CPU's default layout -> (its result, {channels last?} of the
    inputs of every convolution and transposed convolution it ran)."""
    with ConvolutionRecorder() as recorder:
        if plain:
            with plain_layout():
                result = run()
        else:
            result = run()
    return result, {nhwc for name, *_, nhwc in recorder.calls if name.startswith("conv")}


def test_plain_layout_is_scoped_and_restored_after_an_error():
    x = torch.zeros(1)
    assert prefers_channels_last(x)
    with pytest.raises(RuntimeError, match="boom"):
        with plain_layout():
            assert not prefers_channels_last(x)
            raise RuntimeError("boom")
    assert prefers_channels_last(x)
    assert not prefers_channels_last(torch.zeros(1, device="meta"))  # only the CPU's route


@pytest.fixture(scope="module")
def resnet64() -> nn.Module:
    """torchvision's ResNet-18 (random, float64): max pooling, residual adds, batch norm."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return tvm.resnet18().double().eval()


def autograd_of_kept_maps(model: nn.Module, x: torch.Tensor, stage: int) -> torch.Tensor:
    """d(sum of the stage's maps, each weighted by itself)/dx [B, 3, H, W]: what reconstruct's
    rule="backprop", keep="all" computes, through the model's own autograd."""
    xg = x.clone().requires_grad_(True)
    if hasattr(model, "features"):
        a = model.features[: stage_of(model, stage).index + 1](xg)
    else:
        m = model
        a = m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(xg)))))  # ResNet-18's stage 2 (layer1)
    return torch.autograd.grad(a, xg, a.detach())[0]


@pytest.mark.parametrize("name", ["vgg16", "alexnet", "resnet18"])
def test_backprop_through_the_plain_mirror_equals_autograd(name, models64, resnet64):
    model = resnet64 if name == "resnet18" else models64[name]
    stage = 2 if name == "resnet18" else 3
    x = seeded_randn((2, 3, 67, 71), 1)
    got, seen = layouts_seen(lambda: deconvnet.reconstruct(model, x, stage, "all", "backprop"), True)
    assert seen == {False}, "the plain route ran a channels-last convolution"
    want = autograd_of_kept_maps(model, x, stage)
    assert want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=TOLERANCE, atol=TOLERANCE * float(want.abs().max()))


PLAIN_VS_DEFAULT: dict[str, Callable[[nn.Module, torch.Tensor], object]] = {
    "deconvnet rule, strongest unit": lambda m, x: deconvnet.reconstruct(m, x, 5, "max", "deconvnet"),
    "guided rule, 3 maps": lambda m, x: deconvnet.reconstruct(m, x[:1], 4, [0, 3, 7], "guided"),
    "attribute, 2 classes": lambda m, x: deconvnet.attribute(m, x[:1], [3, 9], "guided"),
    "lrp": lambda m, x: deconvnet.lrp(m, x, 3),
    "scorecam": lambda m, x: deconvnet.scorecam(m, x, 3, stage=4, top=8),
    "invariance": lambda m, x: deconvnet.invariance(m, x, "rotate", [0, 90], (1, "fc7")).distance,
    "visualize_filters": lambda m, x: deconvnet.visualize_filters(m, 2, [0, 1], size=67, steps=2),
    "deletion": lambda m, x: deconvnet.deletion(m, x, x.sum(1), 3, steps=3).curve,
}


@pytest.mark.parametrize("method", list(PLAIN_VS_DEFAULT))
def test_the_plain_route_equals_the_channels_last_route(method, alexnet_float64):
    """Both routes run (the recorded layouts say so) and agree to float64 rounding."""
    x = seeded_randn((2, 3, 67, 67), 2)
    run = lambda: PLAIN_VS_DEFAULT[method](alexnet_float64, x)  # noqa: E731
    plain, seen_plain = layouts_seen(run, True)
    default, seen_default = layouts_seen(run, False)
    assert seen_plain == {False}
    assert True in seen_default  # the CPU's own route does run channels last
    plain, default = (v if isinstance(v, dict) else {0: v} for v in (plain, default))
    for key, want in default.items():
        scale = float(want.abs().max())
        assert scale > 0
        torch.testing.assert_close(plain[key], want, rtol=TOLERANCE, atol=TOLERANCE * scale)
