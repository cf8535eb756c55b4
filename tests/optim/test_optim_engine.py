"""The optimisation family's engine parts (`deconvnet.optim`: probe, objectives, params,
transforms, regularizers, engine.optimize, checks) against independent references.

References: the torchvision model's own forward (`model.features[: index + 1]`, `model(x)` in eval
mode, the classifier's Linear layers applied by hand), objectives written out as plain formulas
and differentiated with torch.autograd, numbers worked out by hand on tiny tensors (written out in
the tests), scipy.ndimage.gaussian_filter for the blur, numpy's FFT for lucid's Fourier
parameterisation, and the step rules (normalised ascent, momentum, Deep Dream's mean |g|, Adam,
the cosine schedule) re-implemented step by step. The high-level methods (visualize_filters,
class_model, deep_dream, invert, fooling_image) are tested elsewhere.

Cheap by design: AlexNet stages 1-2 at 47 px for everything that steps, the whole of VGG16 and
AlexNet only for the probe.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from conftest import seeded_randn
from torch import nn

from deconvnet.core.architecture import stages
from deconvnet.data.models import preprocessing
from deconvnet.optim import (
    STEP_RULES,
    Blur,
    Clamp,
    ClipContribution,
    ClipNorm,
    Decay,
    FourierImage,
    Jitter,
    Objective,
    Pad,
    PixelImage,
    RandomScale,
    Shrink,
    alpha_norm,
    channel,
    class_log_probability,
    class_logit,
    energy,
    feature_match,
    l2_norm,
    lp_norm,
    optimize,
    probe,
    standard_transforms,
    total_variation,
    unit,
)
from deconvnet.optim.checks import check_channels, check_classes, check_param, check_size, regularizer_preset
from deconvnet.optim.engine import schedule_factor
from deconvnet.optim.params import fourier_noise, grey_noise, valid_range
from deconvnet.optim.transforms import compose

# the module (deconvnet.core.probe is shadowed by the function of that name in deconvnet.optim)
probe_module = importlib.import_module("deconvnet.core.probe")

F64_RTOL = 1e-10
POINTS = [1, 2, 3, 4, 5, "fc6", "fc7", "logits"]
SIZES = {"vgg16": (32, 32), "alexnet": (63, 63)}  # the smallest inputs each model accepts


# ----------------------------------------------------------------------------- helpers


def assert_rel_close(got, want, rtol=F64_RTOL):
    """Elementwise close, relative to the reference's largest magnitude; the reference is not 0."""
    assert got.shape == want.shape
    scale = want.abs().max()
    assert scale > 0, "the reference must not be trivially zero"
    torch.testing.assert_close(got, want.to(got.dtype), rtol=rtol, atol=rtol * float(scale))


def stage_ref(model, number, x):
    """Stage `number`'s output by the torchvision model itself: model.features[: index + 1]."""
    return model.features[: stages(model)[number - 1].index + 1](x)


def head_by_hand(model, features):
    """fc6, fc7, logits from model.features' output: adaptive average pool -> flatten -> the
    classifier's three Linear layers with ReLU, dropout left out (its eval-mode function)."""
    h = torch.flatten(F.adaptive_avg_pool2d(features, model.avgpool.output_size), 1)
    lin = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert len(lin) == 3
    fc6 = torch.relu(F.linear(h, lin[0].weight, lin[0].bias))
    fc7 = torch.relu(F.linear(fc6, lin[1].weight, lin[1].bias))
    return {"fc6": fc6, "fc7": fc7, "logits": F.linear(fc7, lin[2].weight, lin[2].bias)}


def grad_of(fn, x):
    """d sum(fn(x)) / dx and fn(x), on a fresh leaf."""
    leaf = x.detach().clone().requires_grad_(True)
    value = fn(leaf)
    (g,) = torch.autograd.grad(value.sum(), leaf)
    return g, value.detach()


def per_image_norm(t):
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


class Recorder:
    """A no-op 'regulariser' that records the parameter after every step (and the step's gradient)."""

    def __init__(self):
        self.images, self.grads, self.steps = [], [], []

    def __call__(self, x, grad, step):
        self.images.append(x.detach().clone())
        self.grads.append(grad.detach().clone())
        self.steps.append(step)


def model_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_model_untouched(model, state, training):
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert [m.training for m in model.modules()] == training
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert not getattr(m, "_backward_pre_hooks", None)
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------- 1. probe


@pytest.mark.parametrize("name", ["vgg16", "alexnet"])
def test_probe_equals_model_forward(models64, name):
    model = models64[name]
    x = seeded_randn((2, 3, *SIZES[name]), seed=1)
    with torch.no_grad():
        got = probe(model, x, POINTS + ["input"])
        assert set(got) == set(POINTS) | {"input"}
        assert got["input"] is x
        for s in range(1, 6):
            assert_rel_close(got[s], stage_ref(model, s, x), rtol=1e-12)
        assert stages(model)[4].index == len(model.features) - 1  # stage 5 is features' output
        head = head_by_hand(model, stage_ref(model, 5, x))
        for p in ("fc6", "fc7", "logits"):
            assert_rel_close(got[p], head[p], rtol=1e-12)
        assert_rel_close(got["logits"], model(x), rtol=1e-12)


@pytest.mark.parametrize("name", ["vgg16", "alexnet"])
def test_probe_only_asked_points_and_only_as_deep_as_needed(models64, name):
    """Asking for stage 1 returns only stage 1 and runs only its layers: it works on an input
    too small for the rest of the model (VGG16 stage 1: 2 px, AlexNet stage 1: 15 px)."""
    model = models64[name]
    side = {"vgg16": 2, "alexnet": 15}[name]
    x = seeded_randn((2, 3, side, side), seed=2)
    with torch.no_grad():
        with pytest.raises(RuntimeError):
            model.features(x)  # the whole of features cannot run on it
        got = probe(model, x, [1])
        assert set(got) == {1}
        assert_rel_close(got[1], stage_ref(model, 1, x), rtol=1e-12)
        assert set(probe(model, x, ["input"])) == {"input"}


@pytest.mark.parametrize("name", ["vgg16", "alexnet"])
def test_probe_budget_same_values_and_gradients(models64, name, monkeypatch):
    """budget in bytes: the batch runs in pieces (1 per image; 2 + 1; one piece after a few
    layers) with the same values and the same input gradients as budget=None. The number of
    pieces each feature module sees is recorded to show the pieces really happen."""
    model = models64[name]
    h, w = SIZES[name]
    batch = 2 if name == "vgg16" else 3
    x = seeded_randn((batch, 3, h, w), seed=3)
    per_image = 64 * h * w * 8  # the first conv's output for one image, float64
    # VGG16 (2 images): budget per_image splits 1 + 1, joined after pool1 (a quarter the size);
    # AlexNet (3 images): budget 1 never joins (the classifier gets the pieces' concatenation),
    # 2 per_image splits 2 + 1 and joins after conv1 (stride 4)
    n = len(model.features)
    pieces_seen = (
        {per_image: [2] * 5 + [1] * (n - 5)}
        if name == "vgg16"
        else {1: [3] * n, 2 * per_image: [2] + [1] * (n - 1)}
    )
    weights = {p: None for p in POINTS}
    seen = []
    apply = probe_module._apply

    def counting_apply(module, pieces, budget):
        seen.append(len(pieces))
        return apply(module, pieces, budget)

    monkeypatch.setattr(probe_module, "_apply", counting_apply)

    def run(budget):
        leaf = x.clone().requires_grad_(True)
        out = probe(model, leaf, POINTS, budget=budget)
        total = 0
        for i, p in enumerate(POINTS):
            if weights[p] is None:
                weights[p] = seeded_randn(out[p].shape, seed=100 + i)
            total = total + (weights[p] * out[p]).sum()
        (g,) = torch.autograd.grad(total, leaf)
        return {p: out[p].detach() for p in POINTS}, g

    want, want_grad = run(None)
    assert seen == [1] * n
    for budget, counts in pieces_seen.items():
        seen.clear()
        got, got_grad = run(budget)
        assert seen == counts
        for p in POINTS:
            assert_rel_close(got[p], want[p], rtol=1e-12)
        assert_rel_close(got_grad, want_grad, rtol=1e-12)


@pytest.mark.parametrize("name", ["vgg16", "alexnet"])
def test_probe_does_not_change_the_model_and_ignores_train_mode(models64, name):
    """Train mode: Dropout is the identity (equal to the eval output); no parameter, flag or
    hook changes, no .grad left behind."""
    model = models64[name]
    x = seeded_randn((2, 3, *SIZES[name]), seed=4)
    with torch.no_grad():
        want = model(x)  # eval mode
    state = model_state(model)
    try:
        model.train()
        training = [m.training for m in model.modules()]
        leaf = x.clone().requires_grad_(True)
        got = probe(model, leaf, ["logits", 2])
        torch.autograd.grad(got["logits"].sum(), leaf)
        assert_rel_close(got["logits"].detach(), want, rtol=1e-12)
        assert_model_untouched(model, state, training)
    finally:
        model.eval()
    training = [m.training for m in model.modules()]
    assert not any(training)
    probe(model, x.clone().requires_grad_(True), ["fc7", 1])
    assert_model_untouched(model, state, training)


# ----------------------------------------------------------------------------- 2. objectives


@pytest.fixture(scope="module")
def objective_setup(alexnet_float64):
    """AlexNet float64, two 63 px images: the probe's activations and the torchvision model's own
    (features[: index + 1], model(x)) on the same leaf, graphs kept for several gradients."""
    model = alexnet_float64
    x = seeded_randn((2, 3, 63, 63), seed=5).requires_grad_(True)
    acts = probe(model, x, [1, 2, "logits", "input"])
    ref = {1: stage_ref(model, 1, x), 2: stage_ref(model, 2, x), "logits": model(x), "input": x}
    return x, acts, ref


TARGET1 = seeded_randn((1, 192, 3, 3), seed=6).relu()
TARGET2 = seeded_randn((2, 192, 3, 3), seed=7).relu()
HW = 63 * 63


def _tv_by_hand(x, beta, bound=1.0):
    """sum over colours and pixels (i < H-1, j < W-1) of (dx^2 + dy^2)^(beta/2) / (H W bound^beta)."""
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1])[:, :, :-1, :]
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :])[:, :, :, :-1]
    return ((dx**2 + dy**2) ** (beta / 2)).sum(dim=(1, 2, 3)) / (x.shape[2] * x.shape[3] * bound**beta)


OBJECTIVE_CASES = {
    "channel": (lambda: channel(1, 5), lambda r: r[1][:, 5].mean(dim=(1, 2))),
    "channel-border": (lambda: channel(1, 5, border=1), lambda r: r[1][:, 5, 1:6, 1:6].mean(dim=(1, 2))),
    "channel-per-image": (
        lambda: channel(2, [3, 7]),
        lambda r: torch.stack([r[2][0, 3].mean(), r[2][1, 7].mean()]),
    ),
    "channel-per-image-border": (
        lambda: channel(1, [5, 9], border=2),
        lambda r: torch.stack([r[1][0, 5, 2:5, 2:5].mean(), r[1][1, 9, 2:5, 2:5].mean()]),
    ),
    "unit": (lambda: unit(1, 5, 2, 3), lambda r: r[1][:, 5, 2, 3]),
    "unit-per-image": (
        lambda: unit(2, [3, 7], 1, 2),
        lambda r: torch.stack([r[2][0, 3, 1, 2], r[2][1, 7, 1, 2]]),
    ),
    "class_logit": (lambda: class_logit(7), lambda r: r["logits"][:, 7]),
    "class_logit-per-image": (
        lambda: class_logit([7, 300]),
        lambda r: torch.stack([r["logits"][0, 7], r["logits"][1, 300]]),
    ),
    "class_log_probability": (
        lambda: class_log_probability(7),
        lambda r: r["logits"][:, 7] - torch.logsumexp(r["logits"], dim=1),
    ),
    "class_log_probability-per-image": (
        lambda: class_log_probability([7, 300]),
        lambda r: torch.stack([r["logits"][0, 7], r["logits"][1, 300]]) - torch.logsumexp(r["logits"], dim=1),
    ),
    "energy": (lambda: energy(2), lambda r: 0.5 * (r[2] ** 2).sum(dim=(1, 2, 3))),
    "energy-channel": (lambda: energy(2, 4), lambda r: 0.5 * (r[2][:, 4] ** 2).sum(dim=(1, 2))),
    "energy-per-image": (
        lambda: energy(1, [4, 9]),
        lambda r: 0.5 * torch.stack([(r[1][0, 4] ** 2).sum(), (r[1][1, 9] ** 2).sum()]),
    ),
    "feature_match-one-target": (
        lambda: feature_match(2, TARGET1),
        lambda r: -((r[2] - TARGET1) ** 2).sum(dim=(1, 2, 3)) / (TARGET1**2).sum(),
    ),
    "feature_match-per-image": (
        lambda: feature_match(2, TARGET2),
        lambda r: -((r[2] - TARGET2) ** 2).sum(dim=(1, 2, 3)) / (TARGET2**2).sum(dim=(1, 2, 3)),
    ),
    "lp_norm-6": (
        lambda: lp_norm(),
        lambda r: (r["input"].abs() ** 6).sum(dim=(1, 2, 3)) ** (1 / 6) / (3 * HW),
    ),
    "lp_norm-2.5": (
        lambda: lp_norm(2.5),
        lambda r: (r["input"].abs() ** 2.5).sum(dim=(1, 2, 3)) ** (1 / 2.5) / (3 * HW),
    ),
    "alpha_norm-6": (
        lambda: alpha_norm(),
        lambda r: (r["input"] ** 2).sum(dim=1).sqrt().pow(6).sum(dim=(1, 2)) / HW,
    ),
    "alpha_norm-3-bound2": (
        lambda: alpha_norm(3.0, bound=2.0),
        lambda r: (r["input"] ** 2).sum(dim=1).sqrt().pow(3).sum(dim=(1, 2)) / (HW * 8.0),
    ),
    "total_variation-2": (lambda: total_variation(), lambda r: _tv_by_hand(r["input"], 2.0)),
    "total_variation-1": (lambda: total_variation(1.0), lambda r: _tv_by_hand(r["input"], 1.0)),
    "total_variation-2-bound3": (
        lambda: total_variation(2.0, bound=3.0),
        lambda r: _tv_by_hand(r["input"], 2.0, 3.0),
    ),
    "l2_norm": (lambda: l2_norm(), lambda r: (r["input"] ** 2).sum(dim=(1, 2, 3))),
}


@pytest.mark.parametrize("case", list(OBJECTIVE_CASES))
def test_objective_value_and_gradient(objective_setup, case):
    """Each objective's value [B] on the probe's activations equals the plain formula on the
    torchvision model's activations, and so does its gradient with respect to the input."""
    make, by_hand = OBJECTIVE_CASES[case]
    x, acts, ref = objective_setup
    objective = make()
    got = objective(acts)
    want = by_hand(ref)
    assert got.shape == (2,)
    assert_rel_close(got.detach(), want.detach(), rtol=1e-12)
    (got_grad,) = torch.autograd.grad(got.sum(), x, retain_graph=True)
    (want_grad,) = torch.autograd.grad(want.sum(), x, retain_graph=True)
    assert_rel_close(got_grad, want_grad)


# 1x3x3x3 image for numbers worked out by hand (R, G, B planes):
#   R = [[1, 0, -2], [0, 3, 0], [1, 1, 0]]
#   G = [[0, 0, 0], [4, 0, 0], [0, 0, 0]]
#   B = [[0, 1, 0], [0, 4, 0], [0, 0, 2]]
# squared colour norms per pixel: [[1, 1, 4], [16, 25, 0], [1, 1, 4]] (norms [[1, 1, 2], [4, 5, 0], [1, 1, 2]])
# sum x^2 = 16 + 16 + 21 = 53; sum |x|^3 = 38 + 64 + 73 = 175; sum x^6 = 796 + 4096 + 4161 = 9053
# TV, squared differences dx^2 + dy^2 at the four pixels with both neighbours (0,0) (0,1) (1,0) (1,1):
#   R: 2, 13, 10, 13 (sum 38); G: 16, 0, 32, 0 (sum 48); B: 1, 10, 16, 32 (sum 59); total 145
TINY = torch.tensor(
    [
        [[1, 0, -2], [0, 3, 0], [1, 1, 0]],
        [[0, 0, 0], [4, 0, 0], [0, 0, 0]],
        [[0, 1, 0], [0, 4, 0], [0, 0, 2]],
    ],
    dtype=torch.float64,
)[None]

TINY_CASES = [
    (lambda: l2_norm(), 53.0),
    (lambda: lp_norm(2.0), math.sqrt(53) / 27),
    (lambda: lp_norm(3.0), 175 ** (1 / 3) / 27),
    (lambda: lp_norm(), 9053 ** (1 / 6) / 27),
    (lambda: alpha_norm(2.0), 53 / 9),
    (lambda: alpha_norm(), (1 + 1 + 64 + 4096 + 15625 + 0 + 1 + 1 + 64) / 9),  # 19853 / 9
    (lambda: alpha_norm(1.0, bound=2.0), (1 + 1 + 2 + 4 + 5 + 0 + 1 + 1 + 2) / 18),  # 17 / 18
    (lambda: total_variation(), 145 / 9),
    (lambda: total_variation(2.0, bound=2.0), 145 / 36),
    (
        lambda: total_variation(1.0),
        (9 + math.sqrt(2) + 2 * math.sqrt(13) + 2 * math.sqrt(10) + 2 * math.sqrt(32)) / 9,
    ),
]


@pytest.mark.parametrize("index", range(len(TINY_CASES)))
def test_input_penalties_hand_computed(index):
    make, want = TINY_CASES[index]
    got = make()({"input": TINY})
    assert got.shape == (1,)
    assert abs(float(got[0]) - want) <= 1e-12 * abs(want)


def test_per_image_arguments():
    """Each image takes its own channel / class / target."""
    a = seeded_randn((3, 6, 4, 5), seed=8)
    logits = seeded_randn((3, 10), seed=9)
    target = seeded_randn((3, 6, 4, 5), seed=10)
    whole = {1: a, "logits": logits}
    cases = [
        (channel(1, [0, 2, 3]), torch.stack([a[b, c].mean() for b, c in enumerate([0, 2, 3])])),
        (
            channel(1, [0, 2, 3], border=1),
            torch.stack([a[b, c, 1:3, 1:4].mean() for b, c in enumerate([0, 2, 3])]),
        ),
        (unit(1, [5, 1, 4], 3, 2), torch.stack([a[b, c, 3, 2] for b, c in enumerate([5, 1, 4])])),
        (energy(1, [1, 1, 5]), torch.stack([0.5 * (a[b, c] ** 2).sum() for b, c in enumerate([1, 1, 5])])),
        (class_logit([9, 0, 4]), torch.stack([logits[b, c] for b, c in enumerate([9, 0, 4])])),
        (
            class_log_probability([9, 0, 4]),
            torch.stack([logits[b, c] - torch.logsumexp(logits[b], 0) for b, c in enumerate([9, 0, 4])]),
        ),
        (
            feature_match(1, target),
            torch.stack([-((a[b] - target[b]) ** 2).sum() / (target[b] ** 2).sum() for b in range(3)]),
        ),
    ]
    for objective, want in cases:
        torch.testing.assert_close(objective(whole), want, rtol=1e-12, atol=0)


def test_per_image_list_too_short_names_the_argument():
    a = {1: seeded_randn((2, 4, 3, 3), seed=11), "logits": seeded_randn((2, 5), seed=12)}
    with pytest.raises(ValueError, match="channel: 1 values"):
        channel(1, [3])(a)
    with pytest.raises(ValueError, match="class: 1 values"):
        class_logit([3])(a)
    with pytest.raises(ValueError, match="channel: 3 values for a batch of 2"):  # too long
        channel(1, [0, 2, 3])(a)


def test_objective_composition():
    x = seeded_randn((2, 3, 4, 4), seed=13)
    m = seeded_randn((2, 3, 2, 2), seed=14)
    acts = {"input": x, 2: m}
    a, b = channel(2, [1, 2]), l2_norm()
    va = torch.stack([m[0, 1].mean(), m[1, 2].mean()])
    vb = (x**2).sum(dim=(1, 2, 3))
    cases = [
        (a + b, va + vb),
        (a - b, va - vb),
        (2.5 * a, 2.5 * va),
        (a * 2.5, 2.5 * va),
        (-a, -va),
        (sum([a, b]), va + vb),
        (a - 0.1 * b + 3 * a, 4 * va - 0.1 * vb),
    ]
    for objective, want in cases:
        assert isinstance(objective, Objective)
        torch.testing.assert_close(objective(acts), want, rtol=1e-12, atol=0)
    assert (a + b).points == frozenset({2, "input"})
    assert (a - b).points == frozenset({2, "input"}) and (2.5 * a).points == frozenset({2})
    assert (-b).points == frozenset({"input"})
    assert (a + 0) is a


@pytest.mark.parametrize("bad", [1.5, "x", torch.tensor(1.0), None])
def test_adding_a_non_objective_raises(bad):
    a = channel(2, 1)
    with pytest.raises(ValueError, match="objective"):
        a + bad
    with pytest.raises(ValueError, match="objective"):
        bad + a


@pytest.mark.parametrize("bad", [1.5, "x", None])
def test_subtracting_a_non_objective_raises_value_error(bad):
    """a - bad must fail the way a + bad does (ValueError naming 'objective')."""
    with pytest.raises(ValueError, match="objective"):
        channel(2, 1) - bad


@pytest.mark.parametrize("bad", ["2", True, None])
def test_scaling_by_a_non_number_raises(bad):
    with pytest.raises(ValueError, match="weight"):
        channel(2, 1) * bad


# ----------------------------------------------------------------------------- 3. params


LUCID_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def lucid_fourier_image(spectrum, h, w, prep, decay=1.0):
    """lucid's fft_image + to_valid_rgb(decorrelate=True, sigmoid=True) in numpy, then the model's
    normalisation: [B, 3, H, W] from [B, 3, H, W//2+1, 2] (fftfreq(w)[: w // 2 + 1] squares to
    rfftfreq(w) for any w)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 1]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay * np.sqrt(w * h)
    spec = (spectrum[..., 0] + 1j * spectrum[..., 1]) * scale
    img = np.fft.irfft2(spec, s=(h, w)) / 4.0  # numpy's inverse has TF's 1/(h w)
    color = LUCID_COLOR_SQRT / np.max(np.linalg.norm(LUCID_COLOR_SQRT, axis=0))
    flat = np.einsum("bchw,dc->bdhw", img, color)  # lucid: t_flat @ color.T
    rgb = 1.0 / (1.0 + np.exp(-flat))
    mean = np.array(prep.mean).reshape(1, 3, 1, 1)
    std = np.array(prep.std).reshape(1, 3, 1, 1)
    return (rgb - mean) / std


def test_pixel_image_is_its_tensor():
    init = seeded_randn((2, 3, 5, 5), seed=15)
    kept = init.clone()
    p = PixelImage(init)
    assert p.image() is p.tensor and p.parameters() == [p.tensor]
    assert p.tensor.requires_grad and p.tensor.is_leaf
    assert torch.equal(p.tensor.detach(), kept)
    init.add_(1.0)  # a copy: the caller's tensor is not the parameter
    assert torch.equal(p.tensor.detach(), kept)


@pytest.mark.parametrize("h, w, decay", [(6, 8, 1.0), (7, 10, 1.5)])
def test_fourier_image_equals_lucid_formula(alexnet_float64, h, w, decay):
    prep = preprocessing(alexnet_float64)
    spectrum = seeded_randn((2, 3, h, w // 2 + 1, 2), seed=16)
    got = FourierImage(spectrum, h, w, prep, decay=decay).image()
    assert got.shape == (2, 3, h, w) and got.dtype == torch.float64
    want = torch.from_numpy(lucid_fourier_image(spectrum.numpy(), h, w, prep, decay))
    assert_rel_close(got.detach(), want, rtol=1e-12)


def test_fourier_image_valid_range_and_mid_grey(alexnet_float64):
    prep = preprocessing(alexnet_float64)
    low, high = valid_range(prep, torch.float64, torch.device("cpu"))
    mean = torch.tensor(prep.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(low, -mean / std)  # the normalised values of colours 0 and 1
    torch.testing.assert_close(high, (1 - mean) / std)
    big = FourierImage(seeded_randn((3, 3, 16, 9, 2), seed=17) * 5, 16, 16, prep).image().detach()
    assert bool((big > low).all()) and bool((big < high).all())
    assert float((big - low).min()) < 0.05 and float((high - big).min()) < 0.05  # it reaches the edges
    grey = FourierImage(torch.zeros(1, 3, 16, 9, 2, dtype=torch.float64), 16, 16, prep).image().detach()
    torch.testing.assert_close(grey * std + mean, torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64))


def test_fourier_image_gradient_reaches_the_spectrum(alexnet_float64):
    """autograd through image() equals central differences along random directions."""
    prep = preprocessing(alexnet_float64)
    spectrum = seeded_randn((1, 3, 6, 4, 2), seed=18)
    weight = seeded_randn((1, 3, 6, 6), seed=19)

    def loss(s):
        with torch.no_grad():
            return float((FourierImage(s, 6, 6, prep).image() * weight).sum())

    p = FourierImage(spectrum, 6, 6, prep)
    (grad,) = torch.autograd.grad((p.image() * weight).sum(), p.tensor)
    assert float(grad.abs().max()) > 0
    eps = 1e-6
    for k in range(3):
        d = seeded_randn(spectrum.shape, seed=20 + k)
        numeric = (loss(spectrum + eps * d) - loss(spectrum - eps * d)) / (2 * eps)
        assert abs(float((grad * d).sum()) - numeric) <= 1e-7 * max(1.0, abs(numeric))


def test_grey_noise(alexnet_float64):
    """(U - 0.5) * spread / std: the colours lie within mean +- spread / 2, mean ~0, the uniform's
    standard deviation spread / sqrt(12); the same draws as torch.rand with the same seed."""
    prep = preprocessing(alexnet_float64)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
    noise = grey_noise((2, 3, 64, 64), prep, torch.Generator().manual_seed(21), spread=0.25)
    assert noise.dtype == torch.float32 and noise.shape == (2, 3, 64, 64)
    u = torch.rand((2, 3, 64, 64), generator=torch.Generator().manual_seed(21))
    torch.testing.assert_close(noise, (u - 0.5) * 0.25 / std)
    colour = noise * std  # offset from the mean colour in [0, 1] colour units
    assert float(colour.min()) >= -0.125 and float(colour.max()) <= 0.125
    assert float(colour.min()) < -0.12 and float(colour.max()) > 0.12
    assert abs(float(colour.mean())) < 0.003
    assert abs(float(colour.std()) - 0.25 / math.sqrt(12)) < 0.002


def test_fourier_noise():
    s = fourier_noise(2, 10, 7, torch.Generator().manual_seed(22), sd=0.5)
    assert s.shape == (2, 3, 10, 7 // 2 + 1, 2)
    torch.testing.assert_close(
        s, torch.randn((2, 3, 10, 4, 2), generator=torch.Generator().manual_seed(22)) * 0.5
    )
    assert abs(float(fourier_noise(4, 32, 32, torch.Generator().manual_seed(23)).std()) - 0.01) < 0.0005


# ----------------------------------------------------------------------------- 4. transforms


def drawn_shifts(seed, pixels, count):
    """The (dy, dx) a Jitter draws, re-drawn from a generator with the same seed."""
    g = torch.Generator().manual_seed(seed)
    return [
        (
            int(torch.randint(-pixels, pixels + 1, (1,), generator=g)),
            int(torch.randint(-pixels, pixels + 1, (1,), generator=g)),
        )
        for _ in range(count)
    ]


def rolled_by_hand(x, dy, dx):
    h, w = x.shape[-2:]
    rows = torch.tensor([(i - dy) % h for i in range(h)])
    cols = torch.tensor([(j - dx) % w for j in range(w)])
    return x[:, :, rows][:, :, :, cols]


def test_jitter_rolls_by_the_drawn_shifts():
    x = seeded_randn((2, 3, 7, 9), seed=24)
    g = torch.Generator().manual_seed(25)
    shifts = drawn_shifts(25, 3, 6)
    assert len(set(shifts)) > 1
    for dy, dx in shifts:
        got = Jitter(3)(x, g)
        assert torch.equal(got, rolled_by_hand(x, dy, dx))
        assert torch.equal(got, torch.roll(x, shifts=(dy, dx), dims=(2, 3)))
    assert torch.equal(
        Jitter(3)(x, torch.Generator().manual_seed(25)), Jitter(3)(x, torch.Generator().manual_seed(25))
    )


def test_zero_jitter_and_zero_pad_are_identity_and_draw_nothing():
    x = seeded_randn((1, 3, 5, 5), seed=26)
    g = torch.Generator().manual_seed(27)
    state = g.get_state()
    assert Jitter(0)(x, g) is x and Pad(0)(x, g) is x
    assert torch.equal(g.get_state(), state)


def test_random_scale_sizes_and_values():
    """A linear ramp v[i, j] = i + 10 j resized bilinearly (half-pixel centres, no antialias)
    samples the ramp at source coordinates (p + 0.5) / s - 0.5 (clamped to the image)."""
    h, w = 10, 12
    ramp = torch.arange(h, dtype=torch.float64)[:, None] + 10 * torch.arange(w, dtype=torch.float64)[None]
    x = ramp.expand(1, 3, h, w).clone()
    scales = (0.5, 1.0, 2.0)
    g = torch.Generator().manual_seed(28)
    redraw = torch.Generator().manual_seed(28)
    seen = set()
    for _ in range(12):
        s = scales[int(torch.randint(0, 3, (1,), generator=redraw))]
        seen.add(s)
        got = RandomScale(scales)(x, g)
        if s == 1.0:
            assert got is x
            continue
        oh, ow = round(h * s), round(w * s)
        assert got.shape == (1, 3, oh, ow)
        sy = ((torch.arange(oh, dtype=torch.float64) + 0.5) / s - 0.5).clamp(0, h - 1)
        sx = ((torch.arange(ow, dtype=torch.float64) + 0.5) / s - 0.5).clamp(0, w - 1)
        torch.testing.assert_close(got, (sy[:, None] + 10 * sx[None]).expand(1, 3, oh, ow))
    assert seen == set(scales)
    odd = RandomScale((0.95,))(seeded_randn((1, 3, 33, 41), seed=29), g)
    assert odd.shape == (1, 3, 31, 39)  # round(31.35), round(38.95)


def test_pad_values():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])[None, None]
    g = torch.Generator()
    constant = torch.tensor(
        [
            [0.7, 0.7, 0.7, 0.7, 0.7],
            [0.7, 1.0, 2.0, 3.0, 0.7],
            [0.7, 4.0, 5.0, 6.0, 0.7],
            [0.7, 0.7, 0.7, 0.7, 0.7],
        ]
    )[None, None]
    reflect = torch.tensor(
        [
            [5.0, 4.0, 5.0, 6.0, 5.0],
            [2.0, 1.0, 2.0, 3.0, 2.0],
            [5.0, 4.0, 5.0, 6.0, 5.0],
            [2.0, 1.0, 2.0, 3.0, 2.0],
        ]
    )[None, None]
    replicate = torch.tensor(
        [
            [1.0, 1.0, 2.0, 3.0, 3.0],
            [1.0, 1.0, 2.0, 3.0, 3.0],
            [4.0, 4.0, 5.0, 6.0, 6.0],
            [4.0, 4.0, 5.0, 6.0, 6.0],
        ]
    )[None, None]
    assert torch.equal(Pad(1, value=0.7)(x, g), constant)
    assert torch.equal(Pad(1, mode="reflect")(x, g), reflect)
    assert torch.equal(Pad(1, mode="replicate")(x, g), replicate)
    assert torch.equal(Pad(2)(x, g)[0, 0, 2:4, 2:5], x[0, 0]) and float(Pad(2)(x, g).sum()) == 21.0


def test_compose_applies_in_order():
    x = seeded_randn((1, 3, 6, 6), seed=30)
    ((dy, dx),) = drawn_shifts(31, 2, 1)
    assert (dy, dx) != (0, 0)
    padded = F.pad(x, (1, 1, 1, 1), value=9.0)
    pad_then_jitter = compose([Pad(1, value=9.0), Jitter(2)])(x, torch.Generator().manual_seed(31))
    jitter_then_pad = compose([Jitter(2), Pad(1, value=9.0)])(x, torch.Generator().manual_seed(31))
    assert torch.equal(pad_then_jitter, rolled_by_hand(padded, dy, dx))
    assert torch.equal(jitter_then_pad, F.pad(rolled_by_hand(x, dy, dx), (1, 1, 1, 1), value=9.0))
    assert not torch.equal(pad_then_jitter, jitter_then_pad)
    with pytest.raises(ValueError, match="transforms"):
        compose([Jitter(1), 3])


def test_standard_transforms_same_seed_same_output():
    assert standard_transforms(8) == [
        Pad(16),
        Jitter(8),
        RandomScale((0.95, 0.975, 1.0, 1.025, 1.05)),
        Jitter(4),
    ]
    x = seeded_randn((2, 3, 20, 20), seed=32)
    t = compose(standard_transforms(2))
    outs = [t(x, torch.Generator().manual_seed(s)) for s in (33, 33, 34, 35, 36)]
    assert torch.equal(outs[0], outs[1])
    assert any(o.shape != outs[0].shape or not torch.equal(o, outs[0]) for o in outs[2:])


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: Jitter(-1), "jitter"),
        (lambda: Jitter(1.5), "jitter"),
        (lambda: Jitter(True), "jitter"),
        (lambda: RandomScale(()), "scales"),
        (lambda: RandomScale((0.0,)), "scales"),
        (lambda: RandomScale((1.0, -0.5)), "scales"),
        (lambda: RandomScale((float("nan"),)), "scales"),
        (lambda: RandomScale(("1",)), "scales"),
        (lambda: Pad(-1), "pad"),
        (lambda: Pad(2.0), "pad"),
        (lambda: Pad(1, mode="circular"), "pad mode"),
    ],
)
def test_transform_bad_arguments(make, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        make()


def test_random_scale_single_number_raises_value_error():
    """RandomScale(0.95) (one factor instead of a tuple) must be a ValueError naming 'scales'."""
    with pytest.raises(ValueError, match="^scales"):
        RandomScale(0.95)


# ----------------------------------------------------------------------------- 5. regularizers


def test_decay_shrink_clamp():
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.3, 1.5, 0.6]]).view(1, 1, 2, 3).repeat(1, 3, 1, 1)
    grad = torch.ones_like(x)
    y = x.clone()
    Decay(0.25)(y, grad, 0)
    assert torch.equal(y, x * 0.75)
    y = x.clone()
    Shrink(0.5)(y, grad, 0)
    want = torch.tensor([[-1.5, 0.0, 0.0, 0.0, 1.0, 0.1]]).view(1, 1, 2, 3).repeat(1, 3, 1, 1)
    torch.testing.assert_close(y, want)
    y = x.clone()
    Shrink(0.0)(y, grad, 0)
    assert torch.equal(y, x)
    low = torch.tensor([-1.0, -0.4, 0.2]).view(1, 3, 1, 1)
    high = torch.tensor([1.0, 0.4, 0.5]).view(1, 3, 1, 1)
    y = x.clone()
    Clamp(low, high)(y, grad, 0)
    want = torch.stack(
        [
            torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0, 0.6]),
            torch.tensor([-0.4, -0.4, 0.0, 0.3, 0.4, 0.4]),
            torch.tensor([0.2, 0.2, 0.2, 0.3, 0.5, 0.5]),
        ]
    ).view(1, 3, 2, 3)
    assert torch.equal(y, want)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.7])
def test_blur_equals_scipy_gaussian(sigma):
    """torch's 'reflect' padding is scipy's 'mirror' (d c b | a b c d); kernel radius ceil(3 sigma)."""
    x = seeded_randn((2, 3, 14, 17), seed=40)
    y = x.clone()
    Blur(sigma)(y, torch.zeros_like(x), 0)
    r = math.ceil(3 * sigma)
    want = scipy.ndimage.gaussian_filter(
        x.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", radius=(0, 0, r, r)
    )
    assert_rel_close(y, torch.from_numpy(want), rtol=1e-12)
    interior = scipy.ndimage.gaussian_filter(
        x.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect", radius=(0, 0, r, r)
    )
    assert_rel_close(y[:, :, r:-r, r:-r], torch.from_numpy(interior[:, :, r:-r, r:-r]), rtol=1e-12)


@pytest.mark.parametrize("sigma, size", [(1.0, (3, 3)), (2.0, (4, 5))])
def test_blur_small_image_keeps_a_normalised_kernel(sigma, size):
    """An image smaller than the kernel (crops of visualize_units can be 3 px): the blur is still
    a normalised Gaussian, so a constant image stays constant, and it equals scipy's 'mirror'."""
    ones = torch.ones((1, 3, *size), dtype=torch.float64)
    y = ones.clone()
    Blur(sigma)(y, torch.zeros_like(y), 0)
    torch.testing.assert_close(y, ones, rtol=1e-12, atol=1e-12)
    x = seeded_randn((1, 3, *size), seed=41)
    y = x.clone()
    Blur(sigma)(y, torch.zeros_like(y), 0)
    r = math.ceil(3 * sigma)
    want = scipy.ndimage.gaussian_filter(
        x.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", radius=(0, 0, r, r)
    )
    assert_rel_close(y, torch.from_numpy(want), rtol=1e-12)


def test_blur_every():
    x = seeded_randn((1, 3, 8, 8), seed=42)
    blurred = torch.from_numpy(
        scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1, 1), mode="mirror", radius=(0, 0, 3, 3))
    )
    blur = Blur(1.0, every=3)
    for step in range(7):
        y = x.clone()
        blur(y, torch.zeros_like(y), step)
        if step in (2, 5):
            assert_rel_close(y, blurred, rtol=1e-12)
        else:
            assert torch.equal(y, x)


# two images [2, 3, 2, 2]; pixels in the order (0,0) (0,1) (1,0) (1,1)
CLIP_X = torch.tensor(
    [
        [[[3.0, 1.0], [0.0, 2.0]], [[4.0, 0.0], [0.0, -2.0]], [[0.0, 0.0], [-2.0, 1.0]]],  # norms 5, 1, 2, 3
        [[[0.0, 0.3], [0.0, 0.6]], [[0.0, 0.4], [0.2, 0.0]], [[0.1, 0.0], [0.0, 0.8]]],  # norms .1, .5, .2, 1
    ]
)


@pytest.mark.parametrize(
    "percentile, zeroed",
    [
        # image 0 norms sorted 1 2 3 5, image 1: .1 .2 .5 1 (linear interpolation between ranks)
        (50, [[(0, 1), (1, 0)], [(0, 0), (1, 0)]]),  # cut 2.5 and .35
        (25, [[(0, 1)], [(0, 0)]]),  # cut 1.75 and .175
        (0, [[], []]),  # cut = the smallest: nothing is below it
        (100, [[(0, 1), (1, 0), (1, 1)], [(0, 0), (0, 1), (1, 0)]]),  # all but the largest
    ],
)
def test_clip_norm_hand_computed(percentile, zeroed):
    y = CLIP_X.clone()
    ClipNorm(percentile)(y, torch.zeros_like(y), 0)
    want = CLIP_X.clone()
    for b, pixels in enumerate(zeroed):
        for i, j in pixels:
            want[b, :, i, j] = 0
    assert torch.equal(y, want)


def test_clip_contribution_hand_computed():
    """|sum over colours of x * grad|: image 0 (x = 1): 6, 3, 0.5, 1 -> cut 2 at the 50th
    percentile; image 1 (x = -1): 1, 4, 2, 8 -> cut 3."""
    x = torch.stack([torch.ones(3, 2, 2), -torch.ones(3, 2, 2)])
    grad = torch.zeros(2, 3, 2, 2)
    grad[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0])
    grad[0, :, 0, 1] = torch.tensor([-1.0, -1.0, -1.0])
    grad[0, :, 1, 0] = torch.tensor([0.5, 0.0, 0.0])
    grad[0, :, 1, 1] = torch.tensor([2.0, -1.0, 0.0])
    grad[1, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    grad[1, :, 0, 1] = torch.tensor([2.0, 2.0, 0.0])
    grad[1, :, 1, 0] = torch.tensor([0.0, 0.0, 2.0])
    grad[1, :, 1, 1] = torch.tensor([3.0, 3.0, 2.0])
    g0 = grad.clone()
    y = x.clone()
    ClipContribution(50)(y, grad, 0)
    want = x.clone()
    want[0, :, 1, 0] = want[0, :, 1, 1] = 0
    want[1, :, 0, 0] = want[1, :, 1, 0] = 0
    assert torch.equal(y, want)
    assert torch.equal(grad, g0)


def test_clip_norm_percentile_is_exact_in_float64():
    """float64 pixels whose norms differ by 1e-12: the 50th percentile of [1, 1 + 1e-12] is
    1 + 5e-13, so the first pixel is below it and must be zeroed."""
    x = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    x[0, 0, 0, 0] = 1.0
    x[0, 0, 0, 1] = 1.0 + 1e-12
    y = x.clone()
    ClipNorm(50)(y, torch.zeros_like(y), 0)
    want = x.clone()
    want[0, :, 0, 0] = 0
    assert torch.equal(y, want)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: Decay(1.0), "decay"),
        (lambda: Decay(-0.1), "decay"),
        (lambda: Decay("0.1"), "decay"),
        (lambda: Shrink(-1.0), "shrink"),
        (lambda: Shrink(float("inf")), "shrink"),
        (lambda: Blur(0.0), "blur sigma"),
        (lambda: Blur(-1.0), "blur sigma"),
        (lambda: Blur(1.0, every=0), "blur every"),
        (lambda: Blur(1.0, every=1.5), "blur every"),
        (lambda: ClipNorm(101), "clip norm percentile"),
        (lambda: ClipNorm(-1), "clip norm percentile"),
        (lambda: ClipContribution(100.5), "clip contribution percentile"),
        (lambda: ClipContribution(float("nan")), "clip contribution percentile"),
    ],
)
def test_regularizer_bad_values(make, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        make()


# ----------------------------------------------------------------------------- 6. engine.optimize


ENGINE_SIZE = 47  # AlexNet stage 1: 11x11 conv -> 5x5 map; stage 2: 2x2
N_VALUES = 3 * ENGINE_SIZE * ENGINE_SIZE


def channel_by_hand(model, stage, channels):
    """The objective channel(stage, channels) written out on the torchvision model."""

    def fn(x):
        a = stage_ref(model, stage, x)
        return torch.stack([a[b, c].mean() for b, c in enumerate(channels)])

    return fn


def start(batch, seed, size=ENGINE_SIZE):
    return seeded_randn((batch, 3, size, size), seed=seed) * 0.3


def test_normalized_step(alexnet_float64):
    """One step, no regularisers: each image moves by lr sqrt(3 H W) in L2 along its own
    normalised gradient; step_values=100 makes that lr sqrt(100)."""
    model = alexnet_float64
    x0 = start(2, 50)
    g, v = grad_of(channel_by_hand(model, 1, [5, 9]), x0)
    assert float(per_image_norm(g).min()) > 0
    for step_values, length in ((None, 0.05 * math.sqrt(N_VALUES)), (100, 0.5)):
        res = optimize(model, channel(1, [5, 9]), PixelImage(x0), steps=1, lr=0.05, step_values=step_values)
        moved = res.images - x0
        torch.testing.assert_close(
            per_image_norm(moved).flatten(), torch.full((2,), length, dtype=torch.float64), rtol=1e-12, atol=0
        )
        assert_rel_close(res.images, x0 + length * g / per_image_norm(g))
        torch.testing.assert_close(res.history, v.float()[None])
        assert res.stopped == "steps" and res.settings["steps_run"] == 1


def test_mean_abs_step(alexnet_float64):
    """Deep Dream's step: x + lr g / mean |g| (per image)."""
    model = alexnet_float64
    x0 = start(2, 51)
    fn = channel_by_hand(model, 1, [5, 9])
    g, _ = grad_of(fn, x0)
    x1 = x0 + 0.02 * g / g.abs().flatten(1).mean(dim=1).view(2, 1, 1, 1)
    g1, _ = grad_of(fn, x1)
    x2 = x1 + 0.02 * g1 / g1.abs().flatten(1).mean(dim=1).view(2, 1, 1, 1)
    res = optimize(model, channel(1, [5, 9]), PixelImage(x0), steps=2, lr=0.02, step_rule="mean_abs")
    assert_rel_close(res.images, x2)
    # the mean absolute change of a value in the first step is lr
    one = optimize(model, channel(1, [5, 9]), PixelImage(x0), steps=1, lr=0.02, step_rule="mean_abs")
    torch.testing.assert_close(
        (one.images - x0).abs().flatten(1).mean(dim=1),
        torch.full((2,), 0.02, dtype=torch.float64),
        rtol=1e-12,
        atol=0,
    )


def adam_by_hand(fn, x0, lrs, betas=(0.9, 0.999), eps=1e-8):
    """Adam written out, ascending: m, v moments with bias correction."""
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    for t, lr in enumerate(lrs, start=1):
        g, _ = grad_of(fn, x)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        x = x + lr * m_hat / (v_hat.sqrt() + eps)
    return x


def test_adam_step(alexnet_float64):
    model = alexnet_float64
    x0 = start(2, 52)
    fn = channel_by_hand(model, 1, [5, 9])
    res = optimize(model, channel(1, [5, 9]), PixelImage(x0), steps=3, lr=0.01, step_rule="adam")
    assert_rel_close(res.images, adam_by_hand(fn, x0, [0.01] * 3))
    # and torch.optim.Adam(maximize=True) run by hand
    p = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=0.01, maximize=True)
    for _ in range(3):
        p.grad, _ = grad_of(fn, p.detach())
        opt.step()
    assert_rel_close(res.images, p.detach())


def test_sgd_momentum_two_steps(alexnet_float64):
    """v1 = d1, x1 = x0 + L v1; v2 = m v1 + d2, x2 = x1 + L v2 (d: normalised gradient)."""
    model = alexnet_float64
    x0 = start(2, 53)
    fn = channel_by_hand(model, 1, [5, 9])
    length = 0.03 * math.sqrt(N_VALUES)
    g0, _ = grad_of(fn, x0)
    v1 = g0 / per_image_norm(g0)
    x1 = x0 + length * v1
    g1, _ = grad_of(fn, x1)
    v2 = 0.6 * v1 + g1 / per_image_norm(g1)
    x2 = x1 + length * v2
    res = optimize(model, channel(1, [5, 9]), PixelImage(x0), steps=2, lr=0.03, step_rule="sgd", momentum=0.6)
    assert_rel_close(res.images, x2)
    assert res.settings["momentum"] == 0.6
    plain = optimize(model, channel(1, [5, 9]), PixelImage(x0), steps=2, lr=0.03)
    assert float((plain.images - x2).abs().max()) > 1e-3  # the momentum term shows


def test_cosine_schedule(alexnet_float64):
    """Factors 0.5 (1 + cos(pi k / steps)): for 4 steps 1, (2 + sqrt 2) / 4, 1/2, (2 - sqrt 2) / 4."""
    want = [1.0, (2 + math.sqrt(2)) / 4, 0.5, (2 - math.sqrt(2)) / 4]
    for k, f in enumerate(want):
        assert abs(schedule_factor("cosine", k, 4) - f) < 1e-15
        assert schedule_factor("constant", k, 4) == 1.0
    model = alexnet_float64
    x0 = start(2, 54)
    rec = Recorder()
    optimize(
        model, channel(1, [5, 9]), PixelImage(x0), steps=4, lr=0.01, schedule="cosine", regularizers=[rec]
    )
    before = [x0] + rec.images[:-1]
    for k, f in enumerate(want):
        moved = per_image_norm(rec.images[k] - before[k]).flatten()
        torch.testing.assert_close(
            moved, torch.full((2,), 0.01 * math.sqrt(N_VALUES) * f, dtype=torch.float64), rtol=1e-12, atol=0
        )
    # Adam with the cosine factor on its learning rate
    res = optimize(
        model, channel(1, [5, 9]), PixelImage(x0), steps=4, lr=0.01, step_rule="adam", schedule="cosine"
    )
    assert_rel_close(
        res.images, adam_by_hand(channel_by_hand(model, 1, [5, 9]), x0, [0.01 * f for f in want])
    )


def test_regularizers_run_after_the_step_in_order_with_its_gradient(alexnet_float64):
    """x1 = clamp(shrink(decay(x0 + L d))) and the regularisers see the step's gradient."""
    model = alexnet_float64
    x0 = start(2, 55)
    g, _ = grad_of(channel_by_hand(model, 1, [5, 9]), x0)
    length = 0.02 * math.sqrt(N_VALUES)
    low, high = (
        -0.5 * torch.ones(1, 3, 1, 1, dtype=torch.float64),
        0.4 * torch.ones(1, 3, 1, 1, dtype=torch.float64),
    )
    want = (x0 + length * g / per_image_norm(g)) * 0.9
    want = torch.sign(want) * (want.abs() - 0.05).clamp_min(0)
    want = want.clamp(-0.5, 0.4)
    rec = Recorder()
    res = optimize(
        model,
        channel(1, [5, 9]),
        PixelImage(x0),
        steps=1,
        lr=0.02,
        regularizers=[Decay(0.1), Shrink(0.05), Clamp(low, high), rec],
    )
    assert_rel_close(res.images, want)
    assert_rel_close(rec.grads[0], g)
    assert rec.steps == [0]


def _objective_for(channels):
    return channel(2, channels) - 0.01 * total_variation() - 1e-4 * l2_norm()


def _run_channels(model, channels, param_of, rule, transforms, regs, steps=3):
    return optimize(
        model,
        _objective_for(channels),
        param_of(),
        steps=steps,
        lr=0.02,
        step_rule=rule,
        transforms=transforms,
        regularizers=regs,
        seed=7,
    )


BATCH_CASES = [(rule, "pixels") for rule in STEP_RULES] + [("normalized", "fourier")]


@pytest.mark.parametrize("rule, kind", BATCH_CASES, ids=[f"{r}-{k}" for r, k in BATCH_CASES])
def test_batch_equals_separate_runs(alexnet_float64, rule, kind):
    """K independent objectives optimised together = K runs alone (jitter, random scale and
    padding shared through the seed; decay, blur, clip per image)."""
    model = alexnet_float64
    prep = preprocessing(model)
    channels = [3, 9, 12]  # alive (some positive unit) in every start image
    transforms = [Pad(2, mode="reflect"), Jitter(3), RandomScale((0.9, 1.0, 1.1))]
    if kind == "pixels":
        starts = start(3, 56)
        regs = [Decay(0.05), Blur(0.7, every=2), ClipNorm(5)]
        make = lambda rows: PixelImage(starts[rows])  # noqa: E731
    else:
        starts = seeded_randn((3, 3, ENGINE_SIZE, ENGINE_SIZE // 2 + 1, 2), seed=57) * 0.05
        regs = []
        make = lambda rows: FourierImage(starts[rows], ENGINE_SIZE, ENGINE_SIZE, prep)  # noqa: E731
    together = _run_channels(model, channels, lambda: make(slice(0, 3)), rule, transforms, regs)
    alone = [
        _run_channels(model, [c], lambda k=k: make(slice(k, k + 1)), rule, transforms, regs)
        for k, c in enumerate(channels)
    ]
    assert together.history.shape == (3, 3)
    assert_rel_close(together.images, torch.cat([a.images for a in alone]))
    torch.testing.assert_close(
        together.history, torch.cat([a.history for a in alone], dim=1), rtol=1e-6, atol=1e-7
    )
    moved = (together.images - make(slice(0, 3)).image().detach()).flatten(1).abs().max(dim=1).values
    assert float(moved.min()) > 1e-3  # every image moved


def test_same_seed_same_result_other_seed_differs(alexnet_float64):
    model = alexnet_float64
    x0 = start(2, 58)
    kwargs = dict(
        steps=3,
        lr=0.05,
        transforms=[Jitter(4), RandomScale((0.9, 1.0, 1.2))],
        regularizers=[Blur(1.0, every=2)],
    )
    a = optimize(model, channel(1, [5, 9]), PixelImage(x0), seed=3, **kwargs)
    b = optimize(model, channel(1, [5, 9]), PixelImage(x0), seed=3, **kwargs)
    c = optimize(model, channel(1, [5, 9]), PixelImage(x0), seed=4, **kwargs)
    assert torch.equal(a.images, b.images) and torch.equal(a.history, b.history)
    assert not torch.equal(a.images, c.images)
    assert a.settings["seed"] == 3 and c.settings["seed"] == 4


def test_history_is_the_objective_at_each_steps_image(alexnet_float64):
    model = alexnet_float64
    x0 = start(2, 59)
    rec = Recorder()
    objective = channel(1, [5, 9]) - 0.1 * total_variation()
    res = optimize(model, objective, PixelImage(x0), steps=3, lr=0.05, step_rule="sgd", regularizers=[rec])
    assert res.history.shape == (3, 2)
    fn = channel_by_hand(model, 1, [5, 9])
    for k, image in enumerate([x0] + rec.images[:-1]):
        with torch.no_grad():
            want = fn(image) - 0.1 * _tv_by_hand(image, 2.0)
        torch.testing.assert_close(res.history[k], want.float(), rtol=1e-6, atol=1e-8)
    assert torch.equal(res.images, rec.images[-1])
    assert len(set(res.history[:, 0].tolist())) == 3  # the steps change the values


def test_stop_ends_early_with_the_image_it_saw(alexnet_float64):
    model = alexnet_float64
    x0 = start(2, 60)
    seen = []

    def stop(values):
        seen.append(values.clone())
        return len(seen) == 3

    kwargs = dict(lr=0.05, transforms=[Jitter(2)], seed=5)
    res = optimize(model, channel(1, [5, 9]), PixelImage(x0), steps=10, stop=stop, **kwargs)
    assert res.stopped == "stop" and res.history.shape == (3, 2) and res.settings["steps_run"] == 3
    two = optimize(model, channel(1, [5, 9]), PixelImage(x0), steps=2, **kwargs)
    assert torch.equal(res.images, two.images)  # 2 steps taken, the third image is returned as seen
    torch.testing.assert_close(res.history, torch.stack([s.float() for s in seen]))
    first = optimize(model, channel(1, [5, 9]), PixelImage(x0), steps=10, stop=lambda v: True, **kwargs)
    assert torch.equal(first.images, x0) and first.history.shape == (1, 2)
    never = optimize(model, channel(1, [5, 9]), PixelImage(x0), steps=3, stop=lambda v: False, **kwargs)
    assert never.stopped == "steps" and never.history.shape == (3, 2)


def test_stop_sees_the_values_of_the_returned_image(alexnet_float64):
    """Without transforms, the values stop() saw are the objective at the returned image."""
    model = alexnet_float64
    x0 = start(1, 61)
    res = optimize(model, channel(1, 5), PixelImage(x0), steps=10, lr=0.05, stop=lambda v: bool(v[0] > 0.05))
    assert res.stopped == "stop"
    with torch.no_grad():
        want = channel_by_hand(model, 1, [5])(res.images)
    torch.testing.assert_close(res.history[-1], want.float())
    assert float(res.history[-1, 0]) > 0.05 and bool((res.history[:-1, 0] <= 0.05).all())


def test_fourier_step_moves_the_spectrum(alexnet_float64):
    """The engine steps the parameter (the spectrum), by lr sqrt(values per image of the
    spectrum), along the normalised gradient through the lucid formula."""
    model = alexnet_float64
    prep = preprocessing(model)
    s0 = seeded_randn((2, 3, ENGINE_SIZE, ENGINE_SIZE // 2 + 1, 2), seed=62) * 0.05
    param = FourierImage(s0, ENGINE_SIZE, ENGINE_SIZE, prep)
    res = optimize(model, channel(1, [5, 7]), param, steps=1, lr=0.01)
    fn = channel_by_hand(model, 1, [5, 7])
    ref = FourierImage(
        s0, ENGINE_SIZE, ENGINE_SIZE, prep
    )  # its image(): test_fourier_image_equals_lucid_formula
    (g,) = torch.autograd.grad(fn(ref.image()).sum(), ref.tensor)
    assert float(per_image_norm(g).min()) > 0
    s1 = s0 + 0.01 * math.sqrt(s0[0].numel()) * g / per_image_norm(g)
    torch.testing.assert_close(param.tensor.detach(), s1, rtol=1e-10, atol=1e-12)
    want = torch.from_numpy(lucid_fourier_image(s1.numpy(), ENGINE_SIZE, ENGINE_SIZE, prep))
    assert_rel_close(res.images, want, rtol=1e-9)
    assert res.settings["param"] == "fourier"


def test_optimize_leaves_the_model_alone(alexnet_float64):
    model = alexnet_float64
    state = model_state(model)
    training = [m.training for m in model.modules()]
    optimize(model, channel(2, [3]) + class_logit(1), PixelImage(start(1, 66, size=63)), steps=1, lr=0.05)
    assert_model_untouched(model, state, training)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(lr="0.1"), "lr"),
        (dict(step_rule="rmsprop"), "step_rule"),
        (dict(schedule="linear"), "schedule"),
        (dict(objective=channel(6, 0)), "stage"),
        (dict(objective=channel(2, 0) + unit(0, 0, 0, 0)), "stage"),
        (dict(objective=energy("fc8")), "stage"),
        (dict(param="fourier", regularizers=[Decay(0.1)]), "regularizers"),
        (dict(transforms=[Jitter(1), "jitter"]), "transforms"),
    ],
)
def test_optimize_bad_inputs(alexnet_float64, kwargs, name):
    model = alexnet_float64
    kwargs = dict(kwargs)
    objective = kwargs.pop("objective", channel(2, 0))
    if kwargs.pop("param", "pixels") == "fourier":
        param = FourierImage(torch.zeros(1, 3, 63, 32, 2, dtype=torch.float64), 63, 63, preprocessing(model))
    else:
        param = PixelImage(start(1, 64))
    before = param.tensor.detach().clone()
    args = dict(steps=2, lr=0.05)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{name}"):
        optimize(model, objective, param, **args)
    assert torch.equal(param.tensor.detach(), before)  # nothing ran


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(step_values=0), "step_values"),
        (dict(step_values=-3), "step_values"),
        (dict(step_rule="sgd", momentum=float("nan")), "momentum"),
        (dict(step_rule="sgd", momentum="0.9"), "momentum"),
    ],
    ids=["step_values-0", "step_values-negative", "momentum-nan", "momentum-str"],
)
def test_optimize_checks_step_values_and_momentum(alexnet_float64, kwargs, name):
    """step_values and momentum are checked like the other arguments (ValueError naming them)."""
    with pytest.raises(ValueError, match=f"^{name}"):
        optimize(alexnet_float64, channel(2, 0), PixelImage(start(1, 65)), steps=2, lr=0.05, **kwargs)


# ----------------------------------------------------------------------------- 7. checks


def test_check_channels(models64):
    vgg, alex = models64["vgg16"], models64["alexnet"]
    assert check_channels(vgg, 1, 63) == [63] and check_channels(alex, 2, (0, 191)) == [0, 191]
    assert check_channels(alex, 3, range(2)) == [0, 1] and check_channels(vgg, 5, np.int64(511)) == [511]
    for model, stage, bad, accepted in [
        (vgg, 1, 64, "0..63"),
        (vgg, 5, 512, "0..511"),
        (alex, 2, 192, "0..191"),
        (alex, 3, -1, "0..383"),
        (alex, 4, 256, "0..255"),
        (alex, 5, 256, "0..255"),
    ]:
        with pytest.raises(ValueError, match=f"^channels: .*stage {stage}'s channels {accepted}"):
            check_channels(model, stage, bad)
        with pytest.raises(ValueError, match=f"^channels: .*stage {stage}'s channels {accepted}"):
            check_channels(model, stage, [0, bad])
    for bad in ([], "3", None, 2.0, True):
        with pytest.raises(
            ValueError,
            match=r"^channels: expected an int or a non-empty list of ints in 0\.\.63 "
            r"\(stage 1's channels\)",
        ):
            check_channels(vgg, 1, bad)
    for bad in (True, 1.0, "1"):
        with pytest.raises(ValueError, match=r"^channels: .* outside stage 1's channels 0\.\.63"):
            check_channels(alex, 1, [0, bad])


def test_check_classes(alexnet_float64):
    assert check_classes(alexnet_float64, 999) == [999] and check_classes(alexnet_float64, [0, 5]) == [0, 5]
    for bad in (1000, -1, [3, 1000], [1.0], [False]):
        with pytest.raises(ValueError, match=r"^classes: .* outside the model's classes 0\.\.999"):
            check_classes(alexnet_float64, bad)
    for bad in ([], "cat", None):
        with pytest.raises(ValueError, match=r"^classes: expected .* in 0\.\.999"):
            check_classes(alexnet_float64, bad)


def _smallest_side(layers):
    """The smallest square side for which `layers` run (the model itself as the reference)."""
    seq = nn.Sequential(*layers)
    for side in range(1, 200):
        try:
            with torch.no_grad():
                seq(torch.zeros(1, 3, side, side, dtype=torch.float64))
            return side
        except RuntimeError:
            continue
    raise AssertionError("no side up to 200")


def test_check_size(models64):
    for name, model in models64.items():
        whole = {"vgg16": 32, "alexnet": 63}[name]
        assert check_size(model, whole) == whole
        with pytest.raises(
            ValueError,
            match=rf"^size: expected an int >= {whole} .*{type(model).__name__}"
            rf" accepts up to the whole model\), got {whole - 1}",
        ):
            check_size(model, whole - 1)
        with pytest.raises(ValueError, match=f"^size: expected an int >= {whole}"):
            check_size(model, float(whole))
        smallest = _smallest_side(list(model.features)[: stages(model)[0].index + 1])
        assert check_size(model, smallest, stage=1) == smallest
        with pytest.raises(
            ValueError, match=rf"^image side: expected an int >= {smallest} .*up to stage 1\)"
        ):
            check_size(model, smallest - 1, stage=1, name="image side")
    assert (
        _smallest_side(list(models64["alexnet"].features)[:3]) == 15
    )  # (15 + 4 - 11) // 4 + 1 = 3 -> pool -> 1


def test_check_param_and_regularizer_preset():
    assert check_param("pixels") == "pixels" and check_param("fourier") == "fourier"
    for bad in ("pixel", "fft", None):
        with pytest.raises(ValueError, match="^param: expected one of pixels, fourier"):
            check_param(bad)
    assert regularizer_preset("none") == [] and regularizer_preset(None) == []
    assert regularizer_preset("yosinski") == [Decay(1e-4), Blur(1.0, every=4)]
    regs = [Decay(0.1), Recorder()]
    assert regularizer_preset(regs) == regs and regularizer_preset(tuple(regs)) == regs
    for bad in ("Yosinski", [Decay(0.1), 3], 5):
        with pytest.raises(ValueError, match="^regularizers: expected 'none' or 'yosinski' or a list"):
            regularizer_preset(bad)
