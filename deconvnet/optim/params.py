"""Parameterisations: what the optimiser changes, and how it becomes an image in the model's
normalised input space, [B, 3, H, W].

- `PixelImage`: the normalised pixels themselves (0 = the dataset mean colour).
- `FourierImage`: lucid's decorrelated parameterisation (Olah et al. 2017): a 2-D real FFT
  spectrum scaled by 1 / frequency^decay, colours mixed by the square root of ImageNet's colour
  covariance, a sigmoid to [0, 1], then the model's normalisation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from deconvnet.data.models import Preprocessing

# lucid's colour_correlation_svd_sqrt (the square root of ImageNet's RGB covariance), normalised by
# its largest column norm as lucid does.
_COLOR_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64
)
COLOR_CORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


class PixelImage:
    """The image's normalised pixels are the parameter: `image()` is `tensor` itself."""

    kind = "pixels"

    def __init__(self, init: Tensor) -> None:
        self.tensor = init.detach().clone().requires_grad_(True)

    def parameters(self) -> list[Tensor]:
        return [self.tensor]

    def image(self) -> Tensor:
        """[B, 3, H, W] in the normalised space."""
        return self.tensor


class FourierImage:
    """lucid's `fft_image` + `to_valid_rgb(decorrelate=True, sigmoid=True)` in PyTorch."""

    kind = "fourier"

    def __init__(
        self, spectrum: Tensor, height: int, width: int, prep: Preprocessing, *, decay: float = 1.0
    ) -> None:
        """spectrum: [B, 3, H, W // 2 + 1, 2] (real, imaginary), e.g. from `fourier_noise`."""
        dtype, device = spectrum.dtype, spectrum.device
        fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
        freq = (fx.pow(2) + fy.pow(2)).sqrt()
        self.scale = (1.0 / freq.clamp_min(1.0 / max(height, width)) ** decay).to(dtype).to(device)
        self.tensor = spectrum.detach().clone().requires_grad_(True)
        self.size = (height, width)
        self.mix = COLOR_CORRELATION.to(dtype=dtype, device=device)
        self.mean = torch.tensor(prep.mean, dtype=dtype, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std, dtype=dtype, device=device).view(1, 3, 1, 1)

    def parameters(self) -> list[Tensor]:
        return [self.tensor]

    def image(self) -> Tensor:
        """[B, 3, H, W] in the normalised space (the sigmoid keeps every pixel a valid colour)."""
        spectrum = torch.view_as_complex(self.tensor) * self.scale
        # lucid: scale * sqrt(h w) with TF's 1 / (h w) inverse FFT = the orthonormal inverse
        x = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4.0
        x = torch.einsum("bchw,dc->bdhw", x, self.mix)
        return (torch.sigmoid(x) - self.mean) / self.std


def fourier_noise(
    batch: int, height: int, width: int, generator: torch.Generator, sd: float = 0.01
) -> Tensor:
    """lucid's start: a random spectrum [B, 3, H, W // 2 + 1, 2] of standard deviation `sd`."""
    return torch.randn((batch, 3, height, width // 2 + 1, 2), generator=generator) * sd


def grey_noise(
    shape: tuple[int, ...], prep: Preprocessing, generator: torch.Generator, spread: float = 0.25
) -> Tensor:
    """The Keras example's start, (U - 0.5) * spread around mid grey, in the normalised space
    (mid grey taken as the dataset mean colour). float32, CPU."""
    noise = (torch.rand(shape, generator=generator, dtype=torch.float32) - 0.5) * spread
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
    return noise / std


def valid_range(prep: Preprocessing, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-channel bounds [1, 3, 1, 1] of the normalised values of colours in [0, 1]."""
    mean = torch.tensor(prep.mean, dtype=dtype, device=device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=dtype, device=device).view(1, 3, 1, 1)
    return -mean / std, (1 - mean) / std


def l2_step_length(lr: float, height: int, width: int) -> float:
    """The L2 length of a step that moves an average pixel value by `lr`: lr * sqrt(3 H W)."""
    return lr * math.sqrt(3 * height * width)
