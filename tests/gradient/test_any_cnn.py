"""The gradient family on models other than VGG / AlexNet (the graph mirror), against autograd and
Captum: classes, units and channels from one forward pass, Grad-CAM at a stage's module."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from captum.attr import LayerGradCam

import deconvnet
from deconvnet.core.targets import Channel, Unit

BUILDERS = {
    "resnet18": tvm.resnet18,
    "mobilenet_v2": tvm.mobilenet_v2,
    "densenet121": tvm.densenet121,
    "googlenet": lambda: tvm.googlenet(aux_logits=False, init_weights=True),
    "efficientnet_lite0": lambda: timm.create_model("tf_efficientnet_lite0"),
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def net(request):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BUILDERS[request.param]().eval().double()
        for m in model.modules():  # batch norm that is not the identity
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def image(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, 47, 41, dtype=torch.float64, generator=generator)


def stage_output(model, x, stage: int) -> torch.Tensor:
    """The stage's output from a plain autograd forward (a hook in the test only, removed after)."""
    kept = []
    path = deconvnet.stages(model)[stage - 1].path
    handle = model.get_submodule(path).register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        model(x)
    finally:
        handle.remove()
    return kept[0]


def test_classes_from_one_pass_equal_autograd(net):
    x = image().requires_grad_()
    got = deconvnet.attribute(net, x.detach(), [1, 500, 999], "backprop")
    logits = net(x)
    for row, c in enumerate((1, 500, 999)):
        (want,) = torch.autograd.grad(logits[0, c], x, retain_graph=True)
        assert torch.allclose(got[row : row + 1], want, rtol=0, atol=1e-10 * float(want.abs().max()))


def test_units_and_channels_equal_autograd(net):
    x = image(1).requires_grad_()
    out = stage_output(net, x, 3)
    c, y, xx = 2, out.shape[2] // 2, out.shape[3] - 1
    got_unit = deconvnet.attribute(net, x.detach(), Unit(3, c, y, xx), "backprop")
    got_channel = deconvnet.attribute(net, x.detach(), Channel(3, c), "backprop")
    (unit,) = torch.autograd.grad(out[0, c, y, xx], x, retain_graph=True)
    (channel,) = torch.autograd.grad(out[0, c].sum(), x)
    assert torch.allclose(got_unit, unit, rtol=0, atol=1e-10 * max(float(unit.abs().max()), 1e-30))
    assert torch.allclose(got_channel, channel, rtol=0, atol=1e-10 * float(channel.abs().max()))


def test_gradcam_equals_captum_layer_gradcam_on_the_stage_module(net):
    x = image(2)
    for stage in (4, 5):
        module = net.get_submodule(deconvnet.stages(net)[stage - 1].path)
        captum = LayerGradCam(net, module).attribute(x, target=7, relu_attributions=True)
        want = F.interpolate(captum.detach(), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        got = deconvnet.gradcam(net, x, 7, stage)
        assert torch.allclose(got, want, rtol=0, atol=1e-10 * max(float(want.abs().max()), 1e-30))


def test_gradcam_takes_the_stage_by_name(net):
    x = image(3)
    name = deconvnet.stages(net)[3].name
    assert torch.equal(deconvnet.gradcam(net, x, 7, name), deconvnet.gradcam(net, x, 7, 4))


def test_gradcam_at_a_convolution_under_a_batch_norm_equals_captum():
    """A module path whose output a batch norm reads (the norm's scale is folded into the mirror's
    convolution): the gradient there must still carry the norm's scale."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = tvm.resnet18().eval().double()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.uniform_(0.5, 2.0)
    x = image(4)
    captum = LayerGradCam(model, model.layer3[1].conv2).attribute(x, target=5, relu_attributions=True)
    want = F.interpolate(captum.detach(), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    got = deconvnet.gradcam(model, x, 5, "layer3.1.conv2")
    assert torch.allclose(got, want, rtol=0, atol=1e-10 * float(want.abs().max()))


def test_unit_and_channel_targets_take_the_stage_by_name_or_number(net):
    x = image(5)
    stage = deconvnet.stages(net)[2]
    for named, numbered in (
        (Unit(stage.name, 1, 2, 2), Unit(3, 1, 2, 2)),
        ([Channel(stage.path, 0), Channel(stage.path, 3)], [Channel(3, 0), Channel(3, 3)]),
    ):
        assert torch.equal(deconvnet.attribute(net, x, named), deconvnet.attribute(net, x, numbered))
