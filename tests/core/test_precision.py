"""`full_float32`: TF32 off inside, the caller's settings back afterwards (also after an error)."""

from __future__ import annotations

import pytest
import torch

import deconvnet
from deconvnet.core.precision import full_float32


@pytest.fixture
def tf32_on():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_tf32_off_inside_and_restored_after_an_error(tf32_on):
    with pytest.raises(RuntimeError, match="boom"):
        with full_float32():
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
            raise RuntimeError("boom")
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


def test_reconstruct_runs_without_tf32_and_leaves_the_setting(tf32_on, alexnet_float32, monkeypatch):
    seen = []
    original = torch.nn.functional.conv_transpose2d

    def spy(*args, **kwargs):
        seen.append(torch.backends.cudnn.allow_tf32)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv_transpose2d", spy)
    x = torch.randn(1, 3, 67, 67, generator=torch.Generator().manual_seed(0))
    deconvnet.reconstruct(alexnet_float32, x, stage=2, keep="max")
    assert seen and not any(seen)
    assert torch.backends.cudnn.allow_tf32
