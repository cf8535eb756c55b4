"""The data of Fig. 1 of Zeiler & Fergus (2014): every intermediate map of one deconvnet layer
attached to one convnet layer, for one image, one stage, one channel. Computation only: no files,
no drawing (`deconvnet.figures.fig1` draws, `deconvnet.jobs.fig1` writes the job folder).

The layer shown is the LAST conv -> relu -> [max pool] of the requested stage (docs/stages.md):
on AlexNet that is the whole stage; on VGG16 a stage is a block of 2-3 convolutions and the figure
shows its last one. The maps are those of ONE channel of that layer:

    convnet  : layer below (input of the conv) -> feature maps (conv output, channel c) -> rectified
               feature maps -> pooled maps (+ switches, recorded by `Mirror.record`)
    deconvnet: layer-above reconstruction (the seed, at the pooled level) -> unpooled maps
               (`deconvnet.core.mirror.unpool` through the recorded switches) -> rectified unpooled maps
               (the mirror's `BackwardReLU`, rule "deconvnet") -> filtering with F^T (the mirror's
               `TiedTransposedConv`, the model's own weight tensor) -> reconstruction at the layer
               below; when the layer below is not the image, the rest of the mirror takes it on down
               to the pixels (an extra panel).

    data = fig1_data(model, image, stage, channel=None, keep="max")

`fig1_data` returns a dict of float32/int64 numpy arrays (see `ARRAYS`) plus "meta", a JSON-ready
dict; the drawing reads nothing else, so a figure redrawn from the saved arrays is pixel-identical.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.architecture import architecture_name
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.geometry import ReceptiveField, receptive_field, spans
from deconvnet.core.mirror import ForwardRecord, Mirror, is_tiling, unpool
from deconvnet.core.validation import check_images
from deconvnet.core.windows import Region, reframe
from deconvnet.data.images import denormalize, load_image
from deconvnet.data.models import model_name, weights_info

KEEPS = ("max", "all")
ZOOM_POOLED = 5  # zoomed deconvnet panels (keep="max"): this many pooled positions per side
BLOCK = 2  # the illustration pools a BLOCK x BLOCK group of windows

# name -> what it is (all at batch 0; "channel" = the chosen channel c, "below channel" = c_in)
ARRAYS = {
    "image": "[3, H0, W0] the input image, de-normalised to [0, 1]",
    "below": "[3, H0, W0] normalised input (layer below = image) or [H, W] below channel of the conv's input",
    "feature": "[h, w] conv output (feature map) of channel c, bias included",
    "rectified": "[h, w] relu(feature)",
    "pooled": "[hp, wp] pooled map of channel c (the stage output; = rectified without pooling)",
    "switch_count": "[h, w] int64: how many pooling windows chose each position (no pooling: absent)",
    "seed": "[hp, wp] the layer-above reconstruction sent down (channel c; other channels zero)",
    "unpooled": "[h, w] unpool(seed, switches of channel c)",
    "rectified_unpooled": "[h, w] relu(unpooled)",
    "reconstruction": "[3, H0, W0] (layer below = image) or [H, W] below channel: conv_transpose "
    "with F of all channels",
    "pixels": "[3, H0, W0] the same reconstruction taken down to the pixels by the whole mirror",
    "patch": "[L, L] rectified map crop used for the pooling illustration",
    "patch_pooled": "[m, m] F.max_pool2d(patch)",
    "patch_switches": "[m, m] int64 flat switch positions inside the patch",
    "patch_unpooled": "[L, L] unpool(patch_pooled, patch_switches)",
}


# ------------------------------------------------------------------------------------ validation


def check_stage(stage: object) -> int:
    """The stage number 1..5, or ValueError."""
    if isinstance(stage, bool) or not isinstance(stage, numbers.Integral) or not 1 <= stage <= 5:
        raise ValueError(f"stage: expected an int in 1..5 (the paper's layers), got {stage!r}")
    return int(stage)


def check_keep(keep: object) -> str:
    """'max' or 'all', or ValueError."""
    if keep not in KEEPS:
        raise ValueError(
            f"keep: expected 'max' (the channel's strongest pooled activation only) "
            f"or 'all' (the channel's whole pooled map), got {keep!r}"
        )
    return str(keep)


def check_channel(value: object, count: int, key: str, what: str) -> int | None:
    """None or a channel in 0..count - 1 of `what`, or ValueError naming `key`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{key}: expected null or an int in 0..{count - 1}, got {value!r}")
    if not 0 <= int(value) < count:
        raise ValueError(f"{key}: {int(value)} is outside {what}'s channels 0..{count - 1}")
    return int(value)


# ------------------------------------------------------------------------------- the layer shown


def module_names(model: nn.Module) -> list[str]:
    """Paper-style names of `model.features` modules: conv1_2, relu1_2, pool1 (VGG); conv1 (AlexNet)."""
    vgg = architecture_name(model) == "vgg"
    names, block, conv_in_block, convs = [], 1, 0, 0
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            conv_in_block += 1
            convs += 1
        suffix = f"{block}_{conv_in_block}" if vgg else str(convs)
        if isinstance(m, nn.Conv2d):
            names.append(f"conv{suffix}")
        elif isinstance(m, nn.ReLU):
            names.append(f"relu{suffix}")
        elif isinstance(m, nn.MaxPool2d):
            names.append(f"pool{block if vgg else convs}")
            block, conv_in_block = block + 1, 0
        else:
            names.append(type(m).__name__.lower())
    return names


def shown_layer(model: nn.Module, stage: int) -> dict[str, Any]:
    """Indices into `model.features` of the last conv, its relu and pool (None) of `stage`."""
    info = stage_of(model, stage)
    layers = list(model.features)
    conv = max(i for i in range(info.index + 1) if isinstance(layers[i], nn.Conv2d))
    relu = conv + 1
    pool = info.index if isinstance(layers[info.index], nn.MaxPool2d) else None
    if not isinstance(layers[relu], nn.ReLU) or info.index != (relu if pool is None else relu + 1):
        raise ValueError(f"model: stage {stage} does not end in conv -> relu -> [max pool]")
    first = 0
    previous = [stage_of(model, s).index for s in range(1, stage)]
    if previous:
        first = previous[-1] + 1
    names = module_names(model)
    return {
        "conv": conv,
        "relu": relu,
        "pool": pool,
        "stage_index": info.index,
        "stage_first": first,
        "names": names[: info.index + 1],
        "stage_name": info.name,
        "channels": info.channels,
    }


# ----------------------------------------------------------------------------------- computation


def _crop_box(center: int, length: int, size: int) -> tuple[int, int]:
    start = min(max(center - length // 2, 0), max(size - length, 0))
    return start, min(start + length, size)


def _read_box(box: tuple[int, int], span) -> tuple[int, int]:
    """Input positions read by output positions [a, b) of a module along one axis (unclipped)."""
    a, b = box
    return a * span.stride - span.padding, (b - 1) * span.stride - span.padding + span.extent


def _clip(box: tuple[int, int], size: int) -> tuple[int, int]:
    return max(box[0], 0), min(box[1], size)


def _choose_block(
    switches: Tensor, values: Tensor, kept: tuple[int, int], tiling: bool, m: int
) -> tuple[int, int, str]:
    """Top-left pooled position of the m x m block of windows for the illustration.

    Blocks containing the kept unit come first; with overlapping pooling the first block (by
    distance to the kept unit) in which two windows share a non-zero switch is taken, so the
    figure can show that shared switches sum.
    """
    hp, wp = switches.shape
    py, px = kept
    if hp < m or wp < m:
        raise ValueError("pooled map smaller than the illustration block")
    blocks = [(by, bx) for by in range(hp - m + 1) for bx in range(wp - m + 1)]

    def distance(b: tuple[int, int]) -> tuple[float, int, int]:
        cy, cx = b[0] + (m - 1) / 2, b[1] + (m - 1) / 2
        return ((cy - py) ** 2 + (cx - px) ** 2, b[0], b[1])

    blocks.sort(key=distance)
    containing = [b for b in blocks if b[0] <= py < b[0] + m and b[1] <= px < b[1] + m]
    if tiling:
        return (*containing[0], f"the {m}\u00d7{m} block of windows around the strongest unit")
    for b in blocks:
        sw = switches[b[0] : b[0] + m, b[1] : b[1] + m].flatten()
        val = values[b[0] : b[0] + m, b[1] : b[1] + m].flatten()
        for i in range(len(sw)):
            for j in range(i + 1, len(sw)):
                if sw[i] == sw[j] and val[i] > 0:
                    where = (
                        "around the strongest unit" if b in containing else "nearest to the strongest unit"
                    )
                    return (
                        *b,
                        f"the {m}\u00d7{m} block of windows {where} in which two "
                        "windows share a non-zero switch",
                    )
    return (*containing[0], "no two windows of this channel share a non-zero switch")


def _illustration(
    rectified: Tensor, switches: Tensor, pooled: Tensor, pool: nn.MaxPool2d, kept: tuple[int, int]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Pool a small real patch with F.max_pool2d and unpool it with `deconvnet.core.mirror.unpool`."""
    sy, sx = spans(pool)
    if sy != sx or sy.padding or sy.dilation != 1 or sy.ceil_mode:
        return {}, {"skipped": "the illustration needs square pooling without padding"}
    k, s, m = sy.kernel, sy.stride, BLOCK
    by, bx, why = _choose_block(switches, pooled, kept, is_tiling(pool), m)
    size = (m - 1) * s + k
    y0, x0 = by * s, bx * s
    patch = rectified[y0 : y0 + size, x0 : x0 + size]
    p_pooled, p_switches = F.max_pool2d(patch[None, None], k, s, return_indices=True)
    p_unpooled = unpool(p_pooled, p_switches, (size, size))[0, 0]
    p_pooled, p_switches = p_pooled[0, 0], p_switches[0, 0]
    flat = p_switches.flatten().tolist()
    shared = sorted({f for f in flat if flat.count(f) > 1})
    meta = {
        "kernel": k,
        "stride": s,
        "block": m,
        "size": size,
        "origin": [y0, x0],
        "pooled_origin": [by, bx],
        "why": why,
        "overlapping": not is_tiling(pool),
        "shared_switches": [
            {
                "row": f // size,
                "col": f % size,
                "windows": flat.count(f),
                "value": float(patch.flatten()[f]),
                "sum": float(p_unpooled.flatten()[f]),
            }
            for f in shared
        ],
    }
    arrays = {
        "patch": patch,
        "patch_pooled": p_pooled,
        "patch_switches": p_switches,
        "patch_unpooled": p_unpooled,
    }
    return {n: _np(a) for n, a in arrays.items()}, meta


def _np(t: Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return t.numpy().astype(np.int64 if not t.is_floating_point() else np.float32, copy=True)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


@dataclass
class ForwardMaps:
    """The convnet maps of the shown layer for image 0, bottom-up."""

    below_all: Tensor  # [1, C_in, H, W] input of the conv (the normalised image when the conv is first)
    feature: Tensor  # [1, C, h, w] conv output, bias included
    rectified: Tensor  # [1, C, h, w] relu(feature)
    out: Tensor  # [C, hp, wp] pooled maps (= rectified[0] without pooling): the stage output
    switches: Tensor | None  # [1, C, hp, wp] int64 the mirror's recorded switches; None without pooling


@dataclass
class KeptUnit:
    """The channel shown and its strongest pooled unit (first maximum), with that unit's switch."""

    channel: int
    channel_by: str
    y: int
    x: int
    value: float
    switch_y: int
    switch_x: int


@dataclass
class BackwardMaps:
    """The deconvnet maps of the shown channel, top-down from the seed."""

    seed: Tensor  # [hp, wp] the layer-above reconstruction (channel c; other channels zero)
    unpooled: Tensor  # [h, w] unpool(seed, switches of channel c)
    switch_count: Tensor | None  # [h, w] int64 windows choosing each position; None without pooling
    rectified_unpooled: Tensor  # [h, w] relu(unpooled)
    recon_below: Tensor  # [C_in, H, W] conv_transpose with F of all channels, at the layer below
    pixels: Tensor  # [3, H0, W0] the same reconstruction taken down to the pixels by the whole mirror


def _check_below_channel(below_channel: object, conv: nn.Conv2d, below_is_image: bool) -> int | None:
    """The layer-below channel asked for (None = choose it), or ValueError."""
    if below_is_image and below_channel is not None:
        raise ValueError("below_channel: the layer below this conv is the RGB image; leave it null")
    return check_channel(below_channel, conv.in_channels, "below_channel", "the layer below")


def _checked_image(
    model: nn.Module, image: Tensor | str | Path, image_name: str | None
) -> tuple[Tensor, str | None]:
    """The normalised image [1, 3, H, W] (read with `load_image` from a path / sample name) and its name."""
    if not isinstance(image, Tensor):
        image_name = image_name or str(image)
        image = load_image(image, model)
    check_images(image, model, "image")
    if image.shape[0] != 1:
        raise ValueError(f"image: expected one image [1, 3, H, W], got a batch of {image.shape[0]}")
    return image, image_name


def _forward_maps(
    layers: list[nn.Module], layer: dict[str, Any], x: Tensor, record: ForwardRecord
) -> ForwardMaps:
    """Our own out-of-place forward pass of x [1, 3, H0, W0], keeping the maps the figure shows."""
    conv_i, pool_i = layer["conv"], layer["pool"]
    conv: nn.Conv2d = layers[conv_i]
    act = x
    for m in layers[:conv_i]:
        if isinstance(m, nn.Conv2d):
            act = F.conv2d(act, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
        elif isinstance(m, nn.ReLU):
            act = F.relu(act)
        else:
            act = F.max_pool2d(act, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    below_all = act
    feature = F.conv2d(
        below_all, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups
    )
    rectified = F.relu(feature)
    if pool_i is not None:
        pool = layers[pool_i]
        pooled = F.max_pool2d(
            rectified, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode
        )
        switches = record.switches[pool_i]  # the mirror's own record of this image
    else:
        pooled, switches = rectified, None
    return ForwardMaps(below_all, feature, rectified, pooled[0], switches)


def _kept_unit(maps: ForwardMaps, channel: int | None) -> KeptUnit:
    """The channel (None: the one holding the stage output's strongest activation) and its strongest unit."""
    out = maps.out
    if channel is None:
        channel = int(out.flatten().argmax()) // (out.shape[1] * out.shape[2])
        channel_by = "strongest activation of the stage output"
    else:
        channel_by = "chosen"
    wp = out.shape[2]
    flat = int(out[channel].flatten().argmax())  # first maximum, as select_seeds
    py, px = divmod(flat, wp)
    value = float(out[channel, py, px])
    w = maps.feature.shape[3]
    if maps.switches is not None:
        sy_, sx_ = divmod(int(maps.switches[0, channel, py, px]), w)
    else:
        sy_, sx_ = py, px
    return KeptUnit(channel, channel_by, py, px, value, sy_, sx_)


def _seed(out: Tensor, kept: KeptUnit, keep: str) -> Tensor:
    """[hp, wp] the layer-above reconstruction of channel c: its strongest unit ("max") or whole map ("all")."""
    channel, py, px = kept.channel, kept.y, kept.x
    seed = torch.zeros_like(out[channel])
    if keep == "max":
        seed[py, px] = out[channel, py, px]
    else:
        seed = out[channel].clone()
    return seed


def _unpooled(
    seed: Tensor, switches: Tensor | None, channel: int, size: tuple[int, int]
) -> tuple[Tensor, Tensor | None]:
    """seed [hp, wp] unpooled through the switches [1, C, hp, wp] of `channel` -> ([h, w], switch count [h, w])."""
    h, w = size
    if switches is None:
        return seed.clone(), None
    hp, wp = seed.shape
    unpooled = unpool(seed[None, None], switches[:, channel : channel + 1], (h, w))[0, 0]
    count = torch.zeros(h * w, dtype=torch.int64, device=seed.device)
    count.scatter_add_(
        0, switches[0, channel].flatten(), torch.ones(hp * wp, dtype=torch.int64, device=seed.device)
    )
    return unpooled, count.view(h, w)


def _mirror_down(
    mirror: Mirror,
    record: ForwardRecord,
    layer: dict[str, Any],
    feature: Tensor,
    unpooled: Tensor,
    channel: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """The mirror's relu, F^T and the stages below: (rectified unpooled [h, w], layer below [C_in, H, W],
    pixels [3, H0, W0]) of unpooled [h, w] placed in channel c of a zero map shaped as feature [1, C, h, w]."""
    conv_i, relu_i = layer["conv"], layer["relu"]
    by_index = {st.index: st for st in mirror.stages}
    zero = torch.zeros(1, dtype=torch.long)  # origin 0 and batch image 0
    full = torch.zeros_like(feature)
    full[0, channel] = unpooled
    region = by_index[relu_i](Region(full, zero.clone(), zero, zero), record)
    rectified_unpooled = region.signal[0, channel]
    region = by_index[conv_i](region, record)
    region = reframe(region, zero, zero, record.sizes[conv_i])
    recon_below = region.signal[0]
    for index in sorted((i for i in by_index if i < conv_i), reverse=True):
        region = by_index[index](region, record)
    pixels = reframe(region, zero, zero, record.sizes[0]).signal[0]
    return rectified_unpooled, recon_below, pixels


def _backward_maps(
    mirror: Mirror, record: ForwardRecord, layer: dict[str, Any], maps: ForwardMaps, kept: KeptUnit, keep: str
) -> BackwardMaps:
    """deconvnet: seed -> unpool -> relu -> F^T, with the library's own functions and mirror stages."""
    h, w = maps.feature.shape[2:]
    seed = _seed(maps.out, kept, keep)
    unpooled, switch_count = _unpooled(seed, maps.switches, kept.channel, (h, w))
    rectified_unpooled, recon_below, pixels = _mirror_down(
        mirror, record, layer, maps.feature, unpooled, kept.channel
    )
    return BackwardMaps(seed, unpooled, switch_count, rectified_unpooled, recon_below, pixels)


def _below_channel(
    conv: nn.Conv2d, below_all: Tensor, kept: KeptUnit, below_channel: int | None, below_is_image: bool
) -> tuple[int | None, str]:
    """Which channel of the layer below [1, C_in, H, W] to show, and why."""
    if below_is_image:
        below_by = "the RGB input image"
    elif below_channel is None:
        ky, kx = spans(conv)
        padded = F.pad(below_all[0], (kx.padding, kx.padding, ky.padding, ky.padding))
        sy_, sx_ = kept.switch_y, kept.switch_x
        window = padded[
            :,
            sy_ * ky.stride : sy_ * ky.stride + ky.extent : ky.dilation,
            sx_ * kx.stride : sx_ * kx.stride + kx.extent : kx.dilation,
        ]
        if conv.groups == 1:
            share = (window * conv.weight[kept.channel]).sum(dim=(1, 2))
            below_channel = int(share.argmax())
            below_by = "largest contribution to the strongest unit"
        else:
            below_channel = int(below_all[0].flatten(1).amax(1).argmax())
            below_by = "strongest activation"
    else:
        below_by = "chosen"
    return below_channel, below_by


def _zoom_windows(
    layers: list[nn.Module],
    layer: dict[str, Any],
    maps: ForwardMaps,
    kept: KeptUnit,
    rf: ReceptiveField,
    x: Tensor,
) -> dict[str, list[list[int]]]:
    """Zoom windows [[y0, y1], [x0, x1]] per level (keep="max"): the seed lives in a few positions;
    show the same region at the pooled, map, below and pixel (x [1, 3, H0, W0]) levels."""
    pool_i = layer["pool"]
    conv_y, conv_x = spans(layers[layer["conv"]])
    py, px = kept.y, kept.x
    hp, wp = maps.out.shape[1:]
    h, w = maps.feature.shape[2:]
    zoom_pooled = [_crop_box(py, ZOOM_POOLED, hp), _crop_box(px, ZOOM_POOLED, wp)]
    if pool_i is not None:
        py_span, px_span = spans(layers[pool_i])
        zoom_map = [
            _clip(_read_box(zoom_pooled[0], py_span), h),
            _clip(_read_box(zoom_pooled[1], px_span), w),
        ]
    else:
        zoom_map = zoom_pooled
    bh, bw = maps.below_all.shape[2:]
    zoom_below = [_clip(_read_box(zoom_map[0], conv_y), bh), _clip(_read_box(zoom_map[1], conv_x), bw)]
    top, left, bottom, right = rf.box(py, px)
    margin_y, margin_x = max(rf.size[0] // 2, 9), max(rf.size[1] // 2, 9)
    zoom_pixels = [
        _clip((top - margin_y, bottom + margin_y), int(x.shape[2])),
        _clip((left - margin_x, right + margin_x), int(x.shape[3])),
    ]
    return {
        "pooled": [list(b) for b in zoom_pooled],
        "map": [list(b) for b in zoom_map],
        "below": [list(b) for b in zoom_below],
        "pixels": [list(b) for b in zoom_pixels],
    }


def _arrays(
    model: nn.Module,
    x: Tensor,
    maps: ForwardMaps,
    back: BackwardMaps,
    channel: int,
    below_channel: int | None,
    below_is_image: bool,
) -> dict[str, np.ndarray]:
    """The figure's numpy arrays (see `ARRAYS`) of image x [1, 3, H0, W0], channel c, the below channel."""
    arrays: dict[str, np.ndarray] = {
        "image": _np(denormalize(x[0], model)),
        "below": _np(x[0] if below_is_image else maps.below_all[0, below_channel]),
        "feature": _np(maps.feature[0, channel]),
        "rectified": _np(maps.rectified[0, channel]),
        "pooled": _np(maps.out[channel]),
        "seed": _np(back.seed),
        "unpooled": _np(back.unpooled),
        "rectified_unpooled": _np(back.rectified_unpooled),
        "reconstruction": _np(back.recon_below if below_is_image else back.recon_below[below_channel]),
        "pixels": _np(back.pixels),
    }
    if back.switch_count is not None:
        arrays["switch_count"] = _np(back.switch_count)
    return arrays


def _pooling_illustration(
    layers: list[nn.Module], layer: dict[str, Any], maps: ForwardMaps, kept: KeptUnit
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The pooling illustration's arrays and meta for channel c; none ("skipped") without max pooling."""
    if layer["pool"] is None or maps.switches is None:
        return {}, {"skipped": "this layer has no max pooling"}
    return _illustration(
        maps.rectified[0, kept.channel],
        maps.switches[0, kept.channel],
        maps.out[kept.channel],
        layers[layer["pool"]],
        (kept.y, kept.x),
    )


def _shown_meta(layers: list[nn.Module], layer: dict[str, Any]) -> dict[str, Any]:
    """The modules shown: indices, paper-style names, conv and pool geometry."""
    conv_i, relu_i, pool_i = layer["conv"], layer["relu"], layer["pool"]
    conv: nn.Conv2d = layers[conv_i]
    names = layer["names"]
    pool_span = spans(layers[pool_i])[0] if pool_i is not None else None
    conv_y, _ = spans(conv)
    return {
        "conv": conv_i,
        "relu": relu_i,
        "pool": pool_i,
        "conv_name": names[conv_i],
        "relu_name": names[relu_i],
        "pool_name": names[pool_i] if pool_i is not None else None,
        "whole_stage": layer["stage_first"] == conv_i,
        "conv_shape": list(conv.weight.shape),
        "conv_stride": conv_y.stride,
        "conv_padding": conv_y.padding,
        "pool_kernel": pool_span.kernel if pool_span else None,
        "pool_stride": pool_span.stride if pool_span else None,
    }


def _meta(
    model: nn.Module,
    x: Tensor,
    image_name: str | None,
    layer: dict[str, Any],
    *,
    stage: int,
    keep: str,
    kept: KeptUnit,
    below: tuple[int | None, str],
    rf: ReceptiveField,
    zoom: dict[str, list[list[int]]] | None,
    illustration: dict[str, Any],
) -> dict[str, Any]:
    """The figure's JSON-ready meta for image x [1, 3, H0, W0]; below = (channel, why it was chosen)."""
    layers = list(model.features)
    conv: nn.Conv2d = layers[layer["conv"]]
    below_is_image = layer["conv"] == 0
    names = layer["names"]
    return {
        "model": model_name(model),
        "weights": weights_info(model).as_dict(),
        "image": image_name if image_name is not None else "caller-supplied tensor",
        "image_size": [int(x.shape[2]), int(x.shape[3])],
        "stage": stage,
        "stage_name": layer["stage_name"],
        "stage_modules": [
            f"features[{i}] {names[i]}" for i in range(layer["stage_first"], layer["stage_index"] + 1)
        ],
        "shown": _shown_meta(layers, layer),
        "below_is_image": below_is_image,
        "below_name": "image" if below_is_image else names[layer["conv"] - 1],
        "below_channel": below[0],
        "below_channel_by": below[1],
        "below_channels": conv.in_channels,
        "channel": kept.channel,
        "channel_by": kept.channel_by,
        "channels": conv.out_channels,
        "keep": keep,
        "kept": {
            "y": kept.y,
            "x": kept.x,
            "value": kept.value,
            "switch_y": kept.switch_y,
            "switch_x": kept.switch_x,
        },
        "receptive_field": {"size": list(rf.size), "box": list(rf.box(kept.y, kept.x))},
        "zoom": zoom,
        "illustration": illustration,
        "rule": "deconvnet",
    }


def fig1_data(
    model: nn.Module,
    image: Tensor | str | Path,
    stage: int,
    channel: int | None = None,
    keep: str = "max",
    below_channel: int | None = None,
    image_name: str | None = None,
) -> dict[str, Any]:
    """Every map of Fig. 1 for one image, one stage (its last conv -> relu -> [pool]), one channel.

    image: a normalised tensor [1, 3, H, W] or a path / sample name (then read with `load_image`).
    channel: the channel shown; None = the channel holding the strongest activation of the stage
    output. keep: "max" = the seed is only the channel's strongest pooled activation (as
    `deconvnet.reconstruct(..., keep=channel)`); "all" = the channel's whole pooled map.
    below_channel: which channel of the layer below to show when that layer is not the image;
    None = the one contributing most to the kept unit's feature-map value.
    Returns {array name: numpy array (see ARRAYS)} plus "meta" (JSON-ready dict).
    """
    stage = check_stage(stage)
    keep = check_keep(keep)
    layer = shown_layer(model, stage)
    layers = list(model.features)
    conv: nn.Conv2d = layers[layer["conv"]]
    channel = check_channel(channel, conv.out_channels, "channel", f"{layer['stage_name']}")
    below_is_image = layer["conv"] == 0
    below_channel = _check_below_channel(below_channel, conv, below_is_image)
    image, image_name = _checked_image(model, image, image_name)
    weight = conv.weight
    x = image.to(device=weight.device, dtype=weight.dtype)
    mirror = Mirror(model, stage, "deconvnet")

    with torch.no_grad():
        record = mirror.record(x)
        maps = _forward_maps(layers, layer, x, record)
        kept = _kept_unit(maps, channel)
        back = _backward_maps(mirror, record, layer, maps, kept, keep)
        below = _below_channel(conv, maps.below_all, kept, below_channel, below_is_image)

    rf = receptive_field(model, stage)
    zoom = _zoom_windows(layers, layer, maps, kept, rf, x)
    arrays = _arrays(model, x, maps, back, kept.channel, below[0], below_is_image)
    patch_arrays, illustration = _pooling_illustration(layers, layer, maps, kept)
    arrays.update(patch_arrays)
    meta = _meta(
        model,
        x,
        image_name,
        layer,
        stage=stage,
        keep=keep,
        kept=kept,
        below=below,
        rf=rf,
        zoom=zoom if keep == "max" else None,
        illustration=illustration,
    )
    data: dict[str, Any] = dict(arrays)
    data["meta"] = _jsonable(meta)
    return data
