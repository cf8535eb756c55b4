"""Images in and out: reading, RGB conversion, the weights' eval preprocessing, and its inverse.

Sources are a path, a PIL image, or the name of a sample image bundled with scikit-image
(`SAMPLES`, available offline). A string is a path if such a file exists, else a sample name, else
FileNotFoundError. Every image is made RGB the same way (`to_rgb`):

- EXIF orientation is applied first (`PIL.ImageOps.exif_transpose`);
- transparency (RGBA, LA, PA, or a palette/ L / RGB image with a transparent colour) is composited
  over WHITE, so transparent areas look like a blank page, not like black;
- 16-bit / 32-bit integer greyscale ('I;16*', 'I') is read as 0..65535 and scaled to 0..255;
  float greyscale ('F') is read as 0..1; values outside are clipped;
- everything else (L, 1, P, CMYK, YCbCr, ...) goes through `PIL.Image.convert("RGB")`.

Preprocessing is the weights' own eval transform (`deconvnet.data.models.preprocessing`; for
torchvision weights their ImageClassification transform, for efficientnet_lite0 the TensorFlow
release's (255 x - 127) / 128): resize the shorter side to `resize_size` (bilinear, antialiased),
center crop `crop_size`, scale to [0, 1], normalise by mean/std.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torchvision.models import WeightsEnum

from deconvnet.core.validation import check_device, check_finite_tensor, check_image_tensor
from deconvnet.data.datasets import eval_transform
from deconvnet.data.models import Preprocessing, preprocessing_of
from deconvnet.data.samples import SAMPLES, pil_from_sample, sample_names, to_rgb

ImageSource = Union[str, os.PathLike, Image.Image]
PreprocessingSource = Union[nn.Module, str, WeightsEnum, Preprocessing]


def open_image(source: ImageSource, name: str = "image") -> Image.Image:
    """An RGB PIL image from a path, a sample name, or a PIL image (EXIF orientation applied);
    errors name the argument `name`. An image without pixels (0 x 0) is a ValueError."""
    picture = _read_image(source, name)
    if min(picture.size) < 1:
        raise ValueError(
            f"{name}: the image has no pixels ({picture.size[0]}x{picture.size[1]}); expected at least 1x1"
        )
    return picture


def _read_image(source: ImageSource, name: str) -> Image.Image:
    """`open_image` without the size check."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"{name}: expected a file path, a PIL image, or a sample name "
            f"({', '.join(sample_names())}), got {type(source).__name__}"
        )
    path = Path(source).expanduser()
    if isinstance(source, str) and not path.exists() and source in SAMPLES:
        return pil_from_sample(source)
    if not path.exists():
        raise FileNotFoundError(
            f"{name}: {path} does not exist and is not a bundled sample name "
            f"(samples: {', '.join(sample_names())})"
        )
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a directory; expected an image file")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{name}: {path} is not a readable image file ({error})") from error


def describe_image(image: object) -> dict[str, Any]:
    """Where the image comes from: {'source', 'kind': 'file'|'sample', 'path'}."""
    if isinstance(image, (str, Path)) and Path(image).expanduser().is_file():
        return {"source": str(image), "kind": "file", "path": str(Path(image).expanduser().resolve())}
    return {"source": image, "kind": "sample", "path": None}


def resolve_preprocessing(
    model_or_weights: PreprocessingSource, name: str = "model_or_weights"
) -> Preprocessing:
    """A `Preprocessing` from itself, a torchvision weights enum (e.g.
    `VGG16_Weights.IMAGENET1K_V1`), a model instance, or a model name ('vgg16', 'resnet50',
    'efficientnet_lite0', ...: `deconvnet.data.models.supported_models()`)."""
    if isinstance(model_or_weights, Preprocessing):
        return model_or_weights
    if isinstance(model_or_weights, (nn.Module, str, WeightsEnum)):
        return preprocessing_of(model_or_weights, name)
    raise ValueError(
        f"{name}: expected a model, a model name, a torchvision weights enum or a "
        "Preprocessing, "
        f"got {type(model_or_weights).__name__}"
    )


def preprocess(image: Image.Image, model_or_weights: PreprocessingSource) -> torch.Tensor:
    """Eval preprocessing of one PIL image -> float32 `[3, crop, crop]` (normalised): `to_rgb`, then
    `deconvnet.data.datasets.eval_transform` with the weights' `Preprocessing`."""
    if not isinstance(image, Image.Image) or min(image.size) < 1:
        got = f"{image.size[0]}x{image.size[1]}" if isinstance(image, Image.Image) else type(image).__name__
        raise ValueError(f"image: expected a PIL image of at least 1x1 pixels, got {got}")
    prep = resolve_preprocessing(model_or_weights)
    transform = eval_transform(
        prep.resize_size, prep.crop_size, prep.mean, prep.std, prep.interpolation, prep.antialias
    )
    return transform(to_rgb(image))


def load_image(
    source: ImageSource, model_or_weights: PreprocessingSource, device: str | torch.device | None = None
) -> torch.Tensor:
    """Read `source` and preprocess it for the model -> float32 `[1, 3, crop, crop]` on `device`."""
    if device is not None and not isinstance(device, torch.device):
        check_device(device)
    batch = preprocess(open_image(source, "source"), model_or_weights).unsqueeze(0)
    return batch if device is None else batch.to(device)


def denormalize(x: torch.Tensor, model_or_weights: PreprocessingSource) -> torch.Tensor:
    """Undo normalisation: `x * std + mean`, clamped to [0, 1].

    x: `[B, 3, H, W]` or `[3, H, W]`; the result has the same shape.
    """
    check_image_tensor(x, "x")
    check_finite_tensor("x", x)
    prep = resolve_preprocessing(model_or_weights)
    mean = torch.tensor(prep.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0.0, 1.0)
