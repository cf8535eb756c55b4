"""The gradient family (`deconvnet.gradient`) against independent references.

References: plain `torch.autograd.grad` on the model in eval mode, Captum (GuidedBackprop,
Deconvolution, IntegratedGradients, LayerGradCam, InputXGradient; always on a deep copy of the
fixture model, with non-inplace ReLUs, so the session fixtures never see a hook), re-implemented
noise for SmoothGrad, and hand-computed pooling matrices. Bad input: tests/core/test_targets.py.
"""

from __future__ import annotations

import copy
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
)
from conftest import seeded_randn
from torch import nn
from torchvision.models import AlexNet

import deconvnet
from deconvnet import Channel, Unit
from deconvnet.core.graph_ops import avg_pool_adjoint, pooling_matrix
from deconvnet.gradient.methods import OPTIONS, options_for

F64_RTOL = 1e-10  # mirror vs autograd in float64 (observed ~1e-15)


# ----------------------------------------------------------------------------- helpers


def assert_rel_close(got, want, rtol=F64_RTOL):
    """Elementwise close, relative to the reference's largest magnitude; the reference is not 0."""
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    scale = want.abs().max()
    assert scale > 0, "the reference must not be trivially zero"
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * float(scale))


def autograd_classes(model, x, classes):
    """d logits[b, classes[b]] / d x for every image b: [B, 3, H, W] (images are independent)."""
    xg = x.detach().clone().requires_grad_(True)
    logits = model(xg)
    score = logits[torch.arange(x.shape[0]), torch.as_tensor(classes)].sum()
    return torch.autograd.grad(score, xg)[0]


def autograd_class_list(model, x1, classes):
    """K gradients of one image: [K, 3, H, W]."""
    xg = x1.detach().clone().requires_grad_(True)
    logits = model(xg)
    return torch.cat([torch.autograd.grad(logits[0, c], xg, retain_graph=True)[0] for c in classes])


def predicted(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


_CAPTUM_COPIES: dict[int, nn.Module] = {}


def captum_copy(model):
    """A deep copy of `model` for Captum (which hooks every ReLU), with inplace ReLUs turned off
    (the same function; keeps Captum's ReLU backward hooks away from in-place ops). One per model."""
    key = id(model)
    if key not in _CAPTUM_COPIES:
        twin = copy.deepcopy(model).eval()
        for m in twin.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        _CAPTUM_COPIES[key] = twin
    return _CAPTUM_COPIES[key]


def captum(method_class, model, x, target, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return method_class(captum_copy(model)).attribute(x.clone(), target=target, **kwargs).detach()


def stage_index(model, s):
    return deconvnet.stage(model, s).index


# ----------------------------------------------------------------------------- 1. backprop = autograd


# (model, (H, W), batch, target kind): features output vs avgpool size
#   VGG 32 -> pool5 1x1 (avgpool 7x7 replicates); VGG 100 -> 3x3; VGG 48x80 -> 1x2;
#   AlexNet 63 -> 1x1 vs 6x6; AlexNet 300 -> 8x8 (overlapping windows); AlexNet 224 -> 6x6 (identity)
#   (VGG16 in float64 is slow on the CPU, so its cases are few; AlexNet covers every target kind)
BACKPROP_CASES = [
    ("vgg16", (32, 32), 2, "tensor"),
    ("vgg16", (100, 100), 1, "int"),
    ("vgg16", (48, 80), 1, "list"),
    ("alexnet", (63, 63), 2, "none"),
    ("alexnet", (300, 300), 1, "int"),
    ("alexnet", (224, 224), 1, "tensor"),
    ("alexnet", (67, 90), 2, "tensor"),
    ("alexnet", (63, 100), 1, "list"),
]


@pytest.mark.parametrize(
    "name, size, batch, kind", BACKPROP_CASES, ids=[f"{n}-{s[0]}x{s[1]}-{k}" for n, s, b, k in BACKPROP_CASES]
)
def test_backprop_equals_autograd(models64, name, size, batch, kind):
    model = models64[name]
    x = seeded_randn((batch, 3, *size), seed=size[0] * 7 + size[1])
    if kind == "none":
        target, classes = None, predicted(model, x).tolist()
    elif kind == "int":
        target, classes = 417, [417] * batch
    elif kind == "tensor":
        classes = [3, 999][:batch]
        target = torch.tensor(classes)
    else:
        target = classes = [0, 999] if model is models64["vgg16"] else [0, 5, 5, 999]
    got = deconvnet.attribute(model, x, target)
    if kind == "list":
        want = autograd_class_list(model, x, classes)
    else:
        want = autograd_classes(model, x, classes)
    assert got.shape == (len(classes), 3, *size)
    assert_rel_close(got, want)


def test_predicted_target_is_each_images_own_class(alexnet_float64):
    """target=None: every image's own argmax, not image 0's for all."""
    model = alexnet_float64
    x = seeded_randn((4, 3, 63, 63), seed=11) * torch.tensor([1.0, 3.0, 0.5, 2.0]).view(4, 1, 1, 1)
    classes = predicted(model, x)
    assert len(set(classes.tolist())) > 1, "need images with different predictions"
    assert_rel_close(deconvnet.attribute(model, x), autograd_classes(model, x, classes))


def test_float32_images_on_float64_model(alexnet_float64):
    x = seeded_randn((1, 3, 63, 63), seed=12, dtype=torch.float32)
    got = deconvnet.attribute(alexnet_float64, x, 7)
    assert got.dtype == torch.float64
    assert_rel_close(got, autograd_classes(alexnet_float64, x.double(), [7]))


# ----------------------------------------------------------------------------- 2. guided / deconvnet = Captum


CAPTUM_CASES = [("vgg16", (32, 48), 1), ("alexnet", (63, 63), 2), ("alexnet", (100, 80), 1)]


@pytest.mark.parametrize(
    "rule, reference", [("guided", GuidedBackprop), ("deconvnet", Deconvolution)], ids=["guided", "deconvnet"]
)
@pytest.mark.parametrize(
    "name, size, batch", CAPTUM_CASES, ids=[f"{n}-{s[0]}x{s[1]}" for n, s, b in CAPTUM_CASES]
)
def test_rule_equals_captum(models64, name, size, batch, rule, reference):
    model = models64[name]
    x = seeded_randn((batch, 3, *size), seed=size[0] + size[1] + batch)
    target = torch.tensor([13, 500][:batch])
    got = deconvnet.attribute(model, x, target, rule=rule)
    want = captum(reference, model, x, target)
    assert_rel_close(got, want)
    if name == "alexnet":  # the rule really differs from the plain gradient (the test can tell)
        plain = autograd_classes(model, x, target)
        assert (want - plain).abs().max() > 1e-3 * want.abs().max()


# ----------------------------------------------------------------------------- 3. lists = one by one


@pytest.mark.parametrize("rule", deconvnet.RULES)
def test_class_list_equals_one_by_one(alexnet_float64, rule):
    model = alexnet_float64
    x = seeded_randn((1, 3, 63, 63), seed=31)
    classes = [5, 999, 5]
    one_by_one = torch.cat([deconvnet.attribute(model, x, c, rule=rule) for c in classes])
    got = deconvnet.attribute(model, x, classes, rule=rule, chunk_size=2)  # two chunks
    assert_rel_close(got, one_by_one, rtol=1e-12)


def live_positions(acts, count):
    """`count` (channel, y, x) of distinct channels with positive activation in every image,
    including the map's corners: acts [B, C, h, w]."""
    b, c, h, w = acts.shape
    both = acts.min(0).values  # [C, h, w]
    out, used = [], set()
    for y, x in [(h - 1, 0), (0, w - 1), (h // 2, w // 2), (0, 0), (h - 1, w - 1)][:count]:
        order = both[:, y, x].argsort(descending=True).tolist()
        ch = next(k for k in order if k not in used)
        assert both[ch, y, x] > 0, "pick a live unit so the test can fail"
        used.add(ch)
        out.append((ch, y, x))
    return out


def test_unit_list_equals_one_by_one(alexnet_float64):
    model = alexnet_float64
    x = seeded_randn((1, 3, 100, 90), seed=32)
    with torch.no_grad():
        acts = {s: model.features[: stage_index(model, s) + 1](x) for s in (2, 3, 4)}
    (c1, y1, x1), (c2, y2, x2), (c3, y3, x3) = live_positions(acts[3], 3)
    d1, d2 = acts[2][0].flatten(1).max(1).values.topk(2).indices.tolist()
    e1, e2 = acts[4][0].flatten(1).sum(1).topk(2).indices.tolist()
    lists = [
        [Unit(3, c1, y1, x1), Unit(3, c2, y2, x2), Unit(3, c3, y3, x3), Unit(3, c1, y1, x1)],
        [Unit(2, d1), Unit(2, d2), Unit(2, d1)],
        [Channel(4, e1), Channel(4, e2)],
    ]
    for units in lists:
        one_by_one = torch.cat([deconvnet.attribute(model, x, u, rule="guided") for u in units])
        got = deconvnet.attribute(model, x, units, rule="guided", chunk_size=3)
        assert_rel_close(got, one_by_one, rtol=1e-12)


# ----------------------------------------------------------------------------- 4. model untouched


def snapshot(model):
    return {
        "state": {k: (v.detach().clone(), v.data_ptr()) for k, v in model.state_dict(keep_vars=True).items()},
        "training": [(n, m.training) for n, m in model.named_modules()],
        "inplace": [(n, m.inplace) for n, m in model.named_modules() if hasattr(m, "inplace")],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "grad": [(n, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()],
        "hooks": [
            (
                n,
                dict(m._forward_hooks),
                dict(m._backward_hooks),
                dict(m._forward_pre_hooks),
                dict(getattr(m, "_backward_pre_hooks", {})),
            )
            for n, m in model.named_modules()
        ],
        "modules": [(n, id(m)) for n, m in model.named_modules()],
    }


def assert_same_model(before, model):
    after = snapshot(model)
    for k, (v, ptr) in before["state"].items():
        now, now_ptr = after["state"][k]
        assert now_ptr == ptr, k
        assert now.dtype == v.dtype and torch.equal(now, v), k
    assert after["state"].keys() == before["state"].keys()
    for key in ("training", "inplace", "requires_grad", "hooks", "modules"):
        assert after[key] == before[key], key
    assert [(n, g is None) for n, g in after["grad"]] == [(n, g is None) for n, g in before["grad"]]


def test_methods_leave_the_model_untouched(alexnet_float64):
    model = alexnet_float64
    before = snapshot(model)
    assert all(not (f or b or fp or bp) for _, f, b, fp, bp in before["hooks"]), "fixture has hooks"
    rng = torch.get_rng_state()
    grad_mode = torch.is_grad_enabled()
    x = seeded_randn((1, 3, 63, 63), seed=41)
    # one method per code path (the smoothgrad_* and gradient_x_image entries share these)
    for method in (
        "gradient",
        "guided",
        "smoothgrad_deconvnet",
        "integrated_gradients",
        "gradcam",
        "guided_gradcam",
    ):
        out = deconvnet.explain(model, x, method, 3, **options_for(method, dict(samples=1, steps=1, stage=3)))
        assert torch.isfinite(out).all(), method
        assert_same_model(before, model)
    for target in ([Unit(3, 0), Unit(3, 1)], [Channel(4, 2), Channel(4, 0)]):
        deconvnet.attribute(model, x, target, rule="guided")
        assert_same_model(before, model)
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG must not be consumed"
    assert torch.is_grad_enabled() == grad_mode


def test_train_mode_frozen_model_untouched_and_eval_function(alexnet_float64):
    """A model in train mode with frozen parameters, one non-inplace ReLU and a hook of the caller:
    all left as they were; the map is the eval-mode gradient (Dropout -> identity)."""
    model = copy.deepcopy(alexnet_float64).train()
    model.features[0].weight.requires_grad_(False)
    model.classifier.requires_grad_(False)
    model.features[4].inplace = False
    handle = model.features[3].register_forward_hook(lambda *args: None)
    before = snapshot(model)
    x = seeded_randn((2, 3, 63, 63), seed=42)
    got = deconvnet.attribute(model, x, torch.tensor([1, 2]))
    assert_same_model(before, model)
    assert model.training and model.classifier[0].training
    assert_rel_close(got, autograd_classes(alexnet_float64, x, [1, 2]))
    handle.remove()


# ----------------------------------------------------------------------------- 5. unit / channel targets


UNIT_SIZES = {"VGG": (32, 32), "AlexNet": (100, 90)}


@pytest.mark.parametrize("stage", [3, 5])
def test_unit_and_channel_targets_equal_autograd(model64, stage):
    model = model64
    batch = 2 if isinstance(model, AlexNet) else 1
    x = seeded_randn((batch, 3, *UNIT_SIZES[type(model).__name__]), seed=50 + stage)
    xg = x.clone().requires_grad_(True)
    acts = model.features[: stage_index(model, stage) + 1](xg)
    a = acts.detach()
    b, c, h, w = a.shape

    def grads(scores):  # one scalar per image -> [B, 3, H, W] (images are independent)
        return torch.autograd.grad(scores.sum(), xg, retain_graph=True)[0]

    [(ch, y, xx)] = live_positions(a, 1)  # corner (h - 1, 0), live in both images
    # a channel whose strongest unit sits at different places in the two images, if any
    strongest = a.flatten(2).argmax(2)  # [B, C]
    live = (a.flatten(2).max(2).values > 0).all(0)
    differ = [k for k in range(c) if live[k] and strongest[0, k] != strongest[-1, k]]
    ch2 = differ[0] if differ else int(live.nonzero()[0])
    cases = {
        Unit(stage, ch, y, xx): acts[:, ch, y, xx],
        Unit(stage, ch2): acts[:, ch2].flatten(1)[torch.arange(b), strongest[:, ch2]],
        # the stage's strongest unit: first maximum of the whole stage output
        Unit(stage): acts.flatten(1)[torch.arange(b), a.flatten(1).argmax(1)],
        Channel(stage, ch2): acts[:, ch2].sum((1, 2)),
    }
    for target, scores in cases.items():
        want = grads(scores)
        got = deconvnet.attribute(model, x, target)
        assert_rel_close(got, want)


# ----------------------------------------------------------------------------- 6. smoothgrad


def noisy_copies(x, samples, noise, seed):
    """The documented noise: Generator().manual_seed(seed), one torch.randn((3, H, W)) per copy,
    image by image; sigma = noise * (max - min) of each image. -> list over images of [S, 3, H, W]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(x.shape[0]):
        sigma = noise * float(x[b].max() - x[b].min())
        eps = torch.stack([torch.randn((3, *x.shape[-2:]), generator=g) for _ in range(samples)])
        out.append(x[b : b + 1] + sigma * eps.to(x.dtype))
    return out


def smoothgrad_reference(gradient, x, samples, noise, seed, squared=False):
    """Mean over the noisy copies of gradient(copies, image index) -> [B, 3, H, W]."""
    maps = []
    for b, copies in enumerate(noisy_copies(x, samples, noise, seed)):
        g = gradient(copies, b)
        maps.append((g * g if squared else g).mean(0, keepdim=True))
    return torch.cat(maps)


@pytest.fixture
def models_any(alexnet_float64, alexnet_float32):
    return {"alexnet-f64": alexnet_float64, "alexnet-f32": alexnet_float32}


@pytest.mark.parametrize("rule", deconvnet.RULES)
def test_smoothgrad_noise_zero_is_attribute_float32(alexnet_float32, rule):
    """batch_size=1: every copy goes through the same [1, 3, H, W] passes as `attribute`'s, so the
    mean of two identical maps ((m + m) / 2, exact) is bitwise `attribute` on every CPU. Copies
    batched together would not be: a convolution's kernels may sum in another order for another
    batch shape (measured up to 1.1e-6 of the map's max here, AVX2 kernels; see the batch_size
    test below)."""
    x = seeded_randn((1, 3, 63, 63), seed=60, dtype=torch.float32)
    got = deconvnet.smoothgrad(alexnet_float32, x, 3, rule=rule, samples=2, noise=0.0, batch_size=1)
    want = deconvnet.attribute(alexnet_float32, x, 3, rule=rule)
    assert torch.equal(got, want)


def test_smoothgrad_noise_zero_is_gradient_float64(alexnet_float64):
    x = seeded_randn((2, 3, 63, 63), seed=61)
    got = deconvnet.smoothgrad(alexnet_float64, x, None, samples=3, noise=0.0)
    assert_rel_close(got, autograd_classes(alexnet_float64, x, predicted(alexnet_float64, x)))


SMOOTH_CASES = [("alexnet-f64", (2, 3, 63, 63)), ("alexnet-f32", (2, 3, 63, 70))]


@pytest.mark.parametrize("name, shape", SMOOTH_CASES, ids=[n for n, _ in SMOOTH_CASES])
def test_smoothgrad_equals_reference(models_any, name, shape):
    """Backprop SmoothGrad = the mean of plain autograd gradients on the documented noisy copies,
    for the class predicted on the clean image. The documented noise is `torch.randn(3, H, W)`
    (the default dtype, float32) drawn from Generator().manual_seed(seed), for every model dtype."""
    model = models_any[name]
    dtype = next(model.parameters()).dtype
    x = seeded_randn(shape, seed=62, dtype=dtype)
    classes = predicted(model, x)
    got = deconvnet.smoothgrad(model, x, None, samples=2, noise=0.2, seed=5)

    def gradient(copies, b):
        return autograd_classes(model, copies, [int(classes[b])] * copies.shape[0])

    want = smoothgrad_reference(gradient, x, 2, 0.2, 5)
    assert_rel_close(got, want, rtol=F64_RTOL if dtype == torch.float64 else 1e-4)


def test_smoothgrad_guided_equals_captum_on_each_copy(alexnet_float32):
    model = alexnet_float32
    x = seeded_randn((2, 3, 63, 63), seed=63, dtype=torch.float32)
    target = torch.tensor([17, 600])
    got = deconvnet.smoothgrad(model, x, target, rule="guided", samples=3, noise=0.1, seed=2)

    def gradient(copies, b):
        return captum(GuidedBackprop, model, copies, int(target[b]))

    want = smoothgrad_reference(gradient, x, 3, 0.1, 2)
    assert_rel_close(got, want, rtol=1e-4)


def test_smoothgrad_squared_is_mean_of_squares(alexnet_float32):
    model = alexnet_float32
    x = seeded_randn((1, 3, 63, 63), seed=64, dtype=torch.float32)
    got = deconvnet.smoothgrad(model, x, 250, samples=3, noise=0.3, squared=True, seed=9)

    def gradient(copies, b):
        return autograd_classes(model, copies, [250] * copies.shape[0])

    want = smoothgrad_reference(gradient, x, 3, 0.3, 9, squared=True)
    assert (got >= 0).all()
    assert_rel_close(got, want, rtol=1e-4)


def test_smoothgrad_unit_target_resolved_on_clean_image(alexnet_float32):
    """Unit(stage, channel): the channel's strongest unit of the CLEAN image, kept for every copy."""
    model = alexnet_float32
    x = seeded_randn((1, 3, 63, 63), seed=65, dtype=torch.float32)
    index = stage_index(model, 2)
    with torch.no_grad():
        a = model.features[: index + 1](x)
    ch = int(a[0].flatten(1).max(1).values.argmax())
    flat = int(a[0, ch].flatten().argmax())

    moved = []

    def gradient(copies, b):
        xg = copies.clone().requires_grad_(True)
        acts = model.features[: index + 1](xg)
        moved.append(bool((acts[:, ch].flatten(1).argmax(1) != flat).any()))
        return torch.autograd.grad(acts[:, ch].flatten(1)[:, flat].sum(), xg)[0]

    got = deconvnet.smoothgrad(model, x, Unit(2, ch), samples=4, noise=0.3, seed=3)
    want = smoothgrad_reference(gradient, x, 4, 0.3, 3)
    assert any(moved), "the noisy copies' own strongest unit must differ for the test to tell"
    assert_rel_close(got, want, rtol=1e-4)


def test_smoothgrad_seed(alexnet_float32):
    model = alexnet_float32
    x = seeded_randn((1, 3, 63, 63), seed=66, dtype=torch.float32)
    first = deconvnet.smoothgrad(model, x, 3, samples=2, seed=4)
    again = deconvnet.smoothgrad(model, x, 3, samples=2, seed=4)
    other = deconvnet.smoothgrad(model, x, 3, samples=2, seed=5)
    assert torch.equal(first, again)  # identical bytes
    assert (first - other).abs().max() > 1e-2 * first.abs().max()


@pytest.mark.parametrize("name", ["alexnet-f64", "alexnet-f32"])
def test_smoothgrad_batch_size_changes_the_maps_only_by_rounding(models_any, name):
    """The noise stream is independent of batch_size; the maps are NOT bit-identical across batch
    sizes: for another batch shape a CPU's kernels may sum each output's products (up to 9216 in
    AlexNet's fc6) in another order. Such a sum's rounding error is about sqrt(n) * eps/2 of its
    terms' scale (~6e-6 in float32, ~1e-14 in float64), over ~16 sums forward and backward ~4x
    that, so the bounds, relative to the map's largest magnitude, are rtol 1e-4 (float32) and
    1e-12 (float64). Measured on AlexNet here: float32 1.0e-6 (AVX-512 kernels), 1.3e-6 (AVX2),
    4.6e-7 (SSE4.1); float64 <= 2e-16."""
    model = models_any[name]
    dtype = next(model.parameters()).dtype
    x = seeded_randn((1, 3, 63, 63), seed=67, dtype=dtype)
    ref = deconvnet.smoothgrad(model, x, 3, samples=3, noise=0.2)  # batch_size 10: one batch
    rtol = 1e-12 if dtype == torch.float64 else 1e-4
    for batch_size in (1, 2):
        got = deconvnet.smoothgrad(model, x, 3, samples=3, noise=0.2, batch_size=batch_size)
        assert_rel_close(got, ref, rtol=rtol)


# ----------------------------------------------------------------------------- 7. integrated gradients


IG_CASES = [
    ("alexnet", (2, 3, 63, 63), None),
    ("alexnet", (1, 3, 63, 63), 0.5),
    ("alexnet", (1, 3, 70, 63), "tensor"),
    ("vgg16", (1, 3, 32, 32), "tensor"),
]


@pytest.mark.parametrize(
    "name, shape, baseline",
    IG_CASES,
    ids=[f"{n}-{b if not isinstance(b, float) else 'float'}" for n, _, b in IG_CASES],
)
def test_integrated_gradients_equal_captum(models64, name, shape, baseline):
    model = models64[name]
    x = seeded_randn(shape, seed=70)
    if baseline == "tensor":
        baseline = seeded_randn((1, 3, 1, 1), seed=71)  # broadcast: one colour
    full = (
        torch.zeros_like(x)
        if baseline is None
        else torch.broadcast_to(torch.as_tensor(baseline, dtype=x.dtype), x.shape).clone()
    )
    target = torch.tensor([21, 700][: shape[0]])
    steps = 3
    got = deconvnet.integrated_gradients(model, x, target, baseline=baseline, steps=steps)
    want = captum(
        IntegratedGradients, model, x, target, baselines=full, n_steps=steps, method="riemann_middle"
    )
    # Captum's alphas come from a float32 linspace (~1e-8 off (k + 1/2) / steps)
    assert_rel_close(got, want, rtol=1e-6)


@pytest.mark.parametrize("name, size, baseline", [("alexnet", 63, None), ("vgg16", 32, -0.4)])
def test_integrated_gradients_completeness(request, name, size, baseline):
    """sum = score(x) - score(baseline) within 1% at 256 steps, for the predicted class. (VGG's
    random init has zero biases, so it is positively homogeneous and a zero baseline would make
    this exact at any step count; a non-zero baseline keeps the test honest. Classes whose score
    barely changes along the path need more steps: the quadrature error is absolute, e.g. class 5
    of this AlexNet image: +4.4% at 256 steps, +1.8% at 1024, so the test takes the prediction.)"""
    model = request.getfixturevalue(f"{'vgg' if name == 'vgg16' else name}_float32")  # float32:
    x = seeded_randn((1, 3, size, size), seed=72).float()  # 256 steps of float64 VGG16 take a minute
    base = torch.zeros_like(x) if baseline is None else torch.full_like(x, baseline)
    got = deconvnet.integrated_gradients(model, x, None, baseline=baseline, steps=256)
    with torch.no_grad():
        c = int(model(x).argmax())
        delta = float(model(x)[0, c] - model(base)[0, c])
    assert abs(delta) > 0
    assert abs(float(got.sum()) - delta) <= 0.01 * abs(delta)


# ----------------------------------------------------------------------------- 8. Grad-CAM, x image


CAM_SIZES = {"VGG": (48, 64), "AlexNet": (100, 90)}
CAM_SIZES_SMALL = {"VGG": (32, 48), "AlexNet": (100, 90)}
# classes whose Grad-CAM is non-zero on both images of the random-init models
CAM_TARGETS = {"VGG": [100, 200], "AlexNet": [4, 321]}


def gradcam_reference(model, x, target, stage):
    twin = captum_copy(model)
    layer = twin.features[stage_index(model, stage)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cam = LayerGradCam(twin, layer).attribute(x.clone(), target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), "bilinear")[:, 0]


@pytest.mark.parametrize("stage", [5, 3])
def test_gradcam_equals_captum(model64, stage):
    model = model64
    x = seeded_randn((2, 3, *CAM_SIZES[type(model).__name__]), seed=80 + stage)
    target = torch.tensor(CAM_TARGETS[type(model).__name__])
    got = deconvnet.gradcam(model, x, target, stage=stage)
    want = gradcam_reference(model, x, target, stage)
    assert (want.flatten(1).max(1).values > 0).all(), "each image's map must be non-zero"
    assert_rel_close(got, want)


def test_guided_gradcam_and_gradient_x_image_equal_captum(model64):
    model = model64
    batch = 2 if isinstance(model, AlexNet) else 1
    x = seeded_randn((batch, 3, *CAM_SIZES_SMALL[type(model).__name__]), seed=85)
    target = torch.tensor(CAM_TARGETS[type(model).__name__][:batch])
    cam = gradcam_reference(model, x, target, 3)
    want = captum(GuidedBackprop, model, x, target) * cam[:, None]
    assert_rel_close(deconvnet.guided_gradcam(model, x, target, stage=3), want)
    want = captum(InputXGradient, model, x, target)
    assert_rel_close(deconvnet.gradient_x_image(model, x, target), want)


def test_explain_dispatches_with_options(alexnet_float64):
    """explain passes each method the options it takes; options_for picks them out of one set."""
    model = alexnet_float64
    x = seeded_randn((1, 3, 63, 63), seed=86)
    opts = dict(samples=2, steps=2, stage=3, noise=0.1, baseline=0.0)
    assert options_for("gradient", opts) == {}
    assert options_for("gradcam", opts) == {"stage": 3}
    assert options_for("integrated_gradients", opts) == {"steps": 2, "baseline": 0.0}
    assert_rel_close(deconvnet.explain(model, x, "gradient", 9), autograd_classes(model, x, [9]))
    assert_rel_close(deconvnet.explain(model, x, "gradcam", 9, stage=3), gradcam_reference(model, x, 9, 3))
    want = captum(
        IntegratedGradients, model, x, 9, baselines=torch.zeros_like(x), n_steps=2, method="riemann_middle"
    )
    got = deconvnet.explain(model, x, "integrated_gradients", 9, **options_for("integrated_gradients", opts))
    assert_rel_close(got, want, rtol=1e-6)


def test_explain_refuses_an_option_the_method_does_not_take(alexnet_float64, monkeypatch):
    """The error names the option, the method and the options it accepts, before any computation."""
    x = seeded_randn((1, 3, 63, 63), seed=87)

    def no_computation(*args, **kwargs):
        raise AssertionError("the method ran before its options were checked")

    monkeypatch.setitem(deconvnet.METHODS, "gradcam", no_computation)
    monkeypatch.setitem(deconvnet.METHODS, "gradient_x_image", no_computation)
    with pytest.raises(
        ValueError, match=r"options: method 'gradcam' does not take samples; it accepts stage, chunk_size"
    ):
        deconvnet.explain(alexnet_float64, x, "gradcam", 9, stage=3, samples=2)
    with pytest.raises(
        ValueError, match=r"method 'gradient_x_image' does not take steps, stage; it accepts none"
    ):
        deconvnet.explain(alexnet_float64, x, "gradient_x_image", 9, steps=2, stage=3)
    with pytest.raises(ValueError, match=r"method: expected one of gradient, "):
        options_for("no_such_method", {})


def test_each_method_accepts_its_signatures_keyword_parameters():
    """OPTIONS is read from each method's function: every parameter after (model, images, target)
    that the METHODS entry does not fix (the rule of a partial)."""
    assert set(OPTIONS) == set(deconvnet.METHODS)
    for name, method in deconvnet.METHODS.items():
        function = getattr(method, "func", method)
        fixed = getattr(method, "keywords", {})
        signature = inspect.signature(function).parameters
        parameters = [p for p, v in signature.items() if v.kind is not inspect.Parameter.VAR_KEYWORD]
        assert parameters[:3] == ["model", "images", "target"], name
        named = tuple(p for p in parameters[3:] if p not in fixed)
        assert OPTIONS[name][: len(named)] == named, name
        if len(parameters) == len(signature):  # no **keywords: exactly the named parameters
            assert OPTIONS[name] == named, name
    # lrp's **rule_options: the options of the composite its entry fixes (every one for "lrp")
    assert OPTIONS["lrp"] == ("composite", "chunk_size", "epsilon", "gamma", "stabilizer", "low", "high")
    assert OPTIONS["lrp_epsilon_plus"] == ("chunk_size", "epsilon", "stabilizer")
    assert OPTIONS["smoothgrad_guided"] == ("samples", "noise", "squared", "seed", "batch_size", "chunk_size")
    assert OPTIONS["gradcam"] == OPTIONS["guided_gradcam"] == ("stage", "chunk_size")
    assert OPTIONS["integrated_gradients"] == ("baseline", "steps", "batch_size", "chunk_size")
    assert OPTIONS["gradient"] == ("chunk_size",) and OPTIONS["gradient_x_image"] == ()


# ----------------------------------------------------------------------------- 9. pooling adjoint by hand


def test_pooling_matrix_by_hand():
    h, t = 1 / 2, 1 / 3
    cases = {
        (2, 3): [[h, h, 0], [0, h, h]],  # overlapping windows
        (7, 1): [[1]] * 7,  # replication
        (3, 7): [[t, t, t, 0, 0, 0, 0], [0, 0, t, t, t, 0, 0], [0, 0, 0, 0, t, t, t]],
        (7, 3): [[1, 0, 0], [1, 0, 0], [h, h, 0], [0, 1, 0], [0, h, h], [0, 0, 1], [0, 0, 1]],
        (3, 3): [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    }
    for (m, n), rows in cases.items():
        got = pooling_matrix(m, n, torch.float64, torch.device("cpu"))
        assert torch.equal(got, torch.tensor(rows, dtype=torch.float64)), (m, n)


def test_avg_pool_adjoint_by_hand():
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).view(1, 1, 2, 2)
    want = torch.tensor([[0.25, 0.75, 0.5], [1.0, 2.5, 1.5], [0.75, 1.75, 1.0]], dtype=torch.float64)
    assert torch.equal(avg_pool_adjoint(g, (3, 3)), want.view(1, 1, 3, 3))
    # 1 -> 7: the single input pixel lies in all 49 windows of area 1
    g = torch.arange(49, dtype=torch.float64).view(1, 1, 7, 7)
    assert torch.equal(avg_pool_adjoint(g, (1, 1)), torch.full((1, 1, 1, 1), 1176.0, dtype=torch.float64))
    # 1x2 -> 7x7 (VGG 48x80): output columns 0-2 read pixel 0, 4-6 pixel 1, column 3 half of each
    g = torch.ones(1, 1, 7, 7, dtype=torch.float64)
    want = torch.tensor([[[[3.5 * 7, 3.5 * 7]]]], dtype=torch.float64)
    assert torch.equal(avg_pool_adjoint(g, (1, 2)), want)


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (2, 5), (7, 7), (8, 8), (9, 13), (14, 14), (6, 20)])
def test_avg_pool_adjoint_equals_autograd(size):
    gen = torch.Generator().manual_seed(size[0] * 31 + size[1])
    a = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64, requires_grad=True)
    for out in [(7, 7), (6, 6), (3, 5)]:
        pooled = F.adaptive_avg_pool2d(a, out)
        g = torch.randn(2, 3, *out, generator=gen, dtype=torch.float64)
        adj = avg_pool_adjoint(g, size)
        want = torch.autograd.grad(pooled, a, g)[0]
        torch.testing.assert_close(adj, want, rtol=1e-13, atol=1e-13)
        # <P a, g> = <a, P^T g>
        torch.testing.assert_close((pooled * g).sum(), (a * adj).sum(), rtol=1e-12, atol=1e-12)
        # the forward matrices: P_y A P_x^T = adaptive average pooling
        p_y = pooling_matrix(out[0], size[0], torch.float64, torch.device("cpu"))
        p_x = pooling_matrix(out[1], size[1], torch.float64, torch.device("cpu"))
        torch.testing.assert_close(p_y @ a.detach() @ p_x.T, pooled.detach(), rtol=1e-13, atol=1e-13)
