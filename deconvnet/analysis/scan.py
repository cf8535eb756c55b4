"""Dataset scan for Fig. 2: the top-k images of every feature map, in one forward pass per batch.

For every requested stage and every channel c, each image contributes ONE candidate: its spatial
maximum of channel c (ties inside the map: the first position in row-major order, like
`torch.argmax`). With `exclude_border=n` only positions at least n away from every edge of the
stage's map are candidates (n = 0, the default, is the paper's procedure: the whole map).
Over the whole dataset the k highest candidates are kept, so the k entries of a
channel are k distinct images (docs/fig2.md, step 2). Ties between images go to the lower
image number, so the selection does not depend on how the images were split into batches, up to
rounding: a CPU's convolution kernels may sum in another order for another batch shape, so the
same image in a batch of another size can get values a few ulps apart (float32 ~1e-6 relative,
float64 ~1e-15), and images whose values lie that close can swap. Scans that run the same batches
compute every image in the same shapes and agree bit for bit.

Memory does not grow with the dataset: a running [C, k] top-k per stage is merged with each batch's
[C, B] candidates (stable sort of the concatenation, keep the first k).

Scale out: `scan_topk(..., first_image=n)` numbers a shard's images from n, and `merge_scans` merges
the shards' results into exactly the result of one scan over all of them in the same batches (ties
to the lower global image number, shard order irrelevant; `deconvnet.jobs` cuts shards at whole
batches). `scan_topk(..., initial=partial)` continues a scan from a checkpoint of its running top-k
(`deconvnet.jobs.scan` saves one every N images, after whole batches): continued and uninterrupted
scans over the same batches end with the same result. A batch may also be a `NumberedBatch` (images with
their own image numbers), so a loader can leave out images that failed to decode.

Results are written with `save_topk` (atomic: temp file + `os.replace`, flagged `complete`) and read
back with `load_topk`, which refuses a file that is not flagged complete.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from deconvnet.analysis.stage_pass import StagePass
from deconvnet.core.architecture import Stage
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.geometry import min_input_size, stage_sizes
from deconvnet.core.precision import full_float32
from deconvnet.core.validation import INT64_MAX, check_bool, check_callable, check_count, check_model_values
from deconvnet.data.datasets import NumberedBatch
from deconvnet.data.files import atomic_write

__all__ = [
    "TopK",
    "LoadedTopK",
    "scan_topk",
    "merge_scans",
    "border_ring_share",
    "border_ring_shares",
    "Candidates",
    "merge_topk",
    "save_topk",
    "load_topk",
    "minimum_input_size",
    "check_exclude_border",
    "check_stages",
]

TOPK_FIELDS = ("values", "image", "y", "x")
_FILE_FORMAT = "deconvnet.topk"
_FILE_VERSION = 2  # 2: per stage requested_k, first_image, end_image
_READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True, eq=False)
class TopK:
    """The top-k images of every channel of one stage.

    values: [C, k] float, descending along k (each channel's k highest per-image maxima)
    image:  [C, k] int64, image number (0, 1, 2, ... in scan order); k distinct images per channel
    y, x:   [C, k] int64, position of that maximum in the stage's output map of that image
    images_scanned: how many images the scan saw (k = min(requested k, images_scanned))
    requested_k: the k asked for (None: unknown, taken as k); `merge_scans` keeps this many
    first_image, end_image: the image numbers the scan covered, [first_image, end_image)
             (end_image None: first_image + images_scanned); images that failed to decode are
             inside the range but not counted in images_scanned

    Also usable like a read-only mapping over the four tensors: `topk["values"]`, `dict(topk)`.
    """

    values: Tensor
    image: Tensor
    y: Tensor
    x: Tensor
    images_scanned: int
    requested_k: int | None = None
    first_image: int = 0
    end_image: int | None = None

    def __post_init__(self) -> None:
        shape = self.values.shape
        if self.values.dim() != 2:
            raise ValueError(f"TopK.values: expected a [C, k] tensor, got shape {tuple(shape)}")
        for name in TOPK_FIELDS[1:]:
            tensor = getattr(self, name)
            if tensor.shape != shape or tensor.dtype != torch.int64:
                raise ValueError(
                    f"TopK.{name}: expected an int64 tensor of shape {tuple(shape)} like values, "
                    f"got {tensor.dtype} {tuple(tensor.shape)}"
                )

    @property
    def end(self) -> int:
        """One past the last image number the scan covered."""
        return self.first_image + self.images_scanned if self.end_image is None else self.end_image

    @property
    def kept(self) -> int:
        """How many entries a merge keeps per channel: requested_k (or k when unknown)."""
        return self.k if self.requested_k is None else self.requested_k

    @property
    def channels(self) -> int:
        """C, the number of channels of the stage."""
        return self.values.shape[0]

    @property
    def k(self) -> int:
        """Entries kept per channel."""
        return self.values.shape[1]

    def keys(self) -> tuple[str, ...]:
        return TOPK_FIELDS

    def __getitem__(self, key: str) -> Tensor:
        if key not in TOPK_FIELDS:
            raise KeyError(f"TopK: no field {key!r}; fields are {', '.join(TOPK_FIELDS)}")
        return getattr(self, key)

    def items(self) -> list[tuple[str, Tensor]]:
        return [(key, getattr(self, key)) for key in TOPK_FIELDS]

    def to(self, device: torch.device | str) -> TopK:
        """A copy with all tensors on `device`."""
        return TopK(
            *(getattr(self, key).to(device) for key in TOPK_FIELDS),
            self.images_scanned,
            self.requested_k,
            self.first_image,
            self.end_image,
        )


# ----------------------------------------------------------------------------------------------
# input checks


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k: expected an int >= 1 (images kept per channel), got {k!r}")
    return check_count("k", k)


def check_stages(model: nn.Module, stages: Iterable[int]) -> list[Stage]:
    """The model's stages numbered `stages` (an int or ints in 1..5), sorted, each once;
    ValueError naming `stages` otherwise."""
    if isinstance(stages, (int, numbers.Integral)) and not isinstance(stages, bool):
        stages = (stages,)
    try:
        numbers_given = list(stages)
    except TypeError:
        raise ValueError(f"stages: expected a sequence of ints in 1..5, got {stages!r}") from None
    if not numbers_given:
        raise ValueError("stages: expected at least one stage number in 1..5, got none")
    chosen = {s.number: s for s in (stage_of(model, n) for n in numbers_given)}
    return [chosen[n] for n in sorted(chosen)]


def minimum_input_size(model: nn.Module, stage_number: int = 5) -> int:
    """Smallest square input side (pixels) for which stage `stage_number` has a non-empty map.

    VGG16: 32 for stage 5; AlexNet: 63 for stage 5. Derived from the modules.
    """
    return min_input_size(model, stage_number)


def _numbers_of(batch: Any, where: str, next_image: int) -> tuple[Any, Tensor | None, int]:
    """(images, numbers or None = consecutive from next_image, end) of a tensor or NumberedBatch."""
    if not isinstance(batch, NumberedBatch):
        if isinstance(batch, (tuple, list)):
            raise ValueError(
                f"{where}: expected a [B, 3, H, W] float tensor or a deconvnet.NumberedBatch, "
                f"got {type(batch).__name__} (datasets.batches(dataset, n) yields image tensors only)"
            )
        size = int(batch.shape[0]) if torch.is_tensor(batch) and batch.dim() else 0
        return batch, None, next_image + size
    images, image_numbers, end = batch
    if not torch.is_tensor(image_numbers) or image_numbers.dim() != 1 or image_numbers.dtype != torch.int64:
        raise ValueError(f"{where}: NumberedBatch.numbers must be a [B] int64 tensor")
    if torch.is_tensor(images) and image_numbers.shape[0] != images.shape[0]:
        raise ValueError(f"{where}: {image_numbers.shape[0]} numbers for {images.shape[0]} images")
    if len(image_numbers) and (int(image_numbers[0]) < next_image or bool((image_numbers.diff() <= 0).any())):
        raise ValueError(
            f"{where}: image numbers must increase and start at >= {next_image} "
            f"(the end of the previous batch), got {image_numbers.tolist()[:8]}"
        )
    last = int(image_numbers[-1]) + 1 if len(image_numbers) else next_image
    if isinstance(end, bool) or not isinstance(end, numbers.Integral) or end < last:
        raise ValueError(f"{where}: NumberedBatch.end must be an int >= {last}, got {end!r}")
    return images, image_numbers, int(end)


def _check_batch(batch: Any, number: int, stage_pass: StagePass, size_ok: dict) -> Tensor:
    """Validate batch `number` (counted from 0): a finite [B, 3, H, W] float tensor, big enough."""
    where = f"batch {number}"
    if not torch.is_tensor(batch):
        raise ValueError(f"{where}: expected a [B, 3, H, W] float tensor, got {type(batch).__name__}")
    if batch.is_meta:
        raise ValueError(
            f"{where}: images on the meta device have no values; give real tensors (cpu or cuda)"
        )
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ValueError(f"{where}: expected a 4-D [B, 3, H, W] tensor, got shape {tuple(batch.shape)}")
    if not batch.is_floating_point():
        raise ValueError(f"{where}: expected a float tensor (normalised images), got dtype {batch.dtype}")
    height, width = int(batch.shape[2]), int(batch.shape[3])
    if (height, width) not in size_ok:
        size_ok[(height, width)] = stage_pass.first_empty(height, width)
    first_empty = size_ok[(height, width)]
    if first_empty is not None:
        side = stage_pass.min_side()
        deepest = stage_pass.chosen[-1]
        raise ValueError(
            f"{where}: images of {height}x{width} pixels are too small for stage {deepest.number} "
            f"({deepest.name}): the map after {first_empty} would be empty; this model needs at "
            f"least {side}x{side} pixels"
        )
    if batch.numel() and not bool(torch.isfinite(batch).all()):
        raise ValueError(f"{where}: contains NaN or infinite values")
    return batch


# ----------------------------------------------------------------------------------------------
# the running top-k


@dataclass
class Candidates:
    """Per-channel candidate lists of one stage: four [C, n] tensors (a running top-k or one batch)."""

    values: Tensor
    image: Tensor
    y: Tensor
    x: Tensor


def _candidates(stage_output: Tensor, image: Tensor, border: int = 0) -> Candidates:
    """Each image's spatial maximum per channel of `stage_output` [B, C, H, W], as [C, B] tensors;
    image: [B] int64, the images' numbers (on the output's device).

    Only the interior [border, H - border) x [border, W - border) is searched; the positions
    returned are in the whole map's coordinates.
    """
    if border:
        stage_output = stage_output[:, :, border:-border, border:-border]
    batch, channels, height, width = stage_output.shape
    values, flat_position = stage_output.reshape(batch, channels, height * width).max(dim=2)  # [B, C]
    return Candidates(
        values=values.t(),
        image=image.unsqueeze(0).expand(channels, batch),
        y=torch.div(flat_position, width, rounding_mode="floor").t() + border,
        x=(flat_position % width).t() + border,
    )


def _check_border(border: Any) -> int:
    if isinstance(border, bool) or not isinstance(border, numbers.Integral) or border < 0:
        raise ValueError(
            f"exclude_border: expected an int >= 0 (map positions excluded next to "
            f"each edge; 0 = the whole map), got {border!r}"
        )
    return int(border)


def _check_interior(border: int, stage_pass: StagePass, height: int, width: int, number: int | None) -> None:
    """ValueError unless every chosen stage's map of an H x W image keeps a position inside the
    excluded border (map side > 2 * border)."""
    if not border:
        return
    sizes = stage_pass.sizes(height, width)
    for s in stage_pass.chosen:
        h, w = sizes[s.number]
        if min(h, w) <= 2 * border:
            raise ValueError(
                f"exclude_border: {border} leaves no candidate position in the {h}x{w} map of "
                f"stage {s.number} ({s.name}) for {height}x{width} images"
                + ("" if number is None else f" (batch {number})")
                + "; "
                f"use at most {(min(h, w) - 1) // 2} here, or larger images"
            )


def merge_topk(running: Candidates | None, candidates: Candidates, k: int) -> Candidates:
    """Keep the k highest of running [C, k'] + candidates [C, B] per channel (rows independent).

    Requires every image number in `running` to be lower than those in `candidates`, with the
    candidates in increasing image order (true when batches are merged in scan order). Then a
    stable descending sort of the concatenation breaks value ties by the lower image number.
    """
    if running is None:
        merged = candidates
    else:
        merged = Candidates(
            *(torch.cat([getattr(running, f), getattr(candidates, f)], dim=1) for f in TOPK_FIELDS)
        )
    order = torch.sort(merged.values, dim=1, descending=True, stable=True).indices[:, :k]
    return Candidates(*(getattr(merged, f).gather(1, order) for f in TOPK_FIELDS))


def _as_topk(running: Candidates, images_scanned: int, k: int, first_image: int, end_image: int) -> TopK:
    """CPU copies as ordinary tensors (not inference tensors), so callers may modify them."""
    with torch.inference_mode(False):
        return TopK(
            values=running.values.to("cpu", copy=True),
            image=running.image.to("cpu", torch.int64, copy=True),
            y=running.y.to("cpu", torch.int64, copy=True),
            x=running.x.to("cpu", torch.int64, copy=True),
            images_scanned=images_scanned,
            requested_k=k,
            first_image=first_image,
            end_image=end_image,
        )


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first parameter (where the scan runs)."""
    for parameter in model.parameters():
        return parameter.device, parameter.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _scan_batch(
    stage_pass: StagePass,
    x: Tensor,
    caller_batch: Tensor,
    running: dict[int, Candidates | None],
    image: Tensor,
    k: int,
    border: int,
) -> None:
    """One forward pass of x [B, 3, H, W] (images numbered `image` [B]), merging each chosen
    stage's [C, B] candidates into `running` (updated in place)."""
    for number, output in stage_pass.run(x, caller_batch):
        # reduce right away: a later in-place module could overwrite this tensor
        running[number] = merge_topk(running[number], _candidates(output, image, border), k)


def check_exclude_border(
    model: nn.Module, stages: Iterable[int], exclude_border: Any, height: int, width: int
) -> int:
    """`exclude_border` as an int, or ValueError (naming it) if it is not an int >= 0 or leaves
    no candidate position in the map of a stage for H x W images. Checks nothing else."""
    border = _check_border(exclude_border)
    _check_interior(border, StagePass(model, check_stages(model, stages)), height, width, None)
    return border


def border_ring_share(topk: TopK, height: int, width: int) -> dict[str, Any]:
    """Where the live top-k entries of one stage sit: the share on the map's 1-position border ring.

    topk: the stage's `TopK` ([C, k]); height, width: its map size. Live entries are those with a
    value > 0. Returns {"entries": live entries, "on_ring": how many sit in row 0 or height - 1 or
    column 0 or width - 1, "share": on_ring / entries, "ring_share_of_map": the ring's share of
    the map's positions (what `share` would be if the position did not matter)}.
    """
    live = topk.values > 0
    ring = (topk.y == 0) | (topk.x == 0) | (topk.y == height - 1) | (topk.x == width - 1)
    entries, on_ring = int(live.sum()), int((ring & live).sum())
    inner = max(height - 2, 0) * max(width - 2, 0)
    return {
        "entries": entries,
        "on_ring": on_ring,
        "share": round(on_ring / entries, 4) if entries else None,
        "ring_share_of_map": round(1 - inner / (height * width), 4),
    }


def border_ring_shares(
    model: nn.Module, scan: Mapping[int, TopK], image_size: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """Per stage (str keys), the share of live top-k entries on the map's border ring
    (`border_ring_share`), for images of `image_size` (H, W)."""
    sizes = stage_sizes(model, *image_size)
    return {str(s): border_ring_share(t, *sizes[s]) for s, t in sorted(scan.items())}


def _check_first_image(first_image: Any) -> int:
    if (
        isinstance(first_image, bool)
        or not isinstance(first_image, numbers.Integral)
        or not 0 <= first_image <= INT64_MAX
    ):
        raise ValueError(
            f"first_image: expected an int >= 0 (the number of the first image; at most 2**63 - 1), "
            f"got {first_image!r}"
        )
    return int(first_image)


def _check_initial(
    initial: Any, chosen: list[Stage], k: int, first_image: int, device: torch.device
) -> dict[int, Candidates | None]:
    """The running top-k to continue from: `initial` {stage: TopK} (a checkpoint) on `device`."""
    running: dict[int, Candidates | None] = {s.number: None for s in chosen}
    if initial is None:
        return running
    if not isinstance(initial, dict) or sorted(initial) != sorted(running):
        raise ValueError(
            f"initial: expected {{stage: TopK}} for stages {sorted(running)} (a "
            f"checkpoint of this scan), got keys {sorted(initial) if isinstance(initial, dict) else initial!r}"
        )
    for number, topk in initial.items():
        if not isinstance(topk, TopK) or topk.kept != k or topk.end > first_image:
            raise ValueError(
                f"initial[{number}]: expected a TopK of k={k} covering images below first_image="
                f"{first_image}, got {type(topk).__name__}"
                + (f" of k={topk.kept} ending at image {topk.end}" if isinstance(topk, TopK) else "")
            )
        running[number] = Candidates(*(topk[f].to(device) for f in TOPK_FIELDS))
    return running


def _initial_counts(initial: dict[int, TopK] | None, first_image: int) -> tuple[int, int]:
    """(images already scanned, number of the first image covered) of a scan continuing `initial`."""
    if not initial:
        return 0, first_image
    some = next(iter(initial.values()))
    return some.images_scanned, some.first_image


def _check_batches(batches: Any, total: Any, progress: Any, on_batch: Any) -> int | None:
    """The number of batches for the progress bar (`total`: None or an int >= 1, else
    len(batches) when it has one); ValueError if `batches` is a single tensor or not iterable,
    `progress` not a bool, `on_batch` neither None nor callable."""
    if torch.is_tensor(batches) or not isinstance(batches, Iterable):
        got = (
            "a single tensor; pass [tensor] to scan it as one batch"
            if torch.is_tensor(batches)
            else repr(batches)
        )
        raise ValueError(f"batches: expected an iterable of [B, 3, H, W] tensors, got {got:.80}")
    if total is not None:
        check_count("total", total)
    check_bool("progress", progress)
    check_callable("on_batch", on_batch)
    if total is None and hasattr(batches, "__len__"):
        total = len(batches)  # type: ignore[arg-type]
    return total


@dataclass
class _RunningScan:
    """One `scan_topk` call under way: the forward pass run, the running top-k per stage and the
    image counters (images scanned, first image covered, next image number)."""

    stage_pass: StagePass
    k: int
    border: int
    device: torch.device
    dtype: torch.dtype
    running: dict[int, Candidates | None]
    images_scanned: int
    covered_from: int
    next_image: int
    size_ok: dict[tuple[int, int], int | None] = field(default_factory=dict)

    @classmethod
    def begin(
        cls,
        model: nn.Module,
        stage_pass: StagePass,
        k: int,
        border: int,
        next_image: int,
        initial: dict[int, TopK] | None,
    ) -> _RunningScan:
        """A scan from image `next_image` on the model's device, continuing `initial` if given."""
        device, dtype = _model_device_dtype(model)
        running = _check_initial(initial, stage_pass.chosen, k, next_image, device)
        images_scanned, covered_from = _initial_counts(initial, next_image)
        return cls(stage_pass, k, border, device, dtype, running, images_scanned, covered_from, next_image)

    def result(self) -> dict[int, TopK]:
        """The result so far: {stage number: TopK} with [C, k] tensors on the CPU."""
        return {
            n: _as_topk(r, self.images_scanned, self.k, self.covered_from, self.next_image)
            for n, r in self.running.items()
        }

    def add(self, number: int, batch: Any) -> int | None:
        """Check batch `number` (a [B, 3, H, W] tensor or a NumberedBatch) and merge its candidates:
        its number of images, or None when every image of it failed to decode."""
        batch, image_numbers, end = _numbers_of(batch, f"batch {number}", self.next_image)
        if image_numbers is not None and len(image_numbers) == 0:
            self.next_image = end  # every image of this batch failed to decode
            return None
        batch = _check_batch(batch, number, self.stage_pass, self.size_ok)
        _check_interior(self.border, self.stage_pass, batch.shape[2], batch.shape[3], number)
        size = int(batch.shape[0])
        if image_numbers is None:
            image_numbers = torch.arange(self.next_image, end)
        if size:
            x = batch.to(device=self.device, dtype=self.dtype, non_blocking=True)
            image = image_numbers.to(self.device, non_blocking=True)
            _scan_batch(self.stage_pass, x, batch, self.running, image, self.k, self.border)
        self.images_scanned += size
        self.next_image = end
        return size


def _scan_batches(
    state: _RunningScan,
    batches: Iterable[Tensor | NumberedBatch],
    total: int | None,
    progress: bool,
    on_batch: Callable[[dict[int, TopK], int], None] | None,
) -> None:
    """Every batch of `batches` into `state`, under inference mode, with a progress bar; calls
    `on_batch(result so far, images scanned)` after each batch that held images."""
    with (
        torch.inference_mode(),
        tqdm(batches, total=total, disable=not progress, unit="batch", desc="scan top-k") as bar,
    ):
        for number, batch in enumerate(bar):
            size = state.add(number, batch)
            if size is None:
                continue
            bar.set_postfix(images=state.images_scanned, refresh=False)
            if on_batch is not None and size:
                on_batch(state.result(), state.images_scanned)


@full_float32()
def scan_topk(
    model: nn.Module,
    batches: Iterable[Tensor | NumberedBatch],
    k: int = 9,
    stages: Iterable[int] = (1, 2, 3, 4, 5),
    first_image: int = 0,
    progress: bool = True,
    total: int | None = None,
    on_batch: Callable[[dict[int, TopK], int], None] | None = None,
    exclude_border: int = 0,
    initial: dict[int, TopK] | None = None,
) -> dict[int, TopK]:
    """Top-k images per channel of each requested stage over all images in `batches`.

    model:   any supported model; only its part up to the deepest stage is run (`StagePass`), on
             the model's device, under `torch.inference_mode()`, in its eval function. The model
             is not changed (chain modules in training mode are switched to eval for the scan and
             switched back afterwards).
    batches: iterable of [B, 3, H, W] float tensors in the model's normalised input space; images
             are numbered first_image, first_image + 1, ... in the order seen. B, H and W may vary
             between batches. A `NumberedBatch` carries its images' numbers itself (a loader
             that leaves out images that failed to decode).
    k:       images kept per channel (fewer if fewer images were seen).
    stages:  stage numbers (1..5); all are updated in ONE forward pass per batch.
    first_image: the number of the first image (a shard of a dataset starts at its offset).
    progress: show a tqdm bar over batches; `total` = number of batches if known
             (default: len(batches) when available).
    on_batch: optional callback(result_so_far, images_scanned) after each batch, e.g. to save a
             checkpoint with `save_topk(..., complete=False)`.
    exclude_border: n >= 0; positions within n of any edge of a stage's [h, w] map are no
             candidates (rows n..h-n-1, columns n..w-n-1 remain). 0 (default) = the whole map,
             the paper's procedure. ValueError if a stage's map keeps no position.
    initial: a checkpoint of this scan ({stage: TopK} over images below first_image, same k and
             stages) to continue from; the result then covers both.

    Returns {stage number: TopK} with [C, k] tensors on the CPU.
    An interrupted scan (KeyboardInterrupt) raises and returns nothing: no partial result can be
    mistaken for a complete one.
    """
    check_model_values(model)
    k = _check_k(k)
    border = _check_border(exclude_border)
    chosen = check_stages(model, stages)
    next_image = _check_first_image(first_image)
    total = _check_batches(batches, total, progress, on_batch)
    state = _RunningScan.begin(model, StagePass(model, chosen), k, border, next_image, initial)
    with state.stage_pass.eval_mode():
        _scan_batches(state, batches, total, progress, on_batch)
    if state.images_scanned == 0:
        raise ValueError("batches: no images (the iterable was empty or every batch had B = 0)")
    return state.result()


def merge_scans(results: Sequence[Mapping[int, TopK]]) -> dict[int, TopK]:
    """One scan's result from the results of scans over disjoint image ranges (shards).

    results: {stage: TopK} per shard (`scan_topk(..., first_image=offset)`), in any order; same
    stages, channels and k; their image ranges [first_image, end) must not overlap. Per channel
    the k highest values over all shards are kept, ties to the lower image number: exactly what
    one scan over the shards' images in image-number order, in the same batches, keeps. Returns
    {stage: TopK} on the CPU.
    """
    shards = _check_shards(results)
    merged: dict[int, TopK] = {}
    for number in sorted(shards[0]):
        parts = [shard[number] for shard in shards]
        scanned = sum(t.images_scanned for t in parts)
        keep = min(parts[0].kept, scanned)
        joined = {f: torch.cat([t[f] for t in parts], dim=1) for f in TOPK_FIELDS}
        by_image = torch.sort(joined["image"], dim=1, stable=True).indices
        joined = {f: v.gather(1, by_image) for f, v in joined.items()}
        order = torch.sort(joined["values"], dim=1, descending=True, stable=True).indices[:, :keep]
        merged[number] = TopK(
            *(joined[f].gather(1, order) for f in TOPK_FIELDS),
            scanned,
            parts[0].kept,
            parts[0].first_image,
            parts[-1].end,
        )
    return merged


def _check_shards(results: Any) -> list[Mapping[int, TopK]]:
    """The shards sorted by first image; ValueError naming what does not fit together."""
    if isinstance(results, Mapping) or not isinstance(results, Sequence) or not results:
        raise ValueError("results: expected a non-empty list of scan results ({stage: TopK} each)")
    for i, shard in enumerate(results):
        if (
            not isinstance(shard, Mapping)
            or not shard
            or not all(isinstance(t, TopK) for t in shard.values())
        ):
            raise ValueError(f"results[{i}]: expected {{stage: TopK}} from scan_topk")
    shards = sorted(results, key=lambda shard: next(iter(shard.values())).first_image)
    first = shards[0]
    for shard in shards:
        if sorted(shard) != sorted(first):
            raise ValueError(f"results: stages differ between shards: {sorted(first)} and {sorted(shard)}")
        for number, topk in shard.items():
            ref = first[number]
            if topk.channels != ref.channels or topk.kept != ref.kept:
                raise ValueError(
                    f"results: stage {number} differs between shards: {ref.channels} channels, "
                    f"k={ref.kept} against {topk.channels} channels, k={topk.kept}"
                )
    for before, after in zip(shards, shards[1:]):
        a, b = next(iter(before.values())), next(iter(after.values()))
        if b.first_image < a.end:
            raise ValueError(
                f"results: shards overlap: images [{a.first_image}, {a.end}) and "
                f"[{b.first_image}, {b.end}); every image may be scanned only once"
            )
    return shards


# ----------------------------------------------------------------------------------------------
# saving and loading


class LoadedTopK(NamedTuple):
    """What `load_topk` returns: `result` {stage: TopK} and the file's `meta` dict."""

    result: dict[int, TopK]
    meta: dict


_PLAIN_TYPES = (str, int, float, bool, type(None))


def _check_meta(value: Any, where: str = "meta") -> None:
    """meta must hold only str/int/float/bool/None, lists/tuples and str-keyed dicts (safe to load)."""
    if isinstance(value, _PLAIN_TYPES):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_meta(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be str, got {type(key).__name__} {key!r}")
            _check_meta(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"{where}: expected str, int, float, bool, None, list, tuple or dict, got {type(value).__name__}"
    )


def save_topk(
    result: dict[int, TopK], path: str | os.PathLike, meta: dict | None = None, complete: bool = True
) -> Path:
    """Write `result` ({stage: TopK}) and `meta` to `path` atomically (temp file + os.replace).

    meta is stored with `complete` (True unless saving a checkpoint of an unfinished scan) and
    `images_scanned` added. Plain values only (str, numbers, bool, None, lists, dicts).
    """
    if not isinstance(result, dict) or not result:
        raise ValueError("result: expected a non-empty dict {stage number: TopK} from scan_topk")
    for number, topk in result.items():
        if not isinstance(topk, TopK):
            raise ValueError(f"result[{number!r}]: expected a TopK, got {type(topk).__name__}")
        stage_of_number_ok = isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= 5
        if not stage_of_number_ok:
            raise ValueError(f"result: keys must be stage numbers 1..5, got {number!r}")
    scanned = {topk.images_scanned for topk in result.values()}
    if len(scanned) != 1:
        raise ValueError(f"result: stages disagree on the number of images scanned: {sorted(scanned)}")
    meta = dict(meta or {})
    _check_meta(meta)
    meta["complete"] = bool(complete)
    meta["images_scanned"] = scanned.pop()
    payload = {
        "format": _FILE_FORMAT,
        "version": _FILE_VERSION,
        "meta": meta,
        "stages": {
            int(number): {
                **{key: tensor.detach().cpu() for key, tensor in topk.items()},
                "requested_k": topk.kept,
                "first_image": topk.first_image,
                "end_image": topk.end,
            }
            for number, topk in result.items()
        },
    }
    return atomic_write(path, lambda temp: _save_payload(payload, temp))


def _save_payload(payload: dict[str, Any], temp: Path) -> None:
    """`torch.save` of a top-k file's payload into the file `temp` (through a file object)."""
    with open(temp, "wb") as file:
        torch.save(payload, file)


def load_topk(path: str | os.PathLike, allow_incomplete: bool = False) -> LoadedTopK:
    """Read a file written by `save_topk`: (result {stage: TopK}, meta).

    Refuses (ValueError) a file whose meta lacks `complete: True`, unless `allow_incomplete`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_topk: no top-k file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"load_topk: {path} is not a readable top-k file ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != _FILE_FORMAT:
        raise ValueError(f"load_topk: {path} is not a deconvnet top-k file (format tag missing)")
    if payload.get("version") not in _READABLE_VERSIONS:
        raise ValueError(
            f"load_topk: {path} has version {payload.get('version')!r}, this code reads {_FILE_VERSION}"
        )
    meta = payload.get("meta")
    if not isinstance(meta, dict):
        raise ValueError(f"load_topk: {path} has no meta dict")
    if meta.get("complete") is not True and not allow_incomplete:
        raise ValueError(
            f"load_topk: {path} is not marked complete (meta 'complete' is {meta.get('complete')!r}): "
            "the scan that wrote it did not finish; rerun the scan"
        )
    scanned = int(meta.get("images_scanned", 0))
    result = {
        int(number): TopK(
            **{key: tensors[key] for key in TOPK_FIELDS},
            images_scanned=scanned,
            requested_k=tensors.get("requested_k"),
            first_image=int(tensors.get("first_image", 0)),
            end_image=tensors.get("end_image"),
        )
        for number, tensors in sorted(payload["stages"].items())
    }
    return LoadedTopK(result, meta)
