"""The sample photos bundled inside installed packages (scikit-image, matplotlib): read offline,
no download. `SAMPLES` names every picture `load_image` accepts by name; `PHOTO_SOURCES` lists the
natural photos of the sample gallery (`deconvnet.data.datasets.SampleGallery`) in gallery order.
Every image is made RGB one way (`to_rgb`, described in `deconvnet.data.images`).

A leaf: it imports nothing else of the package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps


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


def _skimage_data():
    import skimage.data

    return skimage.data


def _gallery_photo(name: str) -> np.ndarray:
    """A photo of the sample gallery's registry (`PHOTO_SOURCES` below), as an array."""
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


@dataclass(frozen=True)
class SamplePhoto:
    """A natural photo shipped inside an installed package (read offline, no download).

    package: the distribution that ships it; call: how that package reads it; load: () -> RGB PIL
    image (greyscale photos as three equal channels).
    """

    package: str
    call: str
    load: Callable[[], Image.Image]


def _rgb_from_array(array: np.ndarray, call: str) -> Image.Image:
    """uint8 [H, W] or [H, W, 3] array -> RGB PIL image (greyscale copied to all three channels)."""
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"photos: {call} gave {array.dtype} {array.shape}, expected uint8 [H, W(, 3)]")
    return Image.fromarray(array).convert("RGB")


def _skimage_photo(function: str, item: int | None = None) -> SamplePhoto:
    """A photo read by `skimage.data.<function>()` (its `item`-th array when it returns several)."""
    call = f"skimage.data.{function}()" + (f"[{item}]" if item is not None else "")

    def load() -> Image.Image:
        import skimage.data

        array = getattr(skimage.data, function)()
        return _rgb_from_array(np.asarray(array if item is None else array[item]), call)

    return SamplePhoto("scikit-image", call, load)


def _matplotlib_photo(filename: str) -> SamplePhoto:
    """A photo in matplotlib's mpl-data/sample_data, read with `matplotlib.cbook.get_sample_data`."""
    call = f"matplotlib.cbook.get_sample_data({filename!r})"

    def load() -> Image.Image:
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data(filename, asfileobj=False)) as image:
            image.load()
            return to_rgb(image)

    return SamplePhoto("matplotlib", call, load)


# Every natural photo (camera pictures of people, animals, objects, scenes, surfaces; two
# microscope/telescope pictures kept from the first gallery) that ships inside the installed
# dependencies and reads offline, in gallery order. Left out: synthetic or text images
# (checkerboard, colorwheel, logo, page, text, horse mask, binary_blobs, phantom), medical and
# microscopy images not used before (retina, cell, microaneurysms, matplotlib's MRI slice), 25 px
# faces (lfw_subset), and every skimage.data image that needs a download (eagle, brain, ...).
PHOTO_SOURCES: dict[str, SamplePhoto] = {
    "astronaut": _skimage_photo("astronaut"),
    "chelsea": _skimage_photo("chelsea"),
    "coffee": _skimage_photo("coffee"),
    "rocket": _skimage_photo("rocket"),
    "immunohistochemistry": _skimage_photo("immunohistochemistry"),
    "hubble_deep_field": _skimage_photo("hubble_deep_field"),
    "camera": _skimage_photo("camera"),
    "coins": _skimage_photo("coins"),
    "motorcycle": _skimage_photo("stereo_motorcycle", 0),
    "grace_hopper": _matplotlib_photo("grace_hopper.jpg"),
    "clock": _skimage_photo("clock"),
    "moon": _skimage_photo("moon"),
    "brick": _skimage_photo("brick"),
    "grass": _skimage_photo("grass"),
    "gravel": _skimage_photo("gravel"),
}

# The default gallery uses every registered photo, in this order.
SAMPLE_PHOTOS = tuple(PHOTO_SOURCES)
