"""Sanity checks (Adebayo et al. 2018) on graph models: `deconvnet.analysis.randomize` and
`sanity_check` on ResNet-18, MobileNetV2 and EfficientNet-Lite0 (random weights, small images), one
real-classifier check on EfficientNet-Lite0 with its ImageNet weights, and the `sanity` job on a
graph model end to end.

Independent references: the layer order is the order in which a real forward pass calls the
modules holding parameters (forward hooks), top first; the layers a unit depends on are the
parameters autograd reaches from it; the re-initialisation is the architecture's own init code
(torchvision's constructors' loops, written out; timm's `efficientnet_init_weights`) run on the
global generator seeded per layer, and its distribution is compared with a freshly constructed
model's (Kolmogorov-Smirnov); every step's maps against a copy re-initialised by hand.

The models' parameters are moved off their init first (`_trained_like`): a random-weight model's
batch norms are at weight 1, bias 0 and several biases at 0, which a re-initialisation would
write again without a visible change.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import photo_input
from PIL import Image
from torch import nn

import deconvnet
from deconvnet.analysis import randomize, sanity
from deconvnet.analysis.randomize import Randomized, layer_seed, learnable_layers, randomized_at
from deconvnet.analysis.sanity import sanity_check
from deconvnet.core.architecture import stage as stage_of
from deconvnet.data.models import model_spec
from deconvnet.jobs.sanity import run_sanity

MODELS = ("resnet18", "mobilenet_v2", "efficientnet_lite0")
SIZE = 64


def _trained_like(name: str) -> nn.Module:
    """The random-weight model with every batch norm's weight, bias and running statistics and
    every bias moved off its init by seeded noise (float32, CPU, eval)."""
    model = deconvnet.load_model(name, weights="random", seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(1 + 0.1 * torch.randn(c, generator=g))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                module.running_var.copy_(1 + 0.2 * torch.rand(c, generator=g))
            if getattr(module, "bias", None) is not None:
                module.bias.add_(0.05 * torch.randn(module.bias.shape, generator=g))
    return model


@pytest.fixture(scope="module", params=MODELS)
def net(request):
    return request.param, _trained_like(request.param)


def _images(model: nn.Module, size: int = SIZE, count: int = 2) -> torch.Tensor:
    return torch.cat([photo_input(n, model, size) for n in ("cat", "coffee")[:count]])


def _own_parameters(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_parameters(recurse=False)]


def _call_order(model: nn.Module, x: torch.Tensor, extra: str | None = None) -> list[str]:
    """Module paths of the modules holding parameters (and `extra`), in the order a real forward
    pass first finishes them (forward hooks)."""
    order: list[str] = []

    def hook(path):
        return lambda module, inputs, output: None if path in order else order.append(path)

    watched = [(p, m) for p, m in model.named_modules() if _own_parameters(m) or p == extra]
    handles = [m.register_forward_hook(hook(p)) for p, m in watched]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return order


def _hand_init(name: str, module: nn.Module, seed: int, position: int) -> None:
    """The architecture's own init code on one module, the global generator seeded with
    layer_seed(seed, position) (torchvision's constructors' loops; timm's own function)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(layer_seed(seed, position))
        if name == "efficientnet_lite0":
            from timm.models.efficientnet import efficientnet_init_weights

            efficientnet_init_weights(module)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
        elif name == "resnet18" and isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif name == "resnet18":  # torchvision leaves nn.Linear's own init
            module.reset_parameters()
        elif isinstance(module, nn.Conv2d):  # mobilenet_v2
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        else:
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def _by_hand(name: str, model: nn.Module, names, seed: int) -> nn.Module:
    """A copy of `model` with the layers `names` re-initialised by `_hand_init`."""
    made = copy.deepcopy(model)
    order = _call_order(model, _images(model, 32, 1))[::-1]  # top first
    for layer_name in names:
        position = len(order) - 1 - order.index(layer_name)
        _hand_init(name, made.get_submodule(layer_name), seed, position)
    return made


# ------------------------------------------------------------------------------ the layers


def test_layers_are_the_forward_call_order_top_first(net):
    name, model = net
    order = _call_order(model, _images(model, SIZE, 1))[::-1]
    layers = learnable_layers(model)
    assert [l.name for l in layers] == order == [l.path for l in layers]
    assert [l.position for l in layers] == list(range(len(order) - 1, -1, -1))
    kinds = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.Linear: "linear"}
    for layer in layers:
        module = model.get_submodule(layer.path)
        assert [k for t, k in kinds.items() if isinstance(module, t)] == [layer.kind]
    assert len(order) == {"resnet18": 41, "mobilenet_v2": 105, "efficientnet_lite0": 99}[name]


def test_layers_used_are_the_parameters_autograd_reaches(net):
    name, model = net
    x = _images(model, SIZE, 1)
    params = dict(model.named_parameters())
    for stage in (2, 4):
        path = stage_of(model, stage).path
        captured = []
        handle = model.get_submodule(path).register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            model(x)
        finally:
            handle.remove()
        unit = captured[0][0, 0, 1, 1]
        grads = torch.autograd.grad(unit, list(params.values()), allow_unused=True)
        reached = {k.rsplit(".", 1)[0] for k, g in zip(params, grads) if g is not None}
        assert randomize.layers_used(model, stage) == reached
        assert randomize.layers_used(model, path) == reached  # a stage by its path
    assert randomize.layers_used(model, None) == {l.name for l in learnable_layers(model)}


def test_default_pass_layer_is_the_first_convolution_after_stage_2(net):
    name, model = net
    stage2 = stage_of(model, 2).path
    order = _call_order(model, _images(model, SIZE, 1), extra=stage2)
    after = order[order.index(stage2) + 1 :]
    first = next(p for p in after if isinstance(model.get_submodule(p), nn.Conv2d))
    assert sanity.default_pass_layer(model) == first
    if name == "resnet18":
        assert first == "layer2.0.conv1"


# ------------------------------------------------------------------------ the re-initialisation


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_each_step_changes_exactly_its_layers(net):
    name, model = net
    order = _call_order(model, _images(model, SIZE, 1))[::-1]  # top first, independently
    layers = learnable_layers(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    work = Randomized(model, 3, torch.device("cpu"))
    bn = next(k for k, l in enumerate(layers) if l.kind == "bn" and k > 5)
    for k in (0, 1, bn, len(layers) // 2, len(layers) - 1):
        want = {f"{p}.{w}" for p in order[: k + 1] for w in _own_parameters(model.get_submodule(p))}
        names = [l.name for l in randomized_at(layers, "cascading", layers[k])]
        assert names == order[: k + 1]
        cascading = {key: v.clone() for key, v in work.with_random(names).state_dict().items()}
        assert _changed(original, cascading) == want
        alone = [l.name for l in randomized_at(layers, "independent", layers[k])]
        assert alone == [order[k]]
        independent = work.with_random(alone).state_dict()
        mine = {f"{order[k]}.{w}" for w in _own_parameters(model.get_submodule(order[k]))}
        assert _changed(original, independent) == mine
        for key in mine:  # the same new weights in both modes
            assert torch.equal(independent[key], cascading[key])
    assert _changed(original, work.with_random([]).state_dict()) == set()
    after = model.state_dict()  # the caller's model untouched
    assert all(torch.equal(original[k], after[k]) for k in original)


def test_batch_norm_gets_its_init_and_keeps_its_statistics(net):
    name, model = net
    layer = next(l for l in learnable_layers(model) if l.kind == "bn")
    source = model.get_submodule(layer.path)
    changed = Randomized(model, 9, torch.device("cpu")).with_random([layer.name]).get_submodule(layer.path)
    assert torch.equal(changed.weight, torch.ones_like(source.weight))
    assert torch.equal(changed.bias, torch.zeros_like(source.bias))
    assert not torch.equal(source.weight, changed.weight)  # it did change (`_trained_like`)
    for buffer in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(changed, buffer), getattr(source, buffer))


def test_reinitialisation_equals_the_architectures_own_code_and_is_deterministic(net):
    name, model = net
    layers = learnable_layers(model)
    names = [l.name for l in layers]
    mine = Randomized(model, 11, torch.device("cpu")).with_random(names).state_dict()
    hand = _by_hand(name, model, names, 11).state_dict()
    assert mine.keys() == hand.keys()
    for key in mine:
        assert torch.equal(mine[key], hand[key]), key
    again = Randomized(model, 11, torch.device("cpu")).with_random(names).state_dict()
    other = Randomized(model, 12, torch.device("cpu")).with_random(names).state_dict()
    for layer in layers:
        key = f"{layer.path}.weight"
        assert torch.equal(again[key], mine[key])
        assert torch.equal(other[key], mine[key]) is (layer.kind == "bn")  # BN: no random draw


@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenet_v2", "efficientnet_lite0", "densenet121", "googlenet", "vgg11_bn"]
)
def test_reinitialisation_has_the_distribution_of_a_freshly_built_model(name):
    """Each layer's new weights against the same layer of the architecture built afresh by its
    own constructor (KS test on up to 20000 values; exact zeros and ones where it has them)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        built = model_spec(name).constructor(weights=None)
    compared = 0
    for layer in learnable_layers(built):
        fresh = randomize.fresh_parameters(built, layer, 5)
        reference = built.get_submodule(layer.path)
        for mine, theirs in zip(fresh, (reference.weight, reference.bias)):
            if theirs is None:
                assert mine is None
                continue
            theirs = theirs.detach().flatten()
            mine = mine.flatten()
            if bool((theirs == theirs[0]).all()):
                assert bool((mine == theirs[0]).all()), layer.name  # zeros, ones
            elif theirs.numel() >= 64:
                p = scipy.stats.ks_2samp(mine[:20000].numpy(), theirs[:20000].numpy()).pvalue
                assert p > 1e-5, (layer.name, p)
                compared += 1
    assert compared >= 10


def test_distribution_check_can_fail():
    """The KS comparison above tells fan_in from fan_out (MobileNetV2's depthwise convolutions)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        built = model_spec("mobilenet_v2").constructor(weights=None)
    module = built.get_submodule("features.2.conv.1.0")  # depthwise 3x3
    wrong = torch.empty(module.weight.shape)
    nn.init.kaiming_normal_(wrong, generator=torch.Generator().manual_seed(0))  # fan_in
    p = scipy.stats.ks_2samp(wrong.flatten().numpy(), module.weight.detach().flatten().numpy()).pvalue
    assert p < 1e-5


# --------------------------------------------------------------------------- the sanity check


def test_every_step_equals_a_copy_reinitialised_by_hand(net):
    name, model = net
    x = _images(model, SIZE, 1)
    layers = learnable_layers(model)
    convs = [l.name for l in layers if l.kind == "conv"]
    bns = [l.name for l in layers if l.kind == "bn"]
    chosen = [layers[0].name, bns[len(bns) // 3], convs[len(convs) // 2], layers[-1].name]
    methods = ["gradient", "deconvnet", "gradcam"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = sanity_check(
        model, x, methods, deconvnet.Unit(5), layers=chosen, seed=4, keep_maps=True, progress=False
    )
    assert result.settings.cam_stage == 4  # the stage below the unit's
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    targets = [deconvnet.Unit(t["stage"], t["channel"], t["y"], t["x"]) for t in result.targets]
    order = [l.name for l in layers]
    for mode in ("cascading", "independent"):
        assert [s.layer for s in result.steps[mode]] == chosen
        first = result.steps[mode][0]  # the classifier: above a stage-5 unit
        assert not first.affects_map and (result.similarity[mode][0] == 1).all()
        for s, step in enumerate(result.steps[mode][1:], start=1):
            top = order.index(step.layer)
            names = order[: top + 1] if mode == "cascading" else [step.layer]
            hand = _by_hand(name, model, names, 4)
            for method in methods:
                opts = {"stage": 4} if method == "gradcam" else {}
                want = torch.cat(
                    [deconvnet.explain(hand, x[b : b + 1], method, targets[b], **opts) for b in range(len(x))]
                )
                # the same arithmetic in the same shapes (one image per call, the same new
                # weights): equal bit for bit on every CPU (an absolute 1e-5 said nothing about
                # MobileNetV2's maps of ~5e-11)
                assert torch.equal(result.maps[step.key][method], want), (step.key, method)
            assert not (result.similarity[mode][s, 0, :, 0] >= 1).any()  # changed (NaN: a dead unit)
    unused = _by_hand(name, model, order[:1], 4)  # the classifier alone: the maps bitwise unchanged
    for method in methods:
        opts = {"stage": 4} if method == "gradcam" else {}
        got = torch.cat(
            [deconvnet.explain(unused, x[b : b + 1], method, targets[b], **opts) for b in range(len(x))]
        )
        assert torch.equal(got, result.maps["original"][method])


def test_class_targets_and_grad_cam_stages_on_a_graph_model():
    model = _trained_like("resnet18")
    x = _images(model, SIZE, 1)
    got = sanity_check(model, x, ["gradient", "gradcam"], None, "independent", ["fc"], seed=2, progress=False)
    step = got.steps["independent"][0]
    assert step.affects_map and step.reinitialized == ("fc",)
    assert got.targets[0] == {**got.targets[0], "kind": "class", "class": int(model(x).argmax())}
    assert got.settings.cam_stage == 5  # a class target: the last stage
    for cam_stage, target, want in ((None, deconvnet.Unit(3), 2), ("layer2", deconvnet.Unit(4), "layer2")):
        checked = sanity.check_settings(model, ["gradcam"], 1, 0.1, 1, cam_stage, 0, target.stage)
        assert checked.cam_stage == want
    assert sanity.check_settings(model, ["gradcam"], 1, 0.1, 1, "layer3.0", 0, None).cam_stage == "layer3.0"


@pytest.mark.parametrize(
    "cam_stage, target, match",
    [
        ("layer9", None, "cam_stage: Grad-CAM needs feature maps"),
        ("fc", None, "cam_stage: Grad-CAM needs feature maps"),
        ("layer3.0", deconvnet.Unit(5), "cam_stage: 'layer3.0' is not a stage"),
        ("layer4", deconvnet.Unit(3), "cam_stage: Grad-CAM at stage 5 lies above the target's stage 3"),
        (6, None, "cam_stage: expected an int in 1..5"),
    ],
)
def test_bad_grad_cam_stages_on_a_graph_model(cam_stage, target, match):
    model = deconvnet.load_model("resnet18", weights="random")
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        sanity_check(model, _images(model, SIZE, 1), ["gradcam"], target, cam_stage=cam_stage, progress=False)


def test_class_targets_on_the_real_classifier():
    """EfficientNet-Lite0 with its ImageNet weights: the target is the photo's predicted class on
    the original model, and re-initialising the classifier changes the class's gradient map."""
    model = deconvnet.load_model("efficientnet_lite0", weights="imagenet")
    x = _images(model, 160, 1)
    predicted = int(model(x).argmax())
    got = sanity_check(
        model, x, ["gradient"], None, ["independent"], ["classifier"], seed=0, keep_maps=True, progress=False
    )
    assert got.targets[0]["kind"] == "class" and got.targets[0]["class"] == predicted
    assert 281 <= predicted <= 285  # a domestic cat
    hand = _by_hand("efficientnet_lite0", model, ["classifier"], 0)
    want = deconvnet.explain(hand, x, "gradient", predicted)
    assert torch.equal(got.maps["independent__classifier"]["gradient"], want)  # same arithmetic, shapes
    assert got.similarity["independent"][0, 0, 0, 1] < 0.9  # signed Spearman: the map changed


# ----------------------------------------------------------------------------------- the job


def _block_ends_of_resnet18() -> list[str]:
    """What the cascade figure shows of ResNet-18 with a stage-5 unit (fc is above it): the step
    completing each residual block (its first convolution is its bottom layer), then bn1, conv1."""
    blocks = [f"layer{i}.{j}" for i in (4, 3, 2, 1) for j in (1, 0)]
    return [f"{b}.conv1" for b in blocks] + ["bn1", "conv1"]


@pytest.fixture(scope="module")
def graph_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("sanity_graph") / "job"
    result = run_sanity(
        out,
        model="resnet18",
        weights="random",
        images=["cat"],
        methods=["gradient", "gradcam"],
        modes="cascading",
        size=32,
        progress=False,
    )
    return out, result


def test_job_on_a_graph_model_end_to_end(graph_job):
    out, result = graph_job
    model = deconvnet.load_model("resnet18", weights="random")
    order = _call_order(model, _images(model, 32, 1))[::-1]
    assert {p.name for p in out.iterdir()} >= {
        "config.yaml",
        "result.json",
        "images.npz",
        "curves.png",
        "cascade_cat.png",
    }
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    assert result["steps"] == {"cascading": order}
    assert result["layers"]["all_top_first"] == order
    assert (
        result["settings"]["gradcam"]["stage"] == 4 and result["settings"]["pass_layer"] == "layer2.0.conv1"
    )
    assert "torchvision ResNet init" in result["settings"]["reinitialization"]
    assert "BatchNorm weight 1, bias 0, running statistics kept" in result["settings"]["reinitialization"]
    assert result["display"]["cascade_steps_changing_the_maps"] == order[1:]  # fc: above the unit
    assert result["display"]["cascade_steps_shown"] == _block_ends_of_resnet18()
    assert set(result["verdicts"]) == {"gradient", "gradcam"}
    with np.load(out / "images.npz") as arrays:
        kept = sorted(k[len("cascading__") : -len("__maps")] for k in arrays.files if k.endswith("__maps"))
        assert kept == sorted(_block_ends_of_resnet18())
        assert arrays["similarity__cascading"].shape == (41, 2, 1, 4)
        assert (arrays["similarity__cascading"][0] == 1).all()  # fc
    with Image.open(out / "cascade_cat.png") as figure:  # 2 + 10 columns of 1.1 in at 100 dpi
        assert figure.size[0] == round((1.1 * 12 + 0.6) * 100)


def test_job_shows_the_steps_asked_for_and_checks_them(tmp_path):
    args = {"model": "mobilenet_v2", "weights": "random", "images": "cat", "methods": "gradient", "size": 32}
    args |= {"layers": ["classifier.1", "features.17.conv.2", "features.9.conv.0.0", "features.0.0"]}
    with pytest.raises(ValueError, match="shown_layers: expected null"):
        run_sanity(tmp_path / "bad", **args, shown_layers=["classifier.1"], progress=False)  # above the unit
    with pytest.raises(ValueError, match="shown_layers: the cascade figure shows cascading steps"):
        run_sanity(tmp_path / "bad", **args, modes="independent", shown_layers="features.0.0", progress=False)
    assert not (tmp_path / "bad").exists()
    result = run_sanity(
        tmp_path / "job", **args, shown_layers=["features.0.0", "features.17.conv.2"], progress=False
    )
    assert result["display"]["cascade_steps_shown"] == ["features.17.conv.2", "features.0.0"]
    assert result["display"]["cascade_rule"] == "shown_layers as given"
    assert result["config"]["shown_layers"] == ["features.17.conv.2", "features.0.0"]  # top first


def test_job_with_class_targets_on_the_real_classifier(tmp_path):
    result = run_sanity(
        tmp_path / "job",
        model="efficientnet_lite0",
        weights="imagenet",
        images="cat",
        methods=["gradient", "gradcam"],
        unit=None,
        modes="cascading",
        layers=["classifier", "conv_head", "blocks.3.0.conv_pw"],
        size=96,
        progress=False,
    )
    assert result["random_classifier"] is False and result["classifier_note"] is None
    assert result["images"][0]["target"]["kind"] == "class"
    assert result["settings"]["gradcam"]["stage"] == 5
    assert "timm _init_weight_goog" in result["settings"]["reinitialization"]
    assert all(cell["affects_map"] for cell in result["cells"][1:])


def test_cascade_columns_rule():
    from deconvnet.figures.sanity import cascade_columns

    vgg = [f"conv{i}" for i in range(16)]
    assert cascade_columns(vgg) == vgg  # at most 20: all
    resnet50 = [l.name for l in learnable_layers(deconvnet.load_model("resnet50", weights="random"))]
    shown = cascade_columns(resnet50[1:])  # below fc
    blocks = [f"layer{i}.{j}" for i, n in ((4, 3), (3, 6), (2, 4), (1, 3)) for j in range(n - 1, -1, -1)]
    assert shown == [f"{b}.conv1" for b in blocks] + ["bn1", "conv1"]
    many = [f"a.{i}.b" for i in range(50)]
    thinned = cascade_columns(many)
    assert len(thinned) == 20 and thinned[0] == many[0] and thinned[-1] == many[-1]
