"""Sanity checks (Adebayo et al. 2018): `deconvnet.analysis.sanity` and the `sanity` job.

The similarities against independent references (scipy's Spearman, hand-computed Pearson and
SSIM, skimage's HOG + numpy's corrcoef); the re-initialisation against torchvision's / PyTorch's
own initialisation code; every cascading and independent step against a model re-initialised by
hand; layers above the target leave the maps bitwise unchanged; the caller's model untouched;
bad inputs; the job's files; one Hydra run in a subprocess (slow).

Small and offline: AlexNet with seeded random weights at 64 px, SmoothGrad / IG with 1
sample / step; VGG16 only on the meta device (names, shapes).
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import torch
import yaml
from conftest import FIXED_PROVENANCE
from hydra import compose, initialize_config_dir
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import nn
from torchvision.models import alexnet, vgg16

import deconvnet
from deconvnet.analysis import randomize, sanity, similarity
from deconvnet.analysis.randomize import Randomized, layer_seed, learnable_layers
from deconvnet.analysis.sanity import sanity_check
from deconvnet.data.paths import CONF_DIR, REPO_ROOT
from deconvnet.gradient.methods import options_for
from deconvnet.jobs.folder import LOCK_FILE
from deconvnet.jobs.provenance import PROVENANCE_ENV
from deconvnet.jobs.sanity import run_sanity

SIX = ("gradient", "guided", "deconvnet", "smoothgrad_gradient", "gradcam", "integrated_gradients")
OPTIONS = {"samples": 1, "steps": 1, "cam_stage": 4, "noise_seed": 3}
STEPS = ["fc7", "conv5", "conv3"]


def _images(size: int = 64, count: int = 2) -> torch.Tensor:
    """Two sample photos in AlexNet's input space at size x size."""
    x = torch.cat([deconvnet.load_image(n, "alexnet") for n in ("cat", "coffee")[:count]])
    return torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


# torchvision's AlexNet by hand, bottom first: (the paper's name, module path); a layer's position
# (0 = the bottom) is its index here. Written out rather than read from `randomize`, so the tests
# that re-initialise "by hand" pin the mapping instead of repeating the library's.
ALEXNET_LAYERS = [
    ("conv1", "features.0"),
    ("conv2", "features.3"),
    ("conv3", "features.6"),
    ("conv4", "features.8"),
    ("conv5", "features.10"),
    ("fc6", "classifier.1"),
    ("fc7", "classifier.4"),
    ("fc8", "classifier.6"),
]
ALEXNET_PATH = dict(ALEXNET_LAYERS)
# VGG16's three layers the init test draws: (module path, position)
VGG16_LAYERS = {"conv1_1": ("features.0", 0), "conv5_3": ("features.28", 12), "fc8": ("classifier.6", 15)}


def _layer_seed(seed: int, position: int) -> int:
    """The per-layer seed as the module doc defines it: numpy's SeedSequence of [seed, position],
    its first 64-bit word cut to 63 bits."""
    word = np.random.SeedSequence([seed, position]).generate_state(1, np.uint64)[0]
    return int(word) & (2**63 - 1)


def _by_hand(model: nn.Module, names: list[str], seed: int, inplace: bool = False) -> nn.Module:
    """AlexNet (a copy, or `model` itself if inplace) with `names` re-initialised the way
    torchvision builds AlexNet (PyTorch's own reset_parameters) from the global RNG seeded per
    layer."""
    made = model if inplace else copy.deepcopy(model)
    for position, (name, path) in enumerate(ALEXNET_LAYERS):
        if name in names:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_layer_seed(seed, position))
                made.get_submodule(path).reset_parameters()
    return made


def _maps(model: nn.Module, x: torch.Tensor, targets, method: str) -> torch.Tensor:
    opts = options_for(method, {"samples": 1, "steps": 1, "stage": 4, "seed": 3})  # what it takes
    return torch.cat(
        [deconvnet.explain(model, x[b : b + 1], method, targets[b], **opts) for b in range(x.shape[0])]
    )


def _reference_similarities(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """The four similarities from scipy / skimage / numpy directly (module doc's choices)."""

    def reduce(r, absolute):
        r = r.double().numpy()
        r = np.abs(r) if absolute else r
        return r.sum(0) if r.ndim == 3 else r

    def norm(r):
        m = reduce(r, True)
        p = np.percentile(m, 99)
        return np.clip(m / p, 0, 1) if p > 0 else np.zeros_like(m)

    def corr(u, v):
        if np.ptp(u) == 0 or np.ptp(v) == 0:
            return float("nan")
        return float(np.corrcoef(u, v)[0, 1])

    def rho(u, v):
        u, v = u.ravel(), v.ravel()
        if np.ptp(u) == 0 or np.ptp(v) == 0:
            return float("nan")
        return float(scipy.stats.spearmanr(u, v)[0])

    na, nb = norm(a), norm(b)
    return [
        rho(reduce(a, True), reduce(b, True)),
        rho(reduce(a, False), reduce(b, False)),
        structural_similarity(na, nb, data_range=1.0),
        corr(hog(na), hog(nb)),
    ]


@pytest.fixture(scope="module")
def net(alexnet_random):
    """The session's random AlexNet (never changed by these tests: checked in one of them)."""
    return alexnet_random


@pytest.fixture(scope="module")
def checked(net):
    """One sanity check of two images, both modes, four steps, every map kept."""
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = sanity_check(
        net,
        _images(),
        SIX,
        deconvnet.Unit(5),
        layers=STEPS,
        seed=7,
        keep_maps=True,
        progress=False,
        **OPTIONS,
    )
    return result, before


# ----------------------------------------------------------------------------- similarities


def test_rankdata_and_spearman_equal_scipy_with_ties():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(similarity.rankdata(np.array([3.0, 1.0, 2.0, 2.0])), [4.0, 1.0, 2.5, 2.5])
    for _ in range(5):
        a = rng.integers(0, 6, (12, 9)).astype(float)  # many ties
        b = a + rng.integers(-2, 3, (12, 9))
        np.testing.assert_array_equal(similarity.rankdata(a), scipy.stats.rankdata(a.ravel()))
        assert similarity.spearman(a, b) == pytest.approx(
            scipy.stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12
        )
        c = rng.normal(size=(7, 5))
        assert similarity.spearman(c, -(c**3)) == pytest.approx(-1.0, abs=1e-12)
    assert math.isnan(similarity.spearman(np.ones(9), np.arange(9.0)))


def test_pearson_hand_case():
    # x - mean = (-1, 0, 1), y - mean = (-7/3, -1/3, 8/3): r = 5 / sqrt(2 * 114 / 9)
    assert similarity.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(228 / 9), abs=1e-12)


def test_ssim_of_identical_maps_is_one_and_a_hand_case():
    rng = np.random.default_rng(1)
    a = rng.random((20, 24))
    assert similarity.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    # a 7 x 7 map has one full 7 x 7 window: SSIM is the global formula (sample covariance)
    a, b = rng.random((7, 7)), rng.random((7, 7))
    n, c1, c2 = 49, 0.01**2, 0.03**2
    ma, mb = a.mean(), b.mean()
    va, vb = a.var() * n / (n - 1), b.var() * n / (n - 1)
    cov = ((a - ma) * (b - mb)).sum() / (n - 1)
    want = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    assert similarity.ssim(a, b) == pytest.approx(want, abs=1e-12)


def test_normalized_map_is_sum_of_magnitudes_over_its_99th_percentile():
    rng = np.random.default_rng(2)
    r = torch.from_numpy(rng.normal(size=(3, 16, 12)))
    m = np.abs(r.numpy()).sum(0)
    want = np.clip(m / np.percentile(m, 99), 0, 1)
    np.testing.assert_allclose(similarity.normalized(r), want, rtol=0, atol=1e-12)
    cam = torch.from_numpy(rng.random((16, 12)))  # a Grad-CAM map: its own magnitude
    np.testing.assert_allclose(
        similarity.normalized(cam),
        np.clip(cam.numpy() / np.percentile(cam.numpy(), 99), 0, 1),
        rtol=0,
        atol=1e-12,
    )
    assert not similarity.normalized(torch.zeros(3, 8, 8)).any()


def test_similarities_of_known_pairs():
    rng = np.random.default_rng(3)
    r = torch.from_numpy(rng.normal(size=(3, 40, 40)))
    np.testing.assert_allclose(similarity.similarities(r, 3 * r), [1, 1, 1, 1], atol=1e-12)
    flipped = similarity.similarities(r, -r)  # the same magnitudes, the opposite sign
    np.testing.assert_allclose(flipped, [1, -1, 1, 1], atol=1e-12)
    other = torch.from_numpy(rng.normal(size=(3, 40, 40)))
    np.testing.assert_allclose(
        similarity.similarities(r, other), _reference_similarities(r, other), atol=1e-10
    )
    zero = similarity.similarities(r, torch.zeros_like(r))  # a dead map: undefined correlations
    assert math.isnan(zero[0]) and math.isnan(zero[1]) and math.isnan(zero[3])
    with pytest.raises(ValueError, match="maps: shapes"):
        similarity.similarities(r, r[0])


# --------------------------------------------------------------------------- the layers, init


def test_layers_are_named_top_first():
    with torch.device("meta"):
        v, a = vgg16(), alexnet()
    names = randomize.layer_names(v)
    assert names == [
        "fc8",
        "fc7",
        "fc6",
        "conv5_3",
        "conv5_2",
        "conv5_1",
        "conv4_3",
        "conv4_2",
        "conv4_1",
        "conv3_3",
        "conv3_2",
        "conv3_1",
        "conv2_2",
        "conv2_1",
        "conv1_2",
        "conv1_1",
    ]
    layers = learnable_layers(v)
    assert [l.position for l in layers] == list(range(15, -1, -1))
    assert (layers[3].path, layers[0].path) == ("features.28", "classifier.6")
    assert randomize.layer_names(a) == ["fc8", "fc7", "fc6", "conv5", "conv4", "conv3", "conv2", "conv1"]
    assert randomize.layers_used(v, 3) == {
        "conv1_1",
        "conv1_2",
        "conv2_1",
        "conv2_2",
        "conv3_1",
        "conv3_2",
        "conv3_3",
    }
    assert randomize.layers_used(a, None) == set(randomize.layer_names(a))
    assert sanity.default_pass_layer(v) == "conv3_1" and sanity.default_pass_layer(a) == "conv3"
    steps = [l.name for l in randomize.randomized_at(layers, "cascading", layers[4])]
    assert steps == ["fc8", "fc7", "fc6", "conv5_3", "conv5_2"]
    assert [l.name for l in randomize.randomized_at(layers, "independent", layers[4])] == ["conv5_2"]
    with pytest.raises(ValueError, match="mode: expected one of cascading, independent"):
        randomize.randomized_at(layers, "downwards", layers[0])


def test_reinitialisation_is_torchvisions_own():
    seed = 11
    assert [layer_seed(seed, p) for p in (0, 12)] == [_layer_seed(seed, p) for p in (0, 12)]
    with torch.device("meta"):
        v = vgg16()
    layers = {l.name: l for l in learnable_layers(v)}
    for name in ("conv5_3", "conv1_1", "fc8"):  # torchvision's VGG.__init__ code, global RNG
        path, position = VGG16_LAYERS[name]
        assert (layers[name].path, layers[name].position) == (path, position)
        weight, bias = randomize.fresh_parameters(v, layers[name], seed)
        reference = torch.empty(weight.shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_layer_seed(seed, position))
            if name.startswith("conv"):
                nn.init.kaiming_normal_(reference, mode="fan_out", nonlinearity="relu")
                fan_out = weight.shape[0] * weight[0, 0].numel()
                assert float(weight.std()) == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
            else:
                nn.init.normal_(reference, 0, 0.01)
                assert float(weight.std()) == pytest.approx(0.01, rel=0.05)
        assert torch.equal(weight, reference) and not bias.any()
    with torch.device("meta"):
        a = alexnet()
    pinned = [(name, path, position) for position, (name, path) in enumerate(ALEXNET_LAYERS)][::-1]
    assert [(l.name, l.path, l.position) for l in learnable_layers(a)] == pinned
    for layer in learnable_layers(a)[::3]:  # AlexNet: PyTorch's reset_parameters
        weight, bias = randomize.fresh_parameters(a, layer, seed)
        position = [name for name, _ in ALEXNET_LAYERS].index(layer.name)
        module = copy.deepcopy(a.get_submodule(ALEXNET_PATH[layer.name])).to_empty(device="cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_layer_seed(seed, position))
            module.reset_parameters()
        assert torch.equal(weight, module.weight) and torch.equal(bias, module.bias)


def test_independent_randomisation_changes_only_its_layer_and_restores(net):
    work = Randomized(net, 5, torch.device("cpu"))
    original = net.state_dict()
    for name in ("conv3", "fc7"):
        state = work.with_random([name]).state_dict()
        layer = next(l for l in learnable_layers(net) if l.name == name)
        prefix = f"{layer.path}."
        changed = {k for k in original if not torch.equal(original[k], state[k])}
        assert changed == {prefix + "weight", prefix + "bias"}
    state = work.with_random([]).state_dict()
    assert all(torch.equal(original[k], state[k]) for k in original)


# ----------------------------------------------------------------------- against brute force


def _hand_models(net: nn.Module, steps: list, seed: int):
    """(step index, the model re-initialised by hand for it): cascading steps re-initialise
    their layers on one copy cumulatively (fc layers included); an independent step
    re-initialises its one layer, which is put back afterwards."""
    everything = [name for name, _ in ALEXNET_LAYERS][::-1]  # top first
    hand, done = copy.deepcopy(net), set()
    for s, step in enumerate(steps):
        if step.mode == "cascading":
            names = everything[: everything.index(step.layer) + 1]
            assert list(step.randomized) == names
            yield s, _by_hand(hand, [n for n in names if n not in done], seed, inplace=True)
            done.update(names)
            continue
        assert list(step.randomized) == [step.layer]
        module = hand.get_submodule(ALEXNET_PATH[step.layer])
        saved = copy.deepcopy(module.state_dict())
        yield s, _by_hand(hand, [step.layer], seed, inplace=True)
        module.load_state_dict(saved)


def test_every_step_equals_a_model_reinitialised_by_hand(net, checked):
    result, _ = checked
    x = _images()
    targets = [deconvnet.Unit(t["stage"], t["channel"], t["y"], t["x"]) for t in result.targets]
    plain = _maps(net, x, [deconvnet.Unit(5)] * 2, "gradient")
    torch.testing.assert_close(result.maps["original"]["gradient"], plain, rtol=0, atol=0)
    for mode in ("cascading", "independent"):
        steps = result.steps[mode]
        assert [step.layer for step in steps] == STEPS
        for s, hand in _hand_models(net, steps, 7):
            for m, method in enumerate(SIX):
                want = _maps(hand, x, targets, method)
                kept = result.maps[steps[s].key]
                got = result.maps["original"][method] if kept is None else kept[method]
                # the same arithmetic in the same shapes (one image per call, weights equal bit
                # for bit): equal bit for bit on every CPU
                assert torch.equal(got, want), (steps[s].key, method)
                for b in range(2):
                    reference = _reference_similarities(result.maps["original"][method][b], want[b])
                    np.testing.assert_allclose(
                        result.similarity[mode][s, m, b], reference, atol=1e-5, equal_nan=True
                    )


def test_layers_above_the_target_leave_every_map_bitwise_unchanged(net, checked):
    result, _ = checked
    for mode in ("cascading", "independent"):
        step = result.steps[mode][0]  # fc7: above a stage-5 unit
        assert step.layer == "fc7" and not step.affects_map and result.maps[step.key] is None
        assert (result.similarity[mode][0] == 1.0).all()
        assert all(s.affects_map for s in result.steps[mode][1:])
    x = _images(64, 1)
    hand = _by_hand(net, ["fc8", "fc7", "fc6", "conv5", "conv4"], 2)
    unit = deconvnet.Unit(3, 5, 1, 2)  # a stage-3 unit: conv4, conv5 and fc6-8 above it
    for method in ("deconvnet", "integrated_gradients", "gradcam"):
        opts = {"stage": 3} if method == "gradcam" else {}
        assert torch.equal(
            deconvnet.explain(net, x, method, unit, **opts), deconvnet.explain(hand, x, method, unit, **opts)
        )
    small = sanity_check(net, x, ["deconvnet"], unit, "cascading", ["conv4", "conv3"], seed=2, progress=False)
    assert [s.affects_map for s in small.steps["cascading"]] == [False, True]
    assert small.steps["cascading"][1].reinitialized == ("conv3",)
    assert (small.similarity["cascading"][0] == 1).all()
    assert (small.similarity["cascading"][1, :, :, 0] < 1).all()


def test_a_class_target_uses_every_layer(net):
    x = _images(64, 1)
    got = sanity_check(
        net, x, ["gradient"], None, "independent", ["fc8"], seed=4, keep_maps=True, progress=False
    )
    step = got.steps["independent"][0]
    assert step.affects_map and step.reinitialized == ("fc8",)
    predicted = int(net(x).argmax())
    assert got.targets[0]["kind"] == "class" and got.targets[0]["class"] == predicted
    want = deconvnet.explain(_by_hand(net, ["fc8"], 4), x, "gradient", predicted)
    assert torch.equal(got.maps[step.key]["gradient"], want)  # the same arithmetic, same shapes


def test_the_callers_model_is_unchanged_and_results_are_deterministic(net, checked):
    result, before = checked
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model = copy.deepcopy(net).train()  # a model in training mode, its flags recorded
    flags = [(type(m).__name__, getattr(m, "inplace", None), m.training) for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    again = sanity_check(
        model, _images(), SIX, deconvnet.Unit(5), layers=["conv3"], seed=7, progress=False, **OPTIONS
    )
    assert flags == [(type(m).__name__, getattr(m, "inplace", None), m.training) for m in model.modules()]
    assert grads == [p.requires_grad for p in model.parameters()]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules()
    )
    k = STEPS.index("conv3")
    for mode in result.similarity:  # same inputs and seeds: the same bytes
        assert result.similarity[mode][k].tobytes() == again.similarity[mode][0].tobytes()


def test_verdicts_follow_the_stated_rule(checked):
    result, _ = checked
    got = result.verdicts("conv3")
    values = result.similarity["cascading"][STEPS.index("conv3"), :, :, 0]
    for m, method in enumerate(SIX):
        mean = float(np.nanmean(values[m]))
        assert got[method]["value"] == pytest.approx(mean)
        assert got[method]["passes"] is (mean < 0.5)
    fake = {"cascading": np.full((1, 2, 2, 4), np.nan)}
    fake["cascading"][0, 0, :, 0] = [0.2, 0.6]
    step = sanity.Step("cascading", "conv3", ("conv3",), ("conv3",))
    out = sanity.verdicts(fake, {"cascading": [step]}, ["a", "b"], "conv3", 0.5)
    assert out["a"] == {"value": pytest.approx(0.4), "images_defined": 2, "passes": True}
    assert out["b"] == {"value": None, "images_defined": 0, "passes": None}
    with pytest.raises(ValueError, match="pass_layer"):
        result.verdicts("conv2")


# ------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"methods": ["gradient", "occlusion"]}, "methods: unknown method 'occlusion'"),
        ({"methods": []}, "methods: expected"),
        ({"layers": ["conv3_1"]}, "layers: unknown layer 'conv3_1'"),
        ({"layers": ["conv3", "conv3"]}, "layers: each layer once"),
        ({"modes": "both"}, "modes: mode: expected one of cascading, independent"),
        ({"modes": []}, "modes: expected"),
        ({"target": "cat"}, "target: expected"),
        ({"target": deconvnet.Unit(5, 9999)}, "target: channel 9999"),
        ({"target": deconvnet.Unit(3), "cam_stage": 4}, "cam_stage: Grad-CAM at stage 4"),
        ({"cam_stage": 0}, "cam_stage: expected an int in 1..5"),
        ({"seed": -1}, "seed: expected an int"),
        ({"samples": 0}, "samples: expected an int >= 1"),
        ({"noise_seed": 1.5}, "noise_seed: expected"),
        ({"device": "tpu"}, "device: expected"),
        ({"images": torch.zeros(1, 3, 20, 20)}, "images: 20x20 is smaller"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_them(net, kwargs, match):
    args = {"images": _images(64, 1), "methods": ["gradient", "gradcam"], "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        sanity_check(net, **args)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"model": "resnet99"}, ValueError, "model"),
        ({"unit": [7]}, ValueError, "unit: the stage must be an int in 1..5"),
        ({"unit": [4], "cam_stage": 5}, ValueError, "cam_stage: Grad-CAM at stage 5"),
        ({"layers": ["conv9"]}, ValueError, "layers: unknown layer 'conv9'"),
        ({"modes": ["sideways"]}, ValueError, "modes: mode: expected"),
        ({"pass_layer": "conv2", "layers": ["conv3"]}, ValueError, "pass_layer: expected null or"),
        ({"pass_layer": "conv3", "modes": "independent"}, ValueError, "pass_layer: the pass"),
        ({"pass_below": 2}, ValueError, "pass_below: expected a number in -1..1"),
        ({"size": 20}, ValueError, "size: expected an int >= "),
        ({"seed": -3}, ValueError, "seed: expected an int"),
        ({"rand_seed": "x"}, ValueError, r"seed: expected an int >= 0 \(the re-initialisation\), got 'x'"),
        ({"images": ["cat", "no_such_sample_xyz"]}, FileNotFoundError, "no_such_sample_xyz"),
    ],
)
def test_bad_job_values_stop_before_anything_is_written(tmp_path, kwargs, error, match):
    args = {"model": "alexnet", "weights": "random", "size": 64, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        run_sanity(tmp_path / "job", **args)
    assert not (tmp_path / "job").exists()


# ------------------------------------------------------------------------------------ the job


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("sanity") / "job"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PROVENANCE_ENV, json.dumps(FIXED_PROVENANCE))
        result = run_sanity(
            out,
            model="alexnet",
            weights="random",
            images=["cat", "coffee"],
            layers=STEPS,
            size=64,
            samples=1,
            steps=1,
            rand_seed=7,
            noise_seed=3,
            progress=False,
        )
    return out, result


def test_job_files_and_values(job, checked):
    out, result = job
    reference = checked[0]  # the library's check with the same settings
    assert {p.name for p in out.iterdir()} == {
        "config.yaml",
        LOCK_FILE,
        "result.json",
        "images.npz",
        "curves.png",
        "cascade_cat.png",
        "cascade_coffee.png",
    }
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    assert result["config"] == yaml.safe_load((out / "config.yaml").read_text())
    assert result["experiment"] == "sanity" and result["random_weights"] is True
    assert result["weights_label"] == deconvnet.weights_label(result["weights"])
    assert result["provenance"] == {**FIXED_PROVENANCE, "command": sys.argv}
    assert result["settings"]["pass_layer"] == "conv3" and "conv3" in result["pass_rule"]
    with np.load(out / "images.npz") as arrays:
        np.testing.assert_array_equal(arrays["inputs"], _images().numpy())
        for mode in ("cascading", "independent"):
            np.testing.assert_allclose(
                arrays[f"similarity__{mode}"], reference.similarity[mode], atol=1e-6, equal_nan=True
            )
            curve = reference.curve(mode, "spearman_abs")
            got = np.array(result["curves"][mode]["spearman_abs"][SIX[1]], dtype=float)
            np.testing.assert_allclose(got, curve[:, 1], atol=1e-6)
        assert arrays["cascading__conv3__maps"].shape == (6, 2, 64, 64)
        assert "cascading__fc7__maps" not in arrays and arrays["original__gradcam"].shape == (2, 64, 64)
    want = reference.verdicts("conv3")
    for method in SIX:
        assert result["verdicts"][method]["passes"] == want[method]["passes"]
        assert result["verdicts"][method]["value"] == pytest.approx(want[method]["value"], abs=1e-6)
    assert sorted(result["passing"] + result["failing"]) == sorted(
        m for m in SIX if want[m]["passes"] is not None
    )
    assert result["images"][0]["target"] == reference.targets[0]


def test_an_interrupted_job_resumes_with_the_same_result(job, tmp_path, monkeypatch):
    from deconvnet.jobs import sanity as jobs

    real, computed = jobs.step_cell, []

    def failing(randomized, plan, step, *args):
        if step.key == "independent__conv5":
            raise RuntimeError("interrupted")
        computed.append(step.key)
        return real(randomized, plan, step, *args)

    monkeypatch.setattr(jobs, "step_cell", failing)
    args = {
        "model": "alexnet",
        "weights": "random",
        "images": ["cat", "coffee"],
        "layers": STEPS,
        "size": 64,
        "samples": 1,
        "steps": 1,
        "rand_seed": 7,
        "noise_seed": 3,
        "progress": False,
    }
    with pytest.raises(RuntimeError, match="interrupted"):
        run_sanity(tmp_path / "job", **args)
    assert len(list((tmp_path / "job" / "partial").glob("*.npz"))) == 1 + 4  # original + 4 steps
    computed.clear()
    monkeypatch.setattr(jobs, "step_cell", lambda *a: computed.append(a[2].key) or real(*a))
    result = run_sanity(tmp_path / "job", **args)
    assert computed == ["independent__conv5", "independent__conv3"]
    assert not (tmp_path / "job" / "partial").exists()
    with np.load(tmp_path / "job" / "images.npz") as got, np.load(job[0] / "images.npz") as want:
        assert got.files == want.files
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert result["verdicts"] == job[1]["verdicts"]


def test_default_config_composes():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("sanity", return_hydra_config=True)
    assert cfg.model.name == "vgg16" and cfg.hydra.job.chdir is False
    assert list(cfg.methods) == list(SIX) and list(cfg.unit) == [5]
    assert list(cfg.modes) == ["cascading", "independent"] and cfg.layers is None
    assert (cfg.size, cfg.samples, cfg.steps, cfg.cam_stage, cfg.pass_below) == (128, 8, 8, None, 0.5)
    assert cfg.shown_layers is None


@pytest.mark.slow
def test_cli_runs_and_a_bad_value_is_one_line(tmp_path):
    def cli(*overrides):
        return subprocess.run(
            [sys.executable, "-m", "experiments.sanity", "model=alexnet", "model.weights=random", *overrides],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )

    done = cli(
        "images=cat",
        "size=64",
        "samples=2",
        "steps=2",
        "layers=[fc6,conv3,conv1]",
        f"hydra.run.dir={tmp_path / 'job'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    job = tmp_path / "job"
    result = json.loads((job / "result.json").read_text())
    assert result["steps"] == {
        "cascading": ["fc6", "conv3", "conv1"],
        "independent": ["fc6", "conv3", "conv1"],
    }
    assert result["settings"]["pass_layer"] == "conv3" and set(result["verdicts"]) == set(SIX)
    assert result["random_weights"] is True
    assert "weights: random" in (job / "sanity.log").read_text()
    assert {"curves.png", "cascade_cat.png", "images.npz", ".hydra"} <= {p.name for p in job.iterdir()}
    done = cli("modes=[down]", f"hydra.run.dir={tmp_path / 'bad'}")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: modes:"), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "bad" / "config.yaml").exists()
