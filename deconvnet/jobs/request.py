"""A job's model request, checked before the model is built: the name, the weights, the seed and
the device, with the architecture on the meta device (no weights) to check channels, classes and
sizes against; and loading it with its weights logged. Used by every experiment that writes a job
folder (saliency, the optimisation family).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deconvnet.core.validation import check_device
from deconvnet.data.models import (
    Preprocessing,
    check_model_seed,
    load_model,
    model_spec,
    parse_weights,
    preprocessing,
    weights_info,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRequest:
    """A checked model request; `skeleton` is the architecture on the meta device (no weights),
    enough to check channels, classes and sizes before the model is built."""

    name: str
    weights: str
    seed: int
    device: torch.device
    skeleton: nn.Module
    dtype: torch.dtype = torch.float32

    @property
    def preprocessing(self) -> Preprocessing:
        return preprocessing(self.name)


CHAIN_MODELS = ("vgg11", "vgg13", "vgg16", "vgg19", "alexnet")
# config key `dtype`: the float type the optimisation jobs compute in. float64 makes their images
# the same on any CPU (docs/reproducibility.md#optimised-images)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_dtype(value: object, key: str = "dtype") -> torch.dtype:
    """The torch float type named by `value` ('float32' | 'float64'), or ValueError naming `key`."""
    if not isinstance(value, str) or value not in DTYPES:
        raise ValueError(f"{key}: expected one of {', '.join(DTYPES)}, got {value!r}")
    return DTYPES[value]


def check_model(
    model: object,
    weights: object,
    seed: object,
    device: object,
    chain_only: str | None = None,
    dtype: object = "float32",
) -> ModelRequest:
    """ValueError / FileNotFoundError naming the key for a bad model, weights, seed, device or
    dtype. chain_only: the name of a job that runs on VGG and AlexNet only (for now), which then
    refuses every other model before anything is loaded."""
    spec = model_spec(model)  # unknown model -> ValueError listing the supported ones
    if chain_only is not None and spec.name not in CHAIN_MODELS:
        raise ValueError(
            f"model: the {chain_only} job runs on VGG (vgg11/13/16/19) and AlexNet for now, not "
            f"{spec.name}; reconstruct, saliency, scan and fig2 take every supported model"
        )
    kind, _ = parse_weights(weights)  # bad name -> ValueError; missing checkpoint -> FileNotFound
    if kind == "hed" and spec.name != "vgg16":
        raise ValueError(f"weights: 'hed' holds VGG16 convolutions only, not {spec.name}")
    check_model_seed(seed)
    target = check_device(device)
    float_type = check_dtype(dtype)
    with torch.device("meta"):
        skeleton = spec.constructor(weights=None)
    return ModelRequest(spec.name, str(weights), int(seed), target, skeleton, float_type)


def load_logged(request: ModelRequest, shown: str = "Images") -> tuple[nn.Module, dict[str, Any]]:
    """The model on its device, and its weights record (logged: a warning for random weights,
    saying that the `shown` things will not show learned features)."""
    net = load_model(request.name, weights=request.weights, seed=request.seed, device=request.device)
    if request.dtype != torch.float32:
        net = net.to(request.dtype)
    info = weights_info(net)
    if info.weights in ("random", "unknown"):
        log.warning("weights: %s. %s will not show learned features.", info.description, shown)
    else:
        log.info("weights: %s", info.description)
    return net, info.as_dict()


def model_arguments(config: Mapping[str, Any]) -> dict[str, Any]:
    """A job config's `model` group (conf/model/*.yaml) as the run functions' model, weights, seed."""
    group = config["model"]
    return {"model": group["name"], "weights": group["weights"], "seed": group["seed"]}
