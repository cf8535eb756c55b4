"""The atlas's computations: which channels to show, and how often each one fires over a dataset.

Computation only (no files, no HTML); `deconvnet.jobs.atlas` runs them as a job and
`deconvnet.figures.atlas` draws the pages. The procedure is in docs/atlas.md:

- `atlas_channels`: per stage every channel (the default), a seeded draw of n channels
  (`numpy.random.default_rng([seed, stage])`, sorted, like Fig. 2's draw) or a list used as given.
- `firing_histograms`: one pass over the dataset, every chosen stage at once, that counts per
  channel the images on which it fires (spatial maximum > 0) and histograms those per-image maxima
  in `bins` equal bins over (0, top], where `top` is the channel's highest value in the scan.
  Memory is [C, bins] per stage, whatever the dataset's size.
- `channel_groups`: the channels of a stage cut into groups that are projected and optimised
  together (one forward record per image serves a whole group).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from deconvnet.analysis.scan import TopK, check_stages
from deconvnet.analysis.stage_pass import StagePass
from deconvnet.analysis.top_projections import channels_key_stage, select_channels
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.precision import full_float32
from deconvnet.core.validation import check_int, check_stage_numbers

__all__ = ["FiringHistogram", "atlas_channels", "channel_groups", "firing_histograms"]


def atlas_channels(
    model: nn.Module, stages: Sequence[int], channels: Any = None, seed: int = 0
) -> dict[int, list[int]]:
    """Channels per stage: None = all; an int n = n channels drawn per stage with
    rng([seed, stage]) (sorted); a list = that list for every stage (order kept); a mapping
    {stage: list} = per stage (stages not listed: all). ValueError naming `channels` otherwise."""
    stages = check_stage_numbers(stages)
    seed = check_int(seed, "seed", 0)
    every = {s: list(range(stage_of(model, s).channels)) for s in stages}
    if channels is None:
        return every
    if isinstance(channels, bool):
        raise ValueError(f"channels: expected null, a count, a list or {{stage: list}}, got {channels!r}")
    if isinstance(channels, numbers.Integral):
        count = check_int(channels, "channels", 1)
        return select_channels(model, stages, None, count, seed)
    if isinstance(channels, Mapping):
        listed = {channels_key_stage(key) for key in channels}
        drawn = select_channels(model, stages, channels, 1, seed)
        return {s: drawn[s] if s in listed else every[s] for s in stages}
    if isinstance(channels, Iterable) and not isinstance(channels, str):
        listed = list(channels)
        return select_channels(model, stages, {s: listed for s in stages}, 1, seed)
    raise ValueError(f"channels: expected null, a count, a list or {{stage: list}}, got {channels!r}")


def channel_groups(channels: Sequence[int], size: int) -> list[list[int]]:
    """`channels` cut into consecutive groups of at most `size`."""
    size = check_int(size, "group_size", 1)
    return [list(channels[i : i + size]) for i in range(0, len(channels), size)]


@dataclass(frozen=True)
class FiringHistogram:
    """How often every channel of one stage fires over a dataset.

    images: images counted; fires [C]: images whose spatial maximum is > 0; top [C]: the upper edge
    of each channel's histogram (its highest value in the scan); counts [C, bins]: the firing
    images' maxima in equal bins over (0, top] (a maximum above top, possible by rounding, goes
    to the last bin).
    """

    images: int
    fires: np.ndarray
    top: np.ndarray
    counts: np.ndarray

    def channel(self, c: int) -> dict[str, Any]:
        """Channel c's JSON record: images, fires, bin edges and counts."""
        bins = self.counts.shape[1]
        edges = np.linspace(0.0, float(self.top[c]), bins + 1)
        return {
            "images": self.images,
            "fires": int(self.fires[c]),
            "edges": [float(e) for e in edges],
            "counts": [int(n) for n in self.counts[c]],
        }


def _bin_maxima(maxima: Tensor, top: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Per-image maxima [B, C] -> (fires [C], counts [C, bins]) of this batch."""
    fired = maxima > 0
    scale = torch.where(top > 0, top, torch.ones_like(top))
    index = torch.ceil(maxima / scale * bins).long().clamp(1, bins) - 1  # (0, top/bins] -> bin 0
    counts = torch.zeros(maxima.shape[1], bins, dtype=torch.long, device=maxima.device)
    counts.scatter_add_(1, index.t(), fired.t().long())
    return fired.sum(dim=0), counts


@full_float32()
def firing_histograms(
    model: nn.Module,
    batches: Iterable[Any],
    scan: Mapping[int, TopK],
    bins: int = 20,
    progress: bool = True,
    total: int | None = None,
) -> dict[int, FiringHistogram]:
    """One pass over `batches` ([B, 3, H, W] tensors, or `NumberedBatch`es with `.images`) for
    every stage of `scan` ({stage: TopK}; its top-1 values set each channel's histogram range).
    Returns {stage: FiringHistogram}; memory [C, bins] per stage."""
    bins = check_int(bins, "bins", 1)
    chosen = check_stages(model, sorted(scan))
    stage_pass = StagePass(model, chosen)
    param = next(model.parameters())
    tops = {s: t.values[:, 0].to(param.device, torch.float64).clamp(min=0) for s, t in scan.items()}
    fires = {s: torch.zeros_like(tops[s], dtype=torch.long) for s in scan}
    counts = {s: torch.zeros(len(tops[s]), bins, dtype=torch.long, device=param.device) for s in scan}
    images = 0
    with stage_pass.eval_mode(), torch.inference_mode():
        for batch in tqdm(batches, total=total, disable=not progress, unit="batch", desc="firing"):
            x = getattr(batch, "images", batch)
            if len(x) == 0:
                continue
            images += len(x)
            for s, output in stage_pass.run(x.to(param.device, param.dtype), x):
                fired, binned = _bin_maxima(output.flatten(2).amax(dim=2).double(), tops[s], bins)
                fires[s] += fired
                counts[s] += binned
    return {
        s: FiringHistogram(images, fires[s].cpu().numpy(), tops[s].cpu().numpy(), counts[s].cpu().numpy())
        for s in sorted(scan)
    }
