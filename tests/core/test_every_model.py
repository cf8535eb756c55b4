"""Every supported model's mirror under `backprop` equals autograd (float64, random weights, batch
norm that is not the identity): the models that tests/core/test_graph_mirror.py does not already
take one by one (it covers resnet18/50, mobilenet_v2, densenet121, googlenet, vgg11_bn and
efficientnet_lite0; the chain models have tests/core/test_autograd_oracle.py)."""

from __future__ import annotations

import pytest
import torch

import deconvnet

OTHERS = ["resnet34", "resnet101", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


def reference(model, x: torch.Tensor, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(stage output, d (its strongest unit x its value) / d x) from a plain autograd forward."""
    kept = []
    handle = model.get_submodule(path).register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        model(x)
    finally:
        handle.remove()
    out = kept[0]
    flat = out[0].flatten()
    top = int(flat.argmax())
    (grad,) = torch.autograd.grad(flat[top] * flat[top].detach(), x)
    return out, grad


@pytest.mark.parametrize("name", OTHERS)
def test_backprop_equals_autograd_at_stages_3_and_5(name):
    model = deconvnet.load_model(name, weights="random", seed=0).double()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.randn(1, 3, 67, 61, dtype=torch.float64)
    for stage in (3, 5):
        path = deconvnet.stages(model)[stage - 1].path
        _, want = reference(model, x.clone().requires_grad_(), path)
        got = deconvnet.reconstruct(model, x, stage, keep="max", rule="backprop")
        assert torch.allclose(got, want, rtol=0, atol=1e-10 * float(want.abs().max())), (name, stage)
