"""Invariance of a model's features and output to vertical translation, scale and rotation
(Zeiler & Fergus, ECCV 2014, section 4 "Feature Invariance", Fig. 5).

The paper transforms 5 images "by varying degrees" and plots, per image and per amount of the
transformation, (b) the Euclidean distance between the feature vectors of the original and the
transformed image at layer 1, (c) the same at layer 7 (fc7), (d) the probability of the true
label. `invariance` computes exactly these curves for any supported model, images, layers and
amounts.

    result = invariance(model, x, "rotate")                    # x [B, 3, H, W], normalised
    result.values, result.distance["fc7"], result.probability  # [T], [B, T], [B, T]
    invariance(resnet, x, "scale", layers=(1, "layer3", "layer4.1", "logits"))

Choices the paper leaves open, made here (and recorded in `Invariance.settings`):

- What is transformed: the preprocessed tensor the network sees (B x 3 x H x W, the weights'
  normalisation), output the same size as the input. The paper's network also sees a fixed
  224 x 224 crop, and its 60-pixel translations cannot be taken from a 256-pixel photo without
  filling anyway; transforming the tensor makes the library take any input tensor, and its
  brute-force check is exact. The uncovered area gets `fill`, in the normalised input space:
  0.0 (default) is the normalisation's mean colour (the dataset's mean for torchvision weights;
  mid grey 127/255 for EfficientNet-Lite0's TensorFlow convention (255 x - 127) / 128), the same
  neutral value the convolutions' zero padding already shows the network at the border.
- Vertical translation: whole pixels, no interpolation; value t > 0 moves the content DOWN by t
  rows (t < 0 up); the rows that leave the image are dropped, the uncovered rows are `fill`.
- Scale: about the image centre by ratio s (s > 1 enlarges the content, zooming in: a centre
  window of size H/s x W/s fills the frame; s < 1 shrinks it and fills the border); rotation:
  about the image centre by a degrees counter-clockwise as shown on screen; the corners that
  come from outside the image are `fill`. Both sample the input bilinearly at the exact inverse
  map (pixel centres, `align_corners=False`; torchvision's `affine` / `rotate` conventions), with
  no antialiasing (s < 1 can alias).
- The identity (translation 0, scale 1, rotation a multiple of 360) gives the image itself: it is
  not recomputed; its distance is exactly 0 and its probability the original's.
- Layers (`deconvnet.analysis.layers`): a stage number or name, any module path of the model's
  graph, "logits", "pre1".."pre5", "input", and "fc6" / "fc7" on VGG / AlexNet, checked on the
  model before any work. Default: the paper's (1, "fc7") on VGG / AlexNet; elsewhere stage 1 and
  the vector the last Linear layer reads, fc7's analogue (ResNet "avgpool", EfficientNet-Lite0
  "global_pool"; "logits" where no module outputs it).
- Feature vector: the whole layer output flattened (a stage: C x h x w after ReLU [and pool];
  "fc6" / "fc7": the 4096 values after the ReLU; Dropout as in eval mode), distance
  ||phi(x) - phi(T x)||_2, unnormalised (as the paper plots it), in float64.
- "True label": `labels` if given, else each ORIGINAL image's predicted class (argmax of its
  logits), stated as such in `labels_from`: the sample images carry no ImageNet label.
- Probability: softmax of the logits (float64) at that label.
- Default amounts (`PAPER_VALUES`): the paper's plotted ranges, at a step it does not state:
  vertical translation -60..60 px every 10 px (13 values), scale ratio 1.0..1.8 every 0.1
  (9 values), rotation 0..360 degrees every 15 (25 values: 90, 180 and 270 are included, where
  objects with rotational symmetry come back, and 360 closes the circle at the identity).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from deconvnet.analysis.layers import check_layers, default_layers
from deconvnet.core.layout import channels_last_on_cpu
from deconvnet.core.precision import full_float32
from deconvnet.core.probe import probe
from deconvnet.core.targets import class_count
from deconvnet.core.validation import check_bool, check_count, check_device, check_images, is_int

TRANSFORMS = ("translate", "scale", "rotate")
PAPER_VALUES: dict[str, tuple[float, ...]] = {
    "translate": tuple(range(-60, 61, 10)),
    "scale": tuple(round(1.0 + 0.1 * k, 10) for k in range(9)),
    "rotate": tuple(range(0, 361, 15)),
}
UNITS = {
    "translate": "pixels (vertical; > 0 moves the content down)",
    "scale": "ratio (> 1 enlarges the content about the centre)",
    "rotate": "degrees (counter-clockwise about the centre)",
}
DEFAULT_LAYERS = (1, "fc7")  # the paper's, on VGG / AlexNet; other models: `default_layers`
DISTANCE = "||phi(x) - phi(T x)||_2 of the whole layer output flattened, float64"
PROBABILITY = "softmax of the logits (float64) at the label"
FILL = "fill in the normalised input space (0.0 = the dataset's mean colour)"


@dataclass(frozen=True)
class Invariance:
    """The curves of one transformation for B images and T amounts.

    values [T] float64; distance {layer: [B, T] float64}; probability [B, T] float64 (at
    `labels`); predicted [B, T] int64 (the top class of each transformed image); labels [B]
    int64; labels_from "given" or "predicted" (each original image's top class); settings: every
    choice made (module doc)."""

    transform: str
    values: Tensor
    layers: tuple[int | str, ...]
    distance: dict[int | str, Tensor]
    probability: Tensor
    predicted: Tensor
    labels: Tensor
    labels_from: str
    settings: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ checks


def check_transforms(transform: object) -> list[str]:
    """One of TRANSFORMS or a non-empty list of them, each once -> list."""
    accepted = f"one of {', '.join(map(repr, TRANSFORMS))} or a non-empty list of them"
    items = (
        [transform]
        if isinstance(transform, str)
        else (list(transform) if isinstance(transform, (list, tuple)) else None)
    )
    if not items:
        raise ValueError(f"transform: expected {accepted}, got {transform!r}")
    for item in items:
        if item not in TRANSFORMS:
            raise ValueError(f"transform: unknown transformation {item!r}; expected {accepted}")
    if len(set(items)) != len(items):
        raise ValueError(f"transform: each transformation once, got {items!r}")
    return items


def _number(value: object) -> bool:
    """A finite real that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def check_values(transform: str, values: object, key: str = "values") -> tuple[float, ...]:
    """None -> PAPER_VALUES[transform]; else a non-empty list of amounts: whole pixels for
    "translate", ratios > 0 for "scale", finite degrees for "rotate"."""
    if values is None:
        return PAPER_VALUES[transform]
    if isinstance(values, Tensor):
        values = values.tolist()
    items = list(values) if isinstance(values, (list, tuple, range)) else None
    accepted = {
        "translate": "whole pixels (ints)",
        "scale": "finite ratios > 0",
        "rotate": "finite angles in degrees",
    }[transform]
    if not items:
        raise ValueError(
            f"{key}: expected None (the paper's {transform} values) or a non-empty "
            f"list of {accepted}, got {values!r}"
        )
    for v in items:
        ok = is_int(v) if transform == "translate" else _number(v) and (transform != "scale" or v > 0)
        if not ok:
            raise ValueError(f"{key}: {transform} values must be {accepted}, got {v!r}")
    return tuple(int(v) if transform == "translate" else float(v) for v in items)


def check_labels(model: nn.Module, labels: object, count: int) -> Tensor | None:
    """None, or `count` class ints (list or int tensor [count]) in 0..classes-1 -> [count]."""
    if labels is None:
        return None
    classes = class_count(model)
    accepted = (
        f"None (each original image's predicted class) or {count} class ints in "
        f"0..{classes - 1}, one per image"
    )
    if isinstance(labels, Tensor):
        if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels: expected {accepted}, got a tensor {labels.dtype} {list(labels.shape)}")
        labels = labels.tolist()
    if not isinstance(labels, (list, tuple)) or len(labels) != count:
        raise ValueError(f"labels: expected {accepted}, got {labels!r}")
    for c in labels:
        if not is_int(c) or not 0 <= c < classes:
            raise ValueError(f"labels: {c!r} is not a class of the model; expected {accepted}")
    return torch.tensor([int(c) for c in labels], dtype=torch.int64)


def check_fill(fill: object) -> float:
    """A finite number (the uncovered area's value in the normalised input space)."""
    if not _number(fill):
        raise ValueError(f"fill: expected a finite number ({FILL}), got {fill!r}")
    return float(fill)


def _target(model: nn.Module, device: object) -> tuple[torch.device, torch.dtype]:
    """The model's device and dtype; `device` (None: the model's) must be the model's device."""
    weight = next(model.parameters())
    if weight.device.type == "meta":
        raise ValueError("model: its weights are on the meta device (no values); load real weights")
    if device is not None:
        wanted = check_device(str(device) if isinstance(device, torch.device) else device)
        same = wanted.type == weight.device.type and (
            wanted.index is None or wanted.index == weight.device.index
        )
        if not same:
            raise ValueError(
                f"device: the model's weights are on {weight.device}, got "
                f"{str(device)!r}; move the model there first (invariance never "
                "moves or copies the caller's model), or leave device=None"
            )
    return weight.device, weight.dtype


# -------------------------------------------------------------------------------- transforms


def is_identity(transform: str, value: float) -> bool:
    """Translation 0, scale 1, rotation a multiple of 360 degrees."""
    if transform == "scale":
        return value == 1
    return value % 360 == 0 if transform == "rotate" else value == 0


def _translate(images: Tensor, shifts: Sequence[int], fill: float) -> Tensor:
    """[N, 3, H, W] -> [N, 3, H, W]: image k moved down by shifts[k] whole rows, `fill` where
    uncovered."""
    out = torch.full_like(images, fill)
    h = images.shape[-2]
    for k, t in enumerate(shifts):
        if 0 <= t < h:
            out[k, :, t:] = images[k, :, : h - t]
        elif -h < t < 0:
            out[k, :, : h + t] = images[k, :, -t:]
    return out


def _grid(transform: str, values: Sequence[float], h: int, w: int, images: Tensor) -> Tensor:
    """The sampling grid [N, H, W, 2] (x, y in grid_sample's units, align_corners=False): where
    each output pixel centre comes from under the inverse scale / rotation about the centre."""
    kw = {"dtype": torch.float64, "device": images.device}
    y, x = torch.meshgrid(
        torch.arange(h, **kw) - (h - 1) / 2, torch.arange(w, **kw) - (w - 1) / 2, indexing="ij"
    )
    if transform == "scale":
        inverse = torch.tensor([1.0 / v for v in values], **kw).view(-1, 1, 1)
        sx, sy = x * inverse, y * inverse
    else:  # counter-clockwise on screen (rows grow downwards): output (x, y) <- R(a) (x, y)
        radians = [math.radians(v) for v in values]
        c = torch.tensor([math.cos(a) for a in radians], **kw).view(-1, 1, 1)
        s = torch.tensor([math.sin(a) for a in radians], **kw).view(-1, 1, 1)
        sx, sy = c * x - s * y, s * x + c * y
    return torch.stack([sx * (2.0 / w), sy * (2.0 / h)], dim=-1).to(images.dtype)


def transform_images(
    images: Tensor, transform: str, values: float | Sequence[float], fill: float = 0.0
) -> Tensor:
    """[N, 3, H, W] -> [N, 3, H, W]: image k under `transform` by values[k] (one value: all),
    the uncovered area `fill` (module doc: directions, interpolation, the identity)."""
    (transform,) = check_transforms(transform)
    fill = check_fill(fill)
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images: expected a float tensor [N, 3, H, W], got {images!r:.80}")
    many = isinstance(values, (list, tuple, Tensor))
    amounts = check_values(transform, values if many else [values])
    if not many:
        amounts = amounts * images.shape[0]
    if len(amounts) != images.shape[0]:
        raise ValueError(
            f"values: expected one value or {images.shape[0]} (one per image), got {len(amounts)}"
        )
    if transform == "translate":
        return _translate(images, amounts, fill)
    out = images.clone()
    todo = [k for k, v in enumerate(amounts) if not is_identity(transform, v)]
    if todo:
        part = images[todo] - fill if fill else images[todo]
        grid = _grid(transform, [amounts[k] for k in todo], *images.shape[-2:], images)
        warped = F.grid_sample(part, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[todo] = warped + fill if fill else warped
    return out


def shown_indices(count: int, shown: int) -> list[int]:
    """`shown` indices spread evenly over 0..count-1, both ends included (fewer if count is)."""
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, min(shown, count))})


# ------------------------------------------------------------------------------- the curves


def _points(layers: Sequence[int | str]) -> list[int | str]:
    """The probe's points: the layers and the logits."""
    return [*layers, "logits"]


def _forward(model: nn.Module, x: Tensor, layers: Sequence[int | str]) -> dict[int | str, Tensor]:
    """One forward pass (no graph): {layer: [N, ...], "logits": [N, classes]}."""
    x = channels_last_on_cpu(x)  # oneDNN's fast path
    with torch.inference_mode():
        return probe(model, x, _points(layers))


def _batches(pairs: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive runs of at most `size` (image, amount) pairs."""
    for start in range(0, len(pairs), size):
        yield pairs[start : start + size]


def _reference(
    model: nn.Module, x: Tensor, layers: Sequence[int | str], batch_size: int
) -> dict[int | str, Tensor]:
    """The originals' activations {layer: [B, ...], "logits": [B, classes]}, in batches."""
    parts = [_forward(model, chunk, layers) for chunk in x.split(batch_size)]
    return {p: torch.cat([part[p] for part in parts]) for p in _points(layers)}


def _settings(transform: str, fill: float, labels_from: str) -> dict[str, Any]:
    """Every choice behind one transformation's curves, in words (module doc)."""
    return {
        "transform": transform,
        "units": UNITS[transform],
        "fill": fill,
        "fill_means": FILL,
        "interpolation": "none (whole pixels)"
        if transform == "translate"
        else "bilinear at the exact inverse map, align_corners=False, no antialiasing",
        "transformed": "the preprocessed tensor, output the input's size",
        "distance": DISTANCE,
        "probability": PROBABILITY,
        "labels": "given"
        if labels_from == "given"
        else "each original image's predicted class (argmax of its logits)",
        "identity": "not recomputed: distance 0, the original's probability",
    }


def _curves(
    model: nn.Module,
    x: Tensor,
    reference: Mapping[int | str, Tensor],
    labels: Tensor,
    transform: str,
    values: Sequence[float],
    fill: float,
    layers: Sequence[int | str],
    batch_size: int,
    progress: bool,
) -> tuple[dict[int | str, Tensor], Tensor, Tensor]:
    """Distances {layer: [B, T]}, probabilities [B, T], top classes [B, T] of one transform."""
    count = x.shape[0]
    distance = {layer: torch.zeros(count, len(values), dtype=torch.float64) for layer in layers}
    base = torch.softmax(reference["logits"].double(), dim=1).cpu()
    rows = torch.arange(count)
    probability = base[rows, labels].unsqueeze(1).repeat(1, len(values))
    predicted = base.argmax(dim=1).unsqueeze(1).repeat(1, len(values))
    pairs = [(b, t) for t, v in enumerate(values) if not is_identity(transform, v) for b in range(count)]
    bar = tqdm(
        total=len(pairs), desc=f"invariance: {transform}", unit="image", disable=not progress, leave=False
    )
    for chunk in _batches(pairs, batch_size):
        b, t = (torch.tensor(i) for i in zip(*chunk))
        moved = transform_images(x[b.to(x.device)], transform, [values[i] for i in t], fill)
        out = _forward(model, moved, layers)
        for layer in layers:
            diff = out[layer].double() - reference[layer][b.to(x.device)].double()
            distance[layer][b, t] = torch.linalg.vector_norm(diff.flatten(1), dim=1).cpu()
        p = torch.softmax(out["logits"].double(), dim=1).cpu()
        probability[b, t] = p[torch.arange(len(chunk)), labels[b]]
        predicted[b, t] = p.argmax(dim=1)
        bar.update(len(chunk))
    bar.close()
    return distance, probability, predicted


@full_float32()
def invariance(
    model: nn.Module,
    images: Tensor,
    transform: str | Sequence[str] = "translate",
    values: Sequence[float] | Mapping[str, Sequence[float] | None] | None = None,
    layers: int | str | Sequence[int | str] | None = None,
    labels: object = None,
    fill: float = 0.0,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Invariance | dict[str, Invariance]:
    """Zeiler & Fergus's Fig. 5 curves: images [B, 3, H, W] (normalised input) -> `Invariance`
    (values [T], distance {layer: [B, T]}, probability [B, T], labels [B]).

    transform: "translate" | "scale" | "rotate", or a list of them -> {transform: Invariance},
    in that order. values: the amounts (None: `PAPER_VALUES`); with several transforms a mapping
    {transform: amounts or None}. layers: stage numbers or names, module paths, "logits" (and
    "fc6", "fc7" on VGG / AlexNet; `deconvnet.analysis.layers`); None: the paper's 1 and fc7 on
    VGG / AlexNet, stage 1 and fc7's analogue elsewhere. labels: None (each original's predicted
    class) or one class int per image. fill: the uncovered area's value in the normalised input
    space (0.0: the mean colour). Every choice the paper leaves open is in the module doc and
    `Invariance.settings`.

    The originals run once; the transformed images go through the model (`probe`, no hooks, no
    graph) `batch_size` at a time on the model's device (`device`: None or the model's own). The
    caller's model is used as it is and never changed. Results are on the CPU.
    """
    names = check_transforms(transform)
    amounts = _check_value_map(names, values, several=not isinstance(transform, str))
    chosen = default_layers(model, 1) if layers is None else check_layers(model, layers)
    fill = check_fill(fill)
    check_count("batch_size", batch_size)
    check_bool("progress", progress)
    check_images(images, model)
    target = check_labels(model, labels, images.shape[0])
    place, dtype = _target(model, device)
    x = images.detach().to(device=place, dtype=dtype)
    reference = _reference(model, x, chosen, batch_size)
    from_labels = "given" if target is not None else "predicted"
    if target is None:
        target = reference["logits"].argmax(dim=1).cpu()
    results = {}
    for name in names:
        distance, probability, predicted = _curves(
            model, x, reference, target, name, amounts[name], fill, chosen, batch_size, progress
        )
        results[name] = Invariance(
            name,
            torch.tensor(amounts[name], dtype=torch.float64),
            chosen,
            distance,
            probability,
            predicted,
            target.clone(),
            from_labels,
            _settings(name, fill, from_labels),
        )
    return results if not isinstance(transform, str) else results[names[0]]


def _check_value_map(names: Sequence[str], values: object, several: bool) -> dict[str, tuple[float, ...]]:
    """One transform: values a list or None. Several: a mapping {transform: list or None}
    (missing ones: the paper's) or None."""
    if not several:
        return {names[0]: check_values(names[0], values)}
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(
            f"values: with several transformations expected None or a mapping "
            f"{{transformation: values}}, got {values!r}"
        )
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ValueError(
            f"values: {unknown[0]!r} is not one of the transformations asked for ({', '.join(names)})"
        )
    return {n: check_values(n, values.get(n), f"values[{n!r}]") for n in names}
