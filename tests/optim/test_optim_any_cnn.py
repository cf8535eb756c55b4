"""The optimisation family on graph models (ResNet-18, MobileNetV2, EfficientNet-Lite0, random
weights, small sizes): the probe's activations against each module's own forward output (read by a
forward hook, not by the probe's graph), points by stage number, name, module path, "pre<n>",
"logits" and lucent's "<path>:<channel>"; one channel alone equals the same channel in a batch; a
unit's crop gives the full image's values and crop=True the full run's field (float64, TF-same
padding included); Deep Dream's defaults raise the energy on three families."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

import deconvnet
from deconvnet.optim import map_point, probe, unit_crop
from deconvnet.optim import objectives as obj

FAMILIES = ("resnet18", "mobilenet_v2", "efficientnet_lite0")


def _graph_model(name: str) -> nn.Module:
    """A random-weight model in float64 with biases and batch-norm statistics that matter."""
    torch.manual_seed(0)
    model = deconvnet.load_model(name, weights="random", seed=0).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def zoo():
    made: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in made:
            made[name] = _graph_model(name)
        return made[name]

    return get


def hooked(model: nn.Module, paths: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each module's output (its last call) in the model's own forward, by forward hooks."""
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[p].register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, o.detach().clone()))
        for p in paths
    ]
    try:
        with torch.no_grad():
            seen["logits"] = model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


POINTS = {
    "resnet18": ["layer3.1", "layer1.0.conv2", "layer4", "fc"],
    "mobilenet_v2": ["features.4", "features.6.conv.1", "features.18", "classifier.1"],
    "efficientnet_lite0": ["blocks.4", "blocks.2.0.conv_dw", "conv_stem", "global_pool"],
}


@pytest.mark.parametrize("name", FAMILIES)
def test_probe_reads_each_module_output(zoo, name):
    model = _graph_model(name)  # its own copy: hooks must not touch the shared one
    x = torch.randn(2, 3, 72, 72, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    paths = POINTS[name]
    stage_paths = {s.number: s.path for s in deconvnet.stages(model)}
    ref = hooked(model, paths + list(stage_paths.values()), x)
    got = probe(model, x, paths + [2, 5, "logits", deconvnet.stages(model)[2].name])
    for p in paths:
        torch.testing.assert_close(got[p].flatten(1), ref[p].flatten(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[2], ref[stage_paths[2]], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[5], ref[stage_paths[5]], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["logits"], ref["logits"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[deconvnet.stages(model)[2].name], ref[stage_paths[3]], rtol=0, atol=0)


def test_pre_activation_is_the_value_before_the_last_relu():
    """ResNet-18 stage 3 ends in layer2.1's ReLU after the residual add: "pre3" is the sum
    (its in-place ReLU module's input on its last call, read before the call); Lite0's stage 5 is bn2 with ReLU6: "pre5" the
    norm alone (bn2's input through F.batch_norm with its running statistics)."""
    model = _graph_model("resnet18")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inputs: list[torch.Tensor] = []
    handle = model.layer2[1].relu.register_forward_pre_hook(lambda m, i: inputs.append(i[0].clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    got = probe(model, x, ["pre3", 3])
    torch.testing.assert_close(got["pre3"], inputs[-1], rtol=0, atol=1e-13)
    torch.testing.assert_close(got[3], inputs[-1].clamp_min(0), rtol=0, atol=1e-13)
    lite = _graph_model("efficientnet_lite0")
    head_in = hooked(lite, ["conv_head"], x)["conv_head"]
    bn = lite.bn2
    want = F.batch_norm(head_in, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    torch.testing.assert_close(probe(lite, x, ["pre5"])["pre5"], want, rtol=0, atol=1e-12)


def test_map_points_and_refusals(zoo):
    model = zoo("resnet18")
    assert map_point(model, 3)[0].key == 3 and map_point(model, "layer2")[0].key == 3
    assert map_point(model, "layer3.1")[0].key == 4  # the last block of layer3 is stage 4's map
    point, channel = map_point(model, "layer3.0:42")
    assert (point.key, point.channels, point.label, channel) == ("layer3.0", 256, "layer3.0", 42)
    with pytest.raises(ValueError, match=r"stage: 'fc' is not a feature map"):
        map_point(model, "fc")
    with pytest.raises(ValueError, match=r"channel 999 is outside layer3.0's channels 0..255"):
        map_point(model, "layer3.0:999")
    with pytest.raises(ValueError, match=r"stage: 'nope' is neither a stage nor a module path"):
        deconvnet.visualize_filters(model, "nope", [0])
    with pytest.raises(ValueError, match=r"channels: 300 is outside layer3.0's channels 0..255"):
        deconvnet.visualize_filters(model, "layer3.0", [0, 300])


@pytest.mark.parametrize("name, point", [("resnet18", "layer2.1"), ("efficientnet_lite0", "blocks.2")])
def test_short_form_and_batch_alone(zoo, name, point):
    model = zoo(name)
    together = deconvnet.visualize_filters(model, point, [3, 7], size=48, steps=3)
    alone = deconvnet.visualize_filters(model, f"{point}:7", size=48, steps=3)
    torch.testing.assert_close(alone, together[1:], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "name, point, size", [("resnet18", "layer2.1", 72), ("efficientnet_lite0", "blocks.1", 56)]
)
def test_unit_crop_gives_the_full_image_values(zoo, name, point, size):
    """Every unit of the map read on its crop equals the full image's unit (TF-same padding of
    Lite0 included: the crop keeps the image's remainder modulo the stride)."""
    model = zoo(name)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size), dtype=torch.float64)
    key = map_point(model, point)[0].key
    full = probe(model, x, [key])[key][0]
    for y in range(full.shape[1]):
        for xx in range(full.shape[2]):
            where = unit_crop(model, point, size, y, xx)
            t, l, b, r = where.crop
            crop_map = probe(model, x[:, :, t:b, l:r], [key])[key][0]
            py, px = where.position
            torch.testing.assert_close(crop_map[:, py, px], full[:, y, xx], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, point", [("resnet18", "layer1.1"), ("efficientnet_lite0", "blocks.2")])
def test_units_crop_is_the_full_run(zoo, name, point):
    model = zoo(name)
    crop = deconvnet.visualize_units(model, point, [1, 2], size=80, steps=3, crop=True, details=True)
    full = deconvnet.visualize_units(model, point, [1, 2], size=80, steps=3, crop=False, details=True)
    assert crop.settings["crop_box"] != [0, 0, 80, 80]
    torch.testing.assert_close(crop.images, full.images, rtol=0, atol=1e-12)


def _energy(model: nn.Module, x: torch.Tensor, stage: int) -> float:
    with torch.no_grad():
        return float(obj.energy(stage)(probe(model, x, [stage]))[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "resnet18", "mobilenet_v2"])
def test_deep_dream_defaults_raise_the_energy(name):
    """With its defaults (4 octaves of 1.4, 20 steps each) Deep Dream at least doubles stage 4's
    energy on the cat photo at 112 px on three random-weight families (measured: AlexNet,
    ResNet-18 and MobileNetV2 at 160 px 6.0x, 2.7x (10 steps) and 3.4x)."""
    model = deconvnet.load_model(name, weights="random", seed=0)
    x = F.interpolate(deconvnet.load_image("cat", model), size=(112, 112), mode="bilinear", antialias=True)
    out = deconvnet.deep_dream(model, x, 4)
    assert _energy(model, out, 4) > 2 * _energy(model, x, 4)


def test_invert_a_module_path_reports_its_feature_error(zoo):
    """The report's feature error is ||phi(x) - phi0||^2 / ||phi0||^2 at the module (read by a
    hook); without priors 40 steps bring it well below the noise start's."""
    model = _graph_model("resnet18")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    result = deconvnet.invert(model, x, "layer2.0", steps=40, tv_weight=0, alpha_weight=0, details=True)
    phi0, phi = (
        hooked(model, ["layer2.0"], x)["layer2.0"],
        hooked(model, ["layer2.0"], result.images)["layer2.0"],
    )
    want = float((phi - phi0).pow(2).sum() / phi0.pow(2).sum())
    assert result.report["feature_error"] == pytest.approx(want, rel=1e-9)
    start = deconvnet.invert(model, x, "layer2.0", steps=1, lr=1e-12, details=True)
    assert result.report["feature_error"] < 0.2 * start.report["feature_error"]
    assert result.settings["stage"] == "layer2.0"
    assert deconvnet.invert(model, x, "layer2.0", steps=1, details=True).settings["tv_weight"] == 0.05


def test_torchvision_model_built_directly():
    """A model built with torchvision's constructor (not load_model) works the same."""
    torch.manual_seed(0)
    model = tvm.resnet18().eval()
    images = deconvnet.visualize_filters(model, "layer1.0", [0], size=40, steps=2)
    assert images.shape == (1, 3, 40, 40) and torch.isfinite(images).all()
