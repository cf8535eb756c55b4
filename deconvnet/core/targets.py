"""What a gradient-family map explains: a class score, or a unit or channel of one of the stages.

target=None      each image's predicted class (argmax of its logits)
target=c         class c (its unnormalised logit, as Simonyan et al. 2014) for every image
target=[B] tensor   one class per image
target=[c1, ..., cK] (one image)   K maps from ONE forward pass, [K, ...]
target=Unit(stage, channel, y, x)  that unit's activation; y = x = None: the channel's strongest
                                   unit in each image (as `reconstruct(keep=channel)` picks it);
                                   channel = None too: the stage's strongest unit (keep="max")
target=Channel(stage, channel)     the spatial sum of the channel's map
A list of K units / channels (one image, all of one stage) gives K maps, like a list of classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deconvnet.core.architecture import PROBE_SIDE, Stage, is_chain
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.validation import is_int


@dataclass(frozen=True)
class Unit:
    """One unit of a stage: `channel` at map position (y, x); y = x = None: the channel's
    strongest unit in each image; channel = y = x = None: the stage's strongest unit."""

    stage: int | str
    channel: int | None = None
    y: int | None = None
    x: int | None = None


@dataclass(frozen=True)
class Channel:
    """The spatial sum of one channel's map at a stage."""

    stage: int | str
    channel: int


Target = None | int | Tensor | Unit | Channel | list


@dataclass
class Rows:
    """One row per map to compute. image [M] int64 (CPU): the input image each row explains.

    kind "class": classes [M] (None until the forward pass when the target is the prediction).
    kind "unit": stage, channel [M], y / x [M] (None until the forward pass when "strongest";
        channel None too when the strongest of the whole stage).
    kind "channel": stage, channel [M].
    """

    kind: str
    image: Tensor
    classes: Tensor | None = None
    stage: int = 5
    channel: Tensor | None = None
    y: Tensor | None = None
    x: Tensor | None = None

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def __getitem__(self, part: slice) -> Rows:
        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[part]

        return Rows(
            self.kind,
            self.image[part],
            cut(self.classes),
            self.stage,
            cut(self.channel),
            cut(self.y),
            cut(self.x),
        )

    @property
    def resolved(self) -> bool:
        """Whether every row names its exact class or unit (no prediction / argmax left)."""
        if self.kind == "class":
            return self.classes is not None
        return self.kind == "channel" or self.y is not None

    def resolve(self, logits: Tensor | None, stage_output: Tensor | None) -> Rows:
        """Fill in predicted classes (from logits [N, classes]) or strongest units (from the
        stage output [N, C, h, w]) of each row's image."""
        if self.resolved:
            return self
        if self.kind == "class":
            return Rows("class", self.image, logits.argmax(1).cpu()[self.image])
        out = stage_output[self.image.to(stage_output.device)]
        height, width = stage_output.shape[-2:]
        if self.channel is None:  # first maximum of the whole stage, as select_seeds("max")
            flat = out.flatten(1).argmax(1).cpu()
            channel, flat = flat // (height * width), flat % (height * width)
        else:
            channel = self.channel
            flat = out[torch.arange(len(self)), channel.to(out.device)].flatten(1).argmax(1).cpu()
        return Rows("unit", self.image, stage=self.stage, channel=channel, y=flat // width, x=flat % width)

    def repeat(self, copies: int) -> Rows:
        """The same rows for `copies` images that are copies of this row set's image 0 (row
        order: copy-major), image index = copy. Only for rows of one image."""
        if bool((self.image != 0).any()):
            raise ValueError("internal: repeat needs rows of a single image")
        k = len(self)
        image = torch.arange(copies).repeat_interleave(k)

        def tile(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.repeat(copies)

        return Rows(
            self.kind, image, tile(self.classes), self.stage, tile(self.channel), tile(self.y), tile(self.x)
        )

    def of_image(self, b: int) -> Rows:
        """The rows of image b, re-indexed as image 0."""
        keep = self.image == b

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[keep]

        return Rows(
            self.kind,
            torch.zeros(int(keep.sum()), dtype=torch.long),
            pick(self.classes),
            self.stage,
            pick(self.channel),
            pick(self.y),
            pick(self.x),
        )


def class_count(model: nn.Module) -> int:
    """Number of classes: the size of the model's output (its logits) on its traced graph; for
    torchvision's VGG / AlexNet the out_features of the classifier's last Linear."""
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Sequential) and is_chain(model):
        last = list(classifier)[-1]
        if not isinstance(last, nn.Linear):
            raise ValueError("model.classifier: expected a Linear layer last (the class scores)")
        return int(last.out_features)
    graph = ModelGraph.of(model)
    shape = graph.shapes(1, 3, PROBE_SIDE, PROBE_SIDE)[graph.output]
    if len(shape) != 2:
        raise ValueError(
            f"model: its output has shape {list(shape)} at 224 px, not [B, classes] (class scores)"
        )
    return int(shape[1])


def _check_class(c: object, classes: int) -> int:
    if not is_int(c) or not 0 <= int(c) < classes:
        raise ValueError(f"target: class {c!r} is outside 0..{classes - 1} (the model's {classes} classes)")
    return int(c)


def _target_stage(model: nn.Module, stage: object) -> Stage:
    """The stage of a Unit / Channel target; its ValueError names `target` (the argument)."""
    try:
        return stage_of(model, stage)
    except ValueError as error:
        raise ValueError(f"target: {error}") from None


def _check_unit(model: nn.Module, unit: Unit | Channel, sizes: dict[int, tuple[int, int]]) -> None:
    info = _target_stage(model, unit.stage)
    if isinstance(unit, Unit) and unit.channel is None:
        if unit.y is not None or unit.x is not None:
            raise ValueError(
                f"target: {unit} gives a position without a channel; give the "
                "channel too, or neither (the stage's strongest unit)"
            )
        return
    if not is_int(unit.channel) or not 0 <= int(unit.channel) < info.channels:
        raise ValueError(
            f"target: channel {unit.channel!r} is outside stage {unit.stage}'s "
            f"channels 0..{info.channels - 1}"
        )
    if isinstance(unit, Unit) and (unit.y is None) != (unit.x is None):
        raise ValueError(f"target: give both y and x of {unit}, or neither (the strongest unit)")
    if isinstance(unit, Unit) and unit.y is not None:
        h, w = sizes[unit.stage]
        if not (is_int(unit.y) and is_int(unit.x) and 0 <= unit.y < h and 0 <= unit.x < w):
            raise ValueError(
                f"target: position (y, x) = ({unit.y!r}, {unit.x!r}) is outside "
                f"stage {unit.stage}'s {h}x{w} map at this input size "
                f"(y in 0..{h - 1}, x in 0..{w - 1})"
            )


def _unit_rows(units: list[Unit | Channel], image: Tensor) -> Rows:
    if isinstance(units[0], Unit) and units[0].channel is None:
        return Rows("unit", image, stage=units[0].stage)
    channel = torch.tensor([int(u.channel) for u in units], dtype=torch.long)
    if isinstance(units[0], Channel):
        return Rows("channel", image, stage=units[0].stage, channel=channel)
    if units[0].y is None:
        return Rows("unit", image, stage=units[0].stage, channel=channel)
    return Rows(
        "unit",
        image,
        stage=units[0].stage,
        channel=channel,
        y=torch.tensor([int(u.y) for u in units]),
        x=torch.tensor([int(u.x) for u in units]),
    )


ACCEPTED = (
    "None (the predicted class), a class int, a [B] tensor of classes, a list of classes "
    "(one image), a deconvnet Unit / Channel, or a list of them (one image, one stage)"
)


def numbered_stages(model: nn.Module, target: object) -> object:
    """The target with every Unit / Channel stage given by name or path replaced by its number."""
    if isinstance(target, (Unit, Channel)) and isinstance(target.stage, str):
        return dataclasses.replace(target, stage=_target_stage(model, target.stage).number)
    if isinstance(target, (list, tuple)):
        return type(target)(numbered_stages(model, t) for t in target)
    return target


def resolve_target(model: nn.Module, target: object, batch: int, sizes: dict[int, tuple[int, int]]) -> Rows:
    """Validate `target` for `batch` images (stage map sizes `sizes`) -> Rows, before heavy work.
    A Unit's or Channel's stage may be its number or the stage's name or module path."""
    target = numbered_stages(model, target)
    classes = class_count(model)
    every = torch.arange(batch)
    if target is None:
        return Rows("class", every)
    if isinstance(target, Tensor) and target.dim() == 0:
        target = target.item()
    if is_int(target):
        return Rows("class", every, torch.full((batch,), _check_class(target, classes)))
    if isinstance(target, (Unit, Channel)):
        _check_unit(model, target, sizes)
        return _unit_rows([target] * batch, every)
    if isinstance(target, Tensor):
        if target.dim() != 1 or target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(
                f"target: a tensor target must be a [B] integer tensor of classes, "
                f"got dtype {target.dtype} shape {list(target.shape)}"
            )
        if target.shape[0] != batch:
            raise ValueError(
                f"target: {target.shape[0]} classes for {batch} images; a [B] "
                "tensor gives one class per image"
            )
        return Rows("class", every, torch.tensor([_check_class(c, classes) for c in target.tolist()]))
    if isinstance(target, (list, tuple)):
        if not target:
            raise ValueError(f"target: the list is empty; expected {ACCEPTED}")
        if batch != 1:
            raise ValueError(
                f"target: a list of {len(target)} targets needs exactly one image "
                f"(B == 1), got B == {batch}; pass a [B] tensor for one class per image"
            )
        one = torch.zeros(len(target), dtype=torch.long)
        if all(is_int(c) for c in target):
            return Rows("class", one, torch.tensor([_check_class(c, classes) for c in target]))
        if all(isinstance(u, Unit) for u in target) or all(isinstance(u, Channel) for u in target):
            for u in target:
                _check_unit(model, u, sizes)
            if len({u.stage for u in target}) != 1:
                raise ValueError(
                    "target: a list of units must all be of one stage, got stages "
                    f"{sorted({u.stage for u in target})}"
                )
            if any(isinstance(u, Unit) and u.channel is None for u in target):
                raise ValueError(
                    "target: every unit of a list needs its channel (Unit(stage) "
                    "alone, not in a list, explains the stage's strongest unit)"
                )
            if isinstance(target[0], Unit) and len({u.y is None for u in target}) != 1:
                raise ValueError("target: give positions for every unit of the list or for none")
            return _unit_rows(list(target), one)
    raise ValueError(f"target: expected {ACCEPTED}, got {target!r}")
