"""Shared fixtures: seeded random-initialised torchvision models (no pretrained weights here), and the
helpers several test files use (import them with `from conftest import ...`: pytest's default
"prepend" import mode puts tests/ on sys.path for this file, so this works from every sub-folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.overrides import TorchFunctionMode
from torchvision.models import alexnet, vgg16

import deconvnet
from deconvnet.data.paths import REPO_ROOT

FIXED_PROVENANCE = {"versions": {"torch": "x"}, "code_commit": "abc", "code_dirty": False}
"""A provenance record that does not depend on the machine or the checkout: tests set it through
`PROVENANCE_ENV` so that two runs write byte-identical result files."""


ATLAS_DATA = {"kind": "samples", "photos": ["chelsea", "coffee", "astronaut"], "size": 96, "limit": 10}
# a tiny atlas (random AlexNet, 10 gallery images): the atlas job's and the browser's tests
TINY_ATLAS = dict(
    model="alexnet",
    weights="random",
    data=ATLAS_DATA,
    stages=[1, 5],
    channels=3,
    k=4,
    tile_px=32,
    optimize={"size": 64, "steps": 2},
    group_size=2,
    progress=False,
)


def load_regenerate() -> Any:
    """scripts/regenerate.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("regenerate", REPO_ROOT / "scripts" / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_experiment(
    module: str, *args: str, cwd: Path = REPO_ROOT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m <module> <args...>` (e.g. module="experiments.saliency", args Hydra overrides)
    in cwd and return the finished process, its stdout and stderr captured as text (300 s limit).
    env defaults to this process's environment, offline (DECONVNET_OFFLINE=1) and with Hydra's
    short error messages (HYDRA_FULL_ERROR=0)."""
    if env is None:
        env = os.environ | {"DECONVNET_OFFLINE": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def tiny_picture(folder: Path) -> Path:
    """A small random RGB picture (40x30, seed 0) saved as `folder/tiny pic.png` (the folder is created);
    the weights' preprocessing makes it 224x224. Returns its path."""
    path = folder / "tiny pic.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def without_seconds(data: Any) -> Any:
    """A copy of JSON data without the keys named `seconds` (the only run-dependent values)."""
    if isinstance(data, dict):
        return {k: without_seconds(v) for k, v in data.items() if k != "seconds"}
    if isinstance(data, list):
        return [without_seconds(v) for v in data]
    return data


def png_pixels(path: Path) -> np.ndarray:
    """An image file's pixels as 8-bit RGB, [H, W, 3]."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def photo_input(source: str, model: Any, size: int) -> torch.Tensor:
    """A sample photo (or image file) with the weights' preprocessing, then resized to size x size
    (bilinear, antialiased): [1, 3, size, size]."""
    x = deconvnet.load_image(source, model)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def seeded_randn(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard normal values of the given shape from their own generator seeded with `seed`
    (the global RNG is left alone)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class ConvolutionRecorder(TorchFunctionMode):
    """Records, for every convolution, transposed convolution and linear layer run inside it,
    (function name, cudnn.allow_tf32, cuda.matmul.allow_tf32, input channels last) as PyTorch
    sees them at that call: which precision and memory layout a method's passes really ran in."""

    NAMES = ("conv2d", "conv_transpose2d", "linear", "matmul")

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool, bool, bool]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.NAMES and args and isinstance(args[0], torch.Tensor):
            x = args[0]
            # channels last and not also plain (as 1 x 1 maps are); broadcast tensors are neither
            nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            self.calls.append((name, *flags, nhwc))
        return func(*args, **(kwargs or {}))


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


@pytest.fixture
def models64(vgg_float64, alexnet_float64):
    """Both float64 models by name: {"vgg16": ..., "alexnet": ...}."""
    return {"vgg16": vgg_float64, "alexnet": alexnet_float64}
