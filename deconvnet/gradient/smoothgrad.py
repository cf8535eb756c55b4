"""`smoothgrad`: the mean map over noisy copies of the image (Smilkov et al. 2017, SmoothGrad).

sigma = noise x (max - min) of each image, in the model's input space (the paper's relative noise
level; pytorch-cnn-visualizations issue #99 takes sigma in absolute units, a bug). Noise is drawn
on the CPU from `torch.Generator().manual_seed(seed)`, one float32 `torch.randn(3, H, W)` per copy
(cast to the model's dtype), image by image, copy by copy: the same seed gives the same noise on any
device, in any dtype and for any batch size (the maps then agree up to float rounding: convolutions
round differently at different batch sizes).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deconvnet.core.precision import full_float32
from deconvnet.core.validation import check_count, check_real, check_seed
from deconvnet.gradient.attribute import forward_resolved, prepare
from deconvnet.gradient.passes import CHUNK_SIZE, mean_of_maps


def noise_batches(
    generator: torch.Generator, samples: int, batch_size: int, shape: tuple[int, ...], dtype: torch.dtype
):
    """Yield [n, *shape] standard normal batches (n <= batch_size, samples in all) in `dtype`, one
    float32 randn call per copy so the stream depends on neither batch_size nor dtype."""
    for start in range(0, samples, batch_size):
        n = min(batch_size, samples - start)
        yield torch.stack([torch.randn(shape, generator=generator) for _ in range(n)]).to(dtype)


@full_float32()
def smoothgrad(
    model: nn.Module,
    images: Tensor,
    target: object = None,
    rule: str = "backprop",
    samples: int = 50,
    noise: float = 0.15,
    squared: bool = False,
    seed: int = 0,
    *,
    batch_size: int = 10,
    chunk_size: int = CHUNK_SIZE,
) -> Tensor:
    """SmoothGrad of `attribute`: mean over `samples` copies x + N(0, sigma^2) of the map.

    images [B, 3, H, W] -> [B, 3, H, W] ([K, 3, H, W] for K targets of one image). Works with every
    rule. squared=True: the mean of squared maps (PAIR's magnitude). The target is resolved on the
    clean image (None: its predicted class; a Unit without position: its strongest unit there) and
    kept for every copy. batch_size copies go forward together (memory bound); noise=0 gives the
    plain map.
    """
    check_count("samples", samples)
    check_real("noise", noise)
    check_count("batch_size", batch_size)
    if not isinstance(squared, bool):
        raise ValueError(f"squared: expected True or False, got {squared!r}")
    seed = check_seed(seed, "SmoothGrad's noise")
    x, rows, gradient_pass = prepare(model, images, target, rule, chunk_size)
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        if not rows.resolved:
            rows = forward_resolved(gradient_pass, x, rows)[1]
        for b in range(x.shape[0]):
            image = x[b : b + 1]
            sigma = noise * float(image.max() - image.min())
            noisy = (
                image + sigma * eps.to(image.device)
                for eps in noise_batches(generator, samples, batch_size, tuple(image.shape[1:]), x.dtype)
            )
            out.append(mean_of_maps(gradient_pass, rows.of_image(b), noisy, samples, squared, chunk_size))
    return torch.cat(out).to(images.device)
