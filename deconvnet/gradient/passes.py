"""One forward pass, many maps: the mirror of the whole network sent down for a batch of targets.

`GradientPass.forward` runs the network once (the features mirror's record, then avgpool and the
classifier when the targets are classes); `GradientPass.backward` sends one seed per row down
from that record (a one-hot logit, a unit, a channel map), in chunks of bounded size. Under the
"backprop" rule every map is exactly the autograd gradient of the target's score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.architecture import is_chain
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.graph_mirror import GraphMirror
from deconvnet.core.layout import channels_last_on_cpu
from deconvnet.core.mirror import ForwardRecord, Mirror
from deconvnet.core.targets import Rows
from deconvnet.core.windows import Region, reframe
from deconvnet.gradient.head import HeadMirror, HeadRecord

CHUNK_SIZE = 16  # rows sent down together: bounds memory at [16, 64, H, W] per level


@dataclass
class Forward:
    """The record of one forward pass: the features mirror's, and the head's for class targets."""

    record: ForwardRecord
    head: HeadRecord | None


class GradientPass:
    """The mirror from the rows' targets down to the input, with one rule for every ReLU: the
    chain mirror and its head on VGG / AlexNet, the graph mirror on every other model."""

    def __init__(self, model: nn.Module, rule: str, rows: Rows) -> None:
        top = 5 if rows.kind == "class" else rows.stage
        self.chain = is_chain(model)
        self.keep: tuple[str, ...] = ()  # graph nodes whose outputs the record keeps (Grad-CAM)
        if not self.chain:
            self.mirror = GraphMirror(model, None if rows.kind == "class" else top, rule)
            self.head = None
            return
        self.mirror = Mirror(model, top, rule)
        self.head = HeadMirror(model, rule) if rows.kind == "class" else None
        if self.head is not None and stage_of(model, 5).index != len(model.features) - 1:
            raise ValueError("model.features: modules after the last stage have no mirror")

    def forward(self, images: Tensor) -> Forward:
        """[N, 3, H, W] -> Forward (no autograd graph; call under torch.no_grad)."""
        images = channels_last_on_cpu(images)  # oneDNN: every map channels last, no conversions
        if self.chain:
            record = self.mirror.record(images, float_masks=True)
        else:
            record = self.mirror.record(images, float_masks=True, keep=self.keep)
        head = self.head.record(record.output) if self.head is not None else None
        return Forward(record, head)

    def logits(self, forward: Forward) -> Tensor | None:
        """[N, classes] logits of this forward pass (None when the targets are not classes)."""
        if forward.head is not None:
            return forward.head.logits
        if not self.chain and self.mirror.stage is None:
            return forward.record.output
        return None

    def resolve(self, forward: Forward, rows: Rows) -> Rows:
        """Rows with predicted classes / strongest units filled in from this forward pass."""
        if rows.resolved:
            return rows
        logits = self.logits(forward)
        output = forward.record.outputs.get(rows.stage) if rows.kind != "class" else None
        return rows.resolve(logits, output)

    def graph_seed(self, forward: Forward, rows: Rows) -> Tensor:
        """The rows' seeds [M, ...] at the graph mirror's top node (the logits or a stage)."""
        return target_signal(forward.record.output, rows)

    def seed(self, forward: Forward, rows: Rows) -> Region:
        """The rows' seeds as a Region at the top level of the features mirror."""
        output = forward.record.output
        zero = torch.zeros_like(rows.image)
        if rows.kind == "class":
            one_hot = F.one_hot(rows.classes, self.head.classes).to(output.device, output.dtype)
            return Region(self.head.run(one_hot, forward.head, rows.image), rows.image, zero, zero)
        m, c = len(rows), output.shape[1]
        channel = rows.channel.to(output.device)
        if rows.kind == "channel":
            signal = output.new_zeros(m, c, *output.shape[-2:])
            signal[torch.arange(m, device=output.device), channel] = 1.0
            return Region(signal, rows.image, zero, zero)
        signal = output.new_zeros(m, c, 1, 1)
        signal[torch.arange(m, device=output.device), channel] = 1.0
        return Region(signal, rows.image, rows.y.clone(), rows.x.clone())

    def backward(
        self, forward: Forward, rows: Rows, until: int | str = -1, chunk_size: int = CHUNK_SIZE
    ) -> Tensor:
        """Resolved rows -> [M, C, H_l, W_l]: each row's map at the output level of
        `model.features[until]` (until = -1: the input pixels, [M, 3, H, W]); on a graph
        `until` is a node name (or -1)."""
        if not self.chain:
            node = None if until == -1 else until
            return torch.cat(
                [
                    self.mirror.run(self.graph_seed(forward, part), part.image, forward.record, until=node)
                    for part in (rows[s : s + chunk_size] for s in range(0, len(rows), chunk_size))
                ]
            )
        size = forward.record.sizes[until + 1]
        pieces = []
        for start in range(0, len(rows), chunk_size):
            part = rows[start : start + chunk_size]
            region = self.mirror.run(self.seed(forward, part), forward.record, until)
            zero = torch.zeros_like(part.image)
            pieces.append(reframe(region, zero, zero, size).signal)
        return torch.cat(pieces)


def target_signal(output: Tensor, rows: Rows) -> Tensor:
    """Resolved rows -> [M, ...] one at each row's target in a node's output [N, ...] (a class of
    the logits, a unit, or a whole channel's map), zero elsewhere."""
    m, device = len(rows), output.device
    if rows.kind == "class":
        return F.one_hot(rows.classes, output.shape[1]).to(device, output.dtype)
    signal = output.new_zeros(m, *output.shape[1:])
    if rows.kind == "channel":
        signal[torch.arange(m, device=device), rows.channel.to(device)] = 1.0
    else:
        index = (torch.arange(m), rows.channel, rows.y, rows.x)
        signal[tuple(t.to(device) for t in index)] = 1.0
    return signal


def mean_of_maps(
    gradient_pass: GradientPass, rows: Rows, inputs, count: int, squared: bool, chunk_size: int
) -> Tensor:
    """Mean over batches of inputs (each [n, 3, H, W], copies of one image: noisy copies, path
    points) of the rows' maps (squared first if asked), accumulated in float64 -> [K, 3, H, W]."""
    total = None
    for batch in inputs:
        n = batch.shape[0]
        forward = gradient_pass.forward(batch)
        maps = gradient_pass.backward(forward, rows.repeat(n), chunk_size=chunk_size)
        if squared:
            maps = maps * maps
        part = maps.view(n, len(rows), *maps.shape[1:]).sum(0, dtype=torch.float64)
        total = part if total is None else total + part
    return (total / count).to(batch.dtype)
