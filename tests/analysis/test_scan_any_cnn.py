"""`scan_topk` on models other than VGG / AlexNet (the traced graph run up to the deepest stage),
against brute force: every image's per-channel maximum from the model's own forward."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision.models as tvm

import deconvnet
from deconvnet.analysis.scan import scan_topk

BUILDERS = {
    "resnet18": tvm.resnet18,
    "densenet121": tvm.densenet121,
    "googlenet": lambda: tvm.googlenet(aux_logits=False, init_weights=True),
    "efficientnet_lite0": lambda: timm.create_model("tf_efficientnet_lite0"),
    "vgg11_bn": tvm.vgg11_bn,
}


def brute_force(model, batches, path: str) -> torch.Tensor:
    """[N, C] per-image channel maxima of the module at `path`, from the model's own forward."""
    kept = []
    handle = model.get_submodule(path).register_forward_hook(lambda m, i, o: kept.append(o.detach().clone()))
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        handle.remove()
    return torch.cat(kept).flatten(2).amax(2)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_scan_equals_brute_force_at_every_stage(name):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BUILDERS[name]().eval()
        batches = [torch.randn(3, 3, 64, 56) for _ in range(3)]
    result = scan_topk(model, batches, k=4, progress=False)
    for stage in deconvnet.stages(model):
        maxima = brute_force(model, batches, stage.path)
        values = maxima.topk(4, dim=0).values
        got = result[stage.number]
        assert torch.allclose(got.values, values.T, rtol=1e-5, atol=1e-6), stage.name
        # each kept image really has that maximum (ties, e.g. at ReLU6's 6, may pick either image)
        channels = torch.arange(got.values.shape[0])[:, None].expand_as(got.image)
        assert torch.allclose(maxima[got.image, channels], got.values, rtol=1e-5, atol=1e-6), stage.name


def test_scan_leaves_a_training_model_as_it_was():
    model = tvm.resnet18().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scan_topk(model, [torch.randn(2, 3, 64, 64)], k=2, progress=False)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
