"""Class models and fooling images on a real classifier (EfficientNet-Lite0 with its ImageNet
weights), measured with the model's own forward (`model(x)`, softmax), and their step rules and
options against plain autograd on small random-weight models.

- class_model: each class model is top-1 for its class on Lite0; classes together (a group)
  put every class of the group in the top 5 and raise each logit; a group's one step is the
  L2-normalised step on the gradient of the soft minimum of its logits; a group of one class
  is that class alone; bad groups are ValueErrors naming `classes`.
- fooling_image: from the cat photo, three classes reach p >= 0.99 on Lite0 with every colour
  value changed by at most 8/255 (colours computed here from Lite0's own formula, x = (255 c -
  127) / 128), the report's numbers are those of the image; one sign step is the plain autograd
  step; the budget is per channel in colour units (VGG's std differs per channel); the
  L2-normalised rule stays available; bad step options are ValueErrors naming the argument.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import photo_input

import deconvnet
from deconvnet.optim.params import valid_range

LITE0_CLASSES = [1, 281, 945]  # goldfish, tabby cat, bell pepper
LITE0_SIZE, LITE0_STEPS = 128, 40  # top-1 for 12 of 12 random classes at 128 px / 40 steps
TOGETHER = [(281, 1), (945, 968)]  # a cat-fish, a pepper-cup
TOGETHER_STEPS = 100  # the default; at 30 steps one class of a pair can still be outside the top 5
FOOL_TARGETS = [368, 1, 500]  # gibbon, goldfish, lionfish
BUDGET = 8 / 255
COLOUR_ATOL = 1e-6


@pytest.fixture(scope="module")
def lite0():
    return deconvnet.load_model("efficientnet_lite0", weights="imagenet").eval()


@pytest.fixture(scope="module")
def resnet18():
    return deconvnet.load_model("resnet18", weights="random", seed=0).eval()


def softmax(model, x):
    with torch.no_grad():
        return torch.softmax(model(x).double(), dim=1)


def lite0_colours(x):
    """Lite0's normalised values -> [0, 1] colours, from its own preprocessing (255 c - 127) / 128."""
    return (128 * x.double() + 127) / 255


# ----------------------------------------------------------------------------- class_model


def test_class_models_are_top1_on_lite0(lite0):
    images = deconvnet.class_model(lite0, LITE0_CLASSES, size=LITE0_SIZE, steps=LITE0_STEPS)
    assert images.shape == (3, 3, LITE0_SIZE, LITE0_SIZE)
    p = softmax(lite0, images)
    assert p.argmax(dim=1).tolist() == LITE0_CLASSES, p.max(dim=1)
    start = softmax(lite0, torch.zeros(1, 3, LITE0_SIZE, LITE0_SIZE))[0, LITE0_CLASSES]
    assert (p[torch.arange(3), LITE0_CLASSES] > start).all()


def test_classes_together_on_lite0(lite0):
    size = LITE0_SIZE
    result = deconvnet.class_model(lite0, TOGETHER, size=size, steps=TOGETHER_STEPS, details=True)
    assert result.images.shape == (2, 3, size, size)
    assert result.settings["classes"] == [list(g) for g in TOGETHER]
    with torch.no_grad():
        logits = lite0(result.images)
        start = lite0(torch.zeros(1, 3, size, size))[0]
    for image, group in enumerate(TOGETHER):
        top5 = logits[image].topk(5).indices.tolist()
        assert all(c in top5 for c in group), (group, top5)
        assert (logits[image, list(group)] > start[list(group)] + 5).all()


def test_a_group_steps_on_its_soft_minimum(lite0):
    """One step, no regulariser: the L2-normalised step (length lr sqrt(3 H W)) along the
    gradient of -log(exp(-S_a) + exp(-S_b)) at the zero start, computed here with autograd."""
    size, lr, group = 64, 0.05, [3, 7]
    x0 = torch.zeros(1, 3, size, size, requires_grad=True)
    s = lite0(x0)[0, group]
    value = -torch.logsumexp(-s, dim=0)
    (g,) = torch.autograd.grad(value, x0)
    value, s = value.detach(), s.detach()
    want = (lr * math.sqrt(3 * size * size) * g / g.norm()).detach()
    result = deconvnet.class_model(
        lite0, [tuple(group)], size=size, steps=1, lr=lr, regularizer="none", details=True
    )
    assert result.settings["start"] == ["zeros"]
    torch.testing.assert_close(result.images, want, rtol=1e-4, atol=1e-6)
    assert float(result.history[0, 0]) == pytest.approx(float(value), rel=1e-5)
    assert float(value) < float(s.min()) <= float(value) + math.log(2)


def test_a_group_of_one_is_that_class(resnet18):
    kw = dict(size=64, steps=3, weight=0.05, blur_sigma=1.0)
    alone = deconvnet.class_model(resnet18, [5, 7], details=True, **kw)
    grouped = deconvnet.class_model(resnet18, [(5,), [7]], details=True, **kw)
    assert torch.equal(alone.images, grouped.images)
    assert alone.settings == grouped.settings and alone.settings["classes"] == [5, 7]


def test_groups_and_classes_in_one_batch_are_independent(resnet18):
    kw = dict(size=64, steps=3)
    together = deconvnet.class_model(resnet18, [4, (2, 9)], batch_size=2, **kw)
    apart = torch.cat(
        [deconvnet.class_model(resnet18, 4, **kw), deconvnet.class_model(resnet18, [[2, 9]], **kw)]
    )
    torch.testing.assert_close(together, apart, rtol=1e-4, atol=1e-5)


BAD_CLASSES = [
    ([], r"^classes: expected a class int"),
    ([[]], r"^classes: expected a class int .*got the item \[\]"),
    ([(1, 1)], r"^classes: each class once within a group"),
    ([(1, 1000)], r"^classes: 1000 is outside the model's classes 0\.\.999"),
    ([(1, (2, 3))], r"^classes: \(2, 3\) is outside the model's classes"),
    ([1, "cat"], r"^classes: expected a class int .*got the item 'cat'"),
    ([True], r"^classes: expected a class int .*got the item True"),
]


@pytest.mark.parametrize("classes, message", BAD_CLASSES)
def test_bad_classes_are_named(resnet18, classes, message):
    with pytest.raises(ValueError, match=message):
        deconvnet.class_model(resnet18, classes, size=64, steps=1)


# ----------------------------------------------------------------------------- fooling_image


@pytest.fixture(scope="module")
def cat224(lite0):
    return deconvnet.load_image("cat", lite0)  # [1, 3, 224, 224], Lite0's preprocessing


@pytest.mark.parametrize("target", FOOL_TARGETS)
def test_fooling_reaches_099_within_8_levels_on_lite0(lite0, cat224, target):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not reached" warning
        result = deconvnet.fooling_image(lite0, cat224, target, details=True)
    x = result.images
    p, p0 = softmax(lite0, x)[0], softmax(lite0, cat224)[0]
    assert p[target] >= 0.99 and p0[target] < 0.01 and int(p0.argmax()) != target
    change = lite0_colours(x) - lite0_colours(cat224)
    assert float(change.abs().max()) <= BUDGET + COLOUR_ATOL
    assert 0 <= float(lite0_colours(x).min()) and float(lite0_colours(x).max()) <= 1 + COLOUR_ATOL
    r = result.report
    assert r["reached"] is True and result.stopped == "stop" and r["max_change"] == BUDGET
    assert r["probability_after"] == pytest.approx(float(p[target]), abs=1e-5)
    assert r["probability_before"] == pytest.approx(float(p0[target]), abs=1e-5)
    assert r["predicted_after"] == int(p.argmax()) == target
    assert r["predicted_before"] == int(p0.argmax())
    assert r["linf_colour"] == pytest.approx(float(change.abs().max()), abs=1e-6)
    # the report works in the model's float32: x - x0 loses ~1e-7 of |x| ~ 1 per value
    assert r["l2_colour"] == pytest.approx(float(change.norm()), rel=1e-3)
    assert r["linf"] == pytest.approx(float((x - cat224).abs().max()), abs=1e-6)
    # sign steps of 1/255: after k steps no value has moved more than k/255
    assert r["linf_colour"] <= min(r["steps_taken"], 8) / 255 + COLOUR_ATOL
    assert result.settings["step_rule"] == "sign" and result.settings["lr"] == pytest.approx(1 / 255)


def test_one_sign_step_is_the_autograd_step(resnet18):
    """steps=1: x + (1/255) / std_c * sign(grad of log softmax(target)), in valid colours."""
    image = photo_input("cat", resnet18, 64)
    prep = deconvnet.preprocessing(resnet18)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    x0 = image.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.log_softmax(resnet18(x0), dim=1)[0, 500], x0)
    colours = (image * std + mean + g.sign() / 255).clamp(0, 1)
    want = (colours - mean) / std
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = deconvnet.fooling_image(resnet18, image, 500, steps=1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_the_budget_is_per_channel_in_colour_units(resnet18):
    """ImageNet's std differs per channel: the largest change of each channel is 2/255 in
    colour units (a different amount in normalised units per channel)."""
    image = photo_input("cat", resnet18, 64)
    std = torch.tensor(deconvnet.preprocessing(resnet18).std).view(1, 3, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = deconvnet.fooling_image(resnet18, image, 500, steps=6, max_change=2 / 255, details=True)
    delta = result.images - image
    per_channel = (delta * std).abs().amax(dim=(0, 2, 3))
    torch.testing.assert_close(per_channel, torch.full((3,), 2 / 255), rtol=0, atol=COLOUR_ATOL)
    normalised = delta.abs().amax(dim=(0, 2, 3))
    torch.testing.assert_close(normalised, 2 / 255 / std.flatten(), rtol=0, atol=1e-5)
    assert result.report["linf_colour"] == pytest.approx(float(per_channel.max()), abs=1e-7)
    low, high = valid_range(deconvnet.preprocessing(resnet18), image.dtype, image.device)
    assert bool(((result.images >= low - 1e-6) & (result.images <= high + 1e-6)).all())


def test_the_normalized_rule_stays_available(resnet18):
    """step='normalized', max_change=None: one L2-normalised step then valid colours, as before;
    with a budget the change stays within it."""
    image = photo_input("cat", resnet18, 64)
    prep = deconvnet.preprocessing(resnet18)
    low, high = valid_range(prep, image.dtype, image.device)
    x0 = image.clamp(low, high).requires_grad_(True)
    (g,) = torch.autograd.grad(torch.log_softmax(resnet18(x0), dim=1)[0, 500], x0)
    lr = 0.05
    want = (x0 + lr * math.sqrt(x0.numel()) * g / g.norm()).clamp(low, high).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = deconvnet.fooling_image(
            resnet18, image, 500, steps=1, lr=lr, step="normalized", max_change=None
        )
        bounded = deconvnet.fooling_image(
            resnet18, image, 500, steps=4, lr=lr, step="normalized", max_change=3 / 255, details=True
        )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    assert float(((bounded.images - image) * std).abs().max()) <= 3 / 255 + COLOUR_ATOL
    assert float(((got - image) * std).abs().max()) > 3 / 255  # the step itself is larger
    assert bounded.settings["step_rule"] == "normalized"


BAD_FOOLING = [
    ({"step": "fgsm"}, r"^step: expected one of sign, normalized"),
    ({"lr": 0}, r"^lr: expected a finite number > 0 or None"),
    ({"lr": float("nan")}, r"^lr: expected a finite number"),
    ({"max_change": 0}, r"^max_change: expected None \(no limit\) or a colour change in \(0, 1\]"),
    ({"max_change": 8}, r"^max_change: expected None"),
    ({"max_change": "8/255"}, r"^max_change: expected a finite number"),
]


@pytest.mark.parametrize("options, message", BAD_FOOLING)
def test_bad_step_options_are_named(resnet18, options, message):
    image = F.interpolate(torch.zeros(1, 3, 8, 8), size=(64, 64))
    with pytest.raises(ValueError, match=message):
        deconvnet.fooling_image(resnet18, image, 1, **options)
