"""Supported models, their weights, and the preprocessing / class names that come with the weights.

One registry entry per model (`MODELS`): the torchvision constructor, the ImageNet weights enum, and
what tells its instances apart (class, number of convolutions in `model.features`). Adding another
VGG variant is one `ModelSpec(...)` line. Supported: vgg16, alexnet, vgg11, vgg13, vgg19; the
batch-normalised VGGs (vgg*_bn) are rejected everywhere: BatchNorm2d has no deconvnet mirror.

`load_model(name, weights=...)` always says what it used: the returned model carries a frozen
`WeightsInfo` as `model.weights_info` (also `weights_info(model)`). Weights:

- ``"imagenet"``: torchvision's own loader (`weights_enum.get_state_dict`), which reads the torch hub
  cache, ``torch.hub.get_dir()/checkpoints/<file name from the enum's url>`` (``$TORCH_HOME/hub/...``).
  If the file is not cached, a download is attempted only after a 3-second TCP probe of the
  download host succeeds, so an offline machine fails at once instead of hanging in `urlopen`
  (which torch calls without a timeout); during a download every socket operation times out after
  30 s (`socket.setdefaulttimeout`, restored afterwards). ``DECONVNET_OFFLINE=1`` skips the
  network entirely. Failure raises `WeightsUnavailableError` naming the file and where to put it.
- ``"hed"`` (VGG16 only): learned VGG16 convolutions available offline, those of the HED edge
  detector (ImageNet VGG16 fine-tuned on BSDS500; `deconvnet.data.hed`), converted to torchvision's
  input convention; the classifier stays seeded-random and `weights_info` says so.
- ``"random"``: seeded initialisation (`torch.manual_seed(seed)` inside `torch.random.fork_rng`, so
  the caller's global CPU RNG state is left untouched).
- a path to a ``.pth``/``.pt`` checkpoint: a state_dict, or a dict holding one under ``"state_dict"``
  or ``"model"`` (a ``"module."`` prefix from DataParallel is stripped), loaded with
  ``weights_only=True``; a mismatch with the architecture is a ValueError listing offending keys.
- ``"auto"`` (default): ``"imagenet"`` if the cached file is present (never touches the network),
  otherwise ``"random"`` with a UserWarning and a log warning saying so.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models import WeightsEnum

from deconvnet.data.hed import HED_FETCH_COMMAND, HED_SOURCE, hed_features_state

logger = logging.getLogger(__name__)

WEIGHTS_CHOICES = ("auto", "imagenet", "hed", "random")
CHECKPOINT_SUFFIXES = (".pth", ".pt")
OFFLINE_ENV = "DECONVNET_OFFLINE"
PROBE_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 30.0
_MAX_LISTED = 5


@dataclass(frozen=True)
class ModelSpec:
    """One supported model: how to build it, its ImageNet weights, and how to recognise an instance.

    `conv_layers` is the number of `nn.Conv2d` in `model.features` (VGG11/13/16/19: 8/10/13/16).
    """

    name: str
    constructor: Callable[..., nn.Module]
    weights: WeightsEnum
    model_class: type
    conv_layers: int


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("vgg16", tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1, tvm.VGG, 13),
        ModelSpec("alexnet", tvm.alexnet, tvm.AlexNet_Weights.IMAGENET1K_V1, tvm.AlexNet, 5),
        # the rest of the VGG family: five conv blocks, each closed by a max pool (the stages)
        ModelSpec("vgg11", tvm.vgg11, tvm.VGG11_Weights.IMAGENET1K_V1, tvm.VGG, 8),
        ModelSpec("vgg13", tvm.vgg13, tvm.VGG13_Weights.IMAGENET1K_V1, tvm.VGG, 10),
        ModelSpec("vgg19", tvm.vgg19, tvm.VGG19_Weights.IMAGENET1K_V1, tvm.VGG, 16),
    )
}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but are neither cached nor downloadable."""


@dataclass(frozen=True)
class WeightsInfo:
    """What weights a model carries.

    `weights` is 'imagenet', 'hed', 'random', 'checkpoint' or 'unknown'; `source` the cache path,
    the HED file, 'seed N', the checkpoint path, or 'caller-supplied model'; `pretrained` (the whole
    network trained on ImageNet) is False for 'hed' and None when unknown.
    """

    model: str
    weights: str
    source: str
    pretrained: bool | None
    description: str

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class Preprocessing:
    """Eval preprocessing of a weights enum: resize shorter side, center crop, normalise.

    `mean`/`std` are per RGB channel for inputs scaled to [0, 1].
    """

    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    antialias: bool = True

    def __post_init__(self) -> None:
        for field in ("resize_size", "crop_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Preprocessing.{field}: expected a positive int, got {value!r}")
        for field in ("mean", "std"):
            value = getattr(self, field)
            if len(value) != 3:
                raise ValueError(f"Preprocessing.{field}: expected 3 values (R, G, B), got {value!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Preprocessing.std: expected values > 0, got {self.std!r}")


# ----------------------------------------------------------------------------------------- registry


def supported_models() -> list[str]:
    """Names accepted by `load_model`."""
    return list(MODELS)


def model_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; ValueError listing the supported names otherwise."""
    if not isinstance(name, str) or name not in MODELS:
        hint = (
            " (batch-normalised VGGs have no deconvnet mirror)"
            if isinstance(name, str) and name.endswith("_bn")
            else ""
        )
        raise ValueError(f"model name: expected one of {supported_models()}, got {name!r}{hint}")
    return MODELS[name]


def model_name(model: nn.Module) -> str:
    """Registry name ('vgg16', 'alexnet') of a model instance, from its class and conv count."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    features = getattr(model, "features", None)
    if isinstance(features, nn.Module):
        convs = sum(isinstance(m, nn.Conv2d) for m in features.modules())
        if any(isinstance(m, nn.BatchNorm2d) for m in features.modules()):
            raise ValueError(
                f"model: {type(model).__name__} with BatchNorm2d in model.features "
                f"(a vgg*_bn) is not supported: batch normalisation has no deconvnet "
                f"mirror; supported models: {supported_models()}"
            )
        for spec in MODELS.values():
            if type(model) is spec.model_class and convs == spec.conv_layers:
                return spec.name
    raise ValueError(
        f"model: {type(model).__name__} is not one of the supported models {supported_models()} "
        "(recognised by class and number of conv layers in model.features)"
    )


def display_name(name: str) -> str:
    """How figures write a registry name: 'VGG16', 'VGG19', 'AlexNet'."""
    return {"alexnet": "AlexNet"}.get(name, name.upper())


def _spec_of(model_or_name: nn.Module | str) -> ModelSpec:
    if isinstance(model_or_name, str):
        return model_spec(model_or_name)
    return model_spec(model_name(model_or_name))


def preprocessing(model_or_name: nn.Module | str | WeightsEnum) -> Preprocessing:
    """Eval preprocessing read from a torchvision weights enum, or from the ImageNet weights enum
    of a model / model name (works offline)."""
    weights = model_or_name if isinstance(model_or_name, WeightsEnum) else _spec_of(model_or_name).weights
    transform = weights.transforms()
    return Preprocessing(
        resize_size=int(transform.resize_size[0]),
        crop_size=int(transform.crop_size[0]),
        mean=tuple(float(v) for v in transform.mean),
        std=tuple(float(v) for v in transform.std),
        interpolation=transform.interpolation.value,
        antialias=bool(transform.antialias),
    )


def class_names(model_or_name: nn.Module | str) -> list[str]:
    """The 1000 ImageNet class names, in output order, from the weights enum's meta."""
    return list(_spec_of(model_or_name).weights.meta["categories"])


def imagenet_cache_path(name: str) -> Path:
    """Where torchvision looks for `name`'s ImageNet weights.

    torch.hub.get_dir()/checkpoints/<file name from the weights url>; $TORCH_HOME moves it.
    """
    url = model_spec(name).weights.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


# ------------------------------------------------------------------------------------------ loading


def load_model(
    name: str, weights: str | os.PathLike = "auto", seed: int = 0, device: str | torch.device = "cpu"
) -> nn.Module:
    """Build model `name` with the requested weights, on `device`, in eval mode.

    `weights`: 'auto' | 'imagenet' | 'hed' (vgg16) | 'random' | path to a .pth/.pt checkpoint (see module doc).
    The returned model has `model.weights_info` (a `WeightsInfo`).

    Raises ValueError (unknown name / weights / seed / device, a checkpoint or cached file that
    cannot be read or does not fit), FileNotFoundError (missing checkpoint path),
    WeightsUnavailableError ('imagenet' neither cached nor downloadable),
    `deconvnet.data.hed.HedWeightsError` (a FileNotFoundError: 'hed' file missing or not the expected one).
    """
    spec = model_spec(name)
    check_model_seed(seed)
    target = _parse_device(device)
    kind, checkpoint = parse_weights(weights)
    if kind == "hed" and spec.name != "vgg16":
        raise ValueError(
            f"weights: 'hed' holds VGG16 convolutions only, not {spec.name}; use "
            "model vgg16, or weights 'random', 'imagenet' or a checkpoint path"
        )

    if kind == "auto":
        kind = auto_weights(spec, seed)
    model, info = build_model(spec, kind, checkpoint, seed)
    model = model.to(target).eval()
    model.weights_info = info
    logger.info("loaded %s: %s", spec.name, info.description)
    return model


def auto_weights(spec: ModelSpec, seed: int) -> str:
    """What weights='auto' means for `spec`: 'imagenet' when its file is in the torch hub cache,
    else 'random' (with a warning and a log line saying so, and what to do instead)."""
    cached = imagenet_cache_path(spec.name)
    if cached.is_file():
        return "imagenet"
    message = (
        f"deconvnet: no pretrained ImageNet weights for {spec.name} in the torch hub cache "
        f"({cached}); using RANDOM, UNTRAINED weights (seed {seed}). Visualisations will not "
        f"show learned features. To use the pretrained weights, put {cached.name} "
        f"(from {spec.weights.url}) at {cached}, or pass weights='imagenet' with network "
        "access, or weights=<path to a checkpoint>."
        + (
            " Offline learned alternative: weights='hed' (VGG16 convolutions from HED, "
            f"`{HED_FETCH_COMMAND}`)."
            if spec.name == "vgg16"
            else ""
        )
    )
    warnings.warn(message, UserWarning, stacklevel=3)  # at load_model's caller
    logger.warning(message)
    return "random"


def build_model(
    spec: ModelSpec, kind: str, checkpoint: Path | None, seed: int
) -> tuple[nn.Module, WeightsInfo]:
    """The model (before it moves to its device) with weights of `kind` ('random', 'hed', 'imagenet' or 'checkpoint'
    at `checkpoint`) and the `WeightsInfo` describing them."""
    if kind == "random":
        model = _random_model(spec, seed)
        info = WeightsInfo(
            spec.name, "random", f"seed {seed}", False, f"random initialisation (seed {seed}): NOT pretrained"
        )
    elif kind == "hed":
        model = _hed_model(spec, seed)
        info = WeightsInfo(spec.name, "hed", HED_SOURCE, False, f"{HED_DESCRIPTION} (seed {seed})")
    elif kind == "imagenet":
        state, cached = _imagenet_state_dict(spec)
        model = _model_from_state_dict(spec, state, str(cached))
        info = WeightsInfo(
            spec.name,
            "imagenet",
            str(cached),
            True,
            f"torchvision {spec.weights!r} pretrained on ImageNet, from {cached}",
        )
    else:
        assert checkpoint is not None
        model = _model_from_state_dict(spec, _read_checkpoint(checkpoint), str(checkpoint))
        info = WeightsInfo(
            spec.name,
            "checkpoint",
            str(checkpoint),
            None,
            f"weights from checkpoint {checkpoint} (whether pretrained is unknown)",
        )
    return model, info


HED_DESCRIPTION = (
    "VGG16 convolutions from HED (BSDS500 edge detection, fine-tuned from ImageNet VGG16); classifier random"
)


def weights_label(info: WeightsInfo | Mapping[str, Any]) -> str:
    """One line naming exactly what weights a model carries, for figure titles and manifests.

    Accepts a `WeightsInfo` or its `as_dict()`. Never says just "pretrained": ImageNet weights name
    the torchvision enum, HED weights say what they are, random ones say NOT pretrained.
    """
    data = info.as_dict() if isinstance(info, WeightsInfo) else dict(info)
    kind = data.get("weights")
    if kind == "imagenet":
        return "ImageNet-pretrained weights (torchvision IMAGENET1K_V1)"
    if kind == "hed":
        return HED_DESCRIPTION
    if kind == "random":
        return f"random weights — NOT pretrained ({data.get('source')})"
    if kind == "checkpoint":
        return f"weights from checkpoint {Path(str(data.get('source'))).name} (pretraining unknown)"
    return f"weights: {data.get('description')}"


def weights_info(model: nn.Module) -> WeightsInfo:
    """The `WeightsInfo` attached by `load_model`, or an 'unknown' one for any other model."""
    info = getattr(model, "weights_info", None)
    if isinstance(info, WeightsInfo):
        return info
    try:
        name = model_name(model)
    except ValueError:
        name = type(model).__name__
    return WeightsInfo(
        name,
        "unknown",
        "caller-supplied model",
        None,
        "unknown (caller-supplied model): weights not loaded by deconvnet.load_model",
    )


def check_model_seed(seed: object) -> None:
    """ValueError unless `seed` is an int in [0, 2**64) (a model's random initialisation)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")


def _parse_device(device: str | torch.device) -> torch.device:
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device: expected e.g. 'cpu', 'cuda', 'cuda:0', got {device!r}") from error
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available; use 'cpu'")
    return target


def parse_weights(weights: object) -> tuple[str, Path | None]:
    """('auto'|'imagenet'|'hed'|'random', None) or ('checkpoint', path); ValueError for a bad
    name, FileNotFoundError for a checkpoint path that does not exist."""
    accepted = f"one of {list(WEIGHTS_CHOICES)} or a path to a .pth/.pt checkpoint"
    if isinstance(weights, str) and weights in WEIGHTS_CHOICES:
        return weights, None
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights: expected {accepted}, got {weights!r}")
    path = Path(weights).expanduser()
    if path.is_dir():
        raise ValueError(f"weights: {path} is a directory; expected {accepted}")
    if path.is_file():
        return "checkpoint", path
    looks_like_path = (
        isinstance(weights, os.PathLike) or path.suffix in CHECKPOINT_SUFFIXES or os.sep in str(weights)
    )
    if looks_like_path:
        raise FileNotFoundError(f"weights: checkpoint file {path} does not exist")
    raise ValueError(f"weights: expected {accepted}, got {weights!r}")


def _random_model(spec: ModelSpec, seed: int) -> nn.Module:
    """Seeded torchvision initialisation; the caller's CPU RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.constructor(weights=None)


def _hed_model(spec: ModelSpec, seed: int) -> nn.Module:
    """Seeded random VGG16 whose `features` carry the converted HED convolutions."""
    prep = preprocessing(spec.name)
    state = hed_features_state(prep.mean, prep.std)
    model = _random_model(spec, seed)
    model.features.load_state_dict(state, strict=True)
    return model


def _offline_requested() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to the url's host opens within `timeout` seconds."""
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _imagenet_state_dict(spec: ModelSpec) -> tuple[dict[str, torch.Tensor], Path]:
    """torchvision's loader on the cached file; a download only if uncached and the host answers."""
    cached = imagenet_cache_path(spec.name)
    url = spec.weights.url

    def unavailable(reason: str) -> WeightsUnavailableError:
        return WeightsUnavailableError(
            f"pretrained ImageNet weights for {spec.name} are not available: {reason}. "
            f"Download {url} on a machine with network access and place the file {cached.name} "
            f"at {cached} (the torch hub cache, torch.hub.get_dir()/checkpoints; set TORCH_HOME to "
            "move it), or pass weights=<path to a .pth checkpoint>, or weights='random'."
        )

    if not cached.is_file():
        if _offline_requested():
            raise unavailable(f"{cached} is not cached and {OFFLINE_ENV} is set")
        host = urlparse(url).hostname
        if not _host_reachable(url):
            raise unavailable(f"{cached} is not cached and {host} cannot be reached (offline?)")
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torch's urlopen has no timeout of its own
    try:
        state = spec.weights.get_state_dict(
            progress=True, check_hash=True, map_location="cpu", weights_only=True
        )
    except (OSError, RuntimeError) as error:  # URLError is an OSError; hash mismatch a RuntimeError
        if not cached.is_file():
            raise unavailable(f"download failed ({type(error).__name__}: {error})") from error
        raise ValueError(
            f"cached weights file {cached} for {spec.name} cannot be read "
            f"({type(error).__name__}: {error}); delete it and fetch {url} again"
        ) from error
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return _unwrap_state_dict(state, cached), cached


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (UnpicklingError, RuntimeError, EOFError)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"weights: checkpoint {path} cannot be read with torch.load(weights_only=True) "
            f"({type(error).__name__}: {first_line})"
        ) from error
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a raw state_dict or {'state_dict': ...} / {'model': ...}."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        found = list(obj)[:_MAX_LISTED] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"weights: checkpoint {path} holds no state_dict: expected a mapping of parameter names "
            f"to tensors, or a dict with it under 'state_dict' or 'model'; found {found}"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _model_from_state_dict(spec: ModelSpec, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Build on the meta device (no wasted initialisation) and adopt the checkpoint's tensors."""
    with torch.device("meta"):
        model = spec.constructor(weights=None)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                shown = ", ".join(items[:_MAX_LISTED]) + (", ..." if len(items) > _MAX_LISTED else "")
                problems.append(f"{len(items)} {label} ({shown})")
        raise ValueError(
            f"weights: checkpoint {source} does not fit model '{spec.name}': " + "; ".join(problems)
        )
    converted = {
        k: (v.to(expected[k].dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()
    }
    model.load_state_dict(converted, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"internal: {spec.name} tensors not loaded from {source}: {leftover}")
    return model
