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

Preprocessing is the weights' own eval transform (torchvision's ImageClassification): resize the
shorter side to `resize_size` (bilinear, antialiased), center crop `crop_size`, scale to [0, 1],
normalise by mean/std.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.transforms import InterpolationMode

from deconvnet.models import Preprocessing, preprocessing

ImageSource = Union[str, os.PathLike, Image.Image]
PreprocessingSource = Union[nn.Module, str, WeightsEnum, Preprocessing]


def _skimage_data():
    import skimage.data

    return skimage.data


def _gallery_photo(name: str) -> np.ndarray:
    """A photo of the sample gallery's registry (`deconvnet.datasets.PHOTO_SOURCES`), as an array."""
    from deconvnet.datasets import PHOTO_SOURCES

    return np.asarray(PHOTO_SOURCES[name].load())


# Photographs and test images bundled inside the scikit-image and matplotlib wheels (no download; checked offline).
SAMPLES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": lambda: _skimage_data().astronaut(),
    "brick": lambda: _skimage_data().brick(),
    "camera": lambda: _skimage_data().camera(),
    "cat": lambda: _skimage_data().chelsea(),
    "chelsea": lambda: _skimage_data().chelsea(),  # the gallery's name for "cat"
    "cell": lambda: _skimage_data().cell(),
    "checkerboard": lambda: _skimage_data().checkerboard(),
    "clock": lambda: _skimage_data().clock(),
    "coffee": lambda: _skimage_data().coffee(),
    "coins": lambda: _skimage_data().coins(),
    "colorwheel": lambda: _skimage_data().colorwheel(),
    "grass": lambda: _skimage_data().grass(),
    "grace_hopper": lambda: _gallery_photo("grace_hopper"),  # matplotlib's sample data
    "gravel": lambda: _skimage_data().gravel(),
    "horse": lambda: _skimage_data().horse(),
    "hubble_deep_field": lambda: _skimage_data().hubble_deep_field(),
    "immunohistochemistry": lambda: _skimage_data().immunohistochemistry(),
    "logo": lambda: _skimage_data().logo(),
    "microaneurysms": lambda: _skimage_data().microaneurysms(),
    "moon": lambda: _skimage_data().moon(),
    "motorcycle": lambda: _skimage_data().stereo_motorcycle()[0],
    "page": lambda: _skimage_data().page(),
    "retina": lambda: _skimage_data().retina(),
    "rocket": lambda: _skimage_data().rocket(),
    "text": lambda: _skimage_data().text(),
}


def sample_names() -> list[str]:
    """Names of the bundled sample images, sorted."""
    return sorted(SAMPLES)


def pil_from_sample(name: str) -> Image.Image:
    """Bundled sample image `name` as an RGB PIL image (greyscale / binary / RGBA made RGB)."""
    if not isinstance(name, str) or name not in SAMPLES:
        raise ValueError(f"sample name: expected one of {sample_names()}, got {name!r}")
    array = np.asarray(SAMPLES[name]())
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise ValueError(f"sample {name!r}: unexpected dtype {array.dtype} (expected uint8 or bool)")
    return to_rgb(Image.fromarray(array))


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as RGB: EXIF orientation applied, alpha composited over white (see module doc)."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"image: expected a PIL.Image.Image, got {type(image).__name__}")
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        scale = 255.0 if mode == "F" else 255.0 / 65535.0
        levels = np.clip(np.round(np.asarray(image, dtype=np.float64) * scale), 0, 255)
        return Image.fromarray(levels.astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ValueError(f"image: cannot convert PIL mode {mode!r} to RGB ({error})") from error


def open_image(source: ImageSource) -> Image.Image:
    """An RGB PIL image from a path, a sample name, or a PIL image (EXIF orientation applied)."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "image: expected a file path, a PIL image, or a sample name "
            f"({', '.join(sample_names())}), got {type(source).__name__}"
        )
    path = Path(source).expanduser()
    if isinstance(source, str) and not path.exists() and source in SAMPLES:
        return pil_from_sample(source)
    if not path.exists():
        raise FileNotFoundError(
            f"image: {path} does not exist and is not a bundled sample name "
            f"(samples: {', '.join(sample_names())})"
        )
    if path.is_dir():
        raise ValueError(f"image: {path} is a directory; expected an image file")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"image: {path} is not a readable image file ({error})") from error


def describe_image(image: object) -> dict[str, Any]:
    """Where the image comes from: {'source', 'kind': 'file'|'sample', 'path'}."""
    if isinstance(image, (str, Path)) and Path(image).expanduser().is_file():
        return {"source": str(image), "kind": "file", "path": str(Path(image).expanduser().resolve())}
    return {"source": image, "kind": "sample", "path": None}


def resolve_preprocessing(model_or_weights: PreprocessingSource) -> Preprocessing:
    """A `Preprocessing` from itself, a torchvision weights enum (e.g.
    `VGG16_Weights.IMAGENET1K_V1`), a model instance, or a model name ('vgg16', 'alexnet')."""
    if isinstance(model_or_weights, Preprocessing):
        return model_or_weights
    if isinstance(model_or_weights, (nn.Module, str, WeightsEnum)):
        return preprocessing(model_or_weights)
    raise ValueError(
        "model_or_weights: expected a model, a model name, a torchvision weights enum or a "
        "Preprocessing, "
        f"got {type(model_or_weights).__name__}"
    )


def preprocess(image: Image.Image, model_or_weights: PreprocessingSource) -> torch.Tensor:
    """Eval preprocessing of one PIL image -> float32 `[3, crop, crop]` (normalised)."""
    prep = resolve_preprocessing(model_or_weights)
    rgb = to_rgb(image)
    resized = TF.resize(
        rgb, [prep.resize_size], interpolation=InterpolationMode(prep.interpolation),
        antialias=prep.antialias,
    )
    cropped = TF.center_crop(resized, [prep.crop_size])
    scaled = TF.convert_image_dtype(TF.pil_to_tensor(cropped), torch.float32)
    return TF.normalize(scaled, mean=list(prep.mean), std=list(prep.std))


def load_image(
    source: ImageSource,
    model_or_weights: PreprocessingSource,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Read `source` and preprocess it for the model -> float32 `[1, 3, crop, crop]` on `device`."""
    batch = preprocess(open_image(source), model_or_weights).unsqueeze(0)
    return batch if device is None else batch.to(device)


def _check_image_tensor(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor [3, H, W] or [B, 3, H, W], got {x!r:.60}")
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"{name}: expected shape [3, H, W] or [B, 3, H, W], got {list(x.shape)}")
    if x.is_meta:
        raise ValueError(f"{name}: the tensor is on the meta device (a shape, no values); give "
                         "real pixel values")


def denormalize(x: torch.Tensor, model_or_weights: PreprocessingSource) -> torch.Tensor:
    """Undo normalisation: `x * std + mean`, clamped to [0, 1].

    x: `[B, 3, H, W]` or `[3, H, W]`; the result has the same shape.
    """
    _check_image_tensor(x, "x")
    prep = resolve_preprocessing(model_or_weights)
    mean = torch.tensor(prep.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0.0, 1.0)


def to_pil(x: torch.Tensor) -> Image.Image:
    """A `[3, H, W]` or `[1, 3, H, W]` tensor with values in [0, 1] as an 8-bit RGB PIL image."""
    _check_image_tensor(x, "x")
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"x: expected a single image [1, 3, H, W], got batch of {x.shape[0]}")
        x = x[0]
    x = x.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("x: contains NaN or inf; expected values in [0, 1]")
    low, high = float(x.min()), float(x.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(
            f"x: expected values in [0, 1] (use denormalize() or display.to_display() first), "
            f"got range [{low:.4g}, {high:.4g}]"
        )
    levels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(levels))
