"""Grad-CAM++, LayerCAM and Score-CAM (`deconvnet.gradient`) against independent references.

References: the papers' formulas computed here from plain `torch.autograd.grad` of the logit
with respect to the stage's maps (float64: the chain models split at the stage, no hooks; a graph
model through a forward hook on a deep copy), Score-CAM's masked forwards one at a time, and
pytorch-grad-cam (1.5.x) before its [0, 1] normalisation: its `get_cam_image` /
`get_cam_weights` fed with the activations and gradients of its own `ActivationsAndGradients`,
always on a deep copy (it hooks the model). Small models keep the file fast: a five-stage VGG
with 8-16 channels (torchvision's `VGG` class, so the chain mirror's), its batch-norm twin (a
graph model) and ResNet-18 at 64 px.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from conftest import seeded_randn
from pytorch_grad_cam import GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.models.vgg import VGG, make_layers

import deconvnet
from deconvnet import Channel, Unit
from deconvnet.gradient.methods import CAM_METHODS, METHODS, OPTIONS

F64_RTOL = 1e-10  # ours vs the autograd formulas in float64 (observed ~1e-15)
TINY_CFG = [8, "M", 8, "M", 16, "M", 16, "M", 16, "M"]  # five stages: 8, 8, 16, 16, 16 channels
CLASSES = 10
GRADIENT_CAMS = ("gradcam_plus_plus", "layercam")


# ----------------------------------------------------------------------------- models and helpers


def tiny_vgg(seed: int, batch_norm: bool = False, scale: float = 1.0) -> nn.Module:
    """A torchvision VGG with few channels and a one-layer classifier (eval mode, float32): the
    chain mirror's model, or with batch norm a graph model. `scale` multiplies the classifier's
    weights (large gradients at the stages: pytorch-grad-cam's Grad-CAM++ adds 1e-6 to g^2 terms)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = VGG(make_layers(TINY_CFG, batch_norm=batch_norm), num_classes=CLASSES)
        model.classifier = nn.Sequential(nn.Linear(16 * 7 * 7, CLASSES))
        model.classifier[0].weight.data *= scale
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # batch norm that is not the identity
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def vgg64():
    model = tiny_vgg(1).double()
    # one dead channel at stage 2 (features.3 feeds relu features.4 -> pool features.5): its map is
    # constant, so Score-CAM skips it
    model.features[3].bias.data[0] = -1e3
    return model


@pytest.fixture(scope="module")
def resnet64():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = tvm.resnet18(num_classes=CLASSES).eval().double()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def assert_rel_close(got, want, rtol=F64_RTOL):
    """Elementwise close relative to the reference's largest magnitude, which must not be 0."""
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = float(want.abs().max())
    assert scale > 0, "the reference must not be trivially zero"
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale)


def upsample(cam, size):
    """[M, h, w] -> [M, H, W], bilinear, align_corners=False."""
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def chain_maps_and_grads(model, x, classes, index):
    """A [1, C, h, w] at model.features[index] of one image x [1, 3, H, W] (features split there,
    no hooks) and d logit_c / d A for each class: [K, C, h, w]."""
    acts = model.features[: index + 1](x).detach().requires_grad_(True)
    rest = model.features[index + 1 :](acts)
    logits = model.classifier(torch.flatten(model.avgpool(rest), 1))
    grads = [torch.autograd.grad(logits[0, c], acts, retain_graph=True)[0] for c in classes]
    return acts.detach(), torch.cat(grads)


def graph_maps_and_grads(model, x, classes, path):
    """The same on any model: A = the output of module `path`, caught by a forward hook on a deep
    copy (the model under test never sees a hook)."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    kept = []
    twin.get_submodule(path).register_forward_hook(lambda m, i, o: kept.append(o))
    logits = twin(x)
    grads = [torch.autograd.grad(logits[0, c], kept[0], retain_graph=True)[0] for c in classes]
    return kept[0].detach(), torch.cat(grads)


def plus_plus_formula(acts, grads):
    """Eq. 19 in its divided form alpha = 1 / (2 + sum_ab A_ab g) where g != 0 (0 where g == 0):
    the same value as g^2 / (2 g^2 + sum A g^3), computed another way. [K, h, w] before upsampling."""
    total = acts.sum(dim=(2, 3), keepdim=True)
    alpha = torch.where(grads != 0, 1 / (2 + total * grads), torch.zeros_like(grads))
    weights = (alpha * grads.clamp(min=0)).sum(dim=(2, 3))
    return torch.einsum("kc,kchw->khw", weights, acts.expand_as(grads)).clamp(min=0)


def layercam_formula(acts, grads):
    return (grads.clamp(min=0) * acts).sum(1).clamp(min=0)


FORMULAS = {"gradcam_plus_plus": plus_plus_formula, "layercam": layercam_formula}


def scorecam_formula(model, x, acts, classes, channels=None, weighting="softmax"):
    """The authors' loop, one masked forward per channel: x [1, 3, H, W], acts [1, C, h, w] ->
    [K, h, w] before upsampling (the ReLU at the stage's resolution). channels: those scored."""
    size = x.shape[-2:]
    scores, used = [], []
    for k in range(acts.shape[1]) if channels is None else channels:
        up = F.interpolate(acts[:, k : k + 1], size=size, mode="bilinear", align_corners=False)
        if up.max() == up.min():
            continue
        mask = (up - up.min()) / (up.max() - up.min())
        with torch.no_grad():
            logits = model(x * mask)[0]
        scores.append(torch.softmax(logits, 0)[classes] if weighting == "softmax" else logits[classes])
        used.append(k)
    scores = torch.stack(scores, 1)  # [K, n]
    if weighting == "grad_cam":
        scores = torch.softmax(scores, 1)
    weights = torch.zeros(len(classes), acts.shape[1], dtype=acts.dtype)
    weights[:, used] = scores
    return torch.einsum("kc,chw->khw", weights, acts[0]).clamp(min=0)


def chain_reference(method, model, x, classes, stage, **options):
    """[K, H, W]: `method`'s map of image x [1, 3, H, W] for each class, from the formulas."""
    acts, grads = chain_maps_and_grads(model, x, classes, deconvnet.stage(model, stage).index)
    if method == "scorecam":
        return upsample(scorecam_formula(model, x, acts, classes, **options), x.shape[-2:])
    return upsample(FORMULAS[method](acts, grads), x.shape[-2:])


# ----------------------------------------------------------------------------- 1. chain model, float64


@pytest.mark.parametrize("stage", [4, 2])
@pytest.mark.parametrize("method", GRADIENT_CAMS)
def test_gradient_cams_equal_the_formulas_on_a_chain_model(vgg64, method, stage):
    """Two images with a class each, then K = 3 classes of one image from one pass."""
    x = seeded_randn((2, 3, 64, 56), seed=10 + stage)
    function = getattr(deconvnet, method)
    got = function(vgg64, x, torch.tensor([3, 7]), stage)
    want = torch.cat([chain_reference(method, vgg64, x[b : b + 1], [c], stage) for b, c in ((0, 3), (1, 7))])
    assert (want.flatten(1).amax(1) > 0).all(), "each image's map must be non-zero"
    assert_rel_close(got, want)
    assert_rel_close(
        function(vgg64, x[1:], [0, 5, 9], stage), chain_reference(method, vgg64, x[1:], [0, 5, 9], stage)
    )


def test_gradcam_plus_plus_is_not_gradcam(vgg64):
    """The weighting matters: Grad-CAM++ and LayerCAM differ from Grad-CAM (and from each other)."""
    x = seeded_randn((1, 3, 64, 56), seed=3)
    maps = [f(vgg64, x, 4, 3) for f in (deconvnet.gradcam, deconvnet.gradcam_plus_plus, deconvnet.layercam)]
    for i in range(3):
        for j in range(i):
            assert (maps[i] - maps[j]).abs().max() > 1e-3 * maps[j].abs().max()


def test_scorecam_equals_the_masked_forward_loop(vgg64):
    """Every channel at stage 2 (8 channels, one of them constant: skipped) and at stage 3, the
    predicted class of two images, then K = 2 classes of one image."""
    x = seeded_randn((2, 3, 64, 48), seed=20)
    predicted = vgg64(x).argmax(1).tolist()
    for stage in (2, 3):
        got = deconvnet.scorecam(vgg64, x, None, stage, batch_size=3)
        want = torch.cat(
            [chain_reference("scorecam", vgg64, x[b : b + 1], [predicted[b]], stage) for b in (0, 1)]
        )
        assert_rel_close(got, want)
    acts, _ = chain_maps_and_grads(vgg64, x[:1], [0], deconvnet.stage(vgg64, 2).index)
    assert (acts[0].flatten(1).amax(1) == acts[0].flatten(1).amin(1)).sum() >= 1, "a constant map"
    assert_rel_close(
        deconvnet.scorecam(vgg64, x[1:], [2, 8], 3), chain_reference("scorecam", vgg64, x[1:], [2, 8], 3)
    )


def test_scorecam_top_scores_only_the_channels_of_largest_variance(vgg64):
    x = seeded_randn((1, 3, 64, 64), seed=21)
    stage, top = 3, 5
    acts, _ = chain_maps_and_grads(vgg64, x, [0], deconvnet.stage(vgg64, stage).index)
    variance = acts[0].flatten(1).var(1, correction=0)
    channels = sorted(variance.argsort(descending=True)[:top].tolist())
    assert variance.sort(descending=True).values[top - 1] > variance.sort(descending=True).values[top]
    for weighting in ("softmax", "grad_cam"):
        got = deconvnet.scorecam(vgg64, x, [1, 6], stage, top=top, weighting=weighting)
        want = chain_reference("scorecam", vgg64, x, [1, 6], stage, channels=channels, weighting=weighting)
        assert_rel_close(got, want)
        everything = deconvnet.scorecam(vgg64, x, [1, 6], stage, weighting=weighting)
        assert (got - everything).abs().max() > 1e-6 * everything.abs().max()


def test_scorecam_sends_the_masks_batch_size_at_a_time(vgg64):
    """ceil(scored channels / batch_size) masked forwards per image, whatever the number of targets
    (counted on a deep copy, the only model here with a hook)."""
    twin = copy.deepcopy(vgg64)
    sizes = []
    twin.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    x = seeded_randn((1, 3, 64, 64), seed=22)
    deconvnet.scorecam(twin, x, [1, 2, 3], 2, batch_size=3)
    assert sizes == [3, 3, 1]  # 8 channels, one of them constant: 7 masked images


def test_scorecam_scores_equal_masks_once(vgg64):
    """A channel that is twice another (its filter and bias doubled) has the same normalised map,
    so the same mask: one masked forward serves both, and both get the weight of the loop."""
    twin = copy.deepcopy(vgg64)
    conv = twin.features[3]
    conv.weight.data[2], conv.bias.data[2] = 2 * conv.weight.data[1], 2 * conv.bias.data[1]
    x = seeded_randn((1, 3, 64, 64), seed=23)
    acts, _ = chain_maps_and_grads(twin, x, [0], deconvnet.stage(twin, 2).index)
    assert torch.equal(acts[0, 2], 2 * acts[0, 1]) and acts[0, 1].amax() > acts[0, 1].amin()
    sizes = []
    handle = twin.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    got = deconvnet.scorecam(twin, x, [1, 2], 2, batch_size=3)
    handle.remove()
    assert sizes == [3, 3]  # 8 channels, one constant, two alike: 6 masked images
    assert_rel_close(got, chain_reference("scorecam", twin, x, [1, 2], 2))


# ----------------------------------------------------------------------------- 2. pytorch-grad-cam, float32


def pgc_before_normalisation(cam_class, model, x, classes, layer):
    """pytorch-grad-cam's map before `scale_cam_image` (its min-max and cv2 resize): the K copies
    of image x [1, 3, H, W] with a class each through its ActivationsAndGradients, then its
    `get_cam_image` (weights x activations summed over channels), its ReLU, and our upsampling."""
    twin = copy.deepcopy(model)
    cam = cam_class(model=twin, target_layers=[layer(twin)])
    targets = [ClassifierOutputTarget(c) for c in classes]
    batch = x.expand(len(classes), -1, -1, -1).contiguous()
    outputs = cam.activations_and_grads(batch)
    sum(t(o) for t, o in zip(targets, outputs)).backward()
    acts = cam.activations_and_grads.activations[0].numpy()
    grads = cam.activations_and_grads.gradients[0].numpy()
    image = cam.get_cam_image(batch, layer(twin), targets, acts, grads, eigen_smooth=False)
    cam.activations_and_grads.release()
    return upsample(torch.from_numpy(np.maximum(image, 0)), x.shape[-2:])


@pytest.mark.parametrize(
    "method, cam_class", [("gradcam_plus_plus", GradCAMPlusPlus), ("layercam", LayerCAM)]
)
def test_gradient_cams_equal_pytorch_grad_cam_before_normalisation(method, cam_class):
    # float32 on both sides (ours channels last, theirs contiguous: ~1e-6 rounding); rtol 1e-4 of
    # the map's max. Classifier weights x 300: gradients ~1 at the stages, so pytorch-grad-cam's
    # 1e-6 in Grad-CAM++'s denominator moves alpha by < 1e-5.
    model = tiny_vgg(2, scale=300.0)
    x = seeded_randn((1, 3, 64, 64), seed=30, dtype=torch.float32)
    for stage in (3, 5):
        index = deconvnet.stage(model, stage).index
        want = pgc_before_normalisation(cam_class, model, x, [1, 4, 8], lambda m: m.features[index])
        assert_rel_close(getattr(deconvnet, method)(model, x, [1, 4, 8], stage), want, rtol=1e-4)


def test_scorecam_grad_cam_weighting_equals_pytorch_grad_cam_weights():
    """At a module path with the input's resolution (features.2 of a batch-norm VGG, 8 channels,
    none constant) upsampling is the identity for both align_corners, so pytorch-grad-cam's
    ScoreCAM.get_cam_weights (logits, softmax over channels) gives our grad_cam weighting's."""
    # float32 both sides; rtol 1e-4 of the map's max (their min-max adds 1e-8, scores via float)
    model = tiny_vgg(3, batch_norm=True)
    x = seeded_randn((1, 3, 32, 32), seed=31, dtype=torch.float32)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        acts = twin.features[:3](x)
    assert (acts[0].flatten(1).amax(1) > acts[0].flatten(1).amin(1)).all(), "no constant channel"
    for c in (2, 5):
        cam = ScoreCAM(model=twin, target_layers=[twin.features[2]])
        cam.batch_size = 3
        weights = cam.get_cam_weights(x, twin.features[2], [ClassifierOutputTarget(c)], acts.numpy(), None)
        cam.activations_and_grads.release()
        want = torch.einsum("c,chw->hw", torch.from_numpy(weights[0]), acts[0]).clamp(min=0)[None]
        got = deconvnet.scorecam(model, x, c, "features.2", batch_size=3, weighting="grad_cam")
        assert_rel_close(got, want, rtol=1e-4)


# ----------------------------------------------------------------------------- 3. a graph model


@pytest.mark.parametrize("where", ["layer2", "layer3.0.conv2"])
def test_all_three_equal_the_formulas_on_resnet(resnet64, where):
    """ResNet-18 (float64, batch norm not the identity) at a stage given by name and at a module
    path that is no stage (a convolution under a batch norm); Score-CAM on its 6 channels of
    largest variance."""
    x = seeded_randn((1, 3, 64, 56), seed=40)
    classes = [1, 6]
    acts, grads = graph_maps_and_grads(resnet64, x, classes, where)
    for method in GRADIENT_CAMS:
        want = upsample(FORMULAS[method](acts, grads), x.shape[-2:])
        assert_rel_close(getattr(deconvnet, method)(resnet64, x, classes, where), want)
    channels = sorted(acts[0].flatten(1).var(1, correction=0).argsort(descending=True)[:6].tolist())
    want = upsample(scorecam_formula(resnet64, x, acts, classes, channels), x.shape[-2:])
    assert_rel_close(deconvnet.scorecam(resnet64, x, classes, where, top=6), want)


def test_gradient_cams_take_units_and_channels_like_gradcam(vgg64):
    """A unit / channel target at or above the CAM stage: the same formulas, the unit's
    activation (the channel's spatial sum) as the score."""
    x = seeded_randn((1, 3, 64, 64), seed=41)
    index = deconvnet.stage(vgg64, 2).index
    acts = vgg64.features[: index + 1](x).detach().requires_grad_(True)
    above = vgg64.features[index + 1 : deconvnet.stage(vgg64, 4).index + 1](acts)
    for target, score in ((Unit(4, 3, 1, 2), above[0, 3, 1, 2]), (Channel(4, 5), above[0, 5].sum())):
        (grads,) = torch.autograd.grad(score, acts, retain_graph=True)
        for method in GRADIENT_CAMS:
            want = upsample(FORMULAS[method](acts.detach(), grads), x.shape[-2:])
            assert_rel_close(getattr(deconvnet, method)(vgg64, x, target, 2), want)


# ----------------------------------------------------------------------------- 4. contract


def test_registry_options_and_cam_methods():
    for name in ("gradcam_plus_plus", "layercam", "scorecam"):
        assert METHODS[name] is getattr(deconvnet, name) and name in deconvnet.__all__
    assert OPTIONS["gradcam_plus_plus"] == OPTIONS["layercam"] == ("stage", "chunk_size")
    assert OPTIONS["scorecam"] == ("stage", "batch_size", "top", "weighting")
    assert set(CAM_METHODS) == {name for name, options in OPTIONS.items() if "stage" in options}


def test_bad_input_names_the_argument(vgg64):
    x = seeded_randn((1, 3, 64, 64), seed=50)
    cases = [
        (dict(target=Unit(3, 1)), r"target: Score-CAM explains class scores; expected None"),
        (dict(target=[Channel(3, 1)]), r"target: Score-CAM explains class scores"),
        (dict(batch_size=0), r"batch_size: expected an int >= 1, got 0"),
        (dict(top=0), r"top: expected None \(every channel\) or an int >= 1, got 0"),
        (dict(top=2.0), r"top: expected None \(every channel\) or an int >= 1, got 2\.0"),
        (dict(top=17), r"top: expected None \(every channel\) or an int in 1\.\.16"),
        (dict(weighting="x"), r"weighting: expected one of 'softmax', 'grad_cam', got 'x'"),
        (dict(stage=7), r"stage: .*an int in 1\.\.5, got 7"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            deconvnet.scorecam(vgg64, x, **({"stage": 3} | kwargs))
    for method in GRADIENT_CAMS:
        with pytest.raises(ValueError, match=r"stage: .*an int in 1\.\.5, got 7"):
            getattr(deconvnet, method)(vgg64, x, 1, stage=7)
        with pytest.raises(ValueError, match=r"chunk_size: expected an int >= 1"):
            getattr(deconvnet, method)(vgg64, x, 1, chunk_size=0)


def snapshot(model):
    return {
        "tensors": {k: (v.detach().clone(), v._version) for k, v in model.state_dict(keep_vars=True).items()},
        "training": [(n, m.training) for n, m in model.named_modules()],
        "hooks": [
            bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
            for m in model.modules()
        ],
        "grads": [p.grad is None for p in model.parameters()],
    }


def test_the_callers_model_is_left_untouched(resnet64):
    """A model in train mode (batch norm would update its statistics, a forward in train mode
    would use them): parameters, buffers and their versions, training flags, no hooks left;
    the maps are of the eval-mode function, as for an eval copy."""
    model = copy.deepcopy(resnet64).train()
    model.layer1.eval()  # mixed flags stay mixed
    before = snapshot(model)
    assert not any(before["hooks"])
    x = seeded_randn((1, 3, 48, 48), seed=60)
    grad_mode = torch.is_grad_enabled()
    for method, options in (("gradcam_plus_plus", {}), ("layercam", {}), ("scorecam", {"top": 3})):
        got = deconvnet.explain(model, x, method, [2, 4], stage=3, **options)
        after = snapshot(model)
        for name, (value, version) in before["tensors"].items():
            now, now_version = after["tensors"][name]
            assert now_version == version and torch.equal(now, value), name
        assert after["training"] == before["training"] and not any(after["hooks"])
        assert after["grads"] == before["grads"]
        assert torch.equal(got, deconvnet.explain(resnet64, x, method, [2, 4], stage=3, **options))
    assert torch.is_grad_enabled() == grad_mode


def test_the_maps_are_on_the_images_device_and_not_normalised(vgg64):
    x = seeded_randn((1, 3, 64, 64), seed=61)
    for method in ("gradcam_plus_plus", "layercam", "scorecam"):
        out = deconvnet.explain(vgg64, x, method, 3, stage=3)
        assert out.shape == (1, 64, 64) and out.device == x.device and out.dtype == x.dtype
        assert float(out.min()) >= 0 and not math.isclose(float(out.max()), 1.0)
