"""Image datasets for the Fig. 2 scan: the offline sample gallery and any folder of images.

Both datasets number their images 0, 1, 2, ... in a fixed order, return `(tensor [3, S, S], id)`
from `__getitem__`, and list the ids in that order in `dataset.ids`. `batches(dataset, n)` yields the
image tensors only, in the same order, so `scan_topk(model, batches(ds, 8))` reports image numbers
that index `ds.ids`.

- `SampleGallery`: offline default (`data=samples`). The natural photos that ship inside the
  installed dependencies (`PHOTO_SOURCES`: 14 from scikit-image's `skimage.data`, Grace Hopper
  from matplotlib's sample data), each cut into 7 square views (whole centre square, 0.6 and 0.4
  crops at set positions) and their mirror images: 210 images by default; deterministic.
- `ImageFolderDataset`: a directory tree of images (the real case: ImageNet validation), read with
  the weights' eval preprocessing (resize 256, center crop 224, ImageNet mean/std).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision import transforms
from tqdm.auto import tqdm

from deconvnet.data.samples import PHOTO_SOURCES, SAMPLE_PHOTOS, SamplePhoto

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ANCHORS",
    "PHOTO_SOURCES",
    "SAMPLE_PHOTOS",
    "SAMPLE_VIEWS",
    "SamplePhoto",
    "View",
    "SkippedFile",
    "SampleGallery",
    "ImageFolderDataset",
    "ImageBatches",
    "batches",
    "eval_transform",
    "normalize_transform",
    "transform_for",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

Transform = Callable[[Image.Image], Tensor]


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return value


def normalize_transform(
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Transform:
    """PIL RGB image -> float tensor [3, H, W]: scaled to [0, 1], then (x - mean) / std per channel."""
    return transforms.Compose(
        [
            transforms.PILToTensor(),
            transforms.ConvertImageDtype(torch.float32),
            transforms.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def eval_transform(
    resize_size: int = 256,
    crop_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
    antialias: bool = True,
) -> Transform:
    """The torchvision weights' eval preprocessing: PIL RGB -> [3, crop, crop] normalised tensor.

    Shorter side resized to `resize_size` (`interpolation`, default bilinear, antialiased unless
    `antialias` is False), center crop `crop_size`, scaled to [0, 1], normalised with mean/std;
    same steps as `VGG16_Weights.IMAGENET1K_V1.transforms()`. `deconvnet.data.images.preprocess`
    applies it with the weights' own `Preprocessing`.
    """
    _check_positive_int(resize_size, "resize_size")
    _check_positive_int(crop_size, "crop_size")
    return transforms.Compose(
        [
            transforms.Resize(
                resize_size, interpolation=transforms.InterpolationMode(interpolation), antialias=antialias
            ),
            transforms.CenterCrop(crop_size),
            normalize_transform(mean, std),
        ]
    )


def transform_for(preprocessing: object) -> Transform:
    """`eval_transform` from anything with resize_size, crop_size, mean and std attributes
    (e.g. `deconvnet.data.models.preprocessing(model)`)."""
    missing = [a for a in ("resize_size", "crop_size", "mean", "std") if not hasattr(preprocessing, a)]
    if missing:
        raise ValueError(
            f"preprocessing: expected resize_size, crop_size, mean and std attributes, "
            f"{type(preprocessing).__name__} lacks {', '.join(missing)}"
        )
    return eval_transform(
        preprocessing.resize_size, preprocessing.crop_size, preprocessing.mean, preprocessing.std
    )


# ----------------------------------------------------------------------------------------------
# the sample gallery


# anchor -> (x, y) fraction of the free room left of / above the crop.
ANCHORS = {
    "topleft": (0.0, 0.0),
    "topright": (1.0, 0.0),
    "center": (0.5, 0.5),
    "bottomleft": (0.0, 1.0),
    "bottomright": (1.0, 1.0),
}


@dataclass(frozen=True)
class View:
    """A square crop of a photo: side = `scale` x the photo's shorter side, placed at `anchor`.

    anchor: one of `ANCHORS` ("center", "topleft", "topright", "bottomleft", "bottomright"): where
    the crop sits in the room the photo leaves free (along the longer side only, for scale 1).
    """

    scale: float
    anchor: str

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the crop in a width x height photo."""
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor: expected one of {', '.join(ANCHORS)}, got {self.anchor!r}")
        side = max(1, round(self.scale * min(width, height)))
        fx, fy = ANCHORS[self.anchor]
        left = round((width - side) * fx)
        top = round((height - side) * fy)
        return left, top, left + side, top + side

    @property
    def name(self) -> str:
        return f"scale{self.scale:g}_{self.anchor}"


# Per photo: the whole central square, three closer crops (0.6) down the main diagonal and three
# close-ups (0.4) down the other diagonal and at the centre; each also mirrored -> 14 images.
SAMPLE_VIEWS = (
    View(1.0, "center"),
    View(0.6, "topleft"),
    View(0.6, "center"),
    View(0.6, "bottomright"),
    View(0.4, "topright"),
    View(0.4, "center"),
    View(0.4, "bottomleft"),
)


def _load_sample_photo(name: str) -> Image.Image:
    """Registered photo `name` (a key of `PHOTO_SOURCES`) as an RGB PIL image; offline."""
    source = PHOTO_SOURCES.get(name) if isinstance(name, str) else None
    if source is None:
        raise ValueError(f"photos: unknown photo {name!r}; accepted: {', '.join(PHOTO_SOURCES)}")
    try:
        return source.load()
    except Exception as error:  # e.g. a file missing from a trimmed installation
        raise ValueError(f"photos: {name!r} ({source.call}) cannot be read offline ({error})") from error


def _check_views(views: Sequence[View]) -> tuple[View, ...]:
    if isinstance(views, View) or not views or not all(isinstance(v, View) for v in views):
        raise ValueError(f"views: expected a non-empty list of View(scale, anchor), got {views!r}")
    for view in views:
        if not 0 < view.scale <= 1 or view.anchor not in ANCHORS:
            raise ValueError(f"views: {view!r} needs 0 < scale <= 1 and anchor in {', '.join(ANCHORS)}")
    return tuple(views)


class SampleGallery:
    """Deterministic offline gallery from the natural photos bundled with the dependencies
    (`PHOTO_SOURCES`: scikit-image's `skimage.data` and matplotlib's sample data).

    Image order: photo (as in `photos`, duplicates dropped), then view (as in `views`), then
    unflipped before flipped. Default: 15 photos x 7 views x 2 flips = 210 images of 224 x 224.
    Each view is cropped from the photo at full resolution and resized (bicubic) to size x size, so
    photos smaller than `size` are enlarged. Item: (tensor [3, size, size] normalised with ImageNet
    mean/std by default, id) with ids "sample:<photo>/<view.name>[_flip]", e.g.
    "sample:chelsea/scale0.6_topleft_flip".
    """

    def __init__(
        self,
        size: int = 224,
        photos: Sequence[str] = SAMPLE_PHOTOS,
        views: Sequence[View] = SAMPLE_VIEWS,
        flips: bool = True,
        transform: Transform | None = None,
    ) -> None:
        """size: side of each image in pixels; photos: names from `PHOTO_SOURCES`; transform: PIL
        RGB (size x size) -> tensor, default `normalize_transform()` (ImageNet mean/std)."""
        self.size = _check_positive_int(size, "size")
        if isinstance(photos, str) or not photos:
            raise ValueError(
                f"photos: expected a non-empty list of names ({', '.join(PHOTO_SOURCES)}), got {photos!r}"
            )
        views = _check_views(views)
        self.transform = transform if transform is not None else normalize_transform()
        self._photos = {name: _load_sample_photo(name) for name in dict.fromkeys(photos)}
        flip_options = (False, True) if flips else (False,)
        self._items = [(name, view, flip) for name in self._photos for view in views for flip in flip_options]
        self.ids = [f"sample:{name}/{view.name}{'_flip' if flip else ''}" for name, view, flip in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def pil_image(self, index: int) -> Image.Image:
        """Image `index` as the RGB PIL image (size x size) the transform receives."""
        name, view, flip = self._items[_check_index(index, len(self))]
        photo = self._photos[name]
        image = photo.crop(view.box(*photo.size)).resize((self.size, self.size), Image.Resampling.BICUBIC)
        return ImageOps.mirror(image) if flip else image

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        index = _check_index(index, len(self))
        return self.transform(self.pil_image(index)), self.ids[index]


def _check_index(index: int, length: int) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index: expected an int, got {type(index).__name__}")
    if not -length <= index < length:
        raise IndexError(f"index: {index} out of range for a dataset of {length} images")
    return int(index) % length


# ----------------------------------------------------------------------------------------------
# any folder of images


@dataclass(frozen=True)
class SkippedFile:
    """A file under the root that is not used, and why."""

    path: str
    reason: str


def _open_rgb(path: Path) -> Image.Image:
    """Decode `path` fully as an RGB PIL image: EXIF orientation applied, made RGB by
    `deconvnet.data.samples.to_rgb` (alpha over white, 16-bit scaled), like every other image here."""
    from deconvnet.data.samples import to_rgb

    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def _list_files(root: Path) -> list[Path]:
    """Every file under `root`, recursively, sorted by the path relative to root. Symlinked folders
    are followed; a folder reached twice (loop, or linked twice) is listed once, under the path
    that comes first in sorted order."""
    found = []
    visited = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a symlink loop or a folder linked twice
            subfolders.clear()
            continue
        visited.add(real)
        subfolders.sort()  # deterministic walk: which copy of a twice-linked folder is kept
        found.extend(Path(folder) / name for name in names if os.path.isfile(os.path.join(folder, name)))
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _check_readable(path: Path, full_decode: bool) -> str | None:
    """None if `path` looks like a readable image, else the reason it is not."""
    try:
        if full_decode:
            _open_rgb(path)
        else:
            with Image.open(path) as image:
                image.verify()
    except Exception as error:  # PIL raises many types for broken files
        return f"unreadable image ({type(error).__name__}: {error})"
    return None


class ImageFolderDataset:
    """All images under `root` (recursive), in sorted order of their path relative to `root`.

    Files whose extension is not an image type, and image files PIL cannot open, are skipped at
    construction: listed in `skipped` (path + reason) and logged as one warning, never fatal; the
    numbering of `ids` only counts the images kept. `full_decode=True` decodes every file at
    construction (catches truncated data too, slower); the default only checks each file's header
    with PIL's `verify()`.

    Item: (transform(RGB image with EXIF orientation applied), id) where id is the path relative
    to root ("n01440764/ILSVRC2012_val_00000293.JPEG"); default transform `eval_transform()`
    (resize 256, center crop 224, ImageNet mean/std) -> tensor [3, 224, 224].
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Transform | None = None,
        full_decode: bool = False,
        progress: bool = True,
        preprocessing: object | None = None,
    ) -> None:
        """transform: RGB PIL -> tensor; or give `preprocessing` (resize_size, crop_size, mean,
        std, e.g. `models.preprocessing(model)`); default `eval_transform()`."""
        if transform is not None and preprocessing is not None:
            raise ValueError("transform, preprocessing: give at most one of them")
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise FileNotFoundError(f"root: image folder {self.root} does not exist")
        if not self.root.is_dir():
            raise ValueError(f"root: {self.root} is not a directory")
        if transform is None:
            transform = transform_for(preprocessing) if preprocessing is not None else eval_transform()
        self.transform = transform
        self.skipped: list[SkippedFile] = []
        self.paths: list[Path] = []
        files = _list_files(self.root)
        for path in tqdm(
            files, disable=not progress, unit="file", desc=f"check {self.root.name or self.root}"
        ):
            relative = path.relative_to(self.root).as_posix()
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                self.skipped.append(
                    SkippedFile(relative, f"not an image extension ({path.suffix or 'none'})")
                )
                continue
            reason = _check_readable(path, full_decode)
            if reason is not None:
                self.skipped.append(SkippedFile(relative, reason))
                continue
            self.paths.append(path)
        self.ids = [path.relative_to(self.root).as_posix() for path in self.paths]
        if self.skipped:
            shown = "; ".join(f"{s.path}: {s.reason}" for s in self.skipped[:20])
            more = f"; ... and {len(self.skipped) - 20} more" if len(self.skipped) > 20 else ""
            log.warning(
                "image folder %s: skipped %d file(s): %s%s", self.root, len(self.skipped), shown, more
            )
        if not self.paths:
            raise ValueError(
                f"root: no readable images under {self.root} (extensions {', '.join(IMAGE_EXTENSIONS)}; "
                f"{len(self.skipped)} file(s) skipped)"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def pil_image(self, index: int) -> Image.Image:
        """Image `index` as an RGB PIL image with EXIF orientation applied (before the transform)."""
        path = self.paths[_check_index(index, len(self))]
        try:
            return _open_rgb(path)
        except Exception as error:
            raise RuntimeError(
                f"image {index} ({self.ids[index]}) passed the header check but cannot be decoded "
                f"({error}); build the dataset with full_decode=True to skip such files"
            ) from error

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        index = _check_index(index, len(self))
        return self.transform(self.pil_image(index)), self.ids[index]


# ----------------------------------------------------------------------------------------------
# batching


class ImageBatches:
    """Iterable of [B, 3, S, S] image tensors over a dataset, in dataset order; `len` = batches."""

    def __init__(self, dataset: SampleGallery | ImageFolderDataset, batch_size: int) -> None:
        self.dataset = dataset
        self.batch_size = _check_positive_int(batch_size, "batch_size")

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    @property
    def ids(self) -> list[str]:
        """Image ids in the order the batches deliver them (image number = position)."""
        return list(self.dataset.ids)

    def __iter__(self) -> Iterator[Tensor]:
        for start in range(0, len(self.dataset), self.batch_size):
            stop = min(start + self.batch_size, len(self.dataset))
            yield torch.stack([self.dataset[i][0] for i in range(start, stop)])


def batches(dataset: SampleGallery | ImageFolderDataset, batch_size: int) -> ImageBatches:
    """The images of `dataset` as [B, 3, S, S] tensors of `batch_size` (the last may be smaller).

    Image number n in a scan over these batches is `dataset.ids[n]`.
    """
    return ImageBatches(dataset, batch_size)


class NumberedBatch(NamedTuple):
    """A batch whose images carry their own numbers: images [B, 3, H, W], numbers [B] int64
    (strictly increasing, above every earlier batch's), end: one past the last image number this
    batch covers (> numbers[-1] when the images after it failed to decode). B may be 0."""

    images: Tensor
    numbers: Tensor
    end: int
