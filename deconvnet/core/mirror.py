"""The deconvnet of Fig. 1: a mirror of `model.features` up to a stage, run from the top down.

For each forward module, walking backwards from the stage, the mirror has one stage:

    forward Conv2d     ->  TiedTransposedConv  (the SAME weight tensor, no bias, exact output size)
    forward ReLU       ->  BackwardReLU        (rule: deconvnet | backprop | guided)
    forward MaxPool2d  ->  Unpool              (switches of THIS image; colliding switches summed)

`Mirror.record` runs the forward pass once and keeps what the mirror needs (switches, ReLU masks);
`Mirror.project` sends any number of seeds down from that one record. Every signal lives in a
window of its level (`deconvnet.core.windows.Region`): a single-unit seed only ever touches its
receptive field, so the mirror computes there and nowhere else; a whole map is a window too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.architecture import stages as stages_of
from deconvnet.core.geometry import level_sizes, spans, stage_layers, windows
from deconvnet.core.graph_ops import check_rule
from deconvnet.core.layout import channels_last_on_cpu, prefers_channels_last
from deconvnet.core.precision import full_float32
from deconvnet.core.validation import INT64_MAX, check_finite_tensor, check_model_values, is_int
from deconvnet.core.windows import Region, fit_to_map, gather_window, is_channels_last, reframe


@dataclass
class ForwardRecord:
    """What one forward pass through `features[: stage index + 1]` leaves for the mirror.

    sizes: [(H_i, W_i)] map size before module i (index len(layers) = the stage output)
    switches: module index -> [B, C, h, w] int64, flat argmax positions into the (H_i * W_i) map
    switch_masks: module index -> [B, C, H_i, W_i] bool, True at the switches (non-overlapping
        pooling only: there every input position belongs to at most one window)
    masks: module index -> [B, C, h, w] bool, forward input of that ReLU > 0
    output: [B, C, h, w] the stage output
    outputs: stage number -> [B, C_s, h_s, w_s], the output of every stage up to this one; a record
        made for stage 5 therefore serves the mirrors of stages 1-5 (one forward pass per image)
    layouts: conv index -> (weight, its version, the same values in channels-last layout), made
        once per record for the CPU transposed convolutions (rebuilt if the weight changes)
    """

    sizes: list[tuple[int, int]]
    output: Tensor
    switches: dict[int, Tensor] = field(default_factory=dict)
    switch_masks: dict[int, Tensor] = field(default_factory=dict)
    masks: dict[int, Tensor] = field(default_factory=dict)
    outputs: dict[int, Tensor] = field(default_factory=dict)
    layouts: dict[int, tuple[Tensor, int, Tensor]] = field(default_factory=dict, repr=False)

    def stage_output(self, stage: int) -> Tensor:
        """[B, C, h, w] output of `stage`; ValueError if this record stops below it."""
        if stage not in self.outputs:
            raise ValueError(
                f"stage: this forward record covers stages {sorted(self.outputs)}, "
                f"not {stage}; record with a mirror of stage {stage} or higher"
            )
        return self.outputs[stage]


@dataclass
class Seeds:
    """Single activations to project: image, channel, y, x [K] int64 (CPU); value [K] (any device)."""

    image: Tensor
    channel: Tensor
    y: Tensor
    x: Tensor
    value: Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def __getitem__(self, part: slice | Tensor) -> Seeds:
        """A slice, or a [k] int64 index tensor (CPU)."""
        value_part = part.to(self.value.device) if isinstance(part, Tensor) else part
        return Seeds(self.image[part], self.channel[part], self.y[part], self.x[part], self.value[value_part])


def _check_unpool(pooled: object, switches: object, size: object) -> None:
    """`unpool`'s arguments: pooled a float tensor [N, C, h, w] of finite values, switches an
    int64 tensor of its shape, size (H, W) two ints >= 1 (ValueError naming the argument)."""
    check_finite_tensor("pooled", pooled)
    if pooled.dim() != 4 or not pooled.is_floating_point():
        raise ValueError(
            f"pooled: expected a float tensor [N, C, h, w], got {pooled.dtype} {list(pooled.shape)}"
        )
    if not isinstance(switches, Tensor) or switches.dtype != torch.int64 or switches.shape != pooled.shape:
        got = (
            f"{switches.dtype} {list(switches.shape)}"
            if isinstance(switches, Tensor)
            else type(switches).__name__
        )
        raise ValueError(
            f"switches: expected an int64 tensor of pooled's shape {list(pooled.shape)}, got {got}"
        )
    if not (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(is_int(v) and 1 <= v <= INT64_MAX for v in size)
        and size[0] * size[1] <= INT64_MAX
    ):
        raise ValueError(f"size: expected (H, W), two ints >= 1, got {size!r:.60}")
    if switches.numel() and not 0 <= int(switches.min()) <= int(switches.max()) < size[0] * size[1]:
        raise ValueError(
            f"switches: expected flat positions in 0..{size[0] * size[1] - 1} (size {tuple(size)})"
        )


def unpool(pooled: Tensor, switches: Tensor, size: tuple[int, int]) -> Tensor:
    """Exact adjoint of max-pool selection on whole maps.

    pooled, switches [N, C, h, w] -> [N, C, H, W]: every value lands at its switch, colliding
    switches (overlapping windows) are summed, zeros elsewhere.
    """
    _check_unpool(pooled, switches, size)
    n, c = pooled.shape[:2]
    out = pooled.new_zeros(n, c, size[0] * size[1])
    out.scatter_add_(2, switches.flatten(2), pooled.flatten(2))
    return out.view(n, c, *size)


def unpool_window(
    region: Region,
    switches: Tensor,
    origin: tuple[Tensor, Tensor],
    size: tuple[int, int],
    map_size: tuple[int, int],
) -> Region:
    """Unpooling of windows through their switches, collisions summed: region.signal
    [K, C, ly, lx] at the pooled level, `switches` [B, C, h, w] (flat positions into maps of
    `map_size`) -> each seed's window of `size` at `origin` ([K], [K]) of the map below, cut to it."""
    oy, ox = origin
    out_ly, out_lx = size
    ly, lx = region.size
    cut = gather_window(switches, region.image, region.origin_y, region.origin_x, (ly, lx), 0)
    dev, width = cut.device, map_size[1]
    rows = cut // width - oy.to(dev)[:, None, None, None]
    cols = cut % width - ox.to(dev)[:, None, None, None]
    # padding positions carry zero signal; clamping their (meaningless) target is harmless
    local = (rows * out_lx + cols).clamp_(0, out_ly * out_lx - 1)
    k, c = region.signal.shape[:2]
    out = region.signal.new_zeros(k, c, out_ly * out_lx)
    out.scatter_add_(2, local.flatten(2), region.signal.flatten(2))
    return fit_to_map(Region(out.view(k, c, out_ly, out_lx), region.image, oy, ox, True), map_size)


class MirrorStage(nn.Module):
    """One deconvnet stage: takes a Region at the output level of forward module `index`,
    returns it at that module's input level."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, region: Region, record: ForwardRecord) -> Region:  # pragma: no cover
        raise NotImplementedError


def is_whole_map(region: Region, size: tuple[int, int]) -> bool:
    """Whether every seed's window is the whole map of this `size` (origin 0, same size)."""
    return region.size == tuple(size) and not bool(region.origin_y.any() or region.origin_x.any())


def is_tiling(pool: nn.MaxPool2d) -> bool:
    """Whether the pooling windows tile the map without overlap (kernel == stride, no padding)."""
    return all(
        sp.kernel == sp.stride and sp.padding == 0 and sp.dilation == 1 and not sp.ceil_mode
        for sp in spans(pool)
    )


class Unpool(MirrorStage):
    """Unpooling through the recorded switches (the exact adjoint of max pooling).

    Overlapping pooling (AlexNet 3x3/2) scatters and sums colliding switches; tiling pooling
    (VGG 2x2/2) has no collisions and takes the equal, cheaper route: repeat each value over its
    window and keep it at the switch only.
    """

    def __init__(self, pool: nn.MaxPool2d, index: int) -> None:
        super().__init__(index)
        self.span_y, self.span_x = spans(pool)
        self.tiling = is_tiling(pool)

    def extra_repr(self) -> str:
        return (
            f"switches of features[{self.index}], kernel={self.span_y.kernel}, "
            f"stride={self.span_y.stride}, collisions summed"
        )

    def forward(self, region: Region, record: ForwardRecord) -> Region:
        sy, sx = self.span_y, self.span_x
        ly, lx = region.size
        # the window below: output positions [a, a + ly) read input positions from a*s - p
        oy = region.origin_y * sy.stride - sy.padding
        ox = region.origin_x * sx.stride - sx.padding
        out_ly, out_lx = (ly - 1) * sy.stride + sy.extent, (lx - 1) * sx.stride + sx.extent
        height, width = record.sizes[self.index]
        if is_whole_map(region, (sy.output_length(height), sx.output_length(width))):
            return self._unpool_map(region, record, (height, width))
        if self.tiling and self.index in record.switch_masks:
            at_switch = gather_window(
                record.switch_masks[self.index], region.image, oy, ox, (out_ly, out_lx), False
            )
            up = repeat_over_windows(region.signal, sy.stride, sx.stride, is_channels_last(at_switch))
            return fit_to_map(Region(up.mul_(at_switch), region.image, oy, ox, True), (height, width))
        return unpool_window(region, record.switches[self.index], (oy, ox), (out_ly, out_lx), (height, width))

    def _unpool_map(self, region: Region, record: ForwardRecord, size: tuple[int, int]) -> Region:
        """Whole maps: scatter every value to its switch (one pass, collisions summed) on the
        map of `size` below."""
        height, width = size
        switches = gather_window(
            record.switches[self.index], region.image, region.origin_y, region.origin_x, region.size, 0
        )
        k, c = region.signal.shape[:2]
        if prefers_channels_last(region.signal):  # channels last, as the transposed convolutions
            out = region.signal.new_zeros(k, height * width, c)
            out.scatter_add_(
                1,
                switches.permute(0, 2, 3, 1).reshape(k, -1, c),
                region.signal.permute(0, 2, 3, 1).reshape(k, -1, c),
            )
            below = out.view(k, height, width, c).permute(0, 3, 1, 2)
        else:
            out = region.signal.new_zeros(k, c, height * width)
            out.scatter_add_(2, switches.flatten(2), region.signal.flatten(2))
            below = out.view(k, c, height, width)
        return Region(below, region.image, region.origin_y, region.origin_x, True)


def repeat_over_windows(signal: Tensor, stride_y: int, stride_x: int, channels_last: bool) -> Tensor:
    """[K, C, h, w] -> [K, C, h * stride_y, w * stride_x], each value repeated over its tiling
    window; a fresh tensor, channels-last in memory if asked."""
    k, c, h, w = signal.shape
    if channels_last:
        rows = signal.permute(0, 2, 3, 1)[:, :, None, :, None, :]
        up = signal.new_empty(k, h, stride_y, w, stride_x, c)
        up.copy_(rows.expand_as(up))
        return up.view(k, h * stride_y, w * stride_x, c).permute(0, 3, 1, 2)
    up = signal.new_empty(k, c, h, stride_y, w, stride_x)
    up.copy_(signal[:, :, :, None, :, None].expand_as(up))
    return up.view(k, c, h * stride_y, w * stride_x)


class BackwardReLU(MirrorStage):
    """The ReLU of the mirror: deconvnet relu(R), backprop R*[f>0], guided relu(R)*[f>0]."""

    def __init__(self, rule: str, index: int) -> None:
        super().__init__(index)
        self.rule = check_rule(rule)

    def extra_repr(self) -> str:
        return {"deconvnet": "relu(R)", "backprop": "R * [f > 0]", "guided": "relu(R) * [f > 0]"}[
            self.rule
        ] + f" (f: input of features[{self.index}])"

    def forward(self, region: Region, record: ForwardRecord) -> Region:
        signal, owned = region.signal, region.owned
        if self.rule != "backprop":
            signal = signal.relu_() if owned else F.relu(signal)
            owned = True
        if self.rule != "deconvnet":
            mask = gather_window(
                record.masks[self.index], region.image, region.origin_y, region.origin_x, region.size, False
            )
            signal = signal.mul_(mask) if owned else signal * mask
        return Region(signal, region.image, region.origin_y, region.origin_x, True)


class TiedTransposedConv(MirrorStage):
    """Transposed convolution with the forward Conv2d's own weight tensor (tied), no bias."""

    def __init__(self, conv: nn.Conv2d, index: int) -> None:
        super().__init__(index)
        self._conv = (conv,)  # a reference, not a submodule: the weight is read at call time
        self.span_y, self.span_x = spans(conv)

    @property
    def weight(self) -> Tensor:
        """The forward convolution's weight [C_out, C_in / groups, kh, kw], the same tensor."""
        return self._conv[0].weight

    def extra_repr(self) -> str:
        c = self._conv[0]
        return (
            f"{c.out_channels} -> {c.in_channels}, kernel={c.kernel_size}, stride={c.stride}, "
            f"padding={c.padding}, weight tied to features[{self.index}]"
        )

    def _channels_last_weight(self, record: ForwardRecord) -> Tensor:
        """The tied weight in channels-last layout (oneDNN would reorder it on every call),
        kept on the record while the weight is unchanged; no cache when autograd records."""
        w = self.weight
        if w.is_contiguous(memory_format=torch.channels_last) or torch.is_grad_enabled():
            return w.contiguous(memory_format=torch.channels_last)
        cached = record.layouts.get(self.index)
        if cached is None or cached[0] is not w or cached[1] != w._version:
            cached = (w, w._version, w.contiguous(memory_format=torch.channels_last))
            record.layouts[self.index] = cached
        return cached[2]

    def forward(self, region: Region, record: ForwardRecord) -> Region:
        c = self._conv[0]
        sy, sx = self.span_y, self.span_x
        signal, weight = region.signal, c.weight
        if prefers_channels_last(signal):  # oneDNN's transposed convolution is faster in NHWC
            signal = signal.contiguous(memory_format=torch.channels_last)
            weight = self._channels_last_weight(record)
        height, width = record.sizes[self.index]
        if is_whole_map(region, (sy.output_length(height), sx.output_length(width))):
            # the whole map: the conv's own padding crops exactly, no window bookkeeping
            extra = [
                n - ((m - 1) * sp.stride - 2 * sp.padding + sp.extent)
                for n, m, sp in ((height, region.size[0], sy), (width, region.size[1], sx))
            ]
            out = F.conv_transpose2d(
                signal, weight, None, c.stride, c.padding, tuple(extra), c.groups, c.dilation
            )
            return Region(out, region.image, region.origin_y, region.origin_x, True)
        # padding 0: output position t sits at map position origin*s - p + t
        out = F.conv_transpose2d(signal, weight, None, c.stride, 0, 0, c.groups, c.dilation)
        below = Region(
            out,
            region.image,
            region.origin_y * sy.stride - sy.padding,
            region.origin_x * sx.stride - sx.padding,
            True,
        )
        return fit_to_map(below, record.sizes[self.index])


class Mirror(nn.Module):
    """The deconvnet attached to `model.features` up to one stage (Fig. 1).

    `stages` run top-down: stages[0] mirrors the stage's own last module, stages[-1] the first conv.
    """

    def __init__(self, model: nn.Module, stage: int, rule: str = "deconvnet") -> None:
        super().__init__()
        self.rule = check_rule(rule)
        self.stage = stage
        self._layers = stage_layers(model, stage)  # validates stage and modules
        check_model_values(model)
        self._stage_at = {s.index: s.number for s in stages_of(model) if s.number <= stage}
        self._windows = windows(self._layers)
        mirrored: list[MirrorStage] = []
        for i, m in reversed(list(enumerate(self._layers))):
            if isinstance(m, nn.Conv2d):
                mirrored.append(TiedTransposedConv(m, i))
            elif isinstance(m, nn.ReLU):
                mirrored.append(BackwardReLU(rule, i))
            else:
                mirrored.append(Unpool(m, i))
        self.stages = nn.ModuleList(mirrored)

    @property
    def layers(self) -> list[nn.Module]:
        """The forward modules `features[: stage index + 1]` this mirror is attached to."""
        return list(self._layers)

    @full_float32()
    def record(self, images: Tensor, float_masks: bool = False) -> ForwardRecord:
        """One forward pass [B, 3, H, W] -> ForwardRecord, without touching the model's state.

        Convolutions use the model's own parameters; ReLU and pooling run out of place on our own
        tensors, so torchvision's inplace flags and any hooks on the model are left alone.
        float_masks: keep the ReLU masks as 0/1 in the images' dtype (4x the memory of bool, but
        the mirror's products need no conversion: faster when whole maps go down).
        """
        need_masks = self.rule != "deconvnet"
        sizes = level_sizes(self._layers, images.shape[-2], images.shape[-1])
        record = ForwardRecord(sizes=sizes, output=images)
        x = images
        for i, m in enumerate(self._layers):
            if isinstance(m, nn.Conv2d):
                x = F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
            elif isinstance(m, nn.ReLU):
                if need_masks:
                    record.masks[i] = (x > 0).to(x.dtype) if float_masks else x > 0
                x = F.relu(x, inplace=x is not images)  # our own conv output: no copy needed
            else:
                pooled, switches = F.max_pool2d(
                    x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True
                )
                record.switches[i] = switches
                if is_tiling(m):
                    at_switch = torch.zeros(
                        x.shape[:2] + (x.shape[2] * x.shape[3],), dtype=torch.bool, device=x.device
                    )
                    at_switch = at_switch.scatter_(2, switches.flatten(2), True).view_as(x)
                    at_switch = channels_last_on_cpu(at_switch)  # the mirror signals' layout
                    record.switch_masks[i] = at_switch
                x = pooled
            if i in self._stage_at:
                record.outputs[self._stage_at[i]] = x
        record.output = x
        return record

    def run(self, region: Region, record: ForwardRecord, until: int = -1) -> Region:
        """Send a Region at the stage level down to the input pixels, or only down to the output
        level of forward module `until` (mirror stages of modules with index > until run)."""
        for mirror_stage in self.stages:
            if mirror_stage.index <= until:
                break
            region = mirror_stage(region, record)
        return region

    @full_float32()
    def project_map(self, record: ForwardRecord, chunk_size: int = 8) -> Tensor:
        """Reconstruct every image's whole stage output ("keep all"): -> [B, 3, H, W]."""
        output = record.stage_output(self.stage)
        b = output.shape[0]
        pieces = []
        for start in range(0, b, chunk_size):
            image = torch.arange(start, min(start + chunk_size, b))
            zero = torch.zeros_like(image)
            region = Region(output[start : start + len(image)], image, zero, zero)
            pieces.append(self._to_frame(self.run(region, record), zero, zero, record.sizes[0]))
        return torch.cat(pieces)

    @full_float32()
    def project(
        self, record: ForwardRecord, seeds: Seeds, frame: str = "image", chunk_size: int = 16
    ) -> Tensor:
        """Reconstruct single activations of this mirror's stage, each alone, from one record
        (made by this mirror or by the mirror of a higher stage).

        frame="image": [K, 3, H, W], the full input frame.
        frame="receptive_field": [K, 3, rf_h, rf_w], the window of the seed unit's receptive field
        (top-left at `receptive_field_origin(seeds)`), zero where it crosses the image border.
        Seeds go through in batches of at most `chunk_size` (`seed_batches`), so memory is
        bounded for any K.
        """
        if frame not in ("image", "receptive_field"):
            raise ValueError(f"frame: expected 'image' or 'receptive_field', got {frame!r}")
        output = record.stage_output(self.stage)
        c = output.shape[1]
        size = record.sizes[0] if frame == "image" else self._windows[0].size
        out = output.new_zeros(len(seeds), 3, *size)
        for index in self.seed_batches(seeds, record.sizes, chunk_size):
            part = seeds[index]
            k = len(part)
            signal = output.new_zeros(k, c, 1, 1)
            signal[torch.arange(k), part.channel.to(signal.device), 0, 0] = part.value.to(
                signal.device, signal.dtype
            )
            region = self.run(Region(signal, part.image, part.y, part.x), record)
            if frame == "image":
                top = left = torch.zeros_like(part.y)
            else:
                top, left = self.receptive_field_origin(part)
            out[index.to(out.device)] = self._to_frame(region, top, left, size)
        return out

    def seed_batches(self, seeds: Seeds, sizes: list[tuple[int, int]], chunk_size: int) -> list[Tensor]:
        """Seed indices [k <= chunk_size] that go down together: seeds whose windows cross the
        map border in the same way at every level (all interior seeds share one batch). A batch
        then needs no per-seed zeroing of padding, and a border seed computes only the part of
        its receptive field that lies inside the image."""
        if len(seeds) == 0:
            return []
        clips = []
        for level, w in enumerate(self._windows):
            for axis, position in enumerate((seeds.y, seeds.x)):
                first = position * w.jump[axis] + w.start[axis]
                clips.append((-first).clamp(min=0))
                clips.append((first + w.size[axis] - sizes[level][axis]).clamp(min=0))
        _, group = torch.unique(torch.stack(clips, 1), dim=0, return_inverse=True)
        batches = []
        for g in range(int(group.max()) + 1):
            members = torch.nonzero(group == g).flatten()
            batches.extend(members.split(chunk_size))
        return batches

    def receptive_field_origin(self, seeds: Seeds) -> tuple[Tensor, Tensor]:
        """Top-left input pixel (may be negative) of each seed's receptive field: ([K], [K])."""
        w = self._windows[0]
        return seeds.y * w.jump[0] + w.start[0], seeds.x * w.jump[1] + w.start[1]

    @staticmethod
    def _to_frame(region: Region, top: Tensor, left: Tensor, size: tuple[int, int]) -> Tensor:
        return reframe(region, top, left, size).signal
