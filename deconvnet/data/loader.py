"""Batches for a dataset scan: decoding in DataLoader workers, failures skipped, counted and named.

`ScanLoader(dataset, batch_size, start, stop, workers)` yields `deconvnet.data.datasets.NumberedBatch`es
over the image numbers [start, stop) of a dataset (`SampleGallery`, `ImageFolderDataset`, ...):
images [B, 3, H, W] with their numbers. Decoding runs in `workers` processes of a torch
`DataLoader` while the model computes (0 = in this process); on CUDA the batches come in pinned
memory. An image that fails to decode (a truncated JPEG that passed the header check, say) is left
out of its batch and recorded in `failures` (number, id, reason): the scan goes on, and image
numbers stay those of the dataset.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from deconvnet.data.datasets import NumberedBatch

__all__ = ["DecodeFailure", "ScanLoader"]


class DecodeFailure(NamedTuple):
    """An image left out of a scan: its number, id and why it could not be read."""

    number: int
    id: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.number, "id": self.id, "reason": self.reason}


def _reason(error: BaseException) -> str:
    """The root cause of a decode error in one line."""
    cause = error.__cause__ or error
    return f"{type(cause).__name__}: {cause}"


class _Range(Dataset):
    """Items (number, image [3, H, W] or None, failure reason or None) of numbers [start, stop)."""

    def __init__(self, dataset: Any, start: int, stop: int) -> None:
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        number = self.start + index
        try:
            return number, self.dataset[number][0], None
        except Exception as error:  # PIL raises many types for broken files
            return number, None, _reason(error)


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor, int, list[tuple[int, str]]]:
    """(images [B, 3, H, W], numbers [B], end, [(number, reason)] of the failed items)."""
    good = [(number, image) for number, image, _ in items if image is not None]
    images = torch.stack([image for _, image in good]) if good else torch.empty(0, 3, 0, 0)
    numbers = torch.tensor([number for number, _ in good], dtype=torch.int64)
    failed = [(number, reason) for number, _, reason in items if reason is not None]
    return images, numbers, items[-1][0] + 1, failed


def worker_context() -> multiprocessing.context.BaseContext:
    """The standard library's process start method for decoding workers, named explicitly: fork
    on Linux (what DataLoader uses there by default), spawn elsewhere. Explicit because a launcher
    may replace the default context: inside hydra-joblib-launcher's loky workers the default
    is loky's, whose processes DataLoader cannot start."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


class ScanLoader:
    """Iterable of `NumberedBatch` over image numbers [start, stop) of `dataset`, in order.

    batch_size: images per batch (before failures are left out); workers: decoding processes
    (0 = this process); pin_memory: page-locked batches for fast copies to CUDA. After (or during)
    iteration `failures` lists every `DecodeFailure` met so far; `len` = number of batches.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        start: int = 0,
        stop: int | None = None,
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        stop = len(dataset) if stop is None else stop
        if not 0 <= start <= stop <= len(dataset):
            raise ValueError(
                f"start, stop: expected 0 <= start <= stop <= {len(dataset)} "
                f"(the dataset's images), got {start}, {stop}"
            )
        self.dataset, self.start, self.stop = dataset, start, stop
        self.batch_size, self.workers, self.pin_memory = batch_size, workers, pin_memory
        self.failures: list[DecodeFailure] = []

    def __len__(self) -> int:
        return -(-(self.stop - self.start) // self.batch_size)

    def __iter__(self) -> Iterator[NumberedBatch]:
        if self.stop == self.start:
            return
        loader = DataLoader(
            _Range(self.dataset, self.start, self.stop),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            collate_fn=_collate,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if self.workers else None,
            multiprocessing_context=worker_context() if self.workers else None,
        )
        ids = self.dataset.ids
        for images, numbers, end, failed in loader:
            self.failures += [DecodeFailure(n, ids[n], reason) for n, reason in failed]
            yield NumberedBatch(images, numbers, end)
