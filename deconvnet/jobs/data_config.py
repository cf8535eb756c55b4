"""Data configs of the experiments: `{"kind": "samples" | "folder", ...}` checked and opened.

`check_data` validates a config without touching any file; `make_dataset` opens it with the
model's weights' own preprocessing and summarises it for result.json. A config may name a shard
(`shard`, `num_shards`: a deterministic split into contiguous blocks of whole batches,
`shard_range`) and the decoding `workers` of the loader (`deconvnet.data.loader`); the dataset
itself is always the whole one, so image numbers are global.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from deconvnet.core.validation import check_int

if TYPE_CHECKING:
    from deconvnet.data.models import Preprocessing

log = logging.getLogger(__name__)

__all__ = ["DATA_KEYS", "FirstImages", "check_data", "make_dataset", "shard_range", "require_whole_dataset"]


class FirstImages:
    """The first `limit` images of a dataset (same items, ids and order)."""

    def __init__(self, dataset: Any, limit: int) -> None:
        self.dataset = dataset
        self.limit = min(limit, len(dataset))
        self.ids = list(dataset.ids[: self.limit])
        self.skipped = list(getattr(dataset, "skipped", []))
        if hasattr(dataset, "paths"):
            self.paths = list(dataset.paths[: self.limit])

    def __len__(self) -> int:
        return self.limit

    def __getitem__(self, index: int):
        if not 0 <= index < self.limit:
            raise IndexError(f"index: {index} out of range for {self.limit} images")
        return self.dataset[index]


LOADING_KEYS = {"shard", "num_shards", "workers"}
DATA_KEYS = {
    "samples": {"kind", "size", "photos", "flips", "limit"} | LOADING_KEYS,
    "folder": {"kind", "root", "full_decode", "limit"} | LOADING_KEYS,
}


def check_data(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a data config ({"kind": "samples" | "folder", ...}) without touching any file."""
    data = dict(data or {"kind": "samples"})
    kind = data.get("kind", "samples")
    if kind not in DATA_KEYS:
        raise ValueError(f"data.kind: expected 'samples' or 'folder', got {kind!r}")
    data["kind"] = kind
    unknown = sorted(set(data) - DATA_KEYS[kind])
    if unknown:
        raise ValueError(
            f"data: unknown key(s) {unknown} for data={kind}; accepted: {sorted(DATA_KEYS[kind])}"
        )
    if data.get("limit") is not None:
        check_int(data["limit"], "data.limit", 1)
    num_shards = check_int(data.get("num_shards", 1), "data.num_shards", 1)
    shard = check_int(data.get("shard", 0), "data.shard", 0)
    if shard >= num_shards:
        raise ValueError(
            f"data.shard: expected an int in 0..{num_shards - 1} (data.num_shards={num_shards}), got {shard}"
        )
    check_int(data.get("workers", 0), "data.workers", 0)
    if kind == "folder":
        root = data.get("root")
        if root is None or str(root).strip() in ("", "???"):
            raise ValueError(
                "data.root: required with data=folder (a folder of images, e.g. the "
                "ImageNet validation set): add data.root=<dir>"
            )
    else:
        if data.get("size") is not None:
            check_int(data["size"], "data.size", 1)
        photos = data.get("photos")
        if photos is not None and (isinstance(photos, str) or not list(photos)):
            raise ValueError(f"data.photos: expected a non-empty list of names or null, got {photos!r}")
    return data


def make_dataset(data: Mapping[str, Any] | None, model: nn.Module, progress: bool = True):
    """(dataset, summary) for a data config, read with the model's weights' own preprocessing.

    samples: `deconvnet.data.datasets.SampleGallery` (size null = the weights' crop size; photos null =
    all bundled photos); folder: `ImageFolderDataset(root)` (unreadable files skipped and named).
    `limit`: keep only the first N images. Raises ValueError / FileNotFoundError.
    """
    from deconvnet.data.models import preprocessing

    data = check_data(data)
    prep = preprocessing(model)
    dataset, label, root = _open_dataset(data, prep, progress)
    available = len(dataset)
    if data.get("limit") is not None:
        dataset = FirstImages(dataset, int(data["limit"]))
    if len(dataset) == 0:
        raise ValueError(f"data: the dataset is empty ({label})")
    skipped = [{"path": s.path, "reason": s.reason} for s in getattr(dataset, "skipped", [])]
    if skipped:
        log.warning("data: skipped %d unreadable / non-image file(s) (listed in result.json)", len(skipped))
    summary = {
        "kind": data["kind"],
        "label": label,
        "root": None if root is None else str(root.resolve()),
        "images": len(dataset),
        "images_available": available,
        "limit": data.get("limit"),
        "skipped_count": len(skipped),
        "skipped": skipped,
        "preprocessing": _preprocessing_summary(data, prep),
        "config": {k: v for k, v in data.items()},
    }
    return dataset, summary


def _open_dataset(
    data: Mapping[str, Any], prep: Preprocessing, progress: bool
) -> tuple[Any, str, Path | None]:
    """(dataset, label, root or None) of a checked data config, read with `prep` (the weights'
    `Preprocessing`): the sample gallery, or the image folder at data.root."""
    from deconvnet.data import datasets

    if data["kind"] == "samples":
        kwargs: dict[str, Any] = {
            "size": data.get("size") or prep.crop_size,
            "transform": datasets.normalize_transform(prep.mean, prep.std),
            "flips": bool(data.get("flips", True)),
        }
        if data.get("photos") is not None:
            kwargs["photos"] = [str(p) for p in data["photos"]]
        dataset = datasets.SampleGallery(**kwargs)
        return dataset, "sample gallery (photos bundled with scikit-image and matplotlib)", None
    root = Path(str(data["root"])).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: {root} is not an existing folder")
    dataset = datasets.ImageFolderDataset(
        root, preprocessing=prep, full_decode=bool(data.get("full_decode", False)), progress=progress
    )
    return dataset, f"image folder {root.name or root}", root


def _preprocessing_summary(data: Mapping[str, Any], prep: Preprocessing) -> dict[str, Any]:
    """How the images were read, for result.json: the weights' eval preprocessing (folder), or
    the gallery's resize to size x size and normalisation (samples)."""
    if data["kind"] == "folder":
        return {
            "resize_size": prep.resize_size,
            "crop_size": prep.crop_size,
            "mean": list(prep.mean),
            "std": list(prep.std),
        }
    return {
        "note": "gallery views cut square and resized to size x size (no resize/center-crop), "
        "normalised with the weights' mean/std",
        "size": data.get("size") or prep.crop_size,
        "mean": list(prep.mean),
        "std": list(prep.std),
    }


def shard_range(images: int, shard: int, num_shards: int, batch_size: int = 1) -> tuple[int, int]:
    """[start, stop) of shard `shard` of `num_shards` over `images` image numbers: contiguous
    blocks of whole batches (the batches of one scan over all images, `batch_size` each), their
    counts differing by at most one; the same for every run. Whole batches make a shard's forward
    passes the very ones of the unsharded scan, so merged shards equal it bit for bit (a
    convolution's rounding can depend on what else is in its batch)."""
    batches = -(-images // batch_size)
    first, last = shard * batches // num_shards, (shard + 1) * batches // num_shards
    return min(first * batch_size, images), min(last * batch_size, images)


def require_whole_dataset(data: Mapping[str, Any], experiment: str) -> None:
    """ValueError unless `data` asks for the whole dataset (num_shards 1)."""
    if int(data.get("num_shards", 1)) != 1:
        raise ValueError(
            f"data.num_shards: {experiment} needs the whole dataset (num_shards=1); "
            "scan shards with `python -m experiments.scan`, merge them with "
            "`python -m experiments.merge_scans`, then pass the merged scan"
        )
