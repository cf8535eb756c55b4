"""Forward and adjoint of every Op kind of the graph mirror (docs/graph.md#adjoints).

`forward(op, inputs, record)` computes a node with the model's own parameters, out of place, and
keeps in `record` what the adjoint needs (ReLU masks, pooling switches, input shapes); with
`record=None` it only computes (a shape pass on the meta device). `adjoint(op, g, record, rule,
image)` sends the signal g [M, ...] at the node's output to each of its tensor inputs: rows m of
g belong to image `image[m]` of the recorded batch. Only the ReLU and ReLU6 depend on the rule;
every other adjoint is the exact transpose of a linear map (batch norm in eval included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.core.graph import Op
from deconvnet.core.layout import prefers_channels_last

RULES = ("deconvnet", "backprop", "guided")


def check_rule(rule: object) -> str:
    """The rule name, or ValueError listing the accepted ones (chain and graph mirror alike)."""
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"rule: expected one of {', '.join(RULES)}, got {rule!r}")
    return rule


@dataclass
class GraphRecord:
    """What one forward pass leaves for the graph mirror.

    shapes: op name -> shape of its first input [B, ...]; masks: op name -> [B, C, H, W] mask of
    the ReLU (ReLU6) input, f > 0 (0 < f < 6); switches: op name -> [B, C, h, w] int64 flat argmax
    positions; values: op name -> kept outputs (stages, the logits); sizes[0]: (H, W) of the input.
    """

    sizes: list[tuple[int, int]]
    values: dict[str, Tensor] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    masks: dict[str, Tensor] = field(default_factory=dict)
    switches: dict[str, Tensor] = field(default_factory=dict)
    masks_wanted: bool = True
    float_masks: bool = False
    layouts: dict[str, tuple[Tensor, int, Tensor]] = field(default_factory=dict, repr=False)
    outputs: dict[int, Tensor] = field(default_factory=dict)
    output: Tensor | None = None

    def stage_output(self, stage: int) -> Tensor:
        """[B, C, h, w] output of stage number `stage`; ValueError if this record stops below it."""
        if stage not in self.outputs:
            raise ValueError(
                f"stage: this forward record covers stages {sorted(self.outputs)}, not {stage}; "
                f"record with a mirror of stage {stage} or higher"
            )
        return self.outputs[stage]


def pair(value: object) -> tuple[int, int]:
    """An int or a pair as (vertical, horizontal)."""
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def same_padding(size: tuple[int, int], module) -> tuple[int, int, int, int]:
    """TF "same" padding (left, right, top, bottom) of timm's Conv2dSame at an input of `size`:
    total = max((ceil(n / s) - 1) s + (k - 1) d + 1 - n, 0), left = total // 2."""
    pads = []
    for n, k, s, d in zip(size, pair(module.kernel_size), pair(module.stride), pair(module.dilation)):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


def bn_scale(module) -> Tensor:
    """[C] gamma / sqrt(var + eps): batch norm's linear part in eval."""
    scale = torch.rsqrt(module.running_var + module.eps)
    return scale * module.weight if module.weight is not None else scale


def batch_norm(x: Tensor, module) -> Tensor:
    """Batch norm with the running statistics (the eval function, whatever the module's mode)."""
    return F.batch_norm(
        x, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0, module.eps
    )


def activate(x: Tensor, kind: str, op: Op, record: GraphRecord | None) -> Tensor:
    """ReLU / ReLU6 / identity, keeping the mask its backward rules need."""
    if kind == "identity":
        return x
    if record is not None and record.masks_wanted:
        mask = (x > 0) & (x < 6) if kind == "relu6" else x > 0
        record.masks[op.name] = mask.to(x.dtype) if record.float_masks else mask
    return F.relu(x) if kind == "relu" else F.relu6(x)


def conv_with(op: Op, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The convolution of a "conv" / "conv_same" node with the given weight and bias:
    x [N, C, H, W] -> [N, C', h, w] (TF-same nodes pad x as their module does)."""
    m = op.module
    if op.kind == "conv_same":
        x = F.pad(x, same_padding(tuple(x.shape[-2:]), m))
        return F.conv2d(x, weight, bias, m.stride, 0, m.dilation, m.groups)
    padding = 0 if m.padding == "valid" else m.padding
    return F.conv2d(x, weight, bias, m.stride, padding, m.dilation, m.groups)


def conv_forward(op: Op, xs: list[Tensor], record: GraphRecord | None) -> Tensor:
    return conv_with(op, xs[0], op.module.weight, op.module.bias)


def maxpool_forward(op: Op, xs: list[Tensor], record: GraphRecord | None) -> Tensor:
    m = op.module
    pooled, switches = F.max_pool2d(
        xs[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True
    )
    if record is not None:
        record.switches[op.name] = switches
    return pooled


def avgpool_forward(op: Op, xs: list[Tensor], record: GraphRecord | None) -> Tensor:
    m = op.module
    return F.avg_pool2d(
        xs[0], m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override
    )


def flatten_forward(op: Op, xs: list[Tensor], record: GraphRecord | None) -> Tensor:
    return torch.flatten(xs[0], op.args["start"], op.args["end"])


def linear_forward(op: Op, xs: list[Tensor], record: GraphRecord | None) -> Tensor:
    return F.linear(xs[0], op.module.weight, op.module.bias)


def getitem_forward(op: Op, xs: list[Tensor], record: GraphRecord | None) -> Tensor:
    return xs[0][op.args["index"]]


FORWARD: dict[str, Callable[[Op, list[Tensor], GraphRecord | None], Tensor]] = {
    "input": lambda op, xs, record: xs[0],
    "output": lambda op, xs, record: xs[0],
    "conv": conv_forward,
    "conv_same": conv_forward,
    "bn": lambda op, xs, record: batch_norm(xs[0], op.module),
    "bn_act": lambda op, xs, record: activate(batch_norm(xs[0], op.module), op.args["act"], op, record),
    "relu": lambda op, xs, record: activate(xs[0], "relu", op, record),
    "relu6": lambda op, xs, record: activate(xs[0], "relu6", op, record),
    "maxpool": maxpool_forward,
    "avgpool": avgpool_forward,
    "adaptive_avgpool": lambda op, xs, record: F.adaptive_avg_pool2d(xs[0], op.args["size"]),
    "add": lambda op, xs, record: xs[0] + xs[1],
    "cat": lambda op, xs, record: torch.cat(xs, 1),
    "flatten": flatten_forward,
    "linear": linear_forward,
    "identity": lambda op, xs, record: xs[0],
    "scale": lambda op, xs, record: xs[0] * op.args["factor"],
    "shift": lambda op, xs, record: xs[0] + op.args["constant"],
    "getitem": getitem_forward,
    "unsqueeze": lambda op, xs, record: xs[0].unsqueeze(op.args["dim"]),
}


def forward(op: Op, xs: list[Tensor], record: GraphRecord | None) -> Tensor:
    """The node's output from its tensor inputs' values (in `op.inputs` order)."""
    out = FORWARD[op.kind](op, xs, record)
    if record is not None and xs:
        record.shapes[op.name] = tuple(xs[0].shape)
        record.shapes[f"{op.name}:out"] = tuple(out.shape)
    return out


def rows_of(maps: Tensor, image: Tensor) -> Tensor:
    """[B, ...] per-image maps -> [M, ...] the rows' images (a view when the rows are the batch
    or all of one image)."""
    if image.shape[0] == maps.shape[0] and torch.equal(image, torch.arange(maps.shape[0])):
        return maps
    if bool((image == image[0]).all()):
        first = int(image[0])
        return maps[first : first + 1].expand(image.shape[0], *maps.shape[1:])
    return maps[image.to(maps.device)]


def mirror_weight(op: Op, record: GraphRecord | None, channels_last: bool) -> Tensor:
    """The weight the tied transposed convolution uses: the forward weight itself, times the scale
    of the batch norm right after it when that norm's adjoint is folded in (`op.args["bn"]`), in
    channels-last layout on the CPU (oneDNN's fast route); made once per record while the weight
    is unchanged, and never kept under autograd."""
    w, bn = op.module.weight, op.args.get("bn")
    if bn is None and not channels_last:
        return w
    key = f"{op.name}:bn" if bn is not None else op.name
    cached = record.layouts.get(key) if record is not None else None
    if cached is None or cached[0] is not w or cached[1] != w._version or torch.is_grad_enabled():
        made = w * bn_scale(bn).to(w.dtype)[:, None, None, None] if bn is not None else w
        if channels_last:
            made = made.contiguous(memory_format=torch.channels_last)
        cached = (w, w._version, made)
        if record is not None and not torch.is_grad_enabled():
            record.layouts[key] = cached
    return cached[2]


def relu_adjoint(g: Tensor, mask: Tensor | None, rule: str) -> Tensor:
    """deconvnet relu(R); backprop R * mask; guided relu(R) * mask (docs/mirror.md)."""
    if rule != "backprop":
        g = F.relu(g)
    return g if rule == "deconvnet" else g * mask


def transposed_conv(
    g: Tensor, module, size: tuple[int, int], padding: tuple[int, int], weight: Tensor | None = None
) -> Tensor:
    """Tied transposed convolution (the forward weight, no bias) back to a map of `size`."""
    stride, dilation = pair(module.stride), pair(module.dilation)
    weight = module.weight if weight is None else weight
    kernel = weight.shape[-2:]
    extra = [
        n - ((m - 1) * s - 2 * p + d * (k - 1) + 1)
        for n, m, s, p, d, k in zip(size, g.shape[-2:], stride, padding, dilation, kernel)
    ]
    return F.conv_transpose2d(g, weight, None, stride, padding, tuple(extra), module.groups, dilation)


def tied_weight(op: Op, g: Tensor, record: GraphRecord) -> tuple[Tensor, Tensor]:
    """(signal, weight) in the layout the transposed convolution runs fastest in on this device."""
    if not prefers_channels_last(g):
        return g, mirror_weight(op, record, False)
    return g.contiguous(memory_format=torch.channels_last), mirror_weight(op, record, True)


def conv_transpose_with(op: Op, g: Tensor, weight: Tensor, size: tuple[int, int]) -> Tensor:
    """W^T g for a "conv" / "conv_same" node with the given weight: g [M, C', h, w] -> [M, C, H, W]
    at the input size `size`; for TF-same padding the transposed convolution runs onto the padded
    map and the padding is cropped (its adjoint)."""
    m = op.module
    if op.kind == "conv":
        return transposed_conv(g, m, size, (0, 0) if m.padding == "valid" else pair(m.padding), weight)
    height, width = size
    left, right, top, bottom = same_padding((height, width), m)
    padded = transposed_conv(g, m, (height + top + bottom, width + left + right), (0, 0), weight)
    return padded[..., top : top + height, left : left + width]


def conv_adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    g, weight = tied_weight(op, g, record)
    return [conv_transpose_with(op, g, weight, tuple(record.shapes[op.name][-2:]))]


def bn_adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    """Batch norm's scale per channel, or nothing when the convolution below applies it
    (folded into its mirror weight: one product less per map)."""
    if op.args.get("folded"):
        return [g]
    return [g * bn_scale(op.module).to(g.dtype)[:, None, None]]


def act_adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    mask = rows_of(record.masks[op.name], image) if rule != "deconvnet" else None
    return [relu_adjoint(g, mask, rule)]


def bn_act_adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    if op.args["act"] != "identity":
        g = act_adjoint(op, g, record, rule, image)[0]
    return bn_adjoint(op, g, record, rule, image)


def maxpool_adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    """Unpooling through the recorded switches, colliding switches summed (the exact adjoint)."""
    height, width = record.shapes[op.name][-2:]
    switches = rows_of(record.switches[op.name], image)
    out = g.new_zeros(g.shape[0], g.shape[1], height * width)
    out.scatter_add_(2, switches.flatten(2), g.flatten(2))
    return [out.view(g.shape[0], g.shape[1], height, width)]


def avgpool_adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    """Each window's signal spread over it, divided as the forward divided (aten's own adjoint)."""
    m = op.module
    shape = (g.shape[0],) + tuple(record.shapes[op.name][1:])
    like = g.new_zeros(()).expand(shape)
    return [
        torch.ops.aten.avg_pool2d_backward(
            g, like, pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding),
            m.ceil_mode, m.count_include_pad, m.divisor_override,
        )
    ]  # fmt: skip


def pooling_matrix(out_len: int, in_len: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[out_len, in_len]: row i averages input positions [floor(i n / m), ceil((i + 1) n / m)),
    PyTorch's adaptive average pooling windows along one axis (n = in_len, m = out_len)."""
    rows = []
    for i in range(out_len):
        start, end = (i * in_len) // out_len, -((-(i + 1) * in_len) // out_len)
        row = torch.zeros(in_len, dtype=torch.float64)
        row[start:end] = 1.0 / (end - start)
        rows.append(row)
    return torch.stack(rows).to(device=device, dtype=dtype)


def avg_pool_adjoint(grad: Tensor, size: tuple[int, int]) -> Tensor:
    """Exact adjoint of `F.adaptive_avg_pool2d(., grad.shape[-2:])` on maps of `size`.

    grad [M, C, oh, ow] -> [M, C, H, W]. The forward pooling is P_y A P_x^T with one averaging
    matrix per axis, so its adjoint is P_y^T G P_x: every input position receives the sum of
    grad / window area over the windows that contain it. Where the map already has the pooled
    size the pooling is the identity, and so is this.
    """
    (oh, ow), (h, w) = grad.shape[-2:], size
    if (oh, ow) == (h, w):
        return grad
    p_y = pooling_matrix(oh, h, grad.dtype, grad.device)
    p_x = pooling_matrix(ow, w, grad.dtype, grad.device)
    return torch.einsum("mcij,ih,jw->mchw", grad, p_y, p_x)


def adaptive_adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    return [avg_pool_adjoint(g, tuple(record.shapes[op.name][-2:]))]


def cat_adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    """The signal split along channels, one slice per concatenated input."""
    return list(g.split(list(op.args["channels"]), dim=1))


def reshape_adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    return [g.reshape((g.shape[0],) + tuple(record.shapes[op.name][1:]))]


def getitem_adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    """Zeros of the input's shape with the signal written where the index read."""
    out = g.new_zeros((g.shape[0],) + tuple(record.shapes[op.name][1:]))
    out[op.args["index"]] = g
    return [out]


ADJOINT: dict[str, Callable[[Op, Tensor, GraphRecord, str, Tensor], list[Tensor]]] = {
    "output": lambda op, g, record, rule, image: [g],
    "conv": conv_adjoint,
    "conv_same": conv_adjoint,
    "bn": bn_adjoint,
    "bn_act": bn_act_adjoint,
    "relu": act_adjoint,
    "relu6": act_adjoint,
    "maxpool": maxpool_adjoint,
    "avgpool": avgpool_adjoint,
    "adaptive_avgpool": adaptive_adjoint,
    "add": lambda op, g, record, rule, image: [g, g],
    "cat": cat_adjoint,
    "flatten": reshape_adjoint,
    "linear": lambda op, g, record, rule, image: [g @ op.module.weight.to(g.dtype)],
    "identity": lambda op, g, record, rule, image: [g],
    "scale": lambda op, g, record, rule, image: [g * op.args["factor"]],
    "shift": lambda op, g, record, rule, image: [g],
    "getitem": getitem_adjoint,
    "unsqueeze": lambda op, g, record, rule, image: [g.squeeze(op.args["dim"])],
}


def unfolded(op: Op) -> Op:
    """The op without a batch norm folded into it: for a convolution where the mirror starts (the
    signal there has not come through the norm above it)."""
    if "bn" not in op.args:
        return op
    args = {k: v for k, v in op.args.items() if k != "bn"}
    return Op(op.name, op.kind, op.inputs, op.module, op.path, op.scopes, args)


def adjoint(op: Op, g: Tensor, record: GraphRecord, rule: str, image: Tensor) -> list[Tensor]:
    """The signal at each tensor input (in `op.inputs` order) from g [M, ...] at the output."""
    return ADJOINT[op.kind](op, g, record, rule, image)
