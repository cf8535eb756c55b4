"""Bad input to the gradient family: each raises ValueError naming the argument."""

from __future__ import annotations

import math

import pytest
import torch

import deconvnet
from deconvnet import Channel, Unit


@pytest.fixture(scope="module")
def x1():
    """One AlexNet image: stage maps 7x7, 3x3, 3x3, 3x3, 1x1 (stage 3: 384 channels)."""
    return torch.randn(1, 3, 63, 63, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


BAD_TARGETS = {
    "class -1": -1,
    "class 1000": 1000,
    "class 1.5": 1.5,
    "class 'cat'": "cat",
    "class True": True,
    "0-d float tensor": torch.tensor(1.5),
    "empty list": [],
    "list of classes with a bad one": [3, 1000],
    "float [B] tensor": torch.tensor([1.0]),
    "2-d tensor": torch.tensor([[1]]),
    "channel out of range": Unit(3, 384),
    "negative channel": Unit(3, -1),
    "channel of Channel out of range": Channel(3, 384),
    "y outside the map": Unit(3, 0, 3, 0),
    "x outside the map": Unit(3, 0, 0, -1),
    "only y": Unit(3, 0, y=1),
    "position without channel": Unit(3, None, 1, 1),
    "float channel": Unit(3, 1.0),
    "units of mixed stages": [Unit(2, 0), Unit(3, 0)],
    "channels of mixed stages": [Channel(2, 0), Channel(4, 0)],
    "list of stage maxima": [Unit(3), Unit(3)],
    "stage maximum after a unit": [Unit(3, 5), Unit(3)],
    "stage maximum before a unit": [Unit(3), Unit(3, 5)],
    "positions for some units only": [Unit(3, 0, 1, 1), Unit(3, 1)],
    "units and channels": [Unit(3, 0), Channel(3, 0)],
    "classes and units": [1, Unit(3, 0)],
}


@pytest.mark.parametrize("target", list(BAD_TARGETS.values()), ids=list(BAD_TARGETS))
def test_bad_target(alexnet_float64, x1, target):
    with pytest.raises(ValueError, match=r"^target:"):
        deconvnet.attribute(alexnet_float64, x1, target)


def test_bad_target_for_the_batch(alexnet_float64, x1):
    x2 = torch.cat([x1, x1])
    with pytest.raises(ValueError, match=r"^target:"):
        deconvnet.attribute(alexnet_float64, x2, [1, 2])  # a list needs B == 1
    with pytest.raises(ValueError, match=r"^target:"):
        deconvnet.attribute(alexnet_float64, x2, torch.tensor([1, 2, 3]))  # [B] of wrong length
    with pytest.raises(ValueError, match=r"^target:"):
        deconvnet.attribute(alexnet_float64, x2, torch.tensor([1]))
    with pytest.raises(ValueError, match=r"^target:"):
        deconvnet.smoothgrad(alexnet_float64, x2, [Unit(3, 0), Unit(3, 1)])
    with pytest.raises(ValueError, match=r"^target:"):
        deconvnet.gradcam(alexnet_float64, x2, torch.tensor([1, -1]))


def test_unit_of_an_unknown_stage(alexnet_float64, x1):
    with pytest.raises(ValueError, match=r"^target: stage:"):
        deconvnet.attribute(alexnet_float64, x1, Unit(6, 0))


@pytest.mark.parametrize("samples", [0, -1, 2.0, True])
def test_bad_samples(alexnet_float64, x1, samples):
    with pytest.raises(ValueError, match=r"^samples:"):
        deconvnet.smoothgrad(alexnet_float64, x1, 3, samples=samples)


@pytest.mark.parametrize("noise", [-0.1, math.nan, math.inf, "0.1"])
def test_bad_noise(alexnet_float64, x1, noise):
    with pytest.raises(ValueError, match=r"^noise:"):
        deconvnet.smoothgrad(alexnet_float64, x1, 3, noise=noise)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_steps(alexnet_float64, x1, steps):
    with pytest.raises(ValueError, match=r"^steps:"):
        deconvnet.integrated_gradients(alexnet_float64, x1, 3, steps=steps)


@pytest.mark.parametrize("rule", ["gradient", "Guided", None])
def test_bad_rule(alexnet_float64, x1, rule):
    with pytest.raises(ValueError, match=r"^rule:"):
        deconvnet.attribute(alexnet_float64, x1, 3, rule=rule)
    with pytest.raises(ValueError, match=r"^rule:"):
        deconvnet.smoothgrad(alexnet_float64, x1, 3, rule=rule)


@pytest.mark.parametrize("method", ["lime", "Gradient", "smoothgrad", None])
def test_bad_method(alexnet_float64, x1, method):
    with pytest.raises(ValueError, match=r"^method:"):
        deconvnet.explain(alexnet_float64, x1, method, 3)


@pytest.mark.parametrize("stage", [0, 6, "5", 5.0, None])
def test_bad_gradcam_stage(alexnet_float64, x1, stage):
    with pytest.raises(ValueError, match=r"^stage:"):
        deconvnet.gradcam(alexnet_float64, x1, 3, stage=stage)
    with pytest.raises(ValueError, match=r"^stage:"):
        deconvnet.guided_gradcam(alexnet_float64, x1, 3, stage=stage)


@pytest.mark.parametrize("target", [Unit(2, 0), Unit(2, 0, 1, 1), Channel(2, 0), Unit(2)], ids=str)
def test_gradcam_stage_above_the_unit(alexnet_float64, x1, target):
    with pytest.raises(ValueError, match=r"^stage:"):
        deconvnet.gradcam(alexnet_float64, x1, target, stage=3)
    with pytest.raises(ValueError, match=r"^stage:"):
        deconvnet.explain(alexnet_float64, x1, "guided_gradcam", target, stage=3)


@pytest.mark.parametrize(
    "baseline",
    [
        torch.zeros(1, 3, 5, 5, dtype=torch.float64),
        torch.zeros(2, 3, 63, 63),
        torch.zeros(3, 1, 2),
        torch.zeros(1, 3, 63, 63, dtype=torch.long),
        torch.full((1,), math.nan),
        "zeros",
        [0.0, 0.0, 0.0],
    ],
    ids=["5x5", "batch 2", "3x1x2", "int tensor", "nan", "str", "list"],
)
def test_bad_baseline(alexnet_float64, x1, baseline):
    with pytest.raises(ValueError, match=r"^baseline:"):
        deconvnet.integrated_gradients(alexnet_float64, x1, 3, baseline=baseline)
