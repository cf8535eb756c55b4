"""Full float32 on CUDA: no TF32 in convolutions or matrix products while a visualisation runs.

PyTorch lets cuDNN convolutions use TF32 by default on Ampere and later GPUs (10-bit mantissa,
about 1e-3 relative error). A deconvnet compares and reuses activations across passes (a scan's
recorded value against the projection's forward pass; the mirror against autograd), so every
forward and backward pass of this package runs in full float32. The caller's settings are restored
afterwards. No effect on the CPU. Also `dtype_name`: a float type as the records write it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["dtype_name", "full_float32"]


@contextmanager
def full_float32() -> Iterator[None]:
    """Context manager and decorator: TF32 off for cuDNN convolutions and CUDA matmuls inside."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = conv
        torch.backends.cuda.matmul.allow_tf32 = matmul


def dtype_name(dtype: torch.dtype) -> str:
    """A torch float type as results record it: torch.float64 -> 'float64'."""
    return str(dtype).removeprefix("torch.")
