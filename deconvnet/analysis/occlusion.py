"""Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2, Fig. 7), exact and incremental.

A grey square (`fill`, 0.0 in the normalised input space = the dataset's mean colour) is slid over
the image; at every position the network is run again and three maps are recorded:
(b) `feature`: the total activation of one stage-5 feature map: the one with the strongest
    response on the unoccluded image (the channel holding the largest single stage-5 activation;
    the paper does not say "largest" by which measure, so this is our reading, the one
    `reconstruct(keep="max")` projects),
(d) `probability`: the softmax probability of the target class (default: the class predicted on
    the unoccluded image),
(e) `label`: the most probable class.
Positions are top-left corners 0, stride, 2 * stride, ... up to H - patch (and W - patch).

method="incremental" (default) recomputes every layer only inside the occluder's projective field
(after Nakandala et al. 2019): the same maps as method="brute" (one full forward pass per occluded
image) up to float rounding. VGG and AlexNet run `model.features` (`deconvnet.analysis.incremental`);
every other model runs its traced graph up to stage 5, then its head on the full stage-5 maps
(`deconvnet.analysis.graph_incremental`, docs/graph.md#occlusion-on-a-graph).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from deconvnet.analysis.graph_incremental import (
    GraphIncremental,
    conv_macs,
    graph_head,
    graph_stage,
    head_macs,
    head_ops,
    plan_steps,
    step_windows,
)
from deconvnet.analysis.incremental import IncrementalForward, cached_forward, check_incremental
from deconvnet.core.architecture import is_chain
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.precision import full_float32
from deconvnet.core.probe import head_logits
from deconvnet.core.targets import resolve_target
from deconvnet.core.validation import INT64_MAX, check_bool, check_count, check_images, check_real, is_int

METHODS = ("incremental", "brute")


@dataclass
class Occlusion:
    """Fig. 7's maps for B images over ny x nx occluder positions.

    probability, feature: [B, ny, nx] float; label: [B, ny, nx] long; target, channel: [B] long
    (the class whose probability is mapped, the stage-5 channel whose total is mapped);
    unoccluded_probability, unoccluded_feature: [B]; top, left: the positions' corners [ny], [nx].
    """

    probability: Tensor
    feature: Tensor
    label: Tensor
    target: Tensor
    channel: Tensor
    unoccluded_probability: Tensor
    unoccluded_feature: Tensor
    unoccluded_label: Tensor
    top: Tensor
    left: Tensor
    settings: dict = field(default_factory=dict)


def positions(length: int, patch: int, stride: int) -> Tensor:
    """[n] top-left corners 0, stride, ... up to length - patch along one axis."""
    return torch.arange(0, length - patch + 1, stride)


def check_occluder(images: Tensor, patch: object, stride: object, fill: object) -> tuple[int, int, float]:
    """(patch, stride, fill) checked against the images' size; ValueError naming the argument."""
    h, w = images.shape[-2:]
    if not is_int(patch) or not 1 <= int(patch) <= min(h, w):
        raise ValueError(
            f"patch: expected an int side length in 1..{min(h, w)} (the images are {h}x{w}), got {patch!r}"
        )
    if not is_int(stride) or not 1 <= int(stride) <= INT64_MAX:
        raise ValueError(
            f"stride: expected an int >= 1 (pixels between occluder positions; at most 2**63 - 1), got {stride!r}"
        )
    return int(patch), int(stride), check_real("fill", fill, low=-float("inf"))


def check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return str(method)


def resolve_classes(model: nn.Module, target: object, batch: int) -> Tensor | None:
    """None (the predicted class), an int or a [B] integer tensor -> [B] classes or None."""
    if isinstance(target, (list, tuple)) or not (
        target is None or is_int(target) or isinstance(target, Tensor)
    ):
        raise ValueError(
            "target: expected None (each image's predicted class), a class int or a "
            f"[B] integer tensor of classes, got {type(target).__name__}"
        )
    rows = resolve_target(model, target, batch, {})
    return None if rows.classes is None else rows.classes


def _strongest_channel(stage_map: Tensor) -> Tensor:
    """[B, C, h, w] -> [B] the channel holding each image's largest activation."""
    return stage_map.flatten(2).amax(dim=2).argmax(dim=1)


def _occluded(x: Tensor, top: Tensor, left: Tensor, patch: int, fill: float) -> Tensor:
    """[1, 3, H, W] -> [N, 3, H, W]: the image with a fill square at each (top, left)."""
    out = x.expand(len(top), -1, -1, -1).clone()
    for n, (y, x0) in enumerate(zip(top.tolist(), left.tolist())):
        out[n, :, y : y + patch, x0 : x0 + patch] = fill
    return out


class _Grid:
    """The occluder positions of one image in row-major order, cut into batches."""

    def __init__(self, h: int, w: int, patch: int, stride: int) -> None:
        self.top, self.left = positions(h, patch, stride), positions(w, patch, stride)
        ys, xs = torch.meshgrid(self.top, self.left, indexing="ij")
        self.ys, self.xs = ys.flatten(), xs.flatten()

    def batches(self, size: int):
        for start in range(0, len(self.ys), size):
            yield (slice(start, start + size), self.ys[start : start + size], self.xs[start : start + size])


@dataclass
class Passes:
    """One image's forward passes: `stage0` [1, C, h, w] its unoccluded stage-5 maps; `stage(top,
    left)` ([N] corners, CPU) -> [N, C, h, w] the stage-5 maps of the occluded images; `head(maps)`
    -> [N, classes] logits (the eval function: Dropout as the identity, running statistics)."""

    stage0: Tensor
    stage: Callable[[Tensor, Tensor], Tensor]
    head: Callable[[Tensor], Tensor]


def chain_passes(model: nn.Module, x: Tensor, method: str, patch: int, fill: float, stage: int = 5) -> Passes:
    """VGG / AlexNet: `model.features` up to stage 5 (incrementally or whole), then the rest of
    the features and the classifier (`head_logits`)."""
    s5 = stage_of(model, stage).index
    maps = cached_forward(model.features, x, s5)
    tail = list(model.features)[s5 + 1 :]
    if method == "incremental":
        engine = IncrementalForward(model.features, maps)
        patch_of = torch.full((1, 3, patch, patch), fill, dtype=x.dtype, device=x.device)

        def stage(top: Tensor, left: Tensor) -> Tensor:
            top, left = top.to(x.device), left.to(x.device)
            return engine.run(patch_of.expand(len(top), -1, -1, -1), top, left)

    else:
        features = list(model.features)[: s5 + 1]

        def stage(top: Tensor, left: Tensor) -> Tensor:
            return _run(features, _occluded(x, top, left, patch, fill))

    return Passes(maps[-1], stage, lambda h: head_logits(model, _run(tail, h)))


def graph_passes(model: nn.Module, x: Tensor, method: str, patch: int, fill: float, stage: int = 5) -> Passes:
    """Any other model: its traced graph up to stage 5 (in windows, or whole for each occluded
    image), then the graph's nodes after stage 5 on the full stage-5 maps."""
    graph = ModelGraph.of(model)
    top = graph.paths[stage_of(model, stage).path]
    head = lambda h: graph_head(graph, top, h)
    if method == "incremental":
        engine = GraphIncremental(graph, top, x)
        patch_of = torch.full((1, 3, patch, patch), fill, dtype=x.dtype, device=x.device)
        stage = lambda t, left: engine.run(patch_of.expand(len(t), -1, -1, -1), t, left)
        return Passes(engine.cache[top], stage, head)
    return Passes(
        graph_stage(graph, top, x),
        lambda t, left: graph_stage(graph, top, _occluded(x, t, left, patch, fill)),
        head,
    )


def check_passes(model: nn.Module, method: str, height: int, width: int, stage: int = 5) -> None:
    """ValueError naming the first layer / node the chosen method cannot run (shapes only)."""
    if is_chain(model):
        if method == "incremental":
            check_incremental(model.features)
        return
    graph = ModelGraph.of(model)
    top = graph.paths[stage_of(model, stage).path]
    head_ops(graph, top)
    if method == "incremental":
        plan_steps(graph, top, height, width)


@full_float32()
def occlusion(
    model: nn.Module,
    images: Tensor,
    target: object = None,
    patch: int = 48,
    stride: int = 16,
    fill: float = 0.0,
    *,
    method: str = "incremental",
    batch_size: int = 16,
    progress: bool = False,
    stage: int = 5,
) -> Occlusion:
    """Fig. 7's occlusion maps: images [B, 3, H, W] (normalised) -> `Occlusion` ([B, ny, nx] maps).

    Any supported model; `stage` (default 5, the paper's) is the stage whose strongest map (b)
    records (`deconvnet.core.architecture.stage`). target: None
    (each image's predicted class), a class int or a [B] tensor of classes. patch / stride in input
    pixels; fill in the normalised space (0.0 = the mean colour). Every layer runs on the model's
    own parameters with its eval function (Dropout as the identity, batch norm's running
    statistics); the model is left exactly as it was (no hooks, no flags). `batch_size` occluded
    positions go through together.
    """
    check_images(images, model)
    patch, stride, fill = check_occluder(images, patch, stride, fill)
    method, batch_size = check_method(method), check_count("batch_size", batch_size)
    check_bool("progress", progress)
    classes = resolve_classes(model, target, images.shape[0])
    stage = stage_of(model, stage).number
    check_passes(model, method, *images.shape[-2:], stage)
    weight = next(model.parameters())
    x_all = images.to(device=weight.device, dtype=weight.dtype)
    grid = _Grid(*images.shape[-2:], patch, stride)
    make = chain_passes if is_chain(model) else graph_passes
    per_image = []
    for b in range(images.shape[0]):
        with torch.no_grad():
            passes = make(model, x_all[b : b + 1], method, patch, fill, stage)
        target_b = None if classes is None else classes[b]
        per_image.append(_occlude_one(passes, target_b, grid, batch_size, progress))
    settings = {
        "patch": patch,
        "stride": stride,
        "fill": fill,
        "method": method,
        "batch_size": batch_size,
        "stage": stage,
        "strongest_channel": f"the stage-{stage} channel holding the largest activation",
    }
    return _gathered(per_image, grid, settings)


def _gathered(per_image: list[dict[str, Tensor]], grid: _Grid, settings: dict) -> Occlusion:
    """Each image's flat maps [ny * nx] and values (`_occlude_one`) -> one `Occlusion` of B
    images ([B, ny, nx] maps, on the CPU)."""
    stacked = {k: torch.stack([p[k] for p in per_image]).cpu() for k in per_image[0]}
    shape = (len(per_image), len(grid.top), len(grid.left))
    return Occlusion(
        probability=stacked["probability"].view(shape),
        feature=stacked["feature"].view(shape),
        label=stacked["label"].view(shape),
        target=stacked["target"],
        channel=stacked["channel"],
        unoccluded_probability=stacked["p0"],
        unoccluded_feature=stacked["f0"],
        unoccluded_label=stacked["l0"],
        top=grid.top,
        left=grid.left,
        settings=settings,
    )


def _occlude_one(
    passes: Passes, target: Tensor | None, grid: _Grid, batch_size: int, progress: bool
) -> dict[str, Tensor]:
    """One image's passes -> its flat maps over the grid [ny * nx] and its unoccluded values."""
    with torch.no_grad():
        p0 = passes.head(passes.stage0).softmax(dim=1)[0]
        cls = int(p0.argmax()) if target is None else int(target)
        channel = int(_strongest_channel(passes.stage0)[0])
        prob, feat, label = [], [], []
        bar = tqdm(total=len(grid.ys), desc="occlusion", unit="pos", disable=not progress)
        for _, top, left in grid.batches(batch_size):
            h = passes.stage(top, left)
            feat.append(h[:, channel].sum(dim=(1, 2)))
            p = passes.head(h).softmax(dim=1)
            prob.append(p[:, cls])
            label.append(p.argmax(dim=1))
            bar.update(len(top))
        bar.close()
    return {
        "probability": torch.cat(prob),
        "feature": torch.cat(feat),
        "label": torch.cat(label),
        "target": torch.tensor(cls),
        "channel": torch.tensor(channel),
        "p0": p0[cls],
        "f0": passes.stage0[0, channel].sum(),
        "l0": p0.argmax(),
    }


def _run(modules: list[nn.Module], h: Tensor) -> Tensor:
    """Feature modules in order, out of place (the ReLU too)."""
    for module in modules:
        h = torch.relu(h) if isinstance(module, nn.ReLU) else module(h)
    return h


def occlusion_macs(
    model: nn.Module, height: int, width: int, patch: int = 48, stride: int = 16, batch_size: int = 16
) -> dict[str, int]:
    """Multiply-adds of incremental occlusion on one height x width image against one full forward
    pass per position, from the windows' sizes (convolutions and linear layers; the head runs on
    full maps in both): {"incremental", "full", "positions"}. Any traceable model (the chain's
    windows are the same as its graph's)."""
    graph = ModelGraph.of(model)
    top = graph.paths[stage_of(model, 5).path]
    steps = plan_steps(graph, top, height, width)
    shapes = graph.shapes(1, 3, height, width)
    grid = _Grid(height, width, *check_occluder(torch.empty(1, 3, height, width), patch, stride, 0.0)[:2])
    head, count = head_macs(graph, top, height, width), len(grid.ys)
    full = sum(conv_macs(s.op, 1, tuple(shapes[s.op.name][-2:])) for s in steps)
    incremental = count * head
    for _, top_n, left_n in grid.batches(check_count("batch_size", batch_size)):
        windows = step_windows(steps, top_n, left_n, (patch, patch))
        incremental += sum(
            conv_macs(s.op, len(top_n), (windows[s.op.name][0].length, windows[s.op.name][1].length))
            for s in steps
        )
    return {"incremental": incremental, "full": count * (full + head), "positions": count}
