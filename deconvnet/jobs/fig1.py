"""Fig. 1 of Zeiler & Fergus (2014), drawn from real data.

Top: one deconvnet layer (left, top-down) attached to one convnet layer (right, bottom-up), every
intermediate map an image panel with the paper's label. Bottom: unpooling with "switches" on a small
real patch of the rectified feature map, numbers printed in the cells.

The layer shown is the LAST conv -> relu -> [max pool] of the requested stage (DESIGN.md section 1):
on AlexNet that is the whole stage; on VGG16 a stage is a block of 2-3 convolutions and the figure
shows its last one (the title says so). The maps shown are those of ONE channel of that layer:

    convnet  : layer below (input of the conv) -> feature maps (conv output, channel c) -> rectified
               feature maps -> pooled maps (+ switches, recorded by `Mirror.record`)
    deconvnet: layer-above reconstruction (the seed, at the pooled level) -> unpooled maps
               (`deconvnet.core.mirror.unpool` through the recorded switches) -> rectified unpooled maps
               (the mirror's `BackwardReLU`, rule "deconvnet") -> filtering with F^T (the mirror's
               `TiedTransposedConv`, the model's own weight tensor) -> reconstruction at the layer
               below; when the layer below is not the image, the rest of the mirror takes it on down
               to the pixels (an extra panel).

Three functions, one per job:

    data = fig1_data(model, image, stage, channel=None, keep="max")   # computes, no drawing
    draw_fig1(data, "fig1.png")                                       # draws, no model needed
    run_fig1(out_dir, model="vgg16", image="cat", stage=1, ...)       # both + fig1_data.npz + result.json
    render_fig1(out_dir)                                              # redraws fig1.png from the .npz

`fig1_data` returns a dict of float32/int64 numpy arrays (see `ARRAYS`) plus "meta", a JSON-ready
dict; `draw_fig1` reads nothing else, so a figure redrawn from `fig1_data.npz` is pixel-identical.
"""

from __future__ import annotations

import json
import numbers
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.architecture import architecture_name
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.display import to_display
from deconvnet.core.geometry import receptive_field, spans
from deconvnet.core.mirror import Mirror, is_tiling, unpool
from deconvnet.core.validation import check_images
from deconvnet.core.windows import Region, reframe
from deconvnet.data.images import denormalize, load_image
from deconvnet.data.models import display_name, load_model, model_name, weights_info
from deconvnet.data.models import weights_label as weights_label_of
from deconvnet.jobs.versions import versions

KEEPS = ("max", "all")
FIGURE_FILE = "fig1.png"
DATA_FILE = "fig1_data.npz"
RESULT_FILE = "result.json"
FIG_SIZE = (16.0, 12.0)  # inches
DPI = 100  # -> 1600 x 1200 px
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
    if keep not in KEEPS:
        raise ValueError(
            f"keep: expected 'max' (the channel's strongest pooled activation only) "
            f"or 'all' (the channel's whole pooled map), got {keep!r}"
        )
    return str(keep)


def _check_channel(value: object, count: int, key: str, what: str) -> int | None:
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
    conv_i, relu_i, pool_i = layer["conv"], layer["relu"], layer["pool"]
    layers = list(model.features)
    conv: nn.Conv2d = layers[conv_i]
    channel = _check_channel(channel, conv.out_channels, "channel", f"{layer['stage_name']}")
    below_is_image = conv_i == 0
    if below_is_image and below_channel is not None:
        raise ValueError("below_channel: the layer below this conv is the RGB image; leave it null")
    below_channel = _check_channel(below_channel, conv.in_channels, "below_channel", "the layer below")
    if not isinstance(image, Tensor):
        image_name = image_name or str(image)
        image = load_image(image, model)
    check_images(image, model, "image")
    if image.shape[0] != 1:
        raise ValueError(f"image: expected one image [1, 3, H, W], got a batch of {image.shape[0]}")
    weight = conv.weight
    x = image.to(device=weight.device, dtype=weight.dtype)
    mirror = Mirror(model, stage, "deconvnet")
    by_index = {st.index: st for st in mirror.stages}

    with torch.no_grad():
        record = mirror.record(x)
        # our own out-of-place forward pass, keeping the maps the figure shows
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
        out = pooled[0]
        if channel is None:
            channel = int(out.flatten().argmax()) // (out.shape[1] * out.shape[2])
            channel_by = "strongest activation of the stage output"
        else:
            channel_by = "chosen"
        hp, wp = out.shape[1:]
        flat = int(out[channel].flatten().argmax())  # first maximum, as select_seeds
        py, px = divmod(flat, wp)
        value = float(out[channel, py, px])
        h, w = feature.shape[2:]
        if switches is not None:
            sy_, sx_ = divmod(int(switches[0, channel, py, px]), w)
        else:
            sy_, sx_ = py, px

        # the seed: layer-above reconstruction, channel c only
        seed = torch.zeros_like(out[channel])
        if keep == "max":
            seed[py, px] = out[channel, py, px]
        else:
            seed = out[channel].clone()
        # deconvnet: unpool -> relu -> F^T, with the library's own functions and mirror stages
        if switches is not None:
            unpooled = unpool(seed[None, None], switches[:, channel : channel + 1], (h, w))[0, 0]
            count = torch.zeros(h * w, dtype=torch.int64, device=seed.device)
            count.scatter_add_(
                0, switches[0, channel].flatten(), torch.ones(hp * wp, dtype=torch.int64, device=seed.device)
            )
            switch_count = count.view(h, w)
        else:
            unpooled, switch_count = seed.clone(), None
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

        # which channel of the layer below to show
        if below_is_image:
            below_by = "the RGB input image"
        elif below_channel is None:
            ky, kx = spans(conv)
            padded = F.pad(below_all[0], (kx.padding, kx.padding, ky.padding, ky.padding))
            window = padded[
                :,
                sy_ * ky.stride : sy_ * ky.stride + ky.extent : ky.dilation,
                sx_ * kx.stride : sx_ * kx.stride + kx.extent : kx.dilation,
            ]
            if conv.groups == 1:
                share = (window * conv.weight[channel]).sum(dim=(1, 2))
                below_channel = int(share.argmax())
                below_by = "largest contribution to the strongest unit"
            else:
                below_channel = int(below_all[0].flatten(1).amax(1).argmax())
                below_by = "strongest activation"
        else:
            below_by = "chosen"

    # zoom windows (keep="max"): the seed lives in a few positions; show the same region per level
    pool_span = spans(layers[pool_i])[0] if pool_i is not None else None
    conv_y, conv_x = spans(conv)
    zoom_pooled = [_crop_box(py, ZOOM_POOLED, hp), _crop_box(px, ZOOM_POOLED, wp)]
    if pool_i is not None:
        py_span, px_span = spans(layers[pool_i])
        zoom_map = [
            _clip(_read_box(zoom_pooled[0], py_span), h),
            _clip(_read_box(zoom_pooled[1], px_span), w),
        ]
    else:
        zoom_map = zoom_pooled
    bh, bw = below_all.shape[2:]
    zoom_below = [_clip(_read_box(zoom_map[0], conv_y), bh), _clip(_read_box(zoom_map[1], conv_x), bw)]
    rf = receptive_field(model, stage)
    top, left, bottom, right = rf.box(py, px)
    margin_y, margin_x = max(rf.size[0] // 2, 9), max(rf.size[1] // 2, 9)
    zoom_pixels = [
        _clip((top - margin_y, bottom + margin_y), int(x.shape[2])),
        _clip((left - margin_x, right + margin_x), int(x.shape[3])),
    ]

    arrays: dict[str, np.ndarray] = {
        "image": _np(denormalize(x[0], model)),
        "below": _np(x[0] if below_is_image else below_all[0, below_channel]),
        "feature": _np(feature[0, channel]),
        "rectified": _np(rectified[0, channel]),
        "pooled": _np(out[channel]),
        "seed": _np(seed),
        "unpooled": _np(unpooled),
        "rectified_unpooled": _np(rectified_unpooled),
        "reconstruction": _np(recon_below if below_is_image else recon_below[below_channel]),
        "pixels": _np(pixels),
    }
    if switch_count is not None:
        arrays["switch_count"] = _np(switch_count)
    illustration: dict[str, Any] = {"skipped": "this layer has no max pooling"}
    if pool_i is not None and switches is not None:
        patch_arrays, illustration = _illustration(
            rectified[0, channel], switches[0, channel], out[channel], layers[pool_i], (py, px)
        )
        arrays.update(patch_arrays)

    info = weights_info(model)
    names = layer["names"]
    meta = {
        "model": model_name(model),
        "weights": info.as_dict(),
        "image": image_name if image_name is not None else "caller-supplied tensor",
        "image_size": [int(x.shape[2]), int(x.shape[3])],
        "stage": stage,
        "stage_name": layer["stage_name"],
        "stage_modules": [
            f"features[{i}] {names[i]}" for i in range(layer["stage_first"], layer["stage_index"] + 1)
        ],
        "shown": {
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
        },
        "below_is_image": below_is_image,
        "below_name": "image" if below_is_image else names[conv_i - 1],
        "below_channel": below_channel,
        "below_channel_by": below_by,
        "below_channels": conv.in_channels,
        "channel": channel,
        "channel_by": channel_by,
        "channels": conv.out_channels,
        "keep": keep,
        "kept": {"y": py, "x": px, "value": value, "switch_y": sy_, "switch_x": sx_},
        "receptive_field": {"size": list(rf.size), "box": list(rf.box(py, px))},
        "zoom": {
            "pooled": [list(b) for b in zoom_pooled],
            "map": [list(b) for b in zoom_map],
            "below": [list(b) for b in zoom_below],
            "pixels": [list(b) for b in zoom_pixels],
        }
        if keep == "max"
        else None,
        "illustration": illustration,
        "rule": "deconvnet",
    }
    data: dict[str, Any] = dict(arrays)
    data["meta"] = _jsonable(meta)
    return data


# --------------------------------------------------------------------------------------- drawing

GREY = "#444444"
WINDOW_COLOURS = [
    "#d62728",
    "#1f77b4",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
]
LIGHT = ["#f7c6c6", "#c6dcf2", "#c9ebc9", "#ffdcb8", "#e2d5ee", "#e6d3cf", "#f7d4ec", "#c3ecf1", "#ecedb5"]


def _crop(a: np.ndarray, zoom: list[list[int]] | None) -> np.ndarray:
    if zoom is None:
        return a
    (y0, y1), (x0, x1) = zoom
    return a[..., y0:y1, x0:x1]


def _shown(a: np.ndarray) -> np.ndarray:
    """Zero -> mid-grey, symmetric per panel (deconvnet.core.display.to_display), as an HxW(x3) array."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if t.dim() == 2:
        return to_display(t[None])[0].numpy()
    return to_display(t).permute(1, 2, 0).numpy()


def _panel(
    fig, box: tuple[float, float, float, float], a: np.ndarray, rgb: bool = False, symmetric: bool = True
):
    """An image panel at box = (left, bottom, width, height) in pixels of the figure."""
    W, H = fig.get_size_inches() * fig.dpi
    ax = fig.add_axes((box[0] / W, box[1] / H, box[2] / W, box[3] / H))
    if rgb and not symmetric:
        ax.imshow(np.clip(np.transpose(a, (1, 2, 0)), 0, 1), interpolation="antialiased")
    elif rgb:
        ax.imshow(_shown(a), interpolation="antialiased")
    else:
        ax.imshow(
            _shown(a),
            cmap="gray",
            vmin=0,
            vmax=1,
            interpolation="nearest" if max(a.shape) <= 64 else "antialiased",
        )
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(GREY)
    return ax


def _box_on(ax, zoom, colour="#e6550d", lw=1.2) -> None:
    """Outline a zoom window [[y0, y1], [x0, x1]] (map positions) on a full-map panel."""
    from matplotlib.patches import Rectangle

    if zoom is None:
        return
    (y0, y1), (x0, x1) = zoom
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=lw))


def _ring(ax, y: float, x: float, colour="#e6550d", r: float = 0.9) -> None:
    from matplotlib.patches import Circle

    ax.add_patch(Circle((x, y), r, fill=False, ec=colour, lw=1.5))


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def _grid(
    ax,
    values: np.ndarray,
    fills: dict,
    texts: dict | None = None,
    fontsize: float = 9,
    zero_grey: bool = False,
) -> None:
    """Cells with numbers; fills: (r, c) -> list of colours (split into triangles when two)."""
    from matplotlib.patches import Polygon, Rectangle

    n_r, n_c = values.shape
    ax.set_xlim(0, n_c)
    ax.set_ylim(n_r, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    for r in range(n_r):
        for c in range(n_c):
            colours = fills.get((r, c), [])
            if len(colours) == 1:
                ax.add_patch(Rectangle((c, r), 1, 1, fc=colours[0], ec="none"))
            elif len(colours) >= 2:  # shared switch: one triangle per window (first two)
                ax.add_patch(Polygon([(c, r), (c + 1, r), (c, r + 1)], fc=colours[0], ec="none"))
                ax.add_patch(Polygon([(c + 1, r), (c + 1, r + 1), (c, r + 1)], fc=colours[1], ec="none"))
            ax.add_patch(Rectangle((c, r), 1, 1, fill=False, ec="#999999", lw=0.6))
            v = float(values[r, c])
            text = texts.get((r, c)) if texts else None
            label = text if text is not None else _fmt(v)
            faint = zero_grey and v == 0 and text is None
            ax.text(
                c + 0.5,
                r + 0.5,
                "0" if faint else label,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="#aaaaaa" if faint else "black",
                fontweight="normal" if faint or not colours else "bold",
            )


def draw_fig1(data: dict[str, Any], path: str | Path) -> Path:
    """Draw Fig. 1 from `fig1_data(...)` output (or its saved .npz) into a PNG; returns the path."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    meta = data["meta"]
    zoom = meta.get("zoom")
    shown = meta["shown"]
    has_pool = shown["pool"] is not None
    kept = meta["kept"]
    fig = Figure(figsize=FIG_SIZE, dpi=DPI, facecolor="white")
    W, H = FIG_SIZE[0] * DPI, FIG_SIZE[1] * DPI
    overlay = fig.add_axes((0, 0, 1, 1))
    overlay.set_xlim(0, W)
    overlay.set_ylim(0, H)
    overlay.axis("off")

    def text(x, y, s, **kw):
        kw.setdefault("fontsize", 10)
        overlay.text(x, y, s, **kw)

    def arrow(start, end, colour="black", lw=1.6, style="-|>"):
        overlay.annotate(
            "",
            xy=end,
            xytext=start,
            xycoords="data",
            textcoords="data",
            arrowprops=dict(arrowstyle=style, color=colour, lw=lw, shrinkA=0, shrinkB=0, mutation_scale=14),
        )

    def op(x, y, s, fc="#fff7d6"):
        overlay.text(
            x,
            y,
            s,
            ha="center",
            va="center",
            fontsize=10.5,
            zorder=5,
            bbox=dict(boxstyle="round,pad=0.35", fc=fc, ec="#7a6a2a", lw=1),
        )

    # ---------------------------------------------------------------- title
    w = meta["weights"]
    model_label = display_name(meta["model"])
    weights_label = weights_label_of(w)
    weights_colour = "#c00000" if w.get("weights") == "random" else "black"
    text(
        W / 2,
        H - 28,
        "Fig. 1 (Zeiler & Fergus 2014) drawn from real data: a deconvnet layer "
        "(left) attached to a convnet layer (right)",
        ha="center",
        va="center",
        fontsize=15,
        fontweight="bold",
    )
    text(
        W / 2,
        H - 54,
        f"{model_label}  \u00b7  {weights_label}",
        ha="center",
        va="center",
        fontsize=11.5,
        color=weights_colour,
    )
    line2 = (
        f"image: {meta['image']}  \u00b7  stage {meta['stage']} ({meta['stage_name']})  \u00b7  "
        f"channel {meta['channel']} of {meta['channels']} ({meta['channel_by']})"
    )
    text(W / 2, H - 76, line2, ha="center", va="center", fontsize=11)
    chain = " \u2192 ".join(m.split(" ")[1] for m in meta["stage_modules"])
    layer_desc = f"{shown['conv_name']} \u2192 {shown['relu_name']}" + (
        f" \u2192 {shown['pool_name']}" if has_pool else ""
    )
    if shown["whole_stage"]:
        line3 = f"the layer shown is the whole stage: {layer_desc}"
    else:
        last = " \u2192 pool" if has_pool else ""
        end = shown["pool"] if has_pool else shown["relu"]
        line3 = (
            f"stage {meta['stage']} = {chain}; shown: its LAST conv \u2192 relu{last} "
            f"({layer_desc}, features[{shown['conv']}..{end}])"
        )
    text(W / 2, H - 97, line3, ha="center", va="center", fontsize=10.5, color=GREY)

    # ---------------------------------------------------------------- geometry of the top part
    P = 122  # panel side in px
    GAP = 60
    rows_top = H - 160  # top edge of row 0
    row_y = [rows_top - P - r * (P + GAP) for r in range(4)]  # bottom edges
    xd, xc = 390, 1080  # left edges: deconvnet, convnet columns
    cx_d, cx_c = xd + P / 2, xc + P / 2
    text(
        cx_d - 40,
        rows_top + 30,
        "Deconvnet layer (top-down)",
        ha="right",
        va="center",
        fontsize=13,
        fontweight="bold",
        color="#08519c",
    )
    text(
        cx_c + 40,
        rows_top + 30,
        "Convnet layer (bottom-up)",
        ha="left",
        va="center",
        fontsize=13,
        fontweight="bold",
        color="#a50f15",
    )

    def label(x, y, title, detail, align):
        text(x, y + 12, title, ha=align, va="bottom", fontsize=11.5, fontweight="bold")
        text(x, y + 8, detail, ha=align, va="top", fontsize=9, color=GREY, linespacing=1.25)

    def mid_row(r):
        return row_y[r] + P / 2

    sym_note = "zero = mid-grey, white = +max|x| of the panel"
    c_txt = f"channel {meta['channel']}"

    # ---------------------------------------------------------------- convnet column (right)
    pooled_ax = _panel(fig, (xc, row_y[0], P, P), data["pooled"])
    rect_ax = _panel(fig, (xc, row_y[1], P, P), data["rectified"])
    feat_ax = _panel(fig, (xc, row_y[2], P, P), data["feature"])
    if meta["below_is_image"]:
        below_ax = _panel(fig, (xc, row_y[3], P, P), data["image"], rgb=True, symmetric=False)
    else:
        below_ax = _panel(fig, (xc, row_y[3], P, P), data["below"])
    hp, wp = data["pooled"].shape
    h, w = data["feature"].shape
    lx = xc + P + 14
    pooled_title = "Pooled Maps" if has_pool else "Rectified Feature Maps (stage output)"
    label(
        lx,
        mid_row(0),
        pooled_title,
        f"{shown['pool_name'] or shown['relu_name']} output, {c_txt}, {hp}\u00d7{wp}\n"
        + (
            f"max pool {shown['pool_kernel']}\u00d7{shown['pool_kernel']}, stride {shown['pool_stride']}"
            if has_pool
            else "no pooling in this layer"
        ),
        "left",
    )
    label(
        lx,
        mid_row(1),
        "Rectified Feature Maps",
        f"{shown['relu_name']} output, {c_txt}, {h}\u00d7{w}",
        "left",
    )
    label(
        lx,
        mid_row(2),
        "Feature Maps",
        f"{shown['conv_name']} output (bias included), {c_txt}, {h}\u00d7{w}\n{sym_note}",
        "left",
    )
    bh, bw = data["below"].shape[-2:]
    if meta["below_is_image"]:
        below_detail = f"the input image, {bh}\u00d7{bw} (RGB, de-normalised)"
    else:
        below_detail = (
            f"{meta['below_name']} output = input of {shown['conv_name']}, {bh}\u00d7{bw}\n"
            f"channel {meta['below_channel']} of {meta['below_channels']} "
            f"({meta['below_channel_by']})"
        )
        below_detail = "\n".join(textwrap.fill(line, 52) for line in below_detail.split("\n"))
    label(lx, mid_row(3), "Layer Below Pooled Maps", below_detail, "left")
    for r in (3, 2, 1):  # bottom-up arrows
        arrow((cx_c, row_y[r] + P + 2), (cx_c, row_y[r - 1] - 2), colour="#a50f15")
    cs = shown["conv_shape"]
    op(
        cx_c,
        row_y[3] + P + GAP / 2,
        "Convolutional Filtering {F}\n"
        f"{cs[0]}\u00d7{cs[1]}\u00d7{cs[2]}\u00d7{cs[3]}, stride {shown['conv_stride']}",
    )
    op(cx_c, row_y[2] + P + GAP / 2, "Rectified Linear Function")
    op(cx_c, row_y[1] + P + GAP / 2, "Max Pooling" if has_pool else "(no pooling)")
    arrow((cx_c, row_y[0] + P + 2), (cx_c, row_y[0] + P + 40), colour="#a50f15")
    text(cx_c - 8, row_y[0] + P + 22, "to the layer above", fontsize=9, color=GREY, ha="right")
    arrow((cx_c, row_y[3] - 30), (cx_c, row_y[3] - 2), colour="#a50f15")

    # ---------------------------------------------------------------- deconvnet column (left)
    zp = zoom["pooled"] if zoom else None
    zm = zoom["map"] if zoom else None
    zb = zoom["below"] if zoom else None
    seed_ax = _panel(fig, (xd, row_y[0], P, P), _crop(data["seed"], zp))
    unp_ax = _panel(fig, (xd, row_y[1], P, P), _crop(data["unpooled"], zm))
    runp_ax = _panel(fig, (xd, row_y[2], P, P), _crop(data["rectified_unpooled"], zm))
    recon = data["reconstruction"]
    _panel(fig, (xd, row_y[3], P, P), _crop(recon, zb), rgb=recon.ndim == 3)
    rx = xd - 14

    def zoom_txt(z):
        if z is None:
            return "whole map"
        return f"zoom: rows {z[0][0]}\u2013{z[0][1] - 1}, cols {z[1][0]}\u2013{z[1][1] - 1}"

    if meta["keep"] == "max":
        seed_detail = (
            f"SEED: only the strongest activation of {c_txt}\n"
            f"kept ({kept['value']:.2f} at y={kept['y']}, x={kept['x']}), all else 0\n"
            f"{zoom_txt(zp)}"
        )
    else:
        seed_detail = f"SEED: the full pooled map of {c_txt},\nall other channels 0\n{zoom_txt(zp)}"
    label(rx, mid_row(0), "Layer Above Reconstruction", seed_detail, "right")
    same = bool(np.array_equal(data["unpooled"], data["rectified_unpooled"]))
    label(
        rx,
        mid_row(1),
        "Unpooled Maps",
        (
            "values placed at the recorded switches,\nzeros elsewhere; "
            if has_pool
            else "no pooling: the seed passes unchanged\n"
        )
        + zoom_txt(zm),
        "right",
    )
    label(
        rx,
        mid_row(2),
        "Rectified Unpooled Maps",
        "relu of the signal (deconvnet rule)\n"
        + ("= unpooled maps here: the seed is \u2265 0\n" if same else "")
        + zoom_txt(zm),
        "right",
    )
    if meta["below_is_image"]:
        rec_detail = "in pixel space (RGB), display-normalised\n"
    else:
        rec_detail = f"at the layer below ({meta['below_name']}), channel {meta['below_channel']}\n"
    label(rx, mid_row(3), "Reconstruction", rec_detail + sym_note + "\n" + zoom_txt(zb), "right")
    for r in (0, 1, 2):  # top-down arrows
        arrow((cx_d, row_y[r] - 2), (cx_d, row_y[r + 1] + P + 2), colour="#08519c")
    op(cx_d, row_y[1] + P + GAP / 2, "Max Unpooling" if has_pool else "(no unpooling)", fc="#dbe9f6")
    op(cx_d, row_y[2] + P + GAP / 2, "Rectified Linear Function", fc="#dbe9f6")
    op(
        cx_d,
        row_y[3] + P + GAP / 2,
        "Convolutional Filtering {F$^T$}\ntransposed conv, the same weights",
        fc="#dbe9f6",
    )
    arrow((cx_d, row_y[0] + P + 40), (cx_d, row_y[0] + P + 2), colour="#08519c")
    text(cx_d + 8, row_y[0] + P + 22, "from the layer above", fontsize=9, color=GREY)
    arrow((cx_d, row_y[3] - 2), (cx_d, row_y[3] - 30), colour="#08519c")
    text(
        cx_d + 8,
        row_y[3] - 22,
        "to the layer below" if not meta["below_is_image"] else "(pixel space)",
        fontsize=9,
        color=GREY,
    )

    # markers: kept unit, zoom windows
    if zoom:
        (py0, _), (px0, _) = zp
        (my0, _), (mx0, _) = zm
        _ring(seed_ax, kept["y"] - py0, kept["x"] - px0)
        _ring(unp_ax, kept["switch_y"] - my0, kept["switch_x"] - mx0)
        _ring(runp_ax, kept["switch_y"] - my0, kept["switch_x"] - mx0)
        _box_on(pooled_ax, zp)
        _box_on(rect_ax, zm)
        _box_on(feat_ax, zm)
        _box_on(below_ax, zb)
        text(
            cx_c + 10,
            row_y[3] - 22,
            "orange boxes: the regions zoomed on the left",
            ha="left",
            fontsize=9,
            color="#e6550d",
        )

    # ---------------------------------------------------------------- middle: switches, image
    mx = (xd + P + xc) / 2
    if has_pool and "switch_count" in data:
        from matplotlib.colors import BoundaryNorm, ListedColormap

        sw = _crop(data["switch_count"], zm)
        sw_ax_box = (mx - P / 2, row_y[1], P, P)
        W_, H_ = W, H
        sw_ax = fig.add_axes((sw_ax_box[0] / W_, sw_ax_box[1] / H_, P / W_, P / H_))
        cmap = ListedColormap(["white", "black", "#d62728", "#ff7f0e", "#ffd400"])
        norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5, 100], cmap.N)
        sw_ax.imshow(
            sw, cmap=cmap, norm=norm, interpolation="nearest" if max(sw.shape) <= 64 else "antialiased"
        )
        sw_ax.set_xticks([])
        sw_ax.set_yticks([])
        if zoom:
            _ring(sw_ax, kept["switch_y"] - zm[0][0], kept["switch_x"] - zm[1][0])
            k_, s_ = shown["pool_kernel"], shown["pool_stride"]
            if k_ == s_:  # tiling windows: draw their borders
                (y0_, y1_), (x0_, x1_) = zm
                for yy in range(y0_ + 1, y1_):
                    if yy % s_ == 0:
                        sw_ax.axhline(yy - y0_ - 0.5, color="#bbbbbb", lw=0.8)
                for xx in range(x0_ + 1, x1_):
                    if xx % s_ == 0:
                        sw_ax.axvline(xx - x0_ - 0.5, color="#bbbbbb", lw=0.8)
        text(mx, row_y[1] + P + 26, "Switches", ha="center", fontsize=11.5, fontweight="bold")
        text(
            mx,
            row_y[1] + P + 8,
            f"argmax positions of {shown['pool_name']} on the rectified map",
            ha="center",
            fontsize=9,
            color=GREY,
        )
        legend = "black: chosen by 1 window"
        if zoom and shown["pool_kernel"] == shown["pool_stride"]:
            legend += "; grey lines: pooling windows"
        if int(data["switch_count"].max()) > 1:
            legend += "\nred/orange/yellow: shared by 2/3/4 windows\n(unpooling sums their values)"
        legend += "\n" + zoom_txt(zm)
        text(mx, row_y[1] - 8, legend, ha="center", va="top", fontsize=9, color=GREY)
        # Max Pooling -> Switches -> Max Unpooling
        y_op = row_y[1] + P + GAP / 2
        arrow((xc - 20, y_op), (mx + P / 2 + 6, row_y[1] + P * 0.75), colour="#555555")
        arrow((mx - P / 2 - 6, row_y[1] + P * 0.75), (xd + P + 20, y_op), colour="#555555")

    # image with the kept unit's receptive field; the reconstruction taken to the pixels
    img_box = (mx - P - 36, row_y[3], P, P)
    img_ax = _panel(fig, img_box, data["image"], rgb=True, symmetric=False)
    rf = meta["receptive_field"]
    top, left, bottom, right = rf["box"]
    img_ax.add_patch(
        Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, ec="#e6550d", lw=1.4)
    )
    text(
        img_box[0] + P / 2,
        row_y[3] - 6,
        f"input image\nbox: receptive field of\nthe strongest unit ({rf['size'][0]} px)",
        ha="center",
        va="top",
        fontsize=9,
        color=GREY,
    )
    pix_box = (mx + 36, row_y[3], P, P)
    zx = zoom["pixels"] if zoom else None
    pix_ax = _panel(fig, pix_box, _crop(data["pixels"], zx), rgb=True)
    if zx is not None:
        pix_ax.add_patch(
            Rectangle(
                (left - zx[1][0] - 0.5, top - zx[0][0] - 0.5),
                right - left,
                bottom - top,
                fill=False,
                ec="#e6550d",
                lw=1.2,
            )
        )
    text(
        pix_box[0] + P / 2,
        row_y[3] - 6,
        "projected to pixels by the\nwhole deconvnet\n" + zoom_txt(zx),
        ha="center",
        va="top",
        fontsize=9,
        color=GREY,
    )
    text(
        mx,
        row_y[3] + P + 10,
        "every panel is scaled on its own:\nzero = mid-grey, symmetric in sign",
        ha="center",
        va="bottom",
        fontsize=9,
        color=GREY,
    )

    # ---------------------------------------------------------------- bottom: the illustration
    _draw_illustration(fig, overlay, data, meta, top=row_y[3] - 64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white", metadata={"Software": None})
    return path


def _draw_illustration(fig, overlay, data: dict[str, Any], meta: dict[str, Any], top: float) -> None:
    W, H = FIG_SIZE[0] * DPI, FIG_SIZE[1] * DPI
    ill = meta["illustration"]
    overlay.plot([40, W - 40], [top + 8, top + 8], color="#cccccc", lw=1)
    overlay.text(
        40,
        top - 6,
        "Max Locations \u201cSwitches\u201d: pooling and unpooling on a real "
        "patch (numbers are the model's values)",
        fontsize=13,
        fontweight="bold",
        va="top",
    )
    if "patch" not in data:
        overlay.text(
            40,
            top - 50,
            f"No illustration: {ill.get('skipped', 'no pooling')} "
            f"(the stage ends in {meta['shown']['relu_name']}). Choose a stage that ends "
            "in max pooling (AlexNet 1, 2, 5; any VGG16 stage).",
            fontsize=11,
            va="top",
        )
        return
    patch, pooled = data["patch"], data["patch_pooled"]
    switches, unpooled = data["patch_switches"], data["patch_unpooled"]
    L, m = patch.shape[0], pooled.shape[0]
    k, s = ill["kernel"], ill["stride"]
    cell = min(43.0, 215.0 / L)
    cq = 62.0  # pooled cells: two lines each
    grid_top = top - 68
    x_patch = 50
    x_pooled = x_patch + L * cell + 160
    x_unpooled = x_pooled + m * cq + 175

    def axes_at(x, n_rows, n_cols, size=cell):
        return fig.add_axes((x / W, (grid_top - n_rows * size) / H, n_cols * size / W, n_rows * size / H))

    # which windows chose which patch cell
    chosen: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(switches.flatten().tolist()):
        chosen.setdefault(divmod(int(f), L), []).append(i)
    colour = lambda i: WINDOW_COLOURS[i % len(WINDOW_COLOURS)]  # noqa: E731
    light = lambda i: LIGHT[i % len(LIGHT)]  # noqa: E731
    fills = {rc: [light(i) for i in ws] for rc, ws in chosen.items()}
    from matplotlib.patches import Rectangle

    ax_p = axes_at(x_patch, L, L)
    _grid(ax_p, patch, fills, fontsize=8.5 if L > 5 else 9.5)
    for i in range(m * m):  # window outlines, inset so overlapping ones stay visible
        wy, wx = divmod(i, m)
        inset = 0.06 + 0.07 * i if ill["overlapping"] else 0.06
        ax_p.add_patch(
            Rectangle(
                (wx * s + inset, wy * s + inset),
                k - 2 * inset,
                k - 2 * inset,
                fill=False,
                ec=colour(i),
                lw=2.0,
            )
        )
    ax_q = axes_at(x_pooled, m, m, cq)
    q_fills = {divmod(i, m): [light(i)] for i in range(m * m)}
    q_texts = {
        divmod(i, m): f"{_fmt(float(pooled.flatten()[i]))}\n@({int(f) // L},{int(f) % L})"
        for i, f in enumerate(switches.flatten().tolist())
    }
    _grid(ax_q, pooled, q_fills, q_texts, fontsize=9)
    for i in range(m * m):
        wy, wx = divmod(i, m)
        ax_q.add_patch(Rectangle((wx + 0.04, wy + 0.04), 0.92, 0.92, fill=False, ec=colour(i), lw=2.0))
    ax_u = axes_at(x_unpooled, L, L)
    u_texts = {}
    for rc, ws in chosen.items():
        if len(ws) > 1:
            u_texts[rc] = f"{_fmt(float(unpooled[rc]))}\n(\u03a3{len(ws)})"
    _grid(ax_u, unpooled, fills, u_texts, fontsize=8.5 if L > 5 else 9.5, zero_grey=True)

    y0, x0 = ill["origin"]
    g_mid = grid_top - L * cell / 2
    overlay.text(
        max(x_patch + L * cell / 2, 150),
        grid_top + 8,
        f"Rectified Feature Maps (patch)\nrows {y0}\u2013{y0 + L - 1}, cols "
        f"{x0}\u2013{x0 + L - 1}, channel {meta['channel']}",
        ha="center",
        va="bottom",
        fontsize=10,
    )
    overlay.text(
        x_pooled + m * cq / 2,
        grid_top + 8,
        f"Pooled Maps + switches\n({m}\u00d7{m} windows, {k}\u00d7{k} stride {s})",
        ha="center",
        va="bottom",
        fontsize=10,
    )
    overlay.text(
        x_unpooled + L * cell / 2,
        grid_top + 8,
        "Unpooled Maps\n(values at switches, zeros elsewhere)",
        ha="center",
        va="bottom",
        fontsize=10,
    )

    def step(start: float, end: float, name: str, how: str) -> None:
        """A labelled arrow between two grids: the operation's name above, its code below."""
        overlay.annotate(
            "",
            xy=(end, g_mid),
            xytext=(start, g_mid),
            arrowprops=dict(arrowstyle="-|>", lw=2, color="black", mutation_scale=16),
        )
        overlay.text(
            (start + end) / 2, g_mid + 8, name, ha="center", va="bottom", fontsize=11.5, fontweight="bold"
        )
        overlay.text((start + end) / 2, g_mid - 8, how, ha="center", va="top", fontsize=8.5, color=GREY)

    step(x_patch + L * cell + 15, x_pooled - 15, "Pooling", "F.max_pool2d(...,\nreturn_indices=True)")
    step(x_pooled + m * cq + 15, x_unpooled - 15, "Unpooling", "deconvnet.core.mirror.unpool\n(the switches)")

    notes = [
        f"The {L}\u00d7{L} patch is cut from the real rectified feature map; its {m}\u00d7{m} "
        "pooling windows are outlined in colour. Shaded cells: each window's max location "
        "(its switch). Pooled cells: the max and its switch @(row, col) in the patch. "
        "Unpooling puts every value back at its switch, zeros elsewhere.",
        f"Patch: {ill['why']}.",
    ]
    if ill["overlapping"]:
        if ill["shared_switches"]:
            sh = ill["shared_switches"][0]
            notes.append(
                f"Overlapping windows ({k}\u00d7{k}, stride {s}): cell ({sh['row']},"
                f"{sh['col']}) is the switch of {sh['windows']} windows, so unpooling "
                f"SUMS them: {sh['windows']} \u00d7 {sh['value']:.4f} = "
                f"{sh['sum']:.4f} (half-shaded cell, \u03a3)."
            )
        else:
            notes.append("Overlapping windows, but no two of them share a switch here.")
    else:
        notes.append(f"{k}\u00d7{k} windows with stride {s} tile the map: no switch is shared.")
    x_notes = x_unpooled + L * cell + 40
    width = max(30, int((W - 40 - x_notes) / 7.0))
    wrapped = "\n\n".join(textwrap.fill(n, width) for n in notes)
    overlay.text(x_notes, grid_top + 4, wrapped, ha="left", va="top", fontsize=9.5, linespacing=1.35)


# ------------------------------------------------------------------------------- files and runs


def save_fig1_data(data: dict[str, Any], path: str | Path) -> Path:
    """All arrays + the meta (as JSON text) into one .npz."""
    arrays = {k: v for k, v in data.items() if k != "meta"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, meta_json=np.array(json.dumps(data["meta"])), **arrays)
    return path


def load_fig1_data(path: str | Path) -> dict[str, Any]:
    """Inverse of `save_fig1_data`."""
    with np.load(Path(path), allow_pickle=False) as f:
        data: dict[str, Any] = {k: f[k] for k in f.files if k != "meta_json"}
        data["meta"] = json.loads(str(f["meta_json"]))
    return data


def render_fig1(job_dir: str | Path, path: str | Path | None = None) -> Path:
    """Redraw `fig1.png` (or `path`) from `job_dir/fig1_data.npz`; no model needed."""
    job_dir = Path(job_dir)
    source = job_dir / DATA_FILE
    if not source.is_file():
        raise FileNotFoundError(f"job_dir: {source} does not exist (run experiments.fig1 first)")
    return draw_fig1(load_fig1_data(source), path if path is not None else job_dir / FIGURE_FILE)


def _channel_count(name: str, stage: int) -> int:
    """Channels of the stage output, from the architecture alone (meta device: no weights)."""
    from deconvnet.data.models import model_spec

    with torch.device("meta"):
        skeleton = model_spec(name).constructor(weights=None)
    return stage_of(skeleton, stage).channels


def run_fig1(
    out_dir: str | Path,
    model: str | nn.Module = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    image: str | Path = "cat",
    stage: int = 1,
    channel: int | None = None,
    keep: str = "max",
    below_channel: int | None = None,
    device: str = "cpu",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute, save and draw Fig. 1 into `out_dir`: fig1.png, fig1_data.npz, result.json.

    model: a name (loaded with `load_model(model, weights, seed, device)`) or a loaded model.
    Inputs are checked (stage, keep, channel range, image) before the model is loaded.
    `extra` is merged into result.json (e.g. the Hydra config and provenance).
    Returns the result dict (also written to result.json).
    """
    stage = check_stage(stage)
    keep = check_keep(keep)
    name = model if isinstance(model, str) else model_name(model)
    count = _channel_count(name, stage)
    _check_channel(channel, count, "channel", f"stage {stage}")
    x = load_image(image, name)  # FileNotFoundError / ValueError before any heavy work
    if isinstance(model, str):
        model = load_model(model, weights=weights, seed=seed, device=device)
    data = fig1_data(
        model, x, stage, channel=channel, keep=keep, below_channel=below_channel, image_name=str(image)
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_fig1_data(data, out_dir / DATA_FILE)
    draw_fig1(data, out_dir / FIGURE_FILE)
    meta = data["meta"]
    result = {
        "experiment": "fig1",
        "model": meta["model"],
        "weights": meta["weights"],
        "image": meta["image"],
        "stage": meta["stage"],
        "stage_name": meta["stage_name"],
        "layer_shown": meta["shown"],
        "channel": meta["channel"],
        "channel_by": meta["channel_by"],
        "keep": keep,
        "kept": meta["kept"],
        "below_channel": meta["below_channel"],
        "illustration": meta["illustration"],
        "rule": "deconvnet",
        "files": {"figure": FIGURE_FILE, "data": DATA_FILE, "result": RESULT_FILE},
        "arrays": {k: list(v.shape) for k, v in data.items() if k != "meta"},
        "versions": versions(),
    }
    if extra:
        result.update(extra)
    (out_dir / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
