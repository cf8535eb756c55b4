"""How alike two maps of one image are: the four similarities of Adebayo et al., "Sanity Checks
for Saliency Maps" (NeurIPS 2018), Fig. 2 / 4: Spearman rank correlation with and without
absolute values, SSIM and HOG similarity.

A map is [3, H, W] (gradient, guided backprop, deconvnet, SmoothGrad, integrated gradients...)
or [H, W] (Grad-CAM, already one non-negative channel). Choices the paper leaves open:
- Colour: `magnitude` = sum over colour of |map| (PAIR's VisualizeImageGrayscale, Smilkov et al.
  2017, the display Adebayo et al. use), `signed` = sum over colour of the map (PAIR's diverging
  display before scaling). A 2-D map is its own signed map; its magnitude is |map|.
- Spearman: on the full-precision 2-D maps (no percentile clip, which would tie the top 1% of
  pixels), ties given their average rank; "abs" on `magnitude`, "signed" on `signed`.
- SSIM and HOG: on `normalized` maps in [0, 1]: the project's `to_grayscale` (sum |.| over
  colour / its 99th percentile, clipped at 1; PAIR's VisualizeImageGrayscale except that the
  minimum is not subtracted, so zero stays 0; an all-zero map stays all zero).
- SSIM: `skimage.metrics.structural_similarity`, data_range 1, its defaults otherwise (7 x 7
  uniform window, sample covariance, K1 = 0.01, K2 = 0.03, mean over the valid windows).
- HOG: `skimage.feature.hog` with its defaults (9 orientations, 8 x 8-pixel cells, 3 x 3-cell
  blocks, L2-Hys), then the Pearson correlation of the two feature vectors.
- A correlation with a constant map (e.g. a map that is all zero because the target unit died
  under randomisation) is undefined: NaN, never a made-up number.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from deconvnet.core.display import to_grayscale

METRICS = ("spearman_abs", "spearman_signed", "ssim", "hog")
METRIC_TITLES = {
    "spearman_abs": "Spearman rank correlation (|.|)",
    "spearman_signed": "Spearman rank correlation (signed)",
    "ssim": "SSIM",
    "hog": "HOG similarity (Pearson of HOG features)",
}


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N of the flattened `values` (any shape, N elements) -> [N] float64, tied values
    sharing the average of their ranks (scipy.stats.rankdata's "average")."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="mergesort")
    ordered = flat[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # where a run of equal values starts
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], flat.size]  # exclusive
    ranks = np.empty(flat.size, dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]  # mean of the 1-based ranks start+1..end
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two flattened arrays of N elements each (float64); NaN if either
    is constant."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"maps: {x.size} and {y.size} values; expected maps of one size")
    x, y = x - x.mean(), y - y.mean()
    norm = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / norm) if norm > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays of N elements: Pearson of their average ranks."""
    return pearson(rankdata(a), rankdata(b))


def _plain(r: Tensor) -> Tensor:
    """A [3, H, W] or [H, W] map as a float64 CPU tensor; ValueError for other shapes."""
    if r.dim() not in (2, 3):
        raise ValueError(f"map: expected [3, H, W] or [H, W], got shape {list(r.shape)}")
    return r.detach().to("cpu", torch.float64)


def magnitude(r: Tensor) -> np.ndarray:
    """[C, H, W] -> sum over C of |r|; [H, W] -> |r|: [H, W] float64."""
    r = _plain(r)
    return (r.abs().sum(0) if r.dim() == 3 else r.abs()).numpy()


def signed(r: Tensor) -> np.ndarray:
    """[C, H, W] -> sum over C of r; [H, W] -> r: [H, W] float64."""
    r = _plain(r)
    return (r.sum(0) if r.dim() == 3 else r).numpy()


def normalized(r: Tensor) -> np.ndarray:
    """[C, H, W] or [H, W] -> [H, W] float64 in [0, 1]: `to_grayscale` (module doc)."""
    r = _plain(r)
    return to_grayscale(r if r.dim() == 3 else r[None])[0].numpy()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two [H, W] maps in [0, 1] (module doc)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=1.0))


def hog_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the HOG features of two [H, W] maps in [0, 1] (module doc)."""
    from skimage.feature import hog

    return pearson(hog(np.asarray(a, np.float64)), hog(np.asarray(b, np.float64)))


def similarities(original: Tensor, randomized: Tensor) -> np.ndarray:
    """The four similarities (METRICS order) of two maps of one image, each [3, H, W] or [H, W]
    -> [4] float64 (NaN where a correlation is undefined)."""
    if original.shape != randomized.shape:
        raise ValueError(
            f"maps: shapes {list(original.shape)} and {list(randomized.shape)} "
            "differ; expected two maps of one image by one method"
        )
    a, b = normalized(original), normalized(randomized)
    return np.array(
        [
            spearman(magnitude(original), magnitude(randomized)),
            spearman(signed(original), signed(randomized)),
            ssim(a, b),
            hog_similarity(a, b),
        ]
    )
