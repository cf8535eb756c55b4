"""The `reconstruct` contract: values, rules, receptive fields, the caller's model, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import deconvnet
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.seeds import select_seeds


def _image(h: int, w: int, seed: int = 0, batch: int = 1, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _hooked_reference(model: nn.Module, x: torch.Tensor, stage: int, channel: int, rule: str):
    """Independent oracle: autograd through a copy whose ReLU gradients a backward hook rewrites."""
    index = stage_of(model, stage).index
    features = copy.deepcopy(model.features[: index + 1])
    for m in features:
        if isinstance(m, nn.ReLU):
            m.inplace = False
            if rule == "deconvnet":  # relu of the signal from above, forward mask ignored
                m.register_full_backward_hook(lambda mod, gin, gout: (torch.relu(gout[0]),))
            else:  # guided: relu of the masked gradient
                m.register_full_backward_hook(lambda mod, gin, gout: (torch.relu(gin[0]),))
    xg = x.clone().requires_grad_(True)
    a = features(xg)
    seed = torch.zeros_like(a)
    flat = int(a[0, channel].detach().flatten().argmax())
    seed[0, channel].view(-1)[flat] = a[0, channel].detach().flatten()[flat]
    return torch.autograd.grad(a, xg, seed)[0]


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
@pytest.mark.parametrize("stage", [1, 3, 5])
def test_deconvnet_and_guided_rules_equal_a_hook_based_reference(model64, rule, stage):
    h, w = (45, 61) if type(model64).__name__ == "VGG" else (67, 90)
    x = _image(h, w, seed=stage)
    with torch.no_grad():  # two live channels (random weights leave some channels dead)
        a = model64.features[: stage_of(model64, stage).index + 1](x.clone())
    for channel in a[0].flatten(1).amax(1).topk(2).indices.tolist():
        got = deconvnet.reconstruct(model64, x, stage, keep=channel, rule=rule)
        want = _hooked_reference(model64, x, stage, channel, rule)
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_the_three_rules_differ(vgg_float64):
    x = _image(48, 48, seed=3)
    out = {r: deconvnet.reconstruct(vgg_float64, x, 3, keep="max", rule=r) for r in deconvnet.RULES}
    assert not torch.allclose(out["deconvnet"], out["backprop"])
    assert not torch.allclose(out["deconvnet"], out["guided"])
    assert not torch.allclose(out["guided"], out["backprop"])


@pytest.mark.parametrize("keep", ["all", "max", 2])
def test_reconstruction_has_the_input_shape_and_each_image_is_its_own(model64, keep):
    for h, w in ((63, 63), (70, 97), (101, 64)):
        x = _image(h, w, batch=2, seed=h)
        both = deconvnet.reconstruct(model64, x, 2, keep=keep)
        assert both.shape == (2, 3, h, w)
        for b in range(2):  # a batch is the images one by one: nothing leaks between them
            alone = deconvnet.reconstruct(model64, x[b : b + 1], 2, keep=keep)
            assert alone.abs().max() > 0
            torch.testing.assert_close(both[b : b + 1], alone, rtol=1e-12, atol=1e-14)


def test_a_channel_list_gives_one_reconstruction_per_channel_each_alone(alexnet_float64):
    x = _image(80, 80)
    many = deconvnet.reconstruct(alexnet_float64, x, 4, keep=[3, 1, 3])
    assert many.shape == (3, 3, 80, 80)
    for row, channel in zip(many, [3, 1, 3]):
        torch.testing.assert_close(
            row[None], deconvnet.reconstruct(alexnet_float64, x, 4, channel), rtol=1e-12, atol=1e-14
        )


def test_mirror_weights_are_tied_to_the_model(alexnet_float32):
    model = copy.deepcopy(alexnet_float32)
    x = _image(63, 63, dtype=torch.float32)
    before = deconvnet.reconstruct(model, x, 1, keep="max")
    with torch.no_grad():
        model.features[0].weight.mul_(2.0)  # with the bias, every activation doubles
        model.features[0].bias.mul_(2.0)
    after = deconvnet.reconstruct(model, x, 1, keep="max")
    # seed value doubles with the forward weight, and the transposed conv doubles again
    torch.testing.assert_close(after, 4.0 * before, rtol=1e-5, atol=1e-6)


def _model_state(model: nn.Module):
    hooks = [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()
    ]
    inplace = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        hooks,
        inplace,
        model.training,
        [p.requires_grad for p in model.parameters()],
    )


@pytest.mark.parametrize("rule", ["deconvnet", "backprop", "guided"])
def test_the_callers_model_is_left_exactly_as_it_was(alexnet_float32, rule):
    model = copy.deepcopy(alexnet_float32)
    before = _model_state(model)
    for keep in ("all", "max", 5, [1, 2]):
        deconvnet.reconstruct(model, _image(63, 63, dtype=torch.float32), 5, keep=keep, rule=rule)
    after = _model_state(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]
    assert all(before[2]), "torchvision's ReLUs stay inplace=True"


def test_a_stage1_seed_reconstructs_its_filter_on_the_receptive_field(alexnet_float64):
    """AlexNet stage 1 is conv1 -> relu -> pool: a kept unit of value a at channel c projects to
    a * W[c] placed on the 11x11 window of the conv unit its switch points at."""
    model = alexnet_float64
    x = _image(99, 99, seed=4)
    channel = 17
    conv = model.features[0]
    a_conv = torch.relu(nn.functional.conv2d(x, conv.weight, conv.bias, 4, 2))
    pooled, switches = nn.functional.max_pool2d(a_conv, 3, 2, return_indices=True)
    flat = int(pooled[0, channel].flatten().argmax())
    value = pooled[0, channel].flatten()[flat]
    sy, sx = divmod(int(switches[0, channel].flatten()[flat]), a_conv.shape[-1])
    want = torch.zeros_like(x)
    top, left = sy * 4 - 2, sx * 4 - 2
    patch = value * conv.weight[channel]  # [3, 11, 11], unflipped
    y0, x0 = max(top, 0), max(left, 0)
    want[0, :, y0 : top + 11, x0 : left + 11] = patch[:, y0 - top :, x0 - left :]
    got = deconvnet.reconstruct(model, x, 1, keep=channel)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", ["deconvnet", "backprop", "guided"])
def test_every_nonzero_pixel_lies_in_the_seed_units_receptive_field(model64, rule):
    size = 64 if type(model64).__name__ == "VGG" else 95
    x = _image(size, size, seed=5)
    for stage in (1, 2, 3):
        rf = deconvnet.receptive_field(model64, stage)
        mirror = deconvnet.Mirror(model64, stage, rule)
        record = mirror.record(x)
        seeds = select_seeds(record.output, list(range(6)))
        recon = mirror.project(record, seeds)
        for k in range(len(seeds)):
            top, left, bottom, right = rf.box(int(seeds.y[k]), int(seeds.x[k]))
            inside = torch.zeros(size, size, dtype=torch.bool)
            inside[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
            assert recon[k].abs().amax(0)[~inside].max() == 0
            assert recon[k].abs().amax(0)[inside].max() > 0


def test_receptive_field_crops_equal_the_full_frame(vgg_float64):
    x = _image(70, 53, seed=6)
    mirror = deconvnet.Mirror(vgg_float64, 3)
    record = mirror.record(x)
    from deconvnet.core.seeds import select_seeds

    seeds = select_seeds(record.output, [0, 9, 40])
    full = mirror.project(record, seeds, frame="image")
    crops = mirror.project(record, seeds, frame="receptive_field")
    rf = deconvnet.receptive_field(vgg_float64, 3)
    assert crops.shape == (3, 3, rf.size[0], rf.size[1])
    top, left = mirror.receptive_field_origin(seeds)
    for k in range(3):
        padded = torch.nn.functional.pad(full[k], (rf.size[1],) * 2 + (rf.size[0],) * 2)
        t, l = int(top[k]) + rf.size[0], int(left[k]) + rf.size[1]
        assert torch.equal(crops[k], padded[:, t : t + rf.size[0], l : l + rf.size[1]])


@pytest.mark.parametrize("rule", ["deconvnet", "backprop", "guided"])
@pytest.mark.parametrize("keep", ["all", "max", 4])
def test_projection_is_positively_homogeneous_in_the_seed(vgg_float64, keep, rule):
    """Scaling the kept activations by k > 0 scales the reconstruction by k."""
    mirror = deconvnet.Mirror(vgg_float64, 4, rule)
    record = mirror.record(_image(40, 40, seed=7))

    def project():
        if keep == "all":
            return mirror.project_map(record)
        return mirror.project(record, select_seeds(record.stage_output(4), keep))

    base = project()
    record.outputs[4] = record.outputs[4] * 3.5  # same switches and masks, seeds scaled by 3.5
    assert base.abs().max() > 0
    torch.testing.assert_close(project(), 3.5 * base, rtol=1e-12, atol=1e-12)


def test_float32_input_on_a_float32_model_matches_float64(vgg_float32, vgg_float64):
    x = _image(32, 32, dtype=torch.float32)
    out = deconvnet.reconstruct(vgg_float32, x, 5, keep="max")
    assert out.dtype == torch.float32 and out.shape == x.shape
    # the same seeded weights in float64: the same seed unit, values to float32 precision
    want = deconvnet.reconstruct(vgg_float64, x.double(), 5, keep="max")
    assert want.abs().max() > 0
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


# ---------------------------------------------------------------- bad input, named clearly


@pytest.mark.parametrize("stage", [0, 6, -1, 2.0, True, None])
def test_stage_outside_1_to_5(alexnet_float32, stage):
    with pytest.raises(ValueError, match=r"stage: expected an int in 1\.\.5"):
        deconvnet.reconstruct(alexnet_float32, _image(63, 63, dtype=torch.float32), stage)


@pytest.mark.parametrize("stage", ["3", "pool9", "features.99"])
def test_stage_string_not_in_the_graph_is_named(alexnet_float32, stage):
    with pytest.raises(ValueError, match=rf"stage: '{stage}' is neither a stage name nor a module path"):
        deconvnet.reconstruct(alexnet_float32, _image(63, 63, dtype=torch.float32), stage)


@pytest.mark.parametrize(
    "keep,message",
    [
        (64, r"keep: channel 64 is outside this layer's channels 0\.\.63"),
        (-1, r"keep: channel -1 is outside this layer's channels 0\.\.63"),
        ([3, 99], r"keep: channel\(s\) \[99\] outside this layer's channels 0\.\.63"),
        ([], r"keep: expected 'all', 'max', a channel int in 0\.\.63"),
        ("top", r"keep: expected 'all', 'max', a channel int in 0\.\.63"),
        (1.5, r"keep: expected 'all', 'max'"),
        (True, r"keep: expected 'all', 'max'"),
    ],
)
def test_bad_keep(alexnet_float32, keep, message):
    with pytest.raises(ValueError, match=message):
        deconvnet.reconstruct(alexnet_float32, _image(63, 63, dtype=torch.float32), 1, keep=keep)


def test_channel_list_needs_one_image(alexnet_float32):
    x = _image(63, 63, batch=2, dtype=torch.float32)
    with pytest.raises(
        ValueError,
        match=r"keep: a sequence of channels needs exactly one image "
        r"\(B == 1\), got B == 2",
    ):
        deconvnet.reconstruct(alexnet_float32, x, 1, keep=[1, 2])


def test_unknown_rule(alexnet_float32):
    with pytest.raises(
        ValueError,
        match=r"rule: expected one of deconvnet, backprop, guided, "
        r"got 'gradient'",
    ):
        deconvnet.reconstruct(alexnet_float32, _image(63, 63, dtype=torch.float32), 1, rule="gradient")


def test_unsupported_model_names_its_first_unsupported_node():
    from torchvision.models import efficientnet_b0

    with pytest.raises(ValueError, match=r"model: features\.0\.2 \(SiLU\) has no deconvnet mirror"):
        deconvnet.reconstruct(efficientnet_b0(), _image(64, 64, dtype=torch.float32), 1)


@pytest.mark.parametrize("path", ["avgpool", "fc"])
def test_a_module_path_after_the_global_pooling_is_not_a_feature_map(path):
    from torchvision.models import resnet18

    with pytest.raises(ValueError, match=rf"stage: '{path}' is not a feature map"):
        deconvnet.reconstruct(resnet18().eval(), _image(64, 64, dtype=torch.float32), path)


def test_not_a_module_is_named():
    with pytest.raises(ValueError, match=r"model: expected a torch\.nn\.Module, got str"):
        deconvnet.reconstruct("resnet18", _image(64, 64, dtype=torch.float32), 1)


@pytest.mark.parametrize(
    "images,message",
    [
        ([[1.0]], r"images: expected a float tensor \[B, 3, H, W\], got list"),
        (torch.zeros(3, 64, 64), r"images: expected shape \[B, 3, H, W\] .*got \[3, 64, 64\]"),
        (torch.zeros(1, 1, 64, 64), r"images: expected shape \[B, 3, H, W\] .*got \[1, 1, 64, 64\]"),
        (torch.zeros(0, 3, 64, 64), r"images: the batch is empty"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), r"images: expected a floating-point tensor"),
        (torch.full((1, 3, 64, 64), float("nan")), r"images: contains 12288 NaN or infinite"),
        (
            torch.zeros(1, 3, 64, 64).index_fill_(3, torch.tensor([5]), float("inf")),
            r"images: contains 192 NaN or infinite",
        ),
        (
            torch.zeros(1, 3, 62, 100),
            r"images: 62x100 is smaller than AlexNet accepts; height and "
            r"width must be at least 63",
        ),
    ],
)
def test_bad_images(alexnet_float32, images, message):
    with pytest.raises(ValueError, match=message):
        deconvnet.reconstruct(alexnet_float32, images, 1)


def test_vgg_minimum_size(vgg_float32):
    assert deconvnet.min_input_size(vgg_float32) == 32
    with pytest.raises(ValueError, match="at least 32"):
        deconvnet.reconstruct(vgg_float32, torch.zeros(1, 3, 31, 40), 1)
    assert deconvnet.reconstruct(vgg_float32, torch.zeros(1, 3, 32, 33), 5).shape == (1, 3, 32, 33)


def test_vgg_at_its_minimum_size_equals_the_hook_reference(vgg_float64):
    x = _image(32, 33, seed=11)
    for channel in (0, 7):
        got = deconvnet.reconstruct(vgg_float64, x, 5, keep=channel)
        want = _hooked_reference(vgg_float64, x, 5, channel, "deconvnet")
        assert got.shape == (1, 3, 32, 33) and want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg19"])
def test_the_rest_of_the_vgg_family_is_supported_and_exact(name):
    model = deconvnet.load_model(name, weights="random", seed=1).double()
    assert [s.name for s in deconvnet.stages(model)] == [f"pool{i}" for i in range(1, 6)]
    x = _image(45, 61, seed=12)
    for stage in (2, 5):
        with torch.no_grad():
            a = model.features[: stage_of(model, stage).index + 1](x.clone())
        live = a[0].flatten(1).amax(1).topk(2).indices.tolist()
        many = deconvnet.reconstruct(model, x, stage, keep=live, rule="deconvnet")
        for row, channel in zip(many, live):
            want = _hooked_reference(model, x, stage, channel, "deconvnet")
            assert want.abs().max() > 0
            torch.testing.assert_close(row[None], want, rtol=1e-10, atol=1e-12)
    # the rest of the pipeline takes it too: preprocessing, images, the scan (against the stage's
    # own output of the same [1, 3, H, W] pass: values and first-maximum positions bit for bit)
    assert deconvnet.load_image("coffee", model).shape == (1, 3, 224, 224)
    model, x = model.float(), x.float()
    top = deconvnet.scan_topk(model, [x], k=1, stages=(2, 5), progress=False)
    for stage in (2, 5):
        with torch.no_grad():
            out = model.features[: stage_of(model, stage).index + 1](x)[0]  # [C, h, w]
        a, width = out.flatten(1).numpy(), out.shape[2]
        first = a.argmax(axis=1)  # numpy: the first maximum in row-major order
        assert top[stage].values.shape == (stage_of(model, stage).channels, 1)
        assert np.array_equal(top[stage].values[:, 0].numpy(), a[np.arange(a.shape[0]), first])
        assert np.array_equal((top[stage].y * width + top[stage].x)[:, 0].numpy(), first)
        assert not top[stage].image.any()


# docs/stages.md, "VGG11, VGG13, VGG19": receptive fields of pool1..pool5 (px)
VGG_FIELDS = {"vgg11": [4, 10, 30, 70, 150], "vgg13": [6, 16, 36, 76, 156], "vgg19": [6, 16, 52, 124, 268]}


@pytest.mark.parametrize("name", sorted(VGG_FIELDS))
def test_the_rest_of_the_vgg_family_receptive_fields_against_autograd(name):
    """The documented fields, and each stage's field against autograd: in a copy with equal
    positive weights, no biases and average pools of the max pools' geometry, every path from a
    pixel to a unit has positive weight, so d unit / d pixel > 0 exactly on the unit's field
    clipped to the image. Two units per stage: the first (its field starts outside the image)
    and the last (its field starts inside); 160 px holds both ends of VGG19's 268 px pool5 field."""
    model = deconvnet.load_model(name, weights="random", seed=1)
    fields = [deconvnet.receptive_field(model, s) for s in range(1, 6)]
    assert [(f.size, f.jump) for f in fields] == [
        ((n, n), (2**s, 2**s)) for s, n in enumerate(VGG_FIELDS[name], start=1)
    ]
    positive = copy.deepcopy(model.features)
    for i, m in enumerate(positive):
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MaxPool2d):
            positive[i] = nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode)
    size = 160
    x = torch.ones(2, 3, size, size, requires_grad=True)
    outputs, a = {}, x
    for i, m in enumerate(positive):
        a = m(a)
        outputs[i] = a
    for s, field in enumerate(fields, start=1):
        out = outputs[stage_of(model, s).index]
        last = (out.shape[2] - 1, out.shape[3] - 1)
        unit = out[0, :, 0, 0].sum() + out[1, :, last[0], last[1]].sum()  # image 0: first, 1: last
        grad = torch.autograd.grad(unit, x, retain_graph=True)[0]
        for b, (y, xx) in enumerate([(0, 0), last]):
            top, left, bottom, right = field.box(y, xx)
            want = torch.zeros(size, size, dtype=torch.bool)
            want[max(top, 0) : min(bottom, size), max(left, 0) : min(right, size)] = True
            assert torch.equal(grad[b].abs().sum(0) > 0, want), (name, s, (y, xx))


@pytest.mark.parametrize("name", ["vgg11_bn", "vgg16_bn"])
def test_batch_normalised_vggs_keep_the_paper_layers(name):
    import torchvision.models as tvm

    model = getattr(tvm, name)().eval()
    assert [(s.name, s.path) for s in deconvnet.stages(model)][0] == (
        "pool1",
        "features.6" if name == "vgg16_bn" else "features.3",
    )
    out = deconvnet.reconstruct(model, _image(64, 64, dtype=torch.float32), "pool2", keep="max")
    assert out.shape == (1, 3, 64, 64) and bool(out.abs().sum() > 0)


def _meta_alexnet():
    from torchvision.models import alexnet

    with torch.device("meta"):
        return alexnet().eval()


@pytest.mark.parametrize(
    "entry",
    ["reconstruct", "attribute", "occlusion", "scan_topk", "Mirror", "deep_dream", "visualize_filters"],
)
def test_a_model_on_the_meta_device_is_a_clear_error(entry):
    model, x = _meta_alexnet(), _image(64, 64, dtype=torch.float32)
    calls = {
        "reconstruct": lambda: deconvnet.reconstruct(model, x, 1),
        "attribute": lambda: deconvnet.attribute(model, x, target=[1]),
        "occlusion": lambda: deconvnet.occlusion(model, x),
        "scan_topk": lambda: deconvnet.scan_topk(model, [x], k=1, progress=False),
        "Mirror": lambda: deconvnet.Mirror(model, 1),
        "deep_dream": lambda: deconvnet.deep_dream(model, x, 1, steps=1),
        "visualize_filters": lambda: deconvnet.visualize_filters(model, 1, [0], steps=1),
    }
    with pytest.raises(ValueError, match=r"model: its (parameters|weights) are on the meta device"):
        calls[entry]()


@pytest.mark.parametrize(
    "entry", ["reconstruct", "attribute", "occlusion", "scan_topk", "to_pil", "denormalize"]
)
def test_images_on_the_meta_device_are_a_clear_error(alexnet_float32, entry):
    x = torch.empty(1, 3, 64, 64, device="meta")
    m = alexnet_float32
    calls = {
        "reconstruct": lambda: deconvnet.reconstruct(m, x, 1),
        "attribute": lambda: deconvnet.attribute(m, x, target=[1]),
        "occlusion": lambda: deconvnet.occlusion(m, x),
        "scan_topk": lambda: deconvnet.scan_topk(m, [x], k=1, progress=False),
        "to_pil": lambda: deconvnet.to_pil(x),
        "denormalize": lambda: deconvnet.denormalize(x, m),
    }
    with pytest.raises(ValueError, match=r"(images|x|batch 0): .*meta device"):
        calls[entry]()


def test_a_record_of_a_higher_stage_serves_the_lower_mirrors(alexnet_float64):
    x = _image(90, 90, seed=8)
    top = deconvnet.Mirror(alexnet_float64, 5, "guided").record(x)
    for stage in (1, 2, 3, 4):
        mirror = deconvnet.Mirror(alexnet_float64, stage, "guided")
        own = mirror.record(x)
        torch.testing.assert_close(top.stage_output(stage), own.output, rtol=0, atol=0)
        seeds = select_seeds(own.output, [0, 4])
        assert torch.equal(mirror.project(top, seeds), mirror.project(own, seeds))
    with pytest.raises(ValueError, match=r"covers stages \[1, 2\], not 3"):
        deconvnet.Mirror(alexnet_float64, 3).project_map(deconvnet.Mirror(alexnet_float64, 2).record(x))


def test_runs_in_deterministic_mode_and_repeats_bit_for_bit(alexnet_float32):
    """Unpooling by scatter-add (overlapping AlexNet pooling) works where nn.MaxUnpool2d refuses."""
    x = _image(70, 70, seed=9, dtype=torch.float32)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = deconvnet.reconstruct(alexnet_float32, x, 5, keep=[0, 1, 2])
        again = deconvnet.reconstruct(alexnet_float32, x, 5, keep=[0, 1, 2])
    finally:
        torch.use_deterministic_algorithms(before)
    assert torch.equal(first, again) and first.abs().max() > 0
