"""Re-initialising learnable layers for the model parameter randomisation test of Adebayo et al.,
"Sanity Checks for Saliency Maps" (NeurIPS 2018), section 3, on any supported CNN.

The layers: every node of the model's traced graph (`ModelGraph.of(model).ops`) whose module holds
parameters (kinds conv, conv_same, bn, bn_act, linear), in the graph's EXECUTION order, listed TOP
FIRST (the last one computed first); a module called twice counts once, where it is first called.
`position` 0 is the bottom layer. Names:
- VGG (vgg11/13/16/19) and AlexNet, the chain models, keep the papers' names: VGG convolutions
  `conv<block>_<k>` (block = 1 + the max pools before it), AlexNet convolutions `conv<k>`, the
  classifier's Linear layers `fc6`, `fc7`, `fc8` (fc8, fc7, fc6, conv5_3, ..., conv1_1 on VGG16);
- every other model: the module path ("fc", "layer4.1.bn2", "layer4.1.conv2", ... on ResNet-18;
  "classifier", "bn2", "conv_head", "blocks.6.0.bn3", ... on EfficientNet-Lite0).

Batch norm (a choice, the paper's Inception v3 leaves it open): each batch norm is a layer of its
own, a step of its own in both modes, re-initialised to its architecture's own init, weight 1 and
bias 0 (every initialiser below does that), with its running mean and variance KEPT. Why:
- Adebayo et al. randomise every layer with learnable weights; a batch norm's scale and shift are
  learned weights. Its running statistics are not: they are buffers estimated from data, never
  trained by gradient, and they keep the activations of the layers below at the scale the rest of
  the network expects, so re-initialising a batch norm removes what it learned and nothing else
  (resetting the statistics to 0 / 1 as a fresh model has them would also rescale everything
  above it, a second change the test does not ask for).
- Grouping a convolution with "its" batch norm as one step is not well defined across the
  supported models: DenseNet's norms come before their convolutions (norm -> relu -> conv), timm
  fuses norm and activation (BatchNormAct2d), torchvision's ResNet has norms on the shortcut.
  One step per parameterised node is the graph's own list, the same rule on every model, and any
  subset can still be asked for by name (`layers`).
- Consequence, stated: a batch norm's re-initialisation draws no random numbers, so its
  independent step is the same for every seed; on a model whose norms are still at their init
  (random weights) re-initialising one changes nothing.

Re-initialisation is the architecture's own initialiser (Adebayo et al. re-draw each layer from
the network's own initialiser), read off torchvision's / timm's constructors (`init_family`):
- VGG, VGG-BN (torchvision `VGG.__init__`): Conv2d weight kaiming_normal_(mode="fan_out",
  nonlinearity="relu"), Linear weight normal(0, 0.01), biases 0.
- AlexNet: torchvision leaves PyTorch's defaults (`reset_parameters`): weight
  kaiming_uniform_(a=sqrt(5)), bias uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
- ResNet: Conv2d kaiming_normal_(fan_out, relu) (no conv biases); Linear PyTorch's default.
- MobileNetV2: Conv2d kaiming_normal_(fan_out) (leaky_relu gain with a = 0, i.e. sqrt(2)), conv
  biases 0; Linear normal(0, 0.01), bias 0.
- DenseNet: Conv2d kaiming_normal_ (fan_in); Linear weight PyTorch's default, bias 0.
- GoogLeNet (init_weights=True): Conv2d and Linear weight trunc_normal_(0, 0.01, a=-2, b=2);
  the Linear bias keeps PyTorch's default.
- timm EfficientNet (tf_efficientnet_lite0; timm's `_init_weight_goog`): Conv2d weight
  normal(0, sqrt(2 / fan_out)), fan_out = kh * kw * out_channels // groups, bias 0; Linear weight
  uniform(-r, r), r = 1 / sqrt(out_features), bias 0.
- Any other model: PyTorch's `reset_parameters` (as AlexNet); batch norm 1 / 0.
- Batch norm everywhere: weight 1, bias 0, running statistics kept (above).
- Each layer has its own generator, `torch.Generator().manual_seed(layer_seed(seed, position))`,
  weight first, then bias (a bias without a draw, 0 or 1, takes none); the numbers are drawn in
  float32 on the CPU (the same on any device) and then cast to the layer's dtype and device. So a
  layer gets the same new weights in every cascading step, in the independent step, and in a
  hand-made copy (seed the global generator with layer_seed(seed, position) and run the
  architecture's own init code on that one module).

Everything happens on ONE deep copy of the caller's model (`Randomized`); the caller's model is
never written to (weights, flags, hooks, train/eval all unchanged).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.core.architecture import is_chain
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.validation import as_list
from deconvnet.core.validation import check_seed as check_seed_value

MODES = ("cascading", "independent")
MAX_SEED = 2**63 - 1


KINDS = {"conv": "conv", "conv_same": "conv", "bn": "bn", "bn_act": "bn", "linear": "linear"}


@dataclass(frozen=True)
class Layer:
    """One learnable layer: its `name` (module doc), module `path`, `kind` ("conv" | "bn" |
    "linear"), `position` (0 = the bottom layer, counting up in execution order) and `node`, the
    graph node where it is first computed."""

    name: str
    path: str
    kind: str
    position: int
    node: str


def chain_names(model: nn.Module) -> dict[str, str]:
    """VGG / AlexNet: module path -> the papers' name (conv1_1 / conv1, ..., fc6, fc7, fc8)."""
    from torchvision.models import AlexNet

    vgg = not isinstance(model, AlexNet)
    names, block, in_block, convs = {}, 1, 0, 0
    for i, module in enumerate(model.features):
        if isinstance(module, nn.MaxPool2d):
            block, in_block = block + 1, 0
        elif isinstance(module, nn.Conv2d):
            in_block, convs = in_block + 1, convs + 1
            names[f"features.{i}"] = f"conv{block}_{in_block}" if vgg else f"conv{convs}"
    linears = [i for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear)]
    names.update({f"classifier.{i}": f"fc{6 + j}" for j, i in enumerate(linears)})
    return names


def learnable_layers(model: nn.Module) -> list[Layer]:
    """The graph's parameterised nodes in execution order, TOP FIRST (module doc)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    graph = ModelGraph.of(model)  # ValueError naming the node for a model it cannot trace
    first = {}
    for op in graph.ops:
        if op.kind in KINDS and op.path not in first and any(True for _ in op.module.parameters(False)):
            first[op.path] = op
    names = chain_names(model) if is_chain(model) else {path: path for path in first}
    return [
        Layer(names[op.path], op.path, KINDS[op.kind], position, op.name)
        for position, op in reversed(list(enumerate(first.values())))
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
    """An int in 0..2**63-1 (the re-initialisation's seed), or ValueError naming `seed`."""
    return check_seed_value(seed, "the re-initialisation")


# ------------------------------------------------------------------------- which layers when


def randomized_at(layers: Sequence[Layer], mode: str, step: Layer) -> list[Layer]:
    """The layers re-initialised at `step` (`layers`: every learnable layer, top first):
    cascading -> every layer from the top down to `step` inclusive; independent -> `step` only."""
    if check_mode(mode) == "independent":
        return [step]
    top = [layer.name for layer in layers].index(step.name)
    return list(layers[: top + 1])


def layers_used(model: nn.Module, stage: int | str | None) -> set[str]:
    """Names of the learnable layers a map of a target at `stage` (a number, stage name or path)
    depends on: those computed on the way to the stage's output (its ancestors in the traced
    graph); stage None (a class score): every layer. Layers off that path never enter the
    target's forward or backward pass."""
    every = learnable_layers(model)
    if stage is None:
        return {layer.name for layer in every}
    graph = ModelGraph.of(model)
    waiting, seen = [graph.paths[stage_of(model, stage).path]], set()
    while waiting:
        name = waiting.pop()
        if name not in seen:
            seen.add(name)
            waiting.extend(graph.by_name[name].inputs)
    paths = {graph.by_name[name].path for name in seen if graph.by_name[name].module is not None}
    return {layer.name for layer in every if layer.path in paths}


# --------------------------------------------------------------------------- re-initialising


def layer_seed(seed: int, position: int) -> int:
    """The generator seed of the layer at `position` (0 = bottom): numpy's SeedSequence of
    [seed, position], its first 63-bit word (no two (seed, position) pairs share a stream by
    construction, unlike seed + position)."""
    word = np.random.SeedSequence([int(seed), int(position)]).generate_state(1, np.uint64)[0]
    return int(word) & MAX_SEED


def module_of(model: nn.Module, layer: Layer) -> nn.Module:
    """The Conv2d / BatchNorm2d / Linear module of `layer` in `model`."""
    return model.get_submodule(layer.path)


def init_family(model: nn.Module) -> str:
    """Whose initialiser re-draws the layers (module doc): 'vgg', 'alexnet', 'resnet',
    'mobilenet_v2', 'densenet', 'googlenet', 'efficientnet' (timm) or 'pytorch' (any other)."""
    from torchvision import models

    families = (
        (models.VGG, "vgg"),
        (models.AlexNet, "alexnet"),
        (models.ResNet, "resnet"),
        (models.MobileNetV2, "mobilenet_v2"),
        (models.DenseNet, "densenet"),
        (models.GoogLeNet, "googlenet"),
    )
    for kind, family in families:
        if isinstance(model, kind):
            return family
    try:
        from timm.models.efficientnet import EfficientNet
    except ImportError:  # timm is a dependency; a user's environment may still lack it
        return "pytorch"
    return "efficientnet" if isinstance(model, EfficientNet) else "pytorch"


WeightRule = Callable[[Tensor, nn.Module, torch.Generator], object]


def pytorch_weight(weight: Tensor, module: nn.Module, generator: torch.Generator) -> object:
    """PyTorch's `reset_parameters` weight of Conv2d / Linear: kaiming_uniform_(a=sqrt(5))."""
    return nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)


def fan_out_relu(weight: Tensor, module: nn.Module, generator: torch.Generator) -> object:
    """torchvision VGG / ResNet convolutions: kaiming_normal_(fan_out, relu)."""
    return nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu", generator=generator)


def fan_out_leaky(weight: Tensor, module: nn.Module, generator: torch.Generator) -> object:
    """torchvision MobileNetV2 convolutions: kaiming_normal_(fan_out) (leaky_relu, a = 0)."""
    return nn.init.kaiming_normal_(weight, mode="fan_out", generator=generator)


def fan_in_leaky(weight: Tensor, module: nn.Module, generator: torch.Generator) -> object:
    """torchvision DenseNet convolutions: kaiming_normal_() (fan_in, leaky_relu, a = 0)."""
    return nn.init.kaiming_normal_(weight, generator=generator)


def normal_001(weight: Tensor, module: nn.Module, generator: torch.Generator) -> object:
    """torchvision VGG / MobileNetV2 Linear: normal(0, 0.01)."""
    return nn.init.normal_(weight, 0.0, 0.01, generator=generator)


def truncated_001(weight: Tensor, module: nn.Module, generator: torch.Generator) -> object:
    """torchvision GoogLeNet Conv2d and Linear: trunc_normal_(0, 0.01, a=-2, b=2)."""
    return nn.init.trunc_normal_(weight, mean=0.0, std=0.01, a=-2, b=2, generator=generator)


def goog_conv(weight: Tensor, module: nn.Module, generator: torch.Generator) -> object:
    """timm `_init_weight_goog` Conv2d: normal(0, sqrt(2 / fan_out)), fan_out = kh * kw *
    out_channels // groups (fix_group_fanout)."""
    fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
    return nn.init.normal_(weight, 0.0, math.sqrt(2.0 / fan_out), generator=generator)


def goog_linear(weight: Tensor, module: nn.Module, generator: torch.Generator) -> object:
    """timm `_init_weight_goog` Linear: uniform(-r, r), r = 1 / sqrt(out_features)."""
    bound = 1.0 / math.sqrt(weight.shape[0])
    return nn.init.uniform_(weight, -bound, bound, generator=generator)


# family -> kind -> (the weight's rule, the bias: "zeros" or "default" = PyTorch's uniform)
RULES: dict[str, dict[str, tuple[WeightRule, str]]] = {
    "vgg": {"conv": (fan_out_relu, "zeros"), "linear": (normal_001, "zeros")},
    "alexnet": {"conv": (pytorch_weight, "default"), "linear": (pytorch_weight, "default")},
    "resnet": {"conv": (fan_out_relu, "default"), "linear": (pytorch_weight, "default")},
    "mobilenet_v2": {"conv": (fan_out_leaky, "zeros"), "linear": (normal_001, "zeros")},
    "densenet": {"conv": (fan_in_leaky, "default"), "linear": (pytorch_weight, "zeros")},
    "googlenet": {"conv": (truncated_001, "default"), "linear": (truncated_001, "default")},
    "efficientnet": {"conv": (goog_conv, "zeros"), "linear": (goog_linear, "zeros")},
    "pytorch": {"conv": (pytorch_weight, "default"), "linear": (pytorch_weight, "default")},
}
INIT = {
    "vgg": "torchvision VGG init: Conv2d kaiming_normal_(fan_out, relu), Linear normal(0, 0.01), biases 0",
    "alexnet": "torchvision AlexNet = PyTorch defaults: kaiming_uniform_(a=sqrt(5)), bias "
    "uniform(+-1/sqrt(fan_in))",
    "resnet": "torchvision ResNet init: Conv2d kaiming_normal_(fan_out, relu), Linear PyTorch's default "
    "(kaiming_uniform_(a=sqrt(5)), bias uniform(+-1/sqrt(fan_in)))",
    "mobilenet_v2": "torchvision MobileNetV2 init: Conv2d kaiming_normal_(fan_out), conv biases 0, "
    "Linear normal(0, 0.01), bias 0",
    "densenet": "torchvision DenseNet init: Conv2d kaiming_normal_(fan_in), Linear weight PyTorch's "
    "default (kaiming_uniform_(a=sqrt(5))), bias 0",
    "googlenet": "torchvision GoogLeNet init: Conv2d and Linear weight trunc_normal_(0, 0.01, -2, 2), "
    "Linear bias PyTorch's default (uniform(+-1/sqrt(fan_in)))",
    "efficientnet": "timm _init_weight_goog: Conv2d normal(0, sqrt(2 / fan_out)) (fan_out = kh kw "
    "out_channels / groups), Linear uniform(+-1/sqrt(out_features)), biases 0",
    "pytorch": "PyTorch defaults (reset_parameters): kaiming_uniform_(a=sqrt(5)), bias uniform(+-1/sqrt(fan_in))",
}
BATCH_NORM_INIT = "BatchNorm weight 1, bias 0, running statistics kept"


def init_description(model: nn.Module) -> str:
    """The re-initialisation of `model`'s layers in words (module doc)."""
    text = INIT[init_family(model)]
    return text + f"; {BATCH_NORM_INIT}" if any(l.kind == "bn" for l in learnable_layers(model)) else text


def fresh_parameters(model: nn.Module, layer: Layer, seed: int) -> tuple[Tensor, Tensor | None]:
    """The architecture's own initialisation of `layer` (module doc), float32 on the CPU: weight
    [out, in / groups, kh, kw] (conv), [out, in] (linear) or [C] (batch norm), bias [out] / [C]
    (None without a bias)."""
    module = module_of(model, layer)
    weight = torch.empty(tuple(module.weight.shape), dtype=torch.float32)
    has_bias = module.bias is not None
    if layer.kind == "bn":
        return weight.fill_(1.0), torch.zeros(weight.shape[0]) if has_bias else None
    generator = torch.Generator().manual_seed(layer_seed(seed, layer.position))
    rule, bias_rule = RULES[init_family(model)][layer.kind]
    rule(weight, module, generator)
    if not has_bias:
        return weight, None
    if bias_rule == "zeros":
        return weight, torch.zeros(weight.shape[0])
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
        self.layers = {layer.name: layer for layer in learnable_layers(self.copy)}
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
