"""The graph mirror against independent references, on CNNs beyond VGG and AlexNet.

Every model is random-initialised in float64 with its batch norms given non-trivial running
statistics and affine parameters (seeded), so batch norm is never the identity. References:
- backprop: torch.autograd.grad through the model itself;
- guided / deconvnet: autograd through a deep copy of the model whose ReLU / ReLU6 (modules,
  timm's BatchNormAct2d activations, and functional relus) run the rule's autograd.Function;
- Captum's GuidedBackprop / Deconvolution;
- the receptive field: the support of single units' gradients.
Forward hooks are used here only, on the reference forward, and removed right after.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from conftest import seeded_randn
from torch import Tensor, nn

from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.architecture import stages as stages_of
from deconvnet.core.geometry import min_input_size, receptive_field
from deconvnet.core.graph_mirror import GraphMirror
from deconvnet.core.mirror import Seeds
from deconvnet.core.reconstruct import reconstruct

BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: tvm.resnet18(),
    "resnet50": lambda: tvm.resnet50(),
    "mobilenet_v2": lambda: tvm.mobilenet_v2(),
    "densenet121": lambda: tvm.densenet121(),
    "googlenet": lambda: tvm.googlenet(aux_logits=False, init_weights=True),
    "googlenet_transform": lambda: tvm.googlenet(aux_logits=False, init_weights=True, transform_input=True),
    "vgg11_bn": lambda: tvm.vgg11_bn(),
    "tf_efficientnet_lite0": lambda: timm.create_model("tf_efficientnet_lite0"),
}
SIZE = (51, 43)  # odd, not square; above every model's min_input_size
RULES = ("backprop", "guided", "deconvnet")
TOLERANCE = 1e-10  # relative to the reference's largest magnitude


def randomise_batch_norm(model: nn.Module, seed: int) -> nn.Module:
    """Running statistics of one seeded random batch (so activations stay O(1) at any depth),
    then seeded random affine parameters: batch norm is a non-trivial linear map in eval."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, that batch's statistics
    model.train()
    with torch.no_grad():
        model(seeded_randn((2, 3, 64, 64), seed))
    gen = torch.Generator().manual_seed(seed)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
        with torch.no_grad():
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen, dtype=torch.float64))
            m.bias.copy_(0.3 * torch.randn(m.num_features, generator=gen, dtype=torch.float64))
    return model.eval()


def build(name: str, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BUILDERS[name]().double()
    return randomise_batch_norm(model, seed)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread here: float64 grouped (depthwise) convolutions, which run one slow
    kernel per group, become many times slower with two threads on a busy two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zoo() -> Iterator[Callable[[str], nn.Module]]:
    """name -> the float64 model, built once on first use (module scope: only this file uses
    them, and VGG's float64 classifier alone is 0.8 GB; they are freed after it)."""
    built: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in built:
            built[name] = build(name)
        return built[name]

    yield get
    built.clear()


# ---- references ---------------------------------------------------------------------------


class RuleReLU(torch.autograd.Function):
    """ReLU (top=None) or ReLU6 (top=6) forward; backward by the rule (guided or deconvnet)."""

    @staticmethod
    def forward(ctx, x: Tensor, top: float | None, rule: str) -> Tensor:
        mask = (x > 0) & (x < top) if top is not None else x > 0
        ctx.save_for_backward(mask)
        ctx.rule = rule
        return x.clamp(0, top)

    @staticmethod
    def backward(ctx, g: Tensor):
        (mask,) = ctx.saved_tensors
        g = g.clamp(min=0)
        return (g if ctx.rule == "deconvnet" else g * mask), None, None


class RuleActivation(nn.Module):
    def __init__(self, top: float | None, rule: str) -> None:
        super().__init__()
        self.top, self.rule = top, rule

    def forward(self, x: Tensor) -> Tensor:
        return RuleReLU.apply(x, self.top, self.rule)


def rule_copy(model: nn.Module, rule: str) -> nn.Module:
    """A deep copy whose nn.ReLU / nn.ReLU6 modules (timm's BatchNormAct2d.act included) are
    the rule's activation; functional relus are patched during the forward (`rule_functions`)."""
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (nn.ReLU, nn.ReLU6):
                setattr(parent, name, RuleActivation(6.0 if isinstance(child, nn.ReLU6) else None, rule))
    return twin


@contextmanager
def rule_functions(rule: str) -> Iterator[None]:
    """F.relu (googlenet's BasicConv2d, densenet's last relu) with the rule's backward."""
    with mock.patch.object(F, "relu", lambda x, inplace=False: RuleReLU.apply(x, None, rule)):
        yield


@contextmanager
def reference_model(model: nn.Module, rule: str) -> Iterator[nn.Module]:
    if rule == "backprop":
        yield model
        return
    with rule_functions(rule):
        yield rule_copy(model, rule)


def point_path(model: nn.Module, point: int | str | None) -> str | None:
    return stage_of(model, point).path if isinstance(point, int) else point


class Reached(Exception):  # noqa: N818 - a signal, not an error
    """Raised by the reference's forward hook: the point's output, the rest of the forward skipped."""

    def __init__(self, output: Tensor) -> None:
        super().__init__("reached")
        self.output = output


def forward_at(model: nn.Module, x: Tensor, path: str | None, stop: bool = True) -> Tensor | tuple:
    """The output of module `path` (None: the logits) in an autograd forward of x, the forward
    stopped there (stop=False: (that output, the logits)). The hook lives in this test only and
    is removed right after."""
    if path is None:
        return model(x)
    found: list[Tensor] = []

    def hook(module, inputs, output):
        if stop:
            raise Reached(output)
        found.append(output)

    handle = model.get_submodule(path).register_forward_hook(hook)
    try:
        logits = model(x)
    except Reached as reached:
        return reached.output
    finally:
        handle.remove()
    assert not stop and len(found) == 1, f"{path} was called {len(found)} times in the forward"
    return found[0], logits


def unit_seed(a: Tensor, channel: int | None) -> Tensor:
    """Zeros like a [B, C, h, w] with each image's strongest activation (of `channel`, or of
    all channels) kept at its value: what keep=channel / keep="max" projects."""
    seed = torch.zeros_like(a)
    for b in range(a.shape[0]):
        block = a[b] if channel is None else a[b, channel]
        flat = int(block.flatten().argmax())
        target = seed[b] if channel is None else seed[b, channel]
        target.view(-1)[flat] = block.flatten()[flat]
    return seed


def reference_grads(model: nn.Module, x: Tensor, point, rule: str, keeps: list) -> dict:
    """keep -> autograd gradient (under `rule`) of the kept activations times their values
    ("all": the map seeded with itself, J^T a). One forward of the batch repeated per keep."""
    b = x.shape[0]
    with reference_model(model, rule) as net:
        xg = x.repeat(len(keeps), 1, 1, 1).requires_grad_(True)
        a = forward_at(net, xg, point_path(model, point))
        d = a[:b].detach()
        seed = torch.cat([d if k == "all" else unit_seed(d, None if k == "max" else k) for k in keeps])
        (grad,) = torch.autograd.grad(a, xg, seed)
    return dict(zip(keeps, grad.split(b)))


def assert_matches(got: Tensor, want: Tensor, what: str, nonzero: bool = True) -> None:
    """|got - want| <= TOLERANCE * max |want|; a zero reference (a ReLU6 unit saturated at 6
    under backprop / guided) must be matched exactly, and only where `nonzero` is False."""
    assert got.shape == want.shape, what
    scale = float(want.abs().max())
    assert scale > 0 or not nonzero, f"{what}: the reference is trivially zero"
    error = float((got - want).abs().max())
    assert error <= TOLERANCE * scale, f"{what}: max error {error:.3g}, reference scale {scale:.3g}"


def images(seed: int, size: tuple[int, int] = SIZE, batch: int = 2) -> Tensor:
    return seeded_randn((batch, 3, *size), seed)


# ---- 1, 2: every rule equals autograd (backprop: the model; guided, deconvnet: the rule's copy)

KEEPS = ["all", "max", 3]
# backprop through reconstruct at stages 2 and 5 and at module paths that are not stages
BACKPROP_POINTS = [
    ("resnet18", 2),
    ("resnet18", 5),
    ("resnet18", "layer3.1"),
    ("resnet50", 2),
    ("mobilenet_v2", 2),
    ("mobilenet_v2", 5),
    ("mobilenet_v2", "features.4"),
    ("densenet121", 2),
    ("densenet121", 5),
    ("googlenet", 2),
    ("googlenet", 5),
    ("googlenet", "inception4a"),
    ("googlenet_transform", 2),
    ("vgg11_bn", 2),
    ("vgg11_bn", 5),
    ("vgg11_bn", "features.4"),
    ("tf_efficientnet_lite0", 2),
    ("tf_efficientnet_lite0", 5),
    ("tf_efficientnet_lite0", "blocks.3"),
]
# guided and deconvnet through reconstruct (the logits test below covers every model's whole graph)
RULE_POINTS = [
    ("resnet18", 2),
    ("resnet18", "layer3.1"),
    ("mobilenet_v2", 5),
    ("densenet121", 5),
    ("googlenet", 5),
    ("googlenet_transform", 2),
    ("vgg11_bn", 2),
    ("tf_efficientnet_lite0", 5),
]


def check_reconstruct(model: nn.Module, name: str, point, rule: str) -> None:
    assert min(SIZE) >= min_input_size(model, point)
    x = images(len(name) + len(str(point)))
    want = reference_grads(model, x, point, rule, KEEPS)
    for keep in KEEPS:
        got = reconstruct(model, x, point, keep=keep, rule=rule)
        assert_matches(got, want[keep], f"{name} {point} {rule} keep={keep}", nonzero=keep == "all")


@pytest.mark.parametrize("name,point", BACKPROP_POINTS, ids=[f"{n}-{p}" for n, p in BACKPROP_POINTS])
def test_backprop_reconstruct_equals_autograd(zoo, name, point):
    check_reconstruct(zoo(name), name, point, "backprop")


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
@pytest.mark.parametrize("name,point", RULE_POINTS, ids=[f"{n}-{p}" for n, p in RULE_POINTS])
def test_rule_reconstruct_equals_autograd_through_the_rule_copy(zoo, name, point, rule):
    check_reconstruct(zoo(name), name, point, rule)


def one_hot_projection(model: nn.Module, x: Tensor, rule: str, targets: list[int]) -> tuple[Tensor, Tensor]:
    """(GraphMirror(model, None, rule) seeded with one-hot logits, the logits it recorded)."""
    mirror = GraphMirror(model, None, rule)
    with torch.no_grad():
        record = mirror.record(x)
        signal = F.one_hot(torch.tensor(targets), record.output.shape[1]).to(x.dtype)
        return mirror.run(signal, torch.arange(len(targets)), record), record.output


@pytest.mark.parametrize("name", [n for n in BUILDERS if n != "resnet50"])
def test_logit_mirror_equals_autograd_of_every_rule(zoo, name):
    model, x, targets = zoo(name), images(7), [3, 917]
    wants = {}
    for rule in RULES:
        got, logits = one_hot_projection(model, x, rule, targets)
        with reference_model(model, rule) as net:
            xg = x.clone().requires_grad_(True)
            out = net(xg)
            (wants[rule],) = torch.autograd.grad(out, xg, F.one_hot(torch.tensor(targets), 1000).to(x.dtype))
        assert_matches(logits, out.detach(), f"{name} logits")
        assert_matches(got, wants[rule], f"{name} {rule} one-hot logits {targets}")
    # the references differ: every ReLU of the copy (module or function) did take the rule
    for a, b in [("backprop", "guided"), ("guided", "deconvnet"), ("backprop", "deconvnet")]:
        assert (wants[a] - wants[b]).abs().max() > 1e-3 * wants[b].abs().max(), (name, a, b)


@pytest.mark.parametrize("rule", RULES)
def test_run_between_inner_nodes_equals_autograd(zoo, rule):
    """From the logits down to stage 2's node (`until`), and from stage 4's node (`start`) down
    to the input: the pieces of the graph mirror compose to the whole."""
    model, x, targets = zoo("resnet18"), images(29), [7, 8]
    mirror = GraphMirror(model, None, rule)
    node2, node4 = (mirror.graph.paths[stage_of(model, n).path] for n in (2, 4))
    with torch.no_grad():
        record = mirror.record(x, keep=(node4,))
        signal = F.one_hot(torch.tensor(targets), 1000).to(x.dtype)
        at_two = mirror.run(signal, torch.arange(2), record, until=node2)
        from_top = mirror.run(signal, torch.arange(2), record)
        down = GraphMirror(model, 2, rule).run(at_two, torch.arange(2), record)
        at_four = mirror.run(signal, torch.arange(2), record, until=node4)
        from_four = mirror.run(at_four, torch.arange(2), record, start=node4)
    with reference_model(model, rule) as net:
        xg = x.clone().requires_grad_(True)
        a2, logits = forward_at(net, xg, "layer1", stop=False)
        (want,) = torch.autograd.grad(logits, a2, signal)
    assert_matches(at_two, want, f"resnet18 {rule} logits -> layer1")
    assert_matches(down, from_top, f"resnet18 {rule} layer1 -> input")
    assert_matches(from_four, from_top, f"resnet18 {rule} layer3 -> input")


# ---- 3: Captum's guided backprop and deconvolution ---------------------------------------------


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn"])
def test_captum_agrees_at_the_logits(zoo, name, rule):
    from captum.attr import Deconvolution, GuidedBackprop

    model, x, targets = zoo(name), images(11), [5, 600]
    method = GuidedBackprop if rule == "guided" else Deconvolution
    want = method(copy.deepcopy(model)).attribute(x.clone(), target=targets)
    got, _ = one_hot_projection(model, x, rule, targets)
    assert_matches(got, want.detach(), f"captum {method.__name__} on {name}")


# ---- 4: receptive fields on the graph ----------------------------------------------------------


def clipped(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    top, left, bottom, right = box
    return max(top, 0), max(left, 0), min(bottom, size[0]), min(right, size[1])


def support_box(grad: Tensor) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of the nonzero pixels of grad [3, H, W]; None if all zero."""
    nonzero = grad.abs().sum(0) != 0
    rows, cols = nonzero.any(1).nonzero().flatten(), nonzero.any(0).nonzero().flatten()
    if len(rows) == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def unit_supports(model, stage, size, seed: int) -> tuple[list, list]:
    """(units, support boxes) of the gradient of every channel's sum at four units of the stage
    (two corners, the centre, one more), from one input without exact zeros."""
    x = seeded_randn((1, 3, *size), seed)
    assert bool((x != 0).all())
    xg = x.repeat(4, 1, 1, 1).requires_grad_(True)
    a = forward_at(model, xg, stage_of(model, stage).path)
    h, w = a.shape[-2:]
    units = [(0, 0), (h - 1, w - 1), (h // 2, w // 2), (0, w - 1)]
    seeds = torch.zeros_like(a)
    for k, (y, x_) in enumerate(units):
        seeds[k, :, y, x_] = 1.0
    (grad,) = torch.autograd.grad(a, xg, seeds)
    return units, [support_box(g) for g in grad]


# (model, stage, input size, the support fills the field): models whose paths have no max pool
# (or one 3x3 pool after a 64-channel convolution) fill their field exactly with random weights
FIELD_CASES = [
    ("resnet18", 2, (57, 51), True),
    ("mobilenet_v2", 2, (57, 51), True),
    ("tf_efficientnet_lite0", 3, (51, 43), True),
    ("tf_efficientnet_lite0", 3, (50, 44), True),  # TF-same padding: the field moves with the size
    ("resnet50", 3, (51, 43), True),
    ("densenet121", 3, (51, 43), False),
    ("googlenet", 3, (51, 43), False),
    ("googlenet_transform", 2, (51, 43), False),
    ("vgg11_bn", 3, (51, 43), False),
]


@pytest.mark.parametrize(
    "name,stage,size,fills", FIELD_CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in FIELD_CASES]
)
def test_gradient_support_lies_in_the_receptive_field(zoo, name, stage, size, fills):
    model = zoo(name)
    field = receptive_field(model, stage, input_size=size)
    units, supports = unit_supports(model, stage, size, seed=sum(size))
    for (y, x), support in zip(units, supports):
        box = clipped(field.box(y, x), size)
        assert support is not None, f"{name} stage {stage} unit {(y, x)}: zero gradient"
        inside = (
            box[0] <= support[0] and box[1] <= support[1] and support[2] <= box[2] and support[3] <= box[3]
        )
        assert inside, f"{name} stage {stage} unit {(y, x)}: support {support} outside the field {box}"
        if fills:
            assert support == box, f"{name} stage {stage} unit {(y, x)}: support {support}, field {box}"


def test_a_field_inside_the_image_is_filled_exactly(zoo):
    """resnet18 and mobilenet_v2 stage 2 at 57x51: the centre unit's field lies in the image."""
    for name in ("resnet18", "mobilenet_v2"):
        model = zoo(name)
        field = receptive_field(model, 2, input_size=(57, 51))
        units, supports = unit_supports(model, 2, (57, 51), seed=3)
        top, left, bottom, right = field.box(*units[2])
        assert 0 <= top and 0 <= left and bottom <= 57 and right <= 51
        assert supports[2] == (top, left, bottom, right)
        assert (bottom - top, right - left) == field.size


PROJECT_CASES = [("resnet18", 2), ("tf_efficientnet_lite0", 3), ("googlenet", 3), ("densenet121", 2)]


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
@pytest.mark.parametrize("name,stage", PROJECT_CASES)
def test_receptive_field_frame_is_the_image_frame_cropped(zoo, name, stage, rule):
    model, x = zoo(name), images(13)
    mirror = GraphMirror(model, stage, rule)
    with torch.no_grad():
        record = mirror.record(x)
    out = record.output
    h, w = out.shape[-2:]
    image = torch.tensor([0, 1, 1, 0])
    y, x_ = torch.tensor([0, h - 1, h // 2, 0]), torch.tensor([0, w - 1, w // 2, w - 1])
    channel = out[image, :, y, x_].argmax(1)  # an active unit at each position
    seeds = Seeds(image, channel, y, x_, out[image, channel, y, x_])
    with torch.no_grad():
        full = mirror.project(record, seeds, frame="image")
        crop = mirror.project(record, seeds, frame="receptive_field")
    field = receptive_field(model, stage, input_size=SIZE)
    assert crop.shape == (4, 3, *field.size)
    pad = max(field.size)
    padded = F.pad(full, (pad, pad, pad, pad))
    for k in range(4):
        top, left, bottom, right = field.box(int(y[k]), int(x_[k]))
        window = padded[k, :, top + pad : bottom + pad, left + pad : right + pad]
        assert torch.equal(crop[k], window) and window.abs().max() > 0
        window.zero_()
        assert not padded[k].any(), f"{name} seed {k}: signal outside its receptive field"


# ---- 5: the caller's model is left exactly as it was ----------------------------------------

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def model_state(model: nn.Module) -> dict:
    """Everything of a model the mirror must not change: tensors (values and identity), modes,
    hooks, parameters' requires_grad and grad."""
    return {
        "tensors": {k: (v.clone(), v.data_ptr()) for k, v in model.state_dict(keep_vars=True).items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {n: sum(len(getattr(m, d, {})) for d in HOOK_DICTS) for n, m in model.named_modules()},
        "grad": {n: (p.requires_grad, p.grad) for n, p in model.named_parameters()},
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["tensors"].keys() == after["tensors"].keys()
    for key, (value, pointer) in before["tensors"].items():
        now, now_pointer = after["tensors"][key]
        assert pointer == now_pointer and torch.equal(value, now), f"{key} changed"
    changed = [n for n, mode in before["training"].items() if after["training"][n] != mode]
    assert changed == [], f"training flags changed: {changed[:5]} ({len(changed)} modules)"
    assert sum(after["hooks"].values()) == 0 and after["grad"] == before["grad"]


def use_every_entry_point(model: nn.Module) -> None:
    x = images(17, (45, 37), batch=1)
    stages_of(model)
    receptive_field(model, 3, input_size=(45, 37))
    for rule in RULES:
        reconstruct(model, x, 2, keep="max", rule=rule)
    str(GraphMirror(model, 2, "guided"))
    _, logits = one_hot_projection(model, x, "deconvnet", [1])
    assert logits.shape == (1, 1000)


def frozen_batch_norm(model: nn.Module) -> nn.Module:
    """A model in train mode with its batch norms in eval mode (fine-tuning with frozen BN)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return model


MODES = {"eval": lambda m: m.eval(), "train": lambda m: m.train(), "frozen_bn": frozen_batch_norm}


@pytest.mark.parametrize("mode", ["eval", "train", "frozen_bn"])
@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_lite0"])
def test_the_callers_model_is_left_bit_identical(name, mode):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = MODES[mode](BUILDERS[name]().double())  # fresh: its graph is not traced yet
    before = model_state(model)
    use_every_entry_point(model)
    assert_same_state(before, model_state(model))


# ---- 6: stages of every model family ---------------------------------------------------------

STAGE_PATHS = {
    "resnet18": ["relu", "layer1", "layer2", "layer3", "layer4"],
    "mobilenet_v2": ["features.1", "features.3", "features.6", "features.13", "features.18"],
    "densenet121": [
        "features.relu0",
        "features.denseblock1",
        "features.denseblock2",
        "features.denseblock3",
        "features.norm5",
    ],
    "googlenet": ["conv1", "conv3", "inception3b", "inception4e", "inception5b"],
    "tf_efficientnet_lite0": ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "bn2"],
}
STAGE_CHANNELS = {"mobilenet_v2": [16, 24, 32, 96, 1280], "tf_efficientnet_lite0": [16, 24, 40, 112, 1280]}


def meta_model(builder: Callable[[], nn.Module]) -> nn.Module:
    """The structure only (stages need no values): fast, no memory."""
    with torch.device("meta"):
        return builder()


@pytest.mark.parametrize("name", list(STAGE_PATHS))
def test_stages_are_the_last_block_of_each_resolution(name):
    found = stages_of(meta_model(BUILDERS[name]))
    assert [s.number for s in found] == [1, 2, 3, 4, 5]
    assert [s.name for s in found] == [s.path for s in found] == STAGE_PATHS[name]
    if name in STAGE_CHANNELS:
        assert [s.channels for s in found] == STAGE_CHANNELS[name]


def test_vgg_bn_stages_are_its_pools_and_names_paths_and_numbers_agree():
    found = stages_of(meta_model(tvm.vgg16_bn))
    assert [(s.name, s.path) for s in found] == [
        ("pool1", "features.6"),
        ("pool2", "features.13"),
        ("pool3", "features.23"),
        ("pool4", "features.33"),
        ("pool5", "features.43"),
    ]
    vgg = meta_model(tvm.vgg16_bn)
    assert stage_of(vgg, "pool2") == stage_of(vgg, "features.13") == stage_of(vgg, 2)
    resnet = meta_model(tvm.resnet18)
    assert stage_of(resnet, "layer2") == stage_of(resnet, 3)
    assert stage_of(resnet, 3).path == "layer2" and stage_of(resnet, 3).channels == 128


# ---- 7: clear errors ---------------------------------------------------------------------------


class Tiny(nn.Module):
    """conv -> GELU (a module, or F.gelu) -> conv: a model with one node the mirror cannot invert."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.functional = functional
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.GELU()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return self.head(F.gelu(x) if self.functional else self.act(x))


def silu_models() -> list[tuple[nn.Module, list[str]]]:
    """(model with nn.SiLU, what the error names): torchvision's and timm's EfficientNet-B0."""
    return [
        (tvm.efficientnet_b0(), ["features.0.2", "SiLU"]),
        (timm.create_model("efficientnet_b0"), ["bn1", "BatchNormAct2d", "SiLU"]),
    ]


def test_unsupported_activations_are_refused_naming_the_first_one():
    x = images(19, (45, 37), batch=1).float()
    cases = silu_models() + [(Tiny(False), ["act", "GELU"]), (Tiny(True), ["gelu"])]
    for model, named in cases:
        for call in (
            lambda: GraphMirror(model, "conv" if isinstance(model, Tiny) else 2, "guided"),
            lambda: reconstruct(model, x, 2, keep="all", rule="backprop"),
            lambda: stages_of(model),
        ):
            with pytest.raises(ValueError) as error:
                call()
            message = str(error.value)
            assert all(word in message for word in named), message
            assert "no deconvnet mirror" in message


@pytest.mark.parametrize("point", ["layer9", "layer1.7", "fc.weight"])
def test_a_point_outside_the_graph_is_refused_naming_it(zoo, point):
    model = zoo("resnet18")
    x = images(23, (45, 37), batch=1)
    for call in (
        lambda: GraphMirror(model, point, "guided"),
        lambda: reconstruct(model, x, point, keep="all", rule="guided"),
        lambda: stage_of(model, point),
    ):
        with pytest.raises(ValueError, match=repr(point).replace(".", r"\.")):
            call()


# ---- 8: what the mirror prints -----------------------------------------------------------------


def test_the_mirror_describes_its_adjoints(zoo):
    text = str(GraphMirror(zoo("resnet18"), 2, "guided"))
    for phrase in (
        "rule=guided",
        "tied transposed convolution",
        "residual add",
        "unpooling",
        "backward ReLU rule",
    ):
        assert phrase in text, text
    assert "layer2" not in text  # only the nodes below the stage (layer1) are mirrored
