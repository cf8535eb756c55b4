"""The memory layout the package's passes run in (docs/architecture.md#memory-layout).

On the CPU, oneDNN's convolutions, transposed convolutions and max pooling are fastest when every
map keeps its channels innermost (channels last, NHWC strides), so the passes convert their inputs
once and every map after follows. On CUDA, cuDNN is given the plain layout (NCHW) the model's
weights are in. The values agree up to rounding either way.

`plain_layout()` makes the CPU take the CUDA route: the tests run the plain-layout code (the
mirror's scatter and transposed convolutions, the forward passes of the gradient family, the
optimisation family and invariance) without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

__all__ = ["channels_last_on_cpu", "plain_layout", "prefers_channels_last"]

_PLAIN: ContextVar[bool] = ContextVar("deconvnet_plain_layout", default=False)


def prefers_channels_last(x: Tensor) -> bool:
    """Whether passes over `x`'s device run channels last: on the CPU unless `plain_layout()`."""
    return x.device.type == "cpu" and not _PLAIN.get()


def channels_last_on_cpu(x: Tensor) -> Tensor:
    """[B, C, H, W] -> the same values in the layout this device's passes run in."""
    if prefers_channels_last(x):
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextmanager
def plain_layout() -> Iterator[None]:
    """Context manager: inside it the CPU runs the plain (NCHW) route that CUDA takes."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)
