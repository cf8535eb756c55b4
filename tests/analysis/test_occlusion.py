"""Occlusion sensitivity (Fig. 7): incremental inference against one full forward pass per
position, the projective-field rule against perturbation, positions, targets, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models import alexnet, vgg16

import deconvnet
from deconvnet.analysis.incremental import Windows, output_windows
from deconvnet.core.architecture import stage
from deconvnet.core.geometry import spans


def _model(factory, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = factory().eval()
    with torch.no_grad():  # torchvision zero-inits biases: give them values so they matter
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def vgg():
    return _model(vgg16)


@pytest.fixture(scope="module")
def alex():
    return _model(alexnet, 1)


def brute_force(model, x, patch, stride, fill, cls, channel):
    """Independent reference: every occluded image [1, 3, H, W] built by hand, all through
    torchvision's own forward (eval) in one batch -> (probability, feature, label) [ny, nx]."""
    h, w = x.shape[-2:]
    tops, lefts = range(0, h - patch + 1, stride), range(0, w - patch + 1, stride)
    occluded = []
    for top in tops:
        for left in lefts:
            y = x[0].clone()
            y[:, top : top + patch, left : left + patch] = fill
            occluded.append(y)
    batch = torch.stack(occluded)
    with torch.no_grad():
        p = model(batch).softmax(dim=1)
        feat = model.features[: stage(model, 5).index + 1](batch)[:, channel].sum(dim=(1, 2))
    shape = (len(tops), len(lefts))
    return p[:, cls].view(shape), feat.view(shape), p.argmax(dim=1).view(shape)


def assert_close_rel(got, want, rel=1e-4):
    scale = want.abs().max()
    assert float((got - want).abs().max()) <= rel * float(scale), (got, want)


CASES = [  # model fixture, image size (h, w), patch, stride, fill
    ("vgg", (64, 64), 16, 12, 0.0),
    ("vgg", (48, 70), 20, 9, 0.3),
    ("alex", (99, 99), 24, 10, 0.0),
    ("alex", (87, 110), 31, 13, -0.5),
]


@pytest.mark.parametrize(
    "name, size, patch, stride, fill, method",
    [*(case + ("incremental",) for case in CASES), CASES[0] + ("brute",), CASES[2] + ("brute",)],
)
def test_maps_equal_one_forward_pass_per_position(request, name, size, patch, stride, fill, method):
    model = request.getfixturevalue(name)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
    out = deconvnet.occlusion(model, x, patch=patch, stride=stride, fill=fill, method=method, batch_size=5)
    for b in range(2):
        with torch.no_grad():
            p0 = model(x[b : b + 1]).softmax(dim=1)[0]
            s5 = model.features[: stage(model, 5).index + 1](x[b : b + 1])[0]
        channel = int(s5.flatten(1).amax(dim=1).argmax())
        assert int(out.channel[b]) == channel
        assert int(out.target[b]) == int(p0.argmax())
        assert float(out.unoccluded_probability[b]) == pytest.approx(float(p0.max()), rel=1e-5)
        prob, feat, label = brute_force(model, x[b : b + 1], patch, stride, fill, int(p0.argmax()), channel)
        assert out.probability[b].shape == prob.shape
        assert_close_rel(out.probability[b], prob)
        assert_close_rel(out.feature[b], feat)
        assert torch.equal(out.label[b], label)


def test_positions_reach_the_last_corner_that_fits(vgg):
    x = torch.randn(1, 3, 50, 67)
    out = deconvnet.occlusion(vgg, x, patch=20, stride=15, method="brute")
    assert out.top.tolist() == [0, 15, 30]  # 50 - 20 = 30
    assert out.left.tolist() == [0, 15, 30, 45]  # 67 - 20 = 47: 45 is the last that fits
    assert out.probability.shape == (1, 3, 4)


def test_target_int_and_tensor(alex):
    x = torch.randn(2, 3, 80, 80, generator=torch.Generator().manual_seed(5))
    one = deconvnet.occlusion(alex, x, target=7, patch=30, stride=25)
    per = deconvnet.occlusion(alex, x, target=torch.tensor([7, 9]), patch=30, stride=25)
    assert one.target.tolist() == [7, 7] and per.target.tolist() == [7, 9]
    assert torch.equal(one.probability[0], per.probability[0])
    prob, _, _ = brute_force(alex, x[1:], 30, 25, 0.0, 9, int(per.channel[1]))
    assert_close_rel(per.probability[1], prob)


def test_batch_size_changes_the_maps_only_by_rounding(vgg):
    """Batches of 1 and 16 positions: other convolution shapes, which a CPU's kernels may sum in
    another order. float32 VGG16: 13 convolutions of up to 3 * 3 * 512 = 4608 products, each
    rounding ~sqrt(4608) * 2^-24 ~ 4e-6 of its terms' scale, ~1.5e-5 over the 13; bound 1e-4 of
    the map's largest value, as for the incremental method (measured: 1.8e-6 feature, 3.6e-7
    probability on AVX-512 kernels; 1.5e-6 / 2.7e-7 AVX2; 1.2e-6 / 2.7e-7 SSE4.1)."""
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    a = deconvnet.occlusion(vgg, x, patch=12, stride=12, batch_size=1)
    b = deconvnet.occlusion(vgg, x, patch=12, stride=12, batch_size=16)
    assert_close_rel(a.feature, b.feature, 1e-4)
    assert_close_rel(a.probability, b.probability, 1e-4)


def test_float64_model_is_exact_to_float64_rounding(alex):
    model = copy.deepcopy(alex).double()
    x = torch.randn(1, 3, 70, 70, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out = deconvnet.occlusion(model, x, patch=17, stride=9)
    prob, feat, _ = brute_force(model, x, 17, 9, 0.0, int(out.target[0]), int(out.channel[0]))
    assert_close_rel(out.probability[0], prob, 1e-10)
    assert_close_rel(out.feature[0], feat, 1e-10)


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation",
    [(3, 1, 1, 1), (11, 4, 2, 1), (3, 2, 0, 1), (5, 1, 2, 1), (3, 1, 2, 2), (2, 3, 0, 1)],
)
def test_projective_field_is_what_a_perturbation_changes(kernel, stride, padding, dilation):
    """Perturb inputs [a, b) of one conv (random weights): exactly the outputs in [lo, hi) change."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, (kernel, 1), (stride, 1), (padding, 0), (dilation, 1)).double()
    n = 40
    x = torch.randn(1, 1, n, 1, dtype=torch.float64)
    for a, b in [(0, 3), (5, 11), (17, 18), (35, 40), (0, 40)]:
        y = x.clone()
        y[:, :, a:b] += 1.0 + torch.rand(b - a, 1, dtype=torch.float64)
        changed = ((conv(y) - conv(x)).abs()[0, 0, :, 0] > 0).nonzero().flatten().tolist()
        w, _ = output_windows(
            Windows(torch.tensor([a]), torch.tensor([b]), torch.tensor([a]), b - a), spans(conv)[0], n
        )
        # [lo, hi) holds every changed output and is tight at both ends (with dilation, outputs
        # inside it can read around the change: computing them too is harmless)
        if not changed:  # no output reads the change (stride > kernel)
            assert int(w.lo[0]) == int(w.hi[0]), (a, b)
            continue
        assert set(changed) <= set(range(int(w.lo[0]), int(w.hi[0]))), (a, b)
        assert changed[0] == int(w.lo[0]) and changed[-1] == int(w.hi[0]) - 1, (a, b)
        if dilation == 1:
            assert changed == list(range(int(w.lo[0]), int(w.hi[0]))), (a, b)
        assert int(w.start[0]) <= int(w.lo[0]) and int(w.start[0]) + w.length >= int(w.hi[0])


def test_the_model_is_left_as_it_was(alex):
    model = copy.deepcopy(alex).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inplace = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    x = torch.randn(1, 3, 70, 70, generator=torch.Generator().manual_seed(1))
    out = deconvnet.occlusion(model, x, patch=20, stride=25)
    assert model.training and all(m.training for m in model.modules())
    assert [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)] == inplace
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    # in training mode Dropout is still the identity: the same maps as the eval model
    ref = deconvnet.occlusion(alex, x, patch=20, stride=25)
    assert torch.equal(out.probability, ref.probability)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patch": 65}, r"patch: expected an int side length in 1\.\.64"),
        ({"patch": 0}, r"patch: expected an int side length"),
        ({"patch": 2.5}, r"patch: expected an int"),
        ({"stride": 0}, r"stride: expected an int >= 1"),
        ({"stride": 1.5}, r"stride: expected an int >= 1"),
        ({"fill": float("nan")}, r"fill: expected a finite number"),
        ({"method": "fast"}, r"method: expected one of 'incremental', 'brute'"),
        ({"batch_size": 0}, r"batch_size"),
        ({"target": 1000}, r"target: class 1000 is outside 0\.\.999"),
        ({"target": [1, 2]}, r"target: expected None"),
        ({"target": torch.tensor([1.0])}, r"target: a tensor target must be a \[B\] integer"),
    ],
)
def test_bad_input_is_named(vgg, kwargs, match):
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match=match):
        deconvnet.occlusion(vgg, x, **kwargs)


def test_bad_images_and_unsupported_pooling(vgg):
    with pytest.raises(ValueError, match=r"images: expected shape \[B, 3, H, W\]"):
        deconvnet.occlusion(vgg, torch.randn(3, 64, 64))
    model = copy.deepcopy(vgg)
    model.features[4] = nn.MaxPool2d(2, 2, ceil_mode=True)
    with pytest.raises(ValueError, match=r"features\[4\].*ceil_mode=True.*method='brute'"):
        deconvnet.occlusion(model, torch.randn(1, 3, 64, 64))


def test_the_occlusion_job_runs_on_a_graph_model(tmp_path):
    """The job takes every supported model: ResNet-18 (random weights) at 64 px writes its figure,
    maps and result, the maps the same as `deconvnet.occlusion` on the job's own input."""
    import json

    import numpy as np

    from deconvnet.jobs.occlusion import run_occlusion

    data = {"kind": "samples", "photos": ["chelsea", "coffee"], "limit": 3}
    result = run_occlusion(
        tmp_path, model="resnet18", weights="random", images="cat", size=64, patch=24, stride=20,
        top_k=2, data=data, progress=False,
    )  # fmt: skip
    assert (tmp_path / "occlusion.png").is_file() and (tmp_path / "result.json").is_file()
    cell = json.loads((tmp_path / "result.json").read_text())["cells"][0]
    assert cell["top"] == cell["left"] == [0, 20, 40]
    assert result["cells"][0]["channel"] == cell["channel"]
    with np.load(tmp_path / "images.npz") as arrays:
        x = torch.from_numpy(arrays["cat__input"])
        probability = arrays["cat__probability"]
        projections = arrays["cat__projections"]
    model = deconvnet.load_model("resnet18", weights="random", seed=0)
    again = deconvnet.occlusion(model, x, patch=24, stride=20, method="brute")
    assert np.allclose(probability, again.probability.numpy(), rtol=1e-4, atol=1e-7)
    assert projections.shape == (3, 3, 64, 64)  # this image's projection and the scan's top 2
