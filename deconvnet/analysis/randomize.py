"""Re-initialising learnable layers for the model parameter randomisation test of Adebayo et al.,
"Sanity Checks for Saliency Maps" (NeurIPS 2018), section 3.

The layers are the model's learnable layers: every `Conv2d` of `model.features` and every
`Linear` of `model.classifier`, listed TOP FIRST (fc8, fc7, fc6, conv5_3, ..., conv1_1 on VGG16;
fc8, ..., fc6, conv5, ..., conv1 on AlexNet). Names: VGG convolutions `conv<block>_<k>` (block =
1 + the max pools before it), AlexNet convolutions `conv<k>`, the classifier's Linear layers
`fc6`, `fc7`, `fc8` (the papers' names for both models).

Re-initialisation is torchvision's own initialisation of that architecture, drawn from a seeded
generator (Adebayo et al. re-draw each layer from the network's own initialiser; the paper leaves
the rest open, chosen here):
- VGG (torchvision `VGG.__init__`): Conv2d weight kaiming_normal_(mode="fan_out",
  nonlinearity="relu"), Linear weight normal(0, 0.01), biases 0.
- AlexNet: torchvision leaves PyTorch's defaults (`reset_parameters`): weight
  kaiming_uniform_(a=sqrt(5)), bias uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
- Each layer has its own generator, `torch.Generator().manual_seed(layer_seed(seed, position))`
  (position 0 = the bottom layer), weight first, then bias; the numbers are drawn in float32 on
  the CPU (the same on any device) and then cast to the layer's dtype and device. So a layer gets
  the same new weights in every cascading step, in the independent step, and in a hand-made copy.

Everything happens on ONE deep copy of the caller's model (`Randomized`); the caller's model is
never written to (weights, flags, hooks, train/eval all unchanged).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.core.architecture import architecture_name
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.validation import as_list, is_int

MODES = ("cascading", "independent")
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Layer:
    """One learnable layer: its name, where it sits (`part` "features" | "classifier", `index`
    into it), its kind ("conv" | "linear") and `position` (0 = the bottom layer, counting up)."""

    name: str
    part: str
    index: int
    kind: str
    position: int


def learnable_layers(model: nn.Module) -> list[Layer]:
    """The model's Conv2d (features) and Linear (classifier) layers, TOP FIRST (module doc)."""
    vgg = architecture_name(model) == "vgg"  # ValueError for anything but VGG / AlexNet
    found, block, in_block = [], 1, 0
    for i, module in enumerate(model.features):
        if isinstance(module, nn.MaxPool2d):
            block, in_block = block + 1, 0
        elif isinstance(module, nn.Conv2d):
            in_block += 1
            name = f"conv{block}_{in_block}" if vgg else f"conv{len(found) + 1}"
            found.append(("features", i, "conv", name))
    linears = [i for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear)]
    found += [("classifier", i, "linear", f"fc{6 + j}") for j, i in enumerate(linears)]
    return [
        Layer(name, part, index, kind, position)
        for position, (part, index, kind, name) in reversed(list(enumerate(found)))
    ]


def layer_names(model: nn.Module) -> list[str]:
    """The learnable layers' names, top first."""
    return [layer.name for layer in learnable_layers(model)]


def check_layers(model: nn.Module, layers: object, key: str = "layers") -> list[Layer]:
    """None -> every learnable layer; a name or a list of names -> those layers, each once, put
    in top-first order. ValueError naming `key` and the accepted names otherwise."""
    every = learnable_layers(model)
    if layers is None:
        return every
    names = [layers] if isinstance(layers, str) else as_list(layers)
    accepted = f"null (all), a layer name or a list of them: {', '.join(l.name for l in every)}"
    if not names:
        raise ValueError(f"{key}: expected {accepted}; got {layers!r}")
    known = {layer.name for layer in every}
    for name in names:
        if not isinstance(name, str) or name not in known:
            raise ValueError(f"{key}: unknown layer {name!r}; expected {accepted}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{key}: each layer once, got {', '.join(repeated)} more than once")
    return [layer for layer in every if layer.name in names]


def check_mode(mode: object) -> str:
    """'cascading' or 'independent'; ValueError naming `mode` otherwise."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    return mode


def check_modes(modes: object) -> tuple[str, ...]:
    """A mode or a non-empty list of modes, each once (order kept)."""
    items = [modes] if isinstance(modes, str) else as_list(modes)
    if not items:
        raise ValueError(
            f"modes: expected one of {', '.join(MODES)} or a non-empty list of them, got {modes!r}"
        )
    try:
        checked = [check_mode(m) for m in items]
    except ValueError as error:
        raise ValueError(f"modes: {error}") from None
    if len(set(checked)) != len(checked):
        raise ValueError(f"modes: each mode once, got {checked}")
    return tuple(checked)


def check_seed(seed: object) -> int:
    """An int in 0..2**63-1 (the re-initialisation's seed)."""
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed: expected an int in 0..2**63-1 (the re-initialisation), got {seed!r}")
    return int(seed)


# ------------------------------------------------------------------------- which layers when


def randomized_at(layers: Sequence[Layer], mode: str, step: Layer) -> list[Layer]:
    """The layers re-initialised at `step` (`layers`: every learnable layer, top first):
    cascading -> every layer from the top down to `step` inclusive; independent -> `step` only."""
    if check_mode(mode) == "independent":
        return [step]
    top = [layer.name for layer in layers].index(step.name)
    return list(layers[: top + 1])


def layers_used(model: nn.Module, stage: int | None) -> set[str]:
    """Names of the learnable layers a map of a target at `stage` depends on: the convolutions
    below the stage's output (features index < the stage's index); stage None (a class score):
    every layer. Layers above a unit's stage never enter its forward or backward pass."""
    every = learnable_layers(model)
    if stage is None:
        return {layer.name for layer in every}
    top = stage_of(model, stage).index
    return {l.name for l in every if l.part == "features" and l.index < top}


# --------------------------------------------------------------------------- re-initialising


def layer_seed(seed: int, position: int) -> int:
    """The generator seed of the layer at `position` (0 = bottom): numpy's SeedSequence of
    [seed, position], its first 63-bit word (no two (seed, position) pairs share a stream by
    construction, unlike seed + position)."""
    word = np.random.SeedSequence([int(seed), int(position)]).generate_state(1, np.uint64)[0]
    return int(word) & MAX_SEED


def module_of(model: nn.Module, layer: Layer) -> nn.Module:
    """The Conv2d / Linear module of `layer` in `model`."""
    return getattr(model, layer.part)[layer.index]


def fresh_parameters(model: nn.Module, layer: Layer, seed: int) -> tuple[Tensor, Tensor | None]:
    """torchvision's initialisation of `layer` (module doc), float32 on the CPU: weight
    [out, in, kh, kw] (conv) or [out, in] (linear), bias [out] (None without a bias)."""
    module = module_of(model, layer)
    generator = torch.Generator().manual_seed(layer_seed(seed, layer.position))
    weight = torch.empty(tuple(module.weight.shape), dtype=torch.float32)
    has_bias = module.bias is not None
    if architecture_name(model) == "vgg":
        if layer.kind == "conv":
            nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu", generator=generator)
        else:
            nn.init.normal_(weight, 0.0, 0.01, generator=generator)
        bias = torch.zeros(weight.shape[0]) if has_bias else None
        return weight, bias
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if not has_bias:
        return weight, None
    fan_in = nn.init._calculate_fan_in_and_fan_out(weight)[0]
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
    bias = nn.init.uniform_(torch.empty(weight.shape[0]), -bound, bound, generator=generator)
    return weight, bias


def _write(module: nn.Module, weight: Tensor, bias: Tensor | None) -> None:
    """Copy weight / bias (any device, dtype) into the module's own tensors, in place."""
    with torch.no_grad():
        module.weight.copy_(weight.to(module.weight.device, module.weight.dtype))
        if bias is not None:
            module.bias.copy_(bias.to(module.bias.device, module.bias.dtype))


def randomize_layers(model: nn.Module, layers: Iterable[Layer], seed: int) -> nn.Module:
    """Re-initialise `layers` of `model` IN PLACE (module doc); `model`. Only ever called on a
    copy (`Randomized`, or a test's own copy)."""
    for layer in layers:
        _write(module_of(model, layer), *fresh_parameters(model, layer, seed))
    return model


class Randomized:
    """One working deep copy of `model` (on `device`, eval mode) whose layers are re-initialised
    and restored step by step; the caller's model is only read (to restore from)."""

    def __init__(self, model: nn.Module, seed: int, device: torch.device) -> None:
        self.source, self.seed = model, check_seed(seed)
        self.copy = copy.deepcopy(model).to(device).eval()
        self.layers = {layer.name: layer for layer in learnable_layers(model)}
        self.changed: set[str] = set()

    def with_random(self, names: Iterable[str]) -> nn.Module:
        """The copy with exactly the layers `names` re-initialised and every other layer equal
        to the caller's model."""
        wanted = set(names)
        for name in sorted(self.changed - wanted):
            source = module_of(self.source, self.layers[name])
            _write(
                module_of(self.copy, self.layers[name]),
                source.weight.detach(),
                None if source.bias is None else source.bias.detach(),
            )
        randomize_layers(self.copy, [self.layers[n] for n in sorted(wanted - self.changed)], self.seed)
        self.changed = wanted
        return self.copy
