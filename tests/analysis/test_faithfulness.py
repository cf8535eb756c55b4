"""Deletion and insertion (Petsiuk et al. 2018): against a loop over one image and one step at a
time (its own ordering, masking, blur and trapezoid rule), hand-computed curves, endpoints, batch
size, determinism, the caller's model and bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import seeded_randn
from scipy.ndimage import gaussian_filter
from torch import nn

from deconvnet.analysis.faithfulness import Faithfulness, deletion, insertion
from deconvnet.core.targets import Unit

SIDE = 32
METRICS = {"deletion": deletion, "insertion": insertion}


def _cnn(seed: int = 0) -> nn.Module:
    """A small float64 CNN classifier (10 classes) with batch norm and dropout, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(16, 10),
        ).double()
        with torch.no_grad():
            model[1].running_mean.normal_(0, 0.1)
            model[1].running_var.uniform_(0.5, 2.0)
            model[-1].weight.mul_(20.0)  # probabilities that move when pixels change
    return model.eval()


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return _cnn()


def rise_blur(images: torch.Tensor) -> torch.Tensor:
    """Reference blur: RISE's gkern(11, 5) (scipy's gaussian_filter of a unit impulse) as one
    [3, 3, 11, 11] convolution, after replicate padding."""
    impulse = np.zeros((11, 11))
    impulse[5, 5] = 1.0
    kern = np.zeros((3, 3, 11, 11))
    for c in range(3):
        kern[c, c] = gaussian_filter(impulse, 5)
    padded = F.pad(images, (5, 5, 5, 5), mode="replicate")
    return F.conv2d(padded, torch.from_numpy(kern).to(images.dtype))


def reference(model, images, maps, classes, image_of, steps, base, mode):
    """One (map, step) at a time: numpy's stable argsort of -map (channels summed), the first
    round(i * HW / steps) pixels changed, model(x[None]), softmax; numpy's trapezoid rule."""
    height, width = images.shape[-2:]
    hw = height * width
    counts = [int(np.floor(i * hw / steps + 0.5)) for i in range(steps + 1)]
    fractions = np.array(counts) / hw
    curves = []
    for r in range(maps.shape[0]):
        m = maps[r].numpy()
        m = m.sum(axis=0) if m.ndim == 3 else m
        order = np.argsort(-m.reshape(-1), kind="stable")
        image, baseline = images[image_of[r]], base[image_of[r]]
        row = []
        for n in counts:
            changed = np.zeros(hw, dtype=bool)
            changed[order[:n]] = True
            changed = torch.from_numpy(changed.reshape(height, width))
            x = (image if mode == "deletion" else baseline).clone()
            x[:, changed] = (baseline if mode == "deletion" else image)[:, changed]
            with torch.no_grad():
                row.append(float(model(x[None]).softmax(dim=1)[0, classes[r]]))
        curves.append(row)
    curves = np.array(curves)
    return curves, np.trapezoid(curves, fractions, axis=1), fractions


def _baseline(kind: str, images: torch.Tensor):
    """(the argument, the baseline images the reference uses)."""
    if kind == "blur":
        return "blur", rise_blur(images)
    if kind == "zero":
        return "zero", torch.zeros_like(images)
    colour = seeded_randn((1, 3, 1, 1), 7)
    return colour, colour.expand_as(images).clone()


def _check(result: Faithfulness, want) -> None:
    curves, auc, fractions = want
    np.testing.assert_allclose(result.curve.numpy(), curves, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.auc.numpy(), auc, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.fractions.numpy(), fractions, rtol=0, atol=1e-15)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("kind", ["blur", "zero", "tensor"])
def test_two_images_match_one_step_at_a_time(cnn, mode, kind) -> None:
    images = seeded_randn((2, 3, SIDE, SIDE), 1)
    maps = seeded_randn((2, SIDE, SIDE), 2)
    argument, base = _baseline(kind, images)
    result = METRICS[mode](cnn, images, maps, steps=12, baseline=argument, batch_size=5)
    with torch.no_grad():
        predicted = cnn(images).argmax(dim=1)
    assert result.target.tolist() == predicted.tolist()
    _check(result, reference(cnn, images, maps, predicted.tolist(), [0, 1], 12, base, mode))


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_k_maps_of_one_image_with_channels(cnn, mode) -> None:
    images = seeded_randn((1, 3, SIDE, SIDE), 3)
    maps = seeded_randn((3, 3, SIDE, SIDE), 4)  # pixel maps: summed over colour
    argument, base = _baseline("blur", images)
    result = METRICS[mode](cnn, images, maps, target=[4, 0, 9], steps=10, baseline=argument)
    assert result.target.tolist() == [4, 0, 9]
    assert result.curve.shape == (3, 11)
    _check(result, reference(cnn, images, maps, [4, 0, 9], [0, 0, 0], 10, base, mode))


def test_alexnet_matches_one_step_at_a_time(alexnet_float64) -> None:
    images = seeded_randn((2, 3, 64, 64), 5)
    maps = seeded_randn((2, 64, 64), 6)
    result = deletion(alexnet_float64, images, maps, target=torch.tensor([3, 500]), steps=8)
    want = reference(alexnet_float64, images, maps, [3, 500], [0, 1], 8, rise_blur(images), "deletion")
    _check(result, want)


def _one_pixel_model(side: int) -> nn.Module:
    """Logit 0 = the sum over pixels of channel 0 (a 1x1 convolution, then the mean over
    side x side pixels), logit 1 = 0: p(class 0) = sigmoid(sum of channel 0)."""
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()
        model[0].weight[0, 0] = side * side
    return model.eval()


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + np.exp(-v))


def test_hand_computed_curves() -> None:
    """Four ones in channel 0 of a 4x4 image, the map = channel 0: the ones go first, one a step."""
    model = _one_pixel_model(4)
    image = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    image[0, 1:] = seeded_randn((2, 4, 4), 8)  # channels the model ignores
    for y, x in [(0, 3), (1, 1), (2, 0), (3, 2)]:
        image[0, 0, y, x] = 1.0
    maps = image[:, 0].clone()
    out = deletion(model, image, maps, target=0, steps=16, baseline="zero")
    want = [_sigmoid(max(4 - i, 0)) for i in range(17)]
    np.testing.assert_allclose(out.curve[0].numpy(), want, rtol=0, atol=1e-14)
    area = (_sigmoid(4) / 2 + _sigmoid(3) + _sigmoid(2) + _sigmoid(1) + 12 * 0.5 + 0.5 / 2) / 16
    assert abs(float(out.auc[0]) - area) < 1e-14
    back = insertion(model, image, maps, target=0, steps=16, baseline="zero")
    np.testing.assert_allclose(back.curve[0].numpy(), [_sigmoid(min(i, 4)) for i in range(17)], atol=1e-14)


def test_ties_go_in_row_major_order() -> None:
    """A constant map: pixels leave in row-major order; ones at places 1 and 11 leave at steps 2, 12."""
    model = _one_pixel_model(4)
    image = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    image[0, 0, 0, 1] = image[0, 0, 2, 3] = 1.0
    out = deletion(model, image, torch.zeros(1, 4, 4), target=0, steps=16, baseline="zero")
    want = [_sigmoid(2)] * 2 + [_sigmoid(1)] * 10 + [0.5] * 5
    np.testing.assert_allclose(out.curve[0].numpy(), want, rtol=0, atol=1e-14)


def test_step_rule_rounds_half_up() -> None:
    """10 pixels in 4 steps: 2.5, 5, 7.5 -> 3, 5, 8 pixels changed."""
    model = _one_pixel_model(2)
    images = seeded_randn((1, 3, 2, 5), 9)
    out = deletion(model, images, seeded_randn((1, 2, 5), 10), steps=4, baseline="zero")
    assert out.fractions.tolist() == [0.0, 0.3, 0.5, 0.8, 1.0]


def test_auc_of_a_constant_curve_is_the_constant() -> None:
    model = _one_pixel_model(8)
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias[0] = np.log(3.0)  # p(class 0) = 3 / (3 + 1) whatever the pixels
    images = seeded_randn((2, 3, 8, 8), 11)
    for metric in (deletion, insertion):
        out = metric(model, images, seeded_randn((2, 8, 8), 12), target=0, steps=7)
        np.testing.assert_allclose(out.curve.numpy(), 0.75, rtol=0, atol=1e-15)
        np.testing.assert_allclose(out.auc.numpy(), 0.75, rtol=0, atol=1e-15)


@pytest.mark.parametrize("kind", ["blur", "zero", "tensor"])
def test_endpoints_are_the_image_and_the_baseline(cnn, kind) -> None:
    images = seeded_randn((2, 3, SIDE, SIDE), 13)
    maps = seeded_randn((2, 3, SIDE, SIDE), 14)
    argument, base = _baseline(kind, images)
    removed = deletion(cnn, images, maps, steps=9, baseline=argument)
    added = insertion(cnn, images, maps, target=removed.target, steps=9, baseline=argument)
    rows = torch.arange(2)
    with torch.no_grad():
        on_image = cnn(images).softmax(dim=1)[rows, removed.target]
        on_base = cnn(base).softmax(dim=1)[rows, removed.target]
    for got, want in [
        (removed.curve[:, 0], on_image),
        (removed.curve[:, -1], on_base),
        (added.curve[:, 0], on_base),
        (added.curve[:, -1], on_image),
    ]:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert removed.fractions[0] == 0 and removed.fractions[-1] == 1


def test_a_constant_image_is_its_own_blur(cnn) -> None:
    images = torch.full((1, 3, SIDE, SIDE), 0.3, dtype=torch.float64)
    out = deletion(cnn, images, seeded_randn((1, SIDE, SIDE), 15), steps=5)
    torch.testing.assert_close(out.curve, out.curve[:, :1].expand(1, 6), rtol=0, atol=1e-13)


def test_batch_size_changes_only_rounding_and_runs_repeat_bytewise(cnn) -> None:
    """Batches of 1, 7 and all (map, step) inputs agree to 1e-12 (float64); a repeat, bytewise."""
    images = seeded_randn((2, 3, SIDE, SIDE), 16)
    maps = seeded_randn((2, SIDE, SIDE), 17)
    runs = [insertion(cnn, images, maps, steps=8, batch_size=size) for size in (1, 7, 1000)]
    for other in runs[1:]:
        torch.testing.assert_close(other.curve, runs[0].curve, rtol=0, atol=1e-12)
        torch.testing.assert_close(other.auc, runs[0].auc, rtol=0, atol=1e-12)
    again = insertion(cnn, images, maps, steps=8, batch_size=7)
    assert again.curve.numpy().tobytes() == runs[1].curve.numpy().tobytes()
    assert again.auc.numpy().tobytes() == runs[1].auc.numpy().tobytes()


def test_the_callers_model_is_left_as_it_was() -> None:
    """A model in training mode: the curves are those of its eval function, and afterwards every
    parameter, buffer (batch norm's statistics), training flag and hook list is as before."""
    model = _cnn(1).train()
    model[4].eval()  # a mixed state, restored module by module
    state = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    images = seeded_randn((2, 3, SIDE, SIDE), 18)
    maps = seeded_randn((2, SIDE, SIDE), 19)
    out = deletion(model, images, maps, steps=6)
    want = deletion(copy.deepcopy(model).eval(), images, maps, steps=6)
    torch.testing.assert_close(out.curve, want.curve, rtol=0, atol=0)
    assert [m.training for m in model.modules()] == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


BAD = [
    ({"maps": "2d"}, "maps"),
    ({"maps": "small"}, "maps"),
    ({"maps": "count"}, "maps"),
    ({"maps": "nan"}, "maps"),
    ({"steps": 0}, "steps"),
    ({"steps": 2 * 8 * 8}, "steps"),
    ({"steps": 4.0}, "steps"),
    ({"baseline": "x"}, "baseline"),
    ({"baseline": torch.zeros(2, 3, 5, 5)}, "baseline"),
    ({"batch_size": 0}, "batch_size"),
    ({"target": Unit(5, 0)}, "target"),
    ({"target": [0, 1]}, "target"),
    ({"target": 10}, "target"),
]


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("change, name", BAD)
def test_bad_input_names_the_argument(cnn, mode, change, name) -> None:
    images = seeded_randn((2, 3, 8, 8), 20)
    maps = {
        "2d": torch.zeros(8, 8),
        "small": torch.zeros(2, 4, 4),
        "count": torch.zeros(3, 8, 8),
        "nan": torch.full((2, 8, 8), float("nan")),
    }.get(change.get("maps"), torch.zeros(2, 8, 8))
    kwargs = {"steps": 4, "baseline": "zero", "batch_size": 4, "target": None}
    kwargs.update({k: v for k, v in change.items() if k != "maps"})
    with pytest.raises(ValueError, match=rf"^{name}: "):
        METRICS[mode](cnn, images, maps, **kwargs)
