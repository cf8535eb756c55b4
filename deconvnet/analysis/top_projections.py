"""Fig. 2's tiles: which feature maps to show, and their top-k activations projected to pixels.

Computation only (no files, no drawing); `deconvnet.jobs.fig2` runs it as a job and
`deconvnet.figures.fig2` draws its tiles. The procedure is in docs/fig2.md (steps 4-6):

- `select_channels`: per stage a seeded random subset of feature maps (or an explicit list, used
  as given). With `eligible` maps (`map_activity`: those whose k-th scan value is > 0, i.e. that
  fire on at least k images) the subset is drawn among them, so no block shows empty tiles.
- `project_tiles`: every image that appears in any selected top-k gets ONE forward pass (a record of
  the deepest stage, which serves the mirrors of all lower stages and of every rule; images are
  batched); per stage and backward rule (`rules`: deconvnet, backprop, guided) all tiles of those
  images are projected together, each seed alone, computed only inside its receptive field
  (`Mirror.project(..., frame="receptive_field")`). The recomputed activation is checked against
  the scan's value (`TileMismatchError` names the tile otherwise).
- crops (`crop_with_fill`): the reconstruction's receptive-field window (zero where it crosses the
  border) and the same box of the image, denormalised to [0, 1], grey (0.5) where it crosses the
  border; all tiles of a layer share the layer's receptive-field size.
"""

from __future__ import annotations

import logging
import numbers
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from deconvnet.core.architecture import STAGES
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.architecture import stages as stage_table
from deconvnet.core.geometry import receptive_field
from deconvnet.core.graph_mirror import GraphMirror, make_mirror
from deconvnet.core.graph_ops import RULES
from deconvnet.core.mirror import Mirror, Seeds
from deconvnet.core.precision import full_float32
from deconvnet.core.validation import check_int, check_stage_numbers, nonempty_list
from deconvnet.data.images import denormalize

__all__ = [
    "GREY",
    "VALUE_ATOL",
    "VALUE_RTOL",
    "MapActivity",
    "StageTiles",
    "TileMismatchError",
    "channels_key_stage",
    "check_rules",
    "crop_with_fill",
    "map_activity",
    "project_tiles",
    "select_channels",
    "to_uint8",
]

log = logging.getLogger(__name__)

GREY = 128  # 0.5 in 8 bits: zero of a reconstruction, and the fill outside the image

# Tolerance of the check "recomputed activation == value recorded by the scan".
VALUE_RTOL = 1e-4
VALUE_ATOL = 1e-6


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Values in [0, 1] (clamped) of any shape -> uint8 array of the same shape: round(255 x)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# options


def check_rules(rules: Any) -> list[str]:
    """Backward rules to show, in the order given, duplicates dropped: a non-empty list of names
    among deconvnet, backprop, guided (a single name is accepted too)."""
    if isinstance(rules, str):
        rules = [rules]
    accepted = ", ".join(RULES)
    if not isinstance(rules, Iterable):
        raise ValueError(f"rules: expected a list of rule names among {accepted}, got {rules!r}")
    items = list(rules)
    if not items:
        raise ValueError(f"rules: expected at least one rule among {accepted}, got none")
    out: list[str] = []
    for rule in items:
        if not isinstance(rule, str) or rule not in RULES:
            raise ValueError(f"rules: unknown rule {rule!r}; expected names among {accepted}")
        if rule not in out:
            out.append(rule)
    return out


def channels_key_stage(key: Any) -> int:
    """The stage number a key of the `channels` option {stage: [channel, ...]} names (an int or a
    digit string in 1..5); ValueError otherwise."""
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, numbers.Integral) or int(key) not in STAGES:
        raise ValueError(f"channels: unknown stage {key!r}; keys must be stage numbers 1..5")
    return int(key)


# ---------------------------------------------------------------------------------------------
# which feature maps


def _explicit_channels(channels: Mapping[Any, Sequence[int]] | None, stages: list[int]) -> dict[int, list]:
    """{stage: raw list} from the `channels` option, keys checked against `stages`."""
    explicit: dict[int, list] = {}
    if channels is None:
        return explicit
    if not isinstance(channels, Mapping):
        raise ValueError(f"channels: expected a mapping {{stage: [channel, ...]}} or null, got {channels!r}")
    for key, chosen in channels.items():
        number = channels_key_stage(key)
        if number not in stages:
            raise ValueError(f"channels: stage {number} is not among the requested stages {stages}")
        explicit[number] = nonempty_list(chosen, f"channels[{number}]", "channel ints", "channel")
    return explicit


def _checked_channel_list(items: list, number: int, name: str, total: int) -> list[int]:
    """An explicit channel list of stage `number`: ints in 0..total-1, order kept, no duplicates."""
    picked: list[int] = []
    for c in items:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise ValueError(f"channels[{number}]: expected channel ints, got {c!r}")
        if not 0 <= int(c) < total:
            raise ValueError(
                f"channels[{number}]: channel {c} is outside layer {number} "
                f"({name}) which has channels 0..{total - 1}"
            )
        if int(c) not in picked:
            picked.append(int(c))
    return picked


def _draw_channels(
    number: int, total: int, per_stage: int, seed: int, eligible: Sequence[int] | None
) -> list[int]:
    """Sorted seeded draw of `per_stage` channels of stage `number` (rng([seed, stage])): among
    all `total` channels, or among `eligible` (all of them, with a warning, if fewer)."""
    rng = np.random.default_rng([seed, number])
    if eligible is None:
        return sorted(int(c) for c in rng.choice(total, per_stage, replace=False))
    pool = sorted(int(c) for c in eligible)
    if not pool:
        raise ValueError(
            f"live_only: no feature map of layer {number} fires on the required "
            "number of images (k); lower k, add images, or set live_only=false"
        )
    if len(pool) <= per_stage:
        if len(pool) < per_stage:
            log.warning(
                "channels_per_stage: layer %d has only %d feature maps that fire on k "
                "images; showing all of them instead of %d",
                number,
                len(pool),
                per_stage,
            )
        return pool
    return sorted(pool[int(i)] for i in rng.choice(len(pool), per_stage, replace=False))


def select_channels(
    model: nn.Module,
    stages: Sequence[int],
    channels: Mapping[Any, Sequence[int]] | None = None,
    channels_per_stage: int = 16,
    channel_seed: int = 0,
    eligible: Mapping[int, Sequence[int]] | None = None,
) -> dict[int, list[int]]:
    """Feature maps to show per stage: {stage: [channel, ...]}.

    Stages listed in `channels` use that explicit list as given (order kept, duplicates dropped);
    every other requested stage gets `channels_per_stage` channels drawn without replacement by
    `numpy.random.default_rng([channel_seed, stage])` and sorted (so a stage's draw does not depend
    on which other stages are requested). `eligible` {stage: [channel, ...]} (e.g. the maps that
    fire on k images, `map_activity`) restricts the draw of the stages it lists; if fewer are
    eligible than `channels_per_stage`, all eligible are taken (warning), none is a ValueError.
    A key of `channels` that is not among `stages` is an error.
    """
    stages = check_stage_numbers(stages)
    per_stage = check_int(channels_per_stage, "channels_per_stage", 1)
    seed = check_int(channel_seed, "channel_seed", 0)
    explicit = _explicit_channels(channels, stages)
    table = {s.number: s for s in stage_table(model)}
    out: dict[int, list[int]] = {}
    for number in stages:
        info = table[number]
        if number in explicit:
            out[number] = _checked_channel_list(explicit[number], number, info.name, info.channels)
            continue
        if per_stage > info.channels:
            raise ValueError(
                f"channels_per_stage: {per_stage} exceeds layer {number} "
                f"({info.name}) which has {info.channels} channels"
            )
        pool = None if eligible is None or number not in eligible else eligible[number]
        out[number] = _draw_channels(number, info.channels, per_stage, seed, pool)
    return out


@dataclass(frozen=True)
class MapActivity:
    """How many images each feature map of one stage fires on (image maximum > 0), from its scan.

    With the scan's top-k values [C, k] (descending): dead = top-1 <= 0 (fires on no image);
    sparse = fires on 1..k-1 images (top-1 > 0 >= k-th); eligible = k-th > 0 (fires on >= k).
    """

    channels: int
    k: int
    dead: list[int]
    sparse: list[int]
    eligible: list[int]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored in result.json / tiles.json / tiles.npz meta."""
        return {
            "channels": self.channels,
            "k": self.k,
            "dead": len(self.dead),
            "firing_on_fewer_than_k": len(self.sparse),
            "eligible": len(self.eligible),
            "dead_channels": list(self.dead),
            "fewer_than_k_channels": list(self.sparse),
        }


def map_activity(topk: Any) -> MapActivity:
    """MapActivity of one stage from its `TopK` (values [C, k], k = images kept per channel)."""
    values = topk.values
    first, last = values[:, 0] > 0, values[:, -1] > 0
    return MapActivity(
        channels=int(values.shape[0]),
        k=int(values.shape[1]),
        dead=[int(c) for c in torch.nonzero(~first).flatten()],
        sparse=[int(c) for c in torch.nonzero(first & ~last).flatten()],
        eligible=[int(c) for c in torch.nonzero(last).flatten()],
    )


# ---------------------------------------------------------------------------------------------
# crops and projection


class TileMismatchError(RuntimeError):
    """The activation recomputed for a tile differs from the value the scan recorded."""


def crop_with_fill(
    image: torch.Tensor, top: int, left: int, size: tuple[int, int], fill: float
) -> torch.Tensor:
    """The box [top, top+h) x [left, left+w) of `image` [C, H, W]; `fill` where it leaves the image."""
    c, height, width = image.shape
    h, w = size
    out = image.new_full((c, h, w), fill)
    y0, y1 = max(top, 0), min(top + h, height)
    x0, x1 = max(left, 0), min(left + w, width)
    if y0 < y1 and x0 < x1:
        out[:, y0 - top : y1 - top, x0 - left : x1 - left] = image[:, y0:y1, x0:x1]
    return out


@dataclass
class StageTiles:
    """The tiles of one stage, indexed [map, rank] (rank 0 = strongest).

    channels [M]; image, y, x [M, k] int64; value [M, k] (scan), recomputed [M, k] (projection pass);
    recon {rule: [M, k, 3, rf_h, rf_w] float32} raw reconstructions in the receptive-field window,
    one array per backward rule (in display order), all from the same forward record;
    patch [M, k, 3, rf_h, rf_w] uint8 image patches (denormalised, round(255 x), grey 128 outside).
    """

    stage: int
    name: str
    rf_size: tuple[int, int]
    rf_jump: tuple[int, int]
    rf_start: tuple[int, int]
    channels: np.ndarray
    image: np.ndarray
    y: np.ndarray
    x: np.ndarray
    value: np.ndarray
    recomputed: np.ndarray
    recon: dict[str, np.ndarray]
    patch: np.ndarray
    channels_total: int = 0

    @property
    def rules(self) -> list[str]:
        return list(self.recon)

    def box(self, m: int, r: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of tile [m, r]'s receptive field in input pixels."""
        top = int(self.y[m, r]) * self.rf_jump[0] + self.rf_start[0]
        left = int(self.x[m, r]) * self.rf_jump[1] + self.rf_start[1]
        return top, left, top + self.rf_size[0], left + self.rf_size[1]


def _empty_tiles(
    model: nn.Module, s: int, top: Any, channels: Sequence[int], rules: Sequence[str]
) -> StageTiles:
    """StageTiles of stage s for `channels`, positions from the scan `top`, arrays to be filled."""
    info = stage_of(model, s)
    rf = receptive_field(model, s)
    ch = torch.as_tensor(list(channels), dtype=torch.long)
    image, y, x = top.image[ch].numpy(), top.y[ch].numpy(), top.x[ch].numpy()
    m, k = image.shape
    return StageTiles(
        stage=s,
        name=info.name,
        rf_size=tuple(rf.size),
        rf_jump=tuple(rf.jump),
        rf_start=tuple(rf.start),
        channels=ch.numpy().copy(),
        image=image.copy(),
        y=y.copy(),
        x=x.copy(),
        value=top.values[ch].float().numpy().copy(),
        recomputed=np.full((m, k), np.nan, np.float32),
        recon={rule: np.zeros((m, k, 3, *rf.size), np.float32) for rule in rules},
        patch=np.full((m, k, 3, *rf.size), GREY, np.uint8),
        channels_total=info.channels,
    )


def _check_recomputed(
    t: StageTiles,
    recomputed: np.ndarray,
    mi: np.ndarray,
    ri: np.ndarray,
    images: list[int],
    ids: Sequence[str] | None,
    rtol: float,
    atol: float,
) -> None:
    """TileMismatchError naming the first tile [mi[j], ri[j]] (image images[j]) whose recomputed
    activation differs from the scan's value by more than rtol * |value| + atol."""
    recorded = t.value[mi, ri]
    bad = np.abs(recomputed - recorded) > rtol * np.abs(recorded) + atol
    if not bad.any():
        return
    j = int(np.flatnonzero(bad)[0])
    img = images[j]
    name = ids[img] if ids is not None else f"#{img}"
    raise TileMismatchError(
        f"tile stage {t.stage} ({t.name}) channel {int(t.channels[mi[j]])} rank {ri[j] + 1}: "
        f"image {img} ({name}) at (y={int(t.y[mi[j], ri[j]])}, x={int(t.x[mi[j], ri[j]])}): the "
        f"scan recorded {recorded[j]:.7g} but the projection's forward pass gives "
        f"{recomputed[j]:.7g} (tolerance {rtol:g} relative + {atol:g}); "
        f"{int(bad.sum())} of {len(mi)} tile(s) of this batch differ"
    )


def _project_stage(
    t: StageTiles,
    mirrors: Mapping[str, Mirror | GraphMirror],
    record: Any,
    entries: list[tuple[int, int, int]],
    chunk: list[int],
    shown: torch.Tensor,
    ids: Sequence[str] | None,
    chunk_size: int,
    rtol: float,
    atol: float,
) -> None:
    """Fill stage t's tiles `entries` [(local image, map, rank)] of one batch from its `record`:
    recomputed value, one reconstruction per rule (`mirrors`), image patch (`shown` [B, 3, H, W])."""
    stage_out = record.stage_output(t.stage)
    device = stage_out.device
    local = torch.tensor([e[0] for e in entries], dtype=torch.long)
    mi = np.array([e[1] for e in entries])
    ri = np.array([e[2] for e in entries])
    c = torch.as_tensor(t.channels[mi], dtype=torch.long)
    yy = torch.as_tensor(t.y[mi, ri], dtype=torch.long)
    xx = torch.as_tensor(t.x[mi, ri], dtype=torch.long)
    value = stage_out[local.to(device), c.to(device), yy.to(device), xx.to(device)]
    recomputed = value.float().cpu().numpy()
    _check_recomputed(t, recomputed, mi, ri, [chunk[int(i)] for i in local], ids, rtol, atol)
    t.recomputed[mi, ri] = recomputed
    seeds = Seeds(local, c, yy, xx, value)
    for rule, mirror in mirrors.items():
        tiles = mirror.project(record, seeds, frame="receptive_field", chunk_size=chunk_size)
        t.recon[rule][mi, ri] = tiles.float().cpu().numpy()
    for j in range(len(entries)):
        top_px, left_px, _, _ = t.box(mi[j], ri[j])
        patch = crop_with_fill(shown[int(local[j])], top_px, left_px, t.rf_size, 0.5)
        t.patch[mi[j], ri[j]] = to_uint8(patch)


def _tiles_by_image(tiles: Mapping[int, StageTiles]) -> dict[int, list[tuple[int, int, int]]]:
    """{image number: [(stage, map, rank), ...]}: every tile, listed under the image it shows."""
    by_image: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for s, t in tiles.items():
        for mi, r in np.ndindex(*t.image.shape):
            by_image[int(t.image[mi, r])].append((s, mi, r))
    return by_image


def _batch_entries(
    chunk: list[int], by_image: Mapping[int, list[tuple[int, int, int]]], s: int
) -> list[tuple[int, int, int]]:
    """Stage s's tiles among the images `chunk` of one batch: [(local image, map, rank), ...]."""
    return [(local, mi, r) for local, i in enumerate(chunk) for (st, mi, r) in by_image[i] if st == s]


@full_float32()
def project_tiles(
    model: nn.Module,
    dataset: Any,
    topk: Mapping[int, Any],
    channels: Mapping[int, Sequence[int]],
    batch_size: int = 8,
    chunk_size: int = 16,
    progress: bool = True,
    rtol: float = VALUE_RTOL,
    atol: float = VALUE_ATOL,
    rules: Sequence[str] = ("deconvnet",),
) -> dict[int, StageTiles]:
    """Project every selected top-k entry with its own image's switches, under each rule, and crop.

    topk: {stage: TopK} from `scan_topk` over `dataset` (same image numbering); channels:
    {stage: [c, ...]}; rules: backward rules (deconvnet, backprop, guided). Each image that appears
    in a selected top-k gets ONE forward pass (images batched `batch_size` at a time through the
    mirror of the deepest stage; it records the ReLU masks when a rule needs them), and that one
    record serves every stage and every rule: per stage and rule all of that batch's tiles are
    projected together (`chunk_size` seeds at a time), each alone, computed only inside its
    receptive field. Raises TileMismatchError when a recomputed activation differs from the scan's
    value by more than rtol * |value| + atol.
    """
    rules = check_rules(rules)
    stages = sorted(channels)
    for s in stages:
        if s not in topk:
            raise ValueError(f"topk: no scan result for stage {s}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    mirrors = {s: {rule: make_mirror(model, s, rule) for rule in rules} for s in stages}
    needs_masks = any(rule != "deconvnet" for rule in rules)
    recorder = make_mirror(model, stages[-1], "guided" if needs_masks else "deconvnet")
    out = {s: _empty_tiles(model, s, topk[s], channels[s], rules) for s in stages}
    by_image = _tiles_by_image(out)
    images = sorted(by_image)
    ids = getattr(dataset, "ids", None)
    with tqdm(total=len(images), disable=not progress, unit="image", desc="project tiles") as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x_batch = torch.stack([dataset[i][0] for i in chunk]).to(device=device, dtype=dtype)
            shown = denormalize(x_batch.detach().float().cpu(), model)
            with torch.inference_mode():
                record = recorder.record(x_batch)
                for s in stages:
                    entries = _batch_entries(chunk, by_image, s)
                    if entries:
                        _project_stage(
                            out[s], mirrors[s], record, entries, chunk, shown, ids, chunk_size, rtol, atol
                        )
            bar.update(len(chunk))
    return out
