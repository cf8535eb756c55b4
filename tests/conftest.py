"""Shared fixtures: seeded random-initialised torchvision models (no pretrained weights here)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import alexnet, vgg16

import deconvnet


def _seeded(builder, seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return builder().eval()


@pytest.fixture(scope="session")
def vgg_float64():
    """Random-init VGG16 in float64, so mirror and autograd can be compared to ~1e-12."""
    return _seeded(vgg16).double()


@pytest.fixture(scope="session")
def alexnet_float64():
    return _seeded(alexnet).double()


@pytest.fixture(scope="session")
def vgg_float32():
    return _seeded(vgg16)


@pytest.fixture(scope="session")
def alexnet_float32():
    return _seeded(alexnet)


@pytest.fixture(params=["vgg16", "alexnet"])
def model64(request, vgg_float64, alexnet_float64):
    return vgg_float64 if request.param == "vgg16" else alexnet_float64


@pytest.fixture(scope="session")
def alexnet_random():
    """AlexNet as the experiments load it: `load_model` with random weights (seed 0)."""
    return deconvnet.load_model("alexnet", weights="random", seed=0)
