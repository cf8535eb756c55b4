"""Occlusion (Fig. 7) on graph models: incremental inference against one full forward pass per
occluded image through the model's own code (its softmax, and its stage-5 module's output read by a
forward hook), float64 to 1e-10; the brute method; the windows' geometry; bad input; the MAC count."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models import densenet121, googlenet, mobilenet_v2, resnet18

import deconvnet
from deconvnet.analysis.graph_incremental import ancestors, plan_steps, run_ops, step_windows
from deconvnet.analysis.occlusion import occlusion_macs
from deconvnet.core.architecture import stage
from deconvnet.core.graph_model import ModelGraph

TOLERANCE = 1e-10


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """The model in float64 and eval, every batch norm with random statistics and affine values and
    every bias non-zero (so that a wrong window, a missed join or a skipped norm shows)."""
    generator = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=generator))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=generator))
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=generator))
    return model


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "resnet18":
        return resnet18()
    if name == "mobilenet_v2":
        return mobilenet_v2()
    if name == "googlenet":  # the input transform (indexing, unsqueeze, affine, cat), ceil_mode pools
        return googlenet(aux_logits=False, transform_input=True, init_weights=False)
    if name == "densenet121":  # concatenations, average pooling
        return densenet121()
    return deconvnet.load_model(name, weights="random", seed=0)  # efficientnet_lite0: TF-same padding


_MODELS: dict[str, nn.Module] = {}


def model_of(name: str) -> nn.Module:
    """A float64 random model, built once per session."""
    if name not in _MODELS:
        _MODELS[name] = randomised(_build(name))
    return _MODELS[name]


def reference(model: nn.Module, x: torch.Tensor, patch: int, stride: int, fill: float):
    """Independent reference: every occluded image [3, H, W] built by hand, all through the model's
    own forward in one batch, the stage-5 module's output kept by a forward hook ->
    (probability [ny, nx, classes], stage-5 maps [ny, nx, C, h, w])."""
    h, w = x.shape[-2:]
    tops, lefts = range(0, h - patch + 1, stride), range(0, w - patch + 1, stride)
    occluded = []
    for top in tops:
        for left in lefts:
            y = x[0].clone()
            y[:, top : top + patch, left : left + patch] = fill
            occluded.append(y)
    kept = []
    hook = model.get_submodule(stage(model, 5).path).register_forward_hook(
        lambda m, i, o: kept.append(o.clone())
    )
    try:
        with torch.no_grad():
            p = model(torch.stack(occluded)).softmax(dim=1)
    finally:
        hook.remove()
    grid = (len(tops), len(lefts))
    return p.view(*grid, -1), kept[0].view(*grid, *kept[0].shape[1:])


def unoccluded(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probability [classes], stage-5 map [C, h, w]) of the image itself, same way."""
    kept = []
    hook = model.get_submodule(stage(model, 5).path).register_forward_hook(
        lambda m, i, o: kept.append(o.clone())
    )
    try:
        with torch.no_grad():
            p = model(x).softmax(dim=1)[0]
    finally:
        hook.remove()
    return p, kept[0][0]


def assert_close(got: torch.Tensor, want: torch.Tensor, tolerance: float = TOLERANCE) -> None:
    scale = float(want.abs().max())
    error = float((got.double() - want.double()).abs().max())
    assert error <= tolerance * scale, f"largest difference {error:.3e} against largest value {scale:.3e}"


def check_against_reference(model, x, out, patch, stride, fill, target=None) -> None:
    """Every map of `out` against one forward pass per position (both images of x)."""
    for b in range(x.shape[0]):
        p0, s0 = unoccluded(model, x[b : b + 1])
        channel = int(s0.flatten(1).amax(dim=1).argmax())
        cls = int(p0.argmax()) if target is None else int(target)
        assert int(out.channel[b]) == channel and int(out.target[b]) == cls
        assert abs(float(out.unoccluded_probability[b]) - float(p0[cls])) <= TOLERANCE
        assert abs(float(out.unoccluded_feature[b]) - float(s0[channel].sum())) <= TOLERANCE * float(
            s0[channel].sum().abs()
        )
        prob, maps = reference(model, x[b : b + 1], patch, stride, fill)
        assert out.probability[b].shape == prob.shape[:2]
        assert_close(out.probability[b], prob[..., cls])
        assert_close(out.feature[b], maps[:, :, channel].sum(dim=(-2, -1)))
        assert torch.equal(out.label[b], prob.argmax(dim=-1))


CASES = [  # model, images, image size (h, w), patch, stride, fill, batch size
    ("resnet18", 2, (72, 64), 20, 13, 0.0, 7),
    ("resnet18", 1, (67, 83), 9, 29, 0.4, 4),
    ("mobilenet_v2", 1, (56, 60), 17, 13, 0.0, 9),
    ("efficientnet_lite0", 1, (60, 54), 18, 14, -0.3, 6),
    ("googlenet", 1, (96, 90), 16, 40, 0.0, 4),
    ("densenet121", 1, (64, 64), 24, 20, 0.0, 3),
]


@pytest.mark.parametrize("name, images, size, patch, stride, fill, batch", CASES)
def test_incremental_equals_one_forward_pass_per_position(name, images, size, patch, stride, fill, batch):
    """The model's own forward per occluded image (hand-built) against the incremental maps: the
    depthwise models (MobileNetV2, EfficientNet-Lite0: slow in float64) at fewer positions."""
    model = model_of(name)
    x = torch.randn(images, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = deconvnet.occlusion(model, x, patch=patch, stride=stride, fill=fill, batch_size=batch)
    check_against_reference(model, x, out, patch, stride, fill)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_lite0", "googlenet"])
def test_windows_cross_joins_and_borders(name):
    """The cases above exercise what the union rule is for: at some join the inputs' changed
    intervals differ and the output window is a part of the map, and windows are slid back inside
    the map at its border."""
    _, _, size, patch, stride, _, _ = next(c for c in CASES if c[0] == name)
    model = model_of(name)
    graph = ModelGraph.of(model)
    steps = plan_steps(graph, graph.paths[stage(model, 5).path], *size)
    top = torch.arange(0, size[0] - patch + 1, stride)
    left = torch.zeros_like(top)
    windows = step_windows(steps, top, left, (patch, patch))
    joins = [s for s in steps if s.role == "join"]
    assert joins
    crossing = [
        s
        for s in joins
        if windows[s.op.name][0].length < s.size[0]
        and any(not torch.equal(windows[a][0].lo, windows[s.op.name][0].lo) for a in s.op.inputs)
    ]
    assert crossing, f"no join with a partial window and differing inputs in {name}"
    slid = [s for s in steps if bool((windows[s.op.name][0].start < windows[s.op.name][0].lo).any())]
    assert slid, "no window slid back at the border"


def test_changed_intervals_hold_every_change_through_the_graph():
    """Perturb a square of the input: at every node up to stage 5, the outputs that change lie in
    the node's changed interval [lo, hi) (per axis), through residual adds included."""
    model = model_of("resnet18")
    graph = ModelGraph.of(model)
    top_node = graph.paths[stage(model, 5).path]
    x = torch.randn(1, 3, 70, 70, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ops = [op for op in graph.ops if op.name in ancestors(graph, top_node) and op.kind != "input"]
    steps = plan_steps(graph, top_node, 70, 70)
    for corner in [(0, 0), (23, 41), (50, 9)]:
        y = x.clone()
        y[:, :, corner[0] : corner[0] + 20, corner[1] : corner[1] + 20] += 1.0
        with torch.no_grad():
            a, b = run_ops(ops, {graph.input: x}), run_ops(ops, {graph.input: y})
        windows = step_windows(steps, torch.tensor([corner[0]]), torch.tensor([corner[1]]), (20, 20))
        for step in steps:
            name = step.op.name
            changed = ((a[name] - b[name]).abs() > 0).any(dim=1)[0]  # [h, w]
            rows, cols = windows[name]
            ys, xs = changed.any(dim=1).nonzero().flatten(), changed.any(dim=0).nonzero().flatten()
            if len(ys):
                assert int(rows.lo[0]) <= int(ys.min()) and int(ys.max()) < int(rows.hi[0]), name
                assert int(cols.lo[0]) <= int(xs.min()) and int(xs.max()) < int(cols.hi[0]), name


def test_brute_method_equals_incremental_on_a_graph():
    model = model_of("mobilenet_v2")
    x = torch.randn(1, 3, 50, 54, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    inc = deconvnet.occlusion(model, x, patch=15, stride=17, batch_size=6)
    brute = deconvnet.occlusion(model, x, patch=15, stride=17, batch_size=6, method="brute")
    assert_close(inc.probability, brute.probability)
    assert_close(inc.feature, brute.feature)
    assert torch.equal(inc.label, brute.label)
    assert brute.settings["method"] == "brute"


def test_float32_batch_sizes_and_a_class_target():
    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    one = deconvnet.occlusion(model, x, target=3, patch=16, stride=16, batch_size=1)
    many = deconvnet.occlusion(model, x, target=3, patch=16, stride=16, batch_size=16)
    assert one.target.tolist() == [3]
    assert_close(one.probability, many.probability, 1e-5)
    assert_close(one.feature, many.feature, 1e-5)
    prob, maps = reference(model, x, 16, 16, 0.0)
    assert_close(many.probability[0], prob[..., 3], 1e-4)
    assert_close(many.feature[0], maps[:, :, int(many.channel[0])].sum(dim=(-2, -1)), 1e-4)


def test_max_pooling_with_ceil_mode_is_exact():
    model = copy.deepcopy(model_of("resnet18"))
    model.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True)  # 36 -> 18 with ceil, 17 without
    x = torch.randn(1, 3, 72, 72, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out = deconvnet.occlusion(model, x, patch=19, stride=17, batch_size=5)
    check_against_reference(model, x, out, 19, 17, 0.0)


@pytest.mark.parametrize(
    "pool, why",
    [
        (nn.AvgPool2d(3, 2, 1, count_include_pad=False), "count_include_pad=False"),
        (nn.AvgPool2d(3, 2, 0, ceil_mode=True), "ceil_mode=True"),
    ],
)
def test_pooling_that_cannot_run_in_windows_is_refused_and_brute_runs_it(pool, why):
    model = copy.deepcopy(model_of("resnet18"))
    model.maxpool = pool
    x = torch.randn(1, 3, 72, 72, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match=rf"node maxpool .*{why}.*method='brute'"):
        deconvnet.occlusion(model, x, patch=20, stride=26)
    out = deconvnet.occlusion(model, x, patch=20, stride=26, method="brute")
    check_against_reference(model, x, out, 20, 26, 0.0)


def test_the_model_is_left_as_it_was():
    model = copy.deepcopy(model_of("resnet18")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    out = deconvnet.occlusion(model, x, patch=20, stride=22)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats too
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    ref = deconvnet.occlusion(model_of("resnet18"), x, patch=20, stride=22)  # the eval function
    assert_close(out.probability, ref.probability)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patch": 65}, r"patch: expected an int side length in 1\.\.64"),
        ({"stride": 0}, r"stride: expected an int >= 1"),
        ({"method": "fast"}, r"method: expected one of 'incremental', 'brute'"),
        ({"target": 1000}, r"target: class 1000 is outside 0\.\.999"),
        ({"batch_size": 0}, r"batch_size"),
    ],
)
def test_bad_input_is_named_on_a_graph_model(kwargs, match):
    with pytest.raises(ValueError, match=match):
        deconvnet.occlusion(model_of("resnet18"), torch.randn(1, 3, 64, 64, dtype=torch.float64), **kwargs)


def test_bad_images_are_named_on_a_graph_model():
    with pytest.raises(ValueError, match=r"images: expected shape \[B, 3, H, W\]"):
        deconvnet.occlusion(model_of("resnet18"), torch.randn(3, 64, 64, dtype=torch.float64))


class TwoLevelHead(nn.Module):
    """Five resolution levels whose classifier also reads level 3 (before stage 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *[nn.Sequential(nn.Conv2d(3 if i == 0 else 4, 4, 3, 2, 1), nn.ReLU()) for i in range(5)]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = self.features[2](self.features[1](self.features[0](x)))
        top = self.features[4](self.features[3](middle))
        return self.fc(torch.cat([self.pool(top), self.pool(middle)], 1).flatten(1))


def test_a_head_reading_below_stage_5_is_refused():
    model = TwoLevelHead().eval()
    assert stage(model, 5).path == "features.4"
    for method in ("incremental", "brute"):
        with pytest.raises(ValueError, match=r"model: node .* after stage 5 reads node features_2_1"):
            deconvnet.occlusion(model, torch.randn(1, 3, 64, 64), patch=16, stride=16, method=method)


def hooked_conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of every convolution and linear layer of one forward pass, from forward hooks
    on the modules (output elements x inputs read per element)."""
    total = [0]

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            per = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += output.numel() * per
        else:
            total[0] += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]


def test_multiply_add_counts():
    model = model_of("resnet18")
    per_image = hooked_conv_macs(model, torch.zeros(1, 3, 96, 80, dtype=torch.float64))
    counted = occlusion_macs(model, 96, 80, patch=24, stride=12)
    assert counted["positions"] == 7 * 5
    assert counted["full"] == 35 * per_image
    assert counted["incremental"] < counted["full"]
    covering = occlusion_macs(model, 80, 80, patch=80, stride=1)  # one position: the whole image
    assert covering["positions"] == 1
    per_80 = hooked_conv_macs(model, torch.zeros(1, 3, 80, 80, dtype=torch.float64))
    assert covering["incremental"] == covering["full"] == per_80
