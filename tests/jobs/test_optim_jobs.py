"""The optimisation family's experiments (`deconvnet.jobs`: filters, class_model, deep_dream,
invert, fooling): their files, values recomputed independently with the library, determinism,
resuming an interrupted job, bad values, redrawing, and the Hydra entry points.

Offline and fast: AlexNet with random weights, 64-80 px images, 2-3 steps. The subprocess tests
are marked slow.
"""

from __future__ import annotations

import copy
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import FIXED_PROVENANCE, photo_input, png_pixels, run_experiment, tiny_picture, without_seconds
from hydra import compose, initialize_config_dir

import deconvnet
import deconvnet.jobs.request
from deconvnet.data.paths import CONF_DIR
from deconvnet.jobs import class_model as class_model_job
from deconvnet.jobs import deep_dream as dream_job
from deconvnet.jobs import filters as filters_job
from deconvnet.jobs import fooling as fooling_job
from deconvnet.jobs import invert as invert_job
from deconvnet.jobs import job as job_module
from deconvnet.jobs.folder import LOCK_FILE
from deconvnet.jobs.provenance import PROVENANCE_ENV
from deconvnet.jobs.saliency import RANDOM_CLASSIFIER_NOTE
from deconvnet.optim import Jitter, Pad

MODEL = {"model": "alexnet", "weights": "random", "seed": 0, "progress": False}
EXPERIMENTS = ("filters", "class_model", "deep_dream", "invert", "fooling")


def _settings(picture: Path) -> dict[str, tuple]:
    """Each experiment's run function and its tiny settings (each job has >= 2 cells)."""
    return {
        "filters": (
            filters_job.run_filters,
            {"stages": [1, 5], "channels": [0, 2, 5], "size": 64, "steps": 3, "opt_seed": 1},
        ),
        "class_model": (
            class_model_job.run_class_model,
            {"classes": [1, "tabby"], "size": 64, "steps": 3, "blur": 1.0, "weight": 0.05},
        ),
        "deep_dream": (
            dream_job.run_deep_dream,
            {"images": ["cat", str(picture)], "stage": 3, "octaves": 2, "size": 80, "steps": 2, "jitter": 4},
        ),
        "invert": (
            invert_job.run_invert,
            {"image": "coffee", "stages": [2, 5, "fc6"], "size": 64, "steps": 3},
        ),
        "fooling": (
            fooling_job.run_fooling,
            {"images": ["cat", str(picture)], "target": 368, "size": 64, "steps": 3, "amplify": 20.0},
        ),
    }


def _stage_output(model, x: torch.Tensor, stage: int) -> torch.Tensor:
    with torch.no_grad():
        return model.features[: deconvnet.stage(model, stage).index + 1](x)


def _median(values: list[float]) -> float:
    """The middle value of an odd count, the mean of the middle two of an even count."""
    s = sorted(values)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every experiment once on its tiny settings, with a fixed provenance record."""
    root = tmp_path_factory.mktemp("optim")
    picture = tiny_picture(root / "in")
    done = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PROVENANCE_ENV, json.dumps(FIXED_PROVENANCE))
        for name, (run, kwargs) in _settings(picture).items():
            done[name] = (root / name, run(root / name, **MODEL, **kwargs))
    return done, picture


# ------------------------------------------------------------------------------------- configs


def test_default_configs_compose():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfgs = {n: compose(n, return_hydra_config=True) for n in EXPERIMENTS}
        other = compose("invert", overrides=["stages=[3,fc6]", "image=coffee"])
    for name, cfg in cfgs.items():
        assert cfg.model.name == "vgg16" and cfg.hydra.job.chdir is False, name
        assert cfg.seed == 0 and cfg.device == "cpu", name
    f = cfgs["filters"]
    assert (list(f.stages), f.channels, f.size, f.steps, f.lr, f.param) == (
        [1, 2, 3, 4, 5],
        16,
        96,
        32,
        0.05,
        "pixels",
    )
    c = cfgs["class_model"]
    assert (list(c.classes), c.regularizer, c.blur) == ([543, 968, 251, 945], "l2", 0.0)
    d = cfgs["deep_dream"]
    assert (list(d.images), d.stage, d.channel, d.octaves, d.scale, d.jitter) == (
        ["cat"],
        4,
        None,
        4,
        1.4,
        32,
    )
    fool = cfgs["fooling"]
    assert fool.target == 368 and fool.confidence == 0.99
    assert (fool.step, fool.lr, fool.max_change) == ("sign", None, 8 / 255)
    assert list(other.stages) == [3, "fc6"] and other.image == "coffee"
    names = deconvnet.class_names("vgg16")
    assert [names[c] for c in c.classes] == ["dumbbell", "cup", "dalmatian", "bell pepper"]


# ----------------------------------------------------------------------------------- the files


EXPECTED_FILES = {
    "filters": [
        "stage1__plain.png",
        "stage1__regularized.png",
        "stage5__plain.png",
        "stage5__regularized.png",
    ],
    "class_model": ["class1.png", "class281.png"],
    "deep_dream": ["cat__input.png", "cat__dream.png", "tiny_pic__input.png", "tiny_pic__dream.png"],
    "invert": ["input.png", "from_stage2.png", "from_stage5.png", "from_fc6.png"],
    "fooling": [
        f"{label}__{kind}.png" for label in ("cat", "tiny_pic") for kind in ("input", "fooling", "difference")
    ],
}
EXPECTED_ARRAYS = {
    "filters": {f"stage{s}__{v}": (3, 3, 64, 64) for s in (1, 5) for v in ("plain", "regularized")},
    "class_model": {"class1": (1, 3, 64, 64), "class281": (1, 3, 64, 64)},
    "deep_dream": {"cat": (1, 3, 80, 80), "cat__input": (1, 3, 80, 80), "tiny_pic": (1, 3, 80, 80)},
    "invert": {"stage2": (1, 3, 64, 64), "fc6": (1, 3, 64, 64), "input": (1, 3, 64, 64)},
    "fooling": {"cat": (1, 3, 64, 64), "tiny_pic__input": (1, 3, 64, 64)},
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_file_is_written(runs, name):
    (out, result), _ = runs[0][name], runs[1]
    files = {p.name for p in out.iterdir()}
    assert {
        "grid.png",
        "images.npz",
        "result.json",
        "config.yaml",
        LOCK_FILE,  # the job folder's lock (released, kept as a file)
        *EXPECTED_FILES[name],
    } == files  # no partial/ left behind
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    assert result["experiment"] == name and result["model"] == "alexnet"
    assert result["weights"]["weights"] == "random" and result["random_weights"] is True
    assert result["weights_label"] == deconvnet.weights_label(result["weights"])
    assert result["provenance"] == {**FIXED_PROVENANCE, "command": sys.argv}
    assert result["config"] == yaml.safe_load((out / "config.yaml").read_text())
    assert result["config"]["model"] == {"name": "alexnet", "weights": "random", "seed": 0}
    for cell in result["cells"]:  # each cell's Optimized.settings (deep_dream's: its last
        assert cell["seconds"] >= 0  # octave's, whose seed is seed + octave index)
        if name != "deep_dream":
            assert cell["settings"]["seed"] == result["config"]["seed"]
            assert cell["settings"]["steps"] == result["config"]["steps"]
    with np.load(out / "images.npz") as arrays:
        for key, shape in EXPECTED_ARRAYS[name].items():
            assert arrays[key].shape == shape and arrays[key].dtype == np.float32, key
        for cell in result["cells"]:
            history = arrays[f"{cell['key']}__history"]
            assert history.shape[1] == arrays[cell["key"]].shape[0]
    grid = png_pixels(out / "grid.png")
    assert grid.shape[0] > 200 and grid.shape[1] >= 600


# --------------------------------------------------------------- values, recomputed independently


def test_filters_equal_an_independent_run(runs, alexnet_random):
    out, result = runs[0]["filters"]
    assert [(c["stage"], c["variant"]) for c in result["cells"]] == [
        (1, "plain"),
        (1, "regularized"),
        (5, "plain"),
        (5, "regularized"),
    ]
    photos = torch.cat([photo_input(n, alexnet_random, 64) for n in deconvnet.sample_names()])
    with np.load(out / "images.npz") as arrays:
        for cell in result["cells"]:
            stage, channels = cell["stage"], [0, 2, 5]
            options = (
                {"regularizers": "none", "transforms": []}
                if cell["variant"] == "plain"
                else {"regularizers": "yosinski", "transforms": [Pad(4), Jitter(4)]}
            )
            want = deconvnet.visualize_filters(
                alexnet_random, stage, channels, size=64, steps=3, seed=1, **options
            )
            got = arrays[cell["key"]]
            np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)
            # excitation: the channel's mean on the image vs over the sample photos
            own = _stage_output(alexnet_random, torch.from_numpy(got), stage).mean(dim=(2, 3))
            own = own[torch.arange(3), channels].double()
            on_photos = _stage_output(alexnet_random, photos, stage).mean(dim=(2, 3))[:, channels]
            e = cell["excitation"]
            np.testing.assert_allclose(e["image"], own.numpy(), rtol=1e-4)
            np.testing.assert_allclose(e["photos_mean"], on_photos.mean(0).numpy(), rtol=1e-4)
            np.testing.assert_allclose(e["photos_max"], on_photos.amax(0).numpy(), rtol=1e-4)
            ratio = own / on_photos.mean(0).double()
            np.testing.assert_allclose(e["ratio"], ratio.numpy(), rtol=1e-4)
            assert e["median_ratio"] == pytest.approx(_median(ratio.tolist()), rel=1e-4)
            assert e["above_photos_max"] == int((own > on_photos.amax(0)).sum())
    assert result["settings"]["channels"] == {"1": [0, 2, 5], "5": [0, 2, 5]}
    assert "pad 4 + jitter 4 px" in result["settings"]["variants"]["regularized"]
    regularized = result["cells"][1]["settings"]
    assert regularized["transforms"] == [repr(Pad(4)), repr(Jitter(4))]
    assert "Decay(rate=0.0001)" in regularized["regularizers"]
    assert result["cells"][0]["settings"]["regularizers"] == []


def test_excitation_median_of_an_even_count_is_the_mean_of_the_middle_two(alexnet_random):
    """The job above asks for 3 channels (an odd count); 4 here: the median is the mean of the two
    middle ratios, not either of them (torch.median would give the lower one)."""
    channels = [0, 2, 5, 7]
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    photos = 0.1 + torch.rand(5, 64, generator=torch.Generator().manual_seed(4))  # [P, C] means
    e = filters_job.excitation(alexnet_random, 1, channels, images, photos)
    own = _stage_output(alexnet_random, images, 1).mean(dim=(2, 3))[torch.arange(4), channels].double()
    ratio = (own / photos[:, channels].mean(dim=0).double()).tolist()
    middle = sorted(ratio)[1:3]
    assert e["median_ratio"] == pytest.approx(sum(middle) / 2, rel=1e-4)
    assert all(abs(e["median_ratio"] - m) > 1e-3 * abs(m) for m in middle)  # neither middle value


def test_filters_mosaic_is_the_keras_layout_of_the_deprocessed_images(runs, alexnet_random):
    out, _ = runs[0]["filters"]
    with np.load(out / "images.npz") as arrays:
        images = torch.from_numpy(arrays["stage5__plain"])
    prep = deconvnet.preprocessing(alexnet_random)
    mean, std = torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1)
    c = images.double() * std + mean
    shown = (
        (c - c.mean(dim=(1, 2, 3), keepdim=True))
        / (c.std(dim=(1, 2, 3), correction=0, keepdim=True) + 1e-5)
        * 0.15
        + 0.5
    ).clamp(0, 1)
    mosaic = png_pixels(out / "stage5__plain.png").astype(np.int16)
    assert mosaic.shape == (2 * 64 + 2, 2 * 64 + 2, 3)  # 2 x 2 tiles for 3 images, 2-px gaps
    for k, (top, left) in enumerate([(0, 0), (0, 66), (66, 0)]):
        want = np.rint(shown[k].permute(1, 2, 0).numpy() * 255)
        assert np.abs(mosaic[top : top + 64, left : left + 64] - want).max() <= 1
    assert (mosaic[64:66] == 0).all() and (mosaic[66:, 66:] == 0).all()  # black gaps, empty cell


def test_class_models_equal_an_independent_run(runs, alexnet_random):
    out, result = runs[0]["class_model"]
    names = deconvnet.class_names("alexnet")
    assert [c["class"] for c in result["cells"]] == [1, 281]
    with np.load(out / "images.npz") as arrays:
        for cell in result["cells"]:
            c = cell["class"]
            want = deconvnet.class_model(
                alexnet_random, [c], size=64, steps=3, weight=0.05, blur_sigma=1.0, blur_every=4, seed=0
            )
            got = torch.from_numpy(arrays[f"class{c}"])
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)
            with torch.no_grad():
                p = torch.softmax(alexnet_random(got).double(), dim=1)[0]
            assert cell["class_name"] == names[c]
            assert cell["probability"] == pytest.approx(float(p[c]), rel=1e-4)
            assert cell["top_class"] == int(p.argmax())
            title = result["sheets"][0]["rows"][0]["tiles"][result["cells"].index(cell)]["title"]
            assert f"{c} {names[c]}" in title and f"p(own class) = {float(p[c]):.3g}" in title
    assert result["settings"]["regularizer"] == "l2" and result["settings"]["blur"] == 1.0
    assert "Blur(sigma=1.0, every=4)" in result["cells"][0]["settings"]["regularizers"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_dtype_float64_runs_the_model_and_the_image_in_float64(runs, name, tmp_path, alexnet_random):
    """`dtype=float64` (what the committed optimisation figures use): every forward pass of the
    job sees float64 weights and input, and the cells say so; the images equal the library's
    on a float64 copy of the model, made here."""
    run, kwargs = _settings(runs[1])[name]
    seen: set[tuple[torch.dtype, torch.dtype]] = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Conv2d):
            seen.add((module.weight.dtype, args[0].dtype))

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = run(tmp_path / name, **MODEL, **kwargs, dtype="float64")
    finally:
        hook.remove()
    assert seen == {(torch.float64, torch.float64)}
    assert {cell["settings"]["dtype"] for cell in result["cells"]} == {"float64"}
    assert yaml.safe_load((tmp_path / name / "config.yaml").read_text())["dtype"] == "float64"
    if name == "class_model":
        want = deconvnet.class_model(
            copy.deepcopy(alexnet_random).double(),
            [1],
            size=64,
            steps=3,
            weight=0.05,
            blur_sigma=1.0,
            blur_every=4,
        )
        with np.load(tmp_path / name / "images.npz") as arrays:
            assert np.array_equal(arrays["class1"], want.float().numpy())


def test_deep_dream_equals_an_independent_run(runs, alexnet_random):
    (out, result), picture = runs[0]["deep_dream"], runs[1]
    with np.load(out / "images.npz") as arrays:
        for cell, source in zip(result["cells"], ["cat", str(picture)]):
            x = photo_input(source, alexnet_random, 80)
            want = deconvnet.deep_dream(
                alexnet_random, x, 3, None, octaves=2, scale=1.4, jitter=4, steps=2, step_size=1.5, seed=0
            )
            got = torch.from_numpy(arrays[cell["key"]])
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)
            np.testing.assert_array_equal(arrays[f"{cell['key']}__input"], x.numpy())
            for image, key in ((x, "energy_before"), (got, "energy_after")):
                energy = 0.5 * float(_stage_output(alexnet_random, image, 3).double().pow(2).sum())
                assert cell[key] == pytest.approx(energy, rel=1e-4)
            assert cell["energy_ratio"] == pytest.approx(cell["energy_after"] / cell["energy_before"])
    assert result["cells"][1]["kind"] == "file" and result["cells"][1]["image"] == "tiny_pic"
    titles = [t["title"] for row in result["sheets"][0]["rows"] for t in row["tiles"]]
    assert titles[0] == f"input\nenergy {result['cells'][0]['energy_before']:.4g}"


def test_inversions_equal_an_independent_run(runs, alexnet_random):
    out, result = runs[0]["invert"]
    x = photo_input("coffee", alexnet_random, 64)
    with np.load(out / "images.npz") as arrays:
        np.testing.assert_array_equal(arrays["input"], x.numpy())
        for cell, stage in zip(result["cells"], [2, 5, "fc6"]):
            made = deconvnet.invert(alexnet_random, x, stage, steps=3, seed=0, details=True)
            got = torch.from_numpy(arrays[cell["key"]])
            np.testing.assert_allclose(got.numpy(), made.images.numpy(), rtol=0, atol=1e-5)
            assert cell["stage"] == stage
            assert cell["feature_error"] == pytest.approx(made.report["feature_error"], rel=1e-4)
            net = alexnet_random
            if stage == "fc6":  # avgpool, flatten, then Dropout (eval: identity), Linear, ReLU

                def phi(z):
                    with torch.no_grad():
                        return net.classifier[:3](torch.flatten(net.avgpool(net.features(z)), 1))
            else:

                def phi(z):
                    return _stage_output(alexnet_random, z, stage)

            a, a0 = phi(got).double(), phi(x).double()
            error = float((a - a0).pow(2).sum() / a0.pow(2).sum())
            assert cell["feature_error"] == pytest.approx(error, rel=1e-3)
    titles = [t["title"] for t in result["sheets"][0]["rows"][0]["tiles"]]
    error = result["cells"][1]["feature_error"]
    assert titles[2] == f"from stage 5 (pool5)\nfeature error {error:.3g}"
    assert titles[3].startswith("from fc6\nfeature error")


def test_fooling_equals_an_independent_run(runs, alexnet_random):
    (out, result), picture = runs[0]["fooling"], runs[1]
    prep = deconvnet.preprocessing(alexnet_random)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    with np.load(out / "images.npz") as arrays:
        for cell, source in zip(result["cells"], ["cat", str(picture)]):
            x = photo_input(source, alexnet_random, 64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                made = deconvnet.fooling_image(alexnet_random, x, 368, steps=3, seed=0, details=True)
            got = torch.from_numpy(arrays[cell["key"]])
            np.testing.assert_allclose(got.numpy(), made.images.numpy(), rtol=0, atol=1e-5)
            with torch.no_grad():
                before = torch.softmax(alexnet_random(x).double(), 1)[0, 368]
                after = torch.softmax(alexnet_random(got).double(), 1)[0, 368]
            r = cell["report"]
            assert r["probability_before"] == pytest.approx(float(before), rel=1e-4)
            assert r["probability_after"] == pytest.approx(float(after), rel=1e-4)
            delta = (got - x) * std
            assert r["linf_colour"] == pytest.approx(float(delta.abs().max()), rel=1e-4)
            assert r["l2_colour"] == pytest.approx(float(delta.norm()), rel=1e-4)
            # the difference panel: 0.5 + amplify * difference in colour units
            want = np.rint((0.5 + 20.0 * delta).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255)
            diff = png_pixels(out / cell["difference_file"]).astype(np.int16)
            assert np.abs(diff - want).max() <= 1
            assert cell["reached"] is False and r["reached"] is False
    assert result["all_reached"] is False
    tiles = result["sheets"][0]["rows"][0]["tiles"]
    assert "NOT REACHED 0.99" in tiles[1]["title"] and tiles[1]["alarm"] is True
    assert "difference x20" in tiles[2]["title"]
    assert result["display"]["difference"].startswith("0.5 + 20 * (fooling - image)")


def test_fooling_that_reaches_its_confidence(tmp_path):
    result = fooling_job.run_fooling(
        tmp_path, **MODEL, images="cat", target=368, size=64, steps=3, confidence=0.0009
    )
    (cell,) = result["cells"]
    assert cell["reached"] is True and cell["report"]["steps_taken"] == 0
    assert result["all_reached"] is True
    assert "NOT REACHED" not in result["sheets"][0]["rows"][0]["tiles"][1]["title"]


def test_a_random_classifier_is_named_as_such(runs):
    done, _ = runs
    for name in EXPERIMENTS:
        result = done[name][1]
        assert result["random_classifier"] is True
        title = result["sheets"][0]["title"]
        assert "RANDOM WEIGHTS — NOT PRETRAINED (SEED 0)" in title
        assert result["sheets"][0]["alarm"] is True
        if name in ("class_model", "fooling"):  # their values are class scores
            assert result["classifier_note"] == RANDOM_CLASSIFIER_NOTE
            assert RANDOM_CLASSIFIER_NOTE.upper() in title
        else:
            assert result["classifier_note"] is None and "CLASSIFIER" not in title
    assert job_module.classifier_note({"weights": "hed"}) == RANDOM_CLASSIFIER_NOTE
    assert job_module.classifier_note({"weights": "imagenet"}) is None


# ------------------------------------------- class models and fooling on any supported model

GRAPH_MODEL = {"model": "resnet18", "weights": "random", "seed": 0, "progress": False}


def test_class_model_job_on_a_graph_model_with_classes_together(tmp_path):
    """resnet18 (random): a class and a group of classes together, each image equal to the
    library's, its record's probabilities, logits and ranks from the model's own forward."""
    result = class_model_job.run_class_model(
        tmp_path, **GRAPH_MODEL, classes=[1, ["tabby", "goldfish"]], size=64, steps=2
    )
    assert {"class1.png", "class281+1.png", "grid.png"} <= {p.name for p in tmp_path.iterdir()}
    assert result["settings"]["classes"] == [1, [281, 1]] == result["config"]["classes"]
    assert result["classifier_note"] == RANDOM_CLASSIFIER_NOTE  # random weights: random classifier
    net = deconvnet.load_model("resnet18", weights="random", seed=0)
    names = deconvnet.class_names("resnet18")
    with np.load(tmp_path / "images.npz") as arrays:
        for cell, item, group in zip(result["cells"], [1, (281, 1)], [[1], [281, 1]]):
            want = deconvnet.class_model(net, [item], size=64, steps=2)
            got = torch.from_numpy(arrays[cell["key"]])
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)
            with torch.no_grad():
                logits = net(got).double()[0]
            p = torch.softmax(logits, dim=0)
            order = logits.argsort(descending=True).tolist()
            assert cell["classes"] == group
            np.testing.assert_allclose(cell["probabilities"], p[group].numpy(), rtol=1e-4, atol=1e-9)
            np.testing.assert_allclose(cell["logits"], logits[group].numpy(), rtol=1e-4, atol=1e-6)
            assert cell["ranks"] == [order.index(c) + 1 for c in group]
            assert cell["top_class"] == order[0]
    group_cell = result["cells"][1]
    assert group_cell["class"] == [281, 1] and group_cell["class_name"] == "tabby + goldfish"
    title = result["sheets"][0]["rows"][0]["tiles"][1]["title"]
    assert title.startswith("281 + 1 together\ntabby + goldfish\np = ") and names[281] == "tabby"


def test_fooling_job_on_a_graph_model_keeps_its_budget(tmp_path):
    """resnet18 (random): the sign rule by default, each colour value within 8/255."""
    result = fooling_job.run_fooling(tmp_path, **GRAPH_MODEL, images="cat", target=368, size=64, steps=12)
    s = result["settings"]
    assert (s["step"], s["lr"], s["max_change"]) == ("sign", 1 / 255, 8 / 255)
    net = deconvnet.load_model("resnet18", weights="random", seed=0)
    std = torch.tensor(deconvnet.preprocessing(net).std).view(1, 3, 1, 1)
    x = photo_input("cat", net, 64)
    (cell,) = result["cells"]
    with np.load(tmp_path / "images.npz") as arrays:
        got = torch.from_numpy(arrays["cat"])
    change = float(((got - x) * std).abs().max())
    assert change <= 8 / 255 + 1e-6 and change > 7 / 255  # 12 steps of 1/255 reach the budget
    assert cell["report"]["linf_colour"] == pytest.approx(change, rel=1e-4)
    assert "sign-gradient steps of 1/255" in result["sheets"][0]["title"]
    assert "within 8/255 of the image's" in result["sheets"][0]["title"]


def test_jobs_on_the_real_classifier_have_no_random_note(tmp_path):
    """EfficientNet-Lite0 with its ImageNet weights: no "random classifier" note; the cat is
    fooled into a gibbon at 0.99 within 8/255 (the model's own forward)."""
    real = {"model": "efficientnet_lite0", "weights": "imagenet", "seed": 0, "progress": False}
    fooled = fooling_job.run_fooling(tmp_path / "fool", **real, images="cat", target=368)
    made = class_model_job.run_class_model(tmp_path / "class", **real, classes=[281], size=64, steps=2)
    net = deconvnet.load_model("efficientnet_lite0", weights="imagenet")
    x = photo_input("cat", net, 224)
    with np.load(tmp_path / "fool" / "images.npz") as arrays:
        got = torch.from_numpy(arrays["cat"])
    with torch.no_grad():
        p = torch.softmax(net(got).double(), dim=1)[0, 368]
    assert float(p) >= 0.99 and fooled["all_reached"] is True
    assert float(((got - x) * 128 / 255).abs().max()) <= 8 / 255 + 1e-6  # Lite0: std 128/255
    for result in (fooled, made):
        assert result["random_classifier"] is False and result["classifier_note"] is None
        assert "CLASSIFIER" not in result["sheets"][0]["title"] and result["weights"]["weights"] == "imagenet"
    tile = made["sheets"][0]["rows"][0]["tiles"][0]
    assert "random classifier" not in tile["title"] and tile["alarm"] is False


# ------------------------------------------------------- determinism, resuming, redrawing


def _compare_folders(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name == "result.json":
            ra, rb = (json.loads((f / name).read_text()) for f in (a, b))
            assert without_seconds(ra) == without_seconds(rb)
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


LIBRARY_CALLS = {
    "filters": ("deconvnet.jobs.filters", "visualize_filters"),
    "class_model": ("deconvnet.jobs.class_model", "class_model"),
    "deep_dream": ("deconvnet.jobs.deep_dream", "deep_dream"),
    "invert": ("deconvnet.jobs.invert", "invert"),
    "fooling": ("deconvnet.jobs.fooling", "fooling_image"),
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_same_bytes_after_an_interruption_and_the_sheet_redraws(runs, name, tmp_path, monkeypatch):
    """Cells are checkpointed as they finish; a rerun with the same config computes only the
    missing ones. Every cell is computed again here (the first by the interrupted run, the rest
    by the resumed one) and every file has the same bytes as the uninterrupted run's: the same
    inputs give the same bytes, interrupted or not. The sheet redraws from the files alone."""
    (whole, _), picture = runs[0][name], runs[1]
    monkeypatch.setenv(PROVENANCE_ENV, json.dumps(FIXED_PROVENANCE))
    run, kwargs = _settings(picture)[name]
    module, function = LIBRARY_CALLS[name]
    real = getattr(sys.modules[module], function)
    calls, stop = [], [2]

    def failing_second(*args, **options):
        calls.append(1)
        if len(calls) == stop[0]:
            raise KeyboardInterrupt  # the user stops the job during its second cell
        return real(*args, **options)

    monkeypatch.setattr(sys.modules[module], function, failing_second)
    job = tmp_path / "job"
    with pytest.raises(KeyboardInterrupt):
        run(job, **MODEL, **kwargs)
    assert len(list((job / "partial").glob("*.npz"))) == 1 and not (job / "result.json").exists()
    calls.clear()
    stop[0] = 0
    run(job, **MODEL, **kwargs)
    cells = len(json.loads((whole / "result.json").read_text())["cells"])
    assert len(calls) == cells - 1  # only the missing cells were computed again
    assert not (job / "partial").exists()
    _compare_folders(whole, job)
    grid = (job / "grid.png").read_bytes()
    (job / "grid.png").unlink()
    assert job_module.render_synthesis(job) == [job / "grid.png"]
    assert (job / "grid.png").read_bytes() == grid


def test_a_different_config_in_the_same_folder_starts_afresh(tmp_path, monkeypatch):
    kwargs = {"image": "cat", "stages": [2, 5], "size": 64, "steps": 2}
    invert_job.run_invert(tmp_path, **MODEL, **kwargs)
    calls = []
    real = invert_job.invert

    def counted(*args, **options):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **options)

    monkeypatch.setattr(invert_job, "invert", counted)
    with pytest.raises(KeyboardInterrupt):
        invert_job.run_invert(tmp_path, **MODEL, **(kwargs | {"steps": 3}))
    calls.clear()
    monkeypatch.setattr(invert_job, "invert", real)
    invert_job.run_invert(tmp_path, **MODEL, **kwargs)  # the steps=3 checkpoint is not reused
    result = json.loads((tmp_path / "result.json").read_text())
    assert [c["settings"]["steps"] for c in result["cells"]] == [2, 2]


def test_render_refuses_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="job_dir: .*result.json does not exist"):
        job_module.render_synthesis(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"experiment": "saliency"}))
    with pytest.raises(ValueError, match="names experiment 'saliency'"):
        job_module.render_synthesis(tmp_path)


# ------------------------------------------------------------------------------------ bad values


BAD_VALUES = [
    ("filters", {"stages": [6]}, ValueError, r"stages: expected a stage 1\.\.5 .* got 6"),
    ("filters", {"stages": []}, ValueError, r"stages: expected a stage 1\.\.5"),
    ("filters", {"stages": [2, 2]}, ValueError, r"stages: each stage once"),
    ("filters", {"stages": ["fc6"]}, ValueError, r"stages: expected a stage 1\.\.5"),
    ("filters", {"channels": 0}, ValueError, r"channels: expected an int >= 1, got 0"),
    ("filters", {"channels": 65}, ValueError, r"channels: expected a count in 1\.\.64"),
    ("filters", {"channels": [0, 64]}, ValueError, r"channels: 64 is outside stage 1's channels"),
    ("filters", {"channels": [3, 3]}, ValueError, r"channels: each channel once"),
    ("filters", {"channels": "many"}, ValueError, r"channels: expected a count >= 1 or a"),
    ("filters", {"size": 62}, ValueError, r"size: expected an int >= 63"),
    ("filters", {"size": "big"}, ValueError, r"size: expected an int >= 63"),
    ("filters", {"steps": 0}, ValueError, r"steps: expected an int >= 1, got 0"),
    ("filters", {"lr": 0}, ValueError, r"lr: expected a finite number > 0, got 0"),
    ("filters", {"lr": "fast"}, ValueError, r"lr: expected a finite number"),
    ("filters", {"param": "cppn"}, ValueError, r"param: expected one of pixels, fourier"),
    ("filters", {"opt_seed": -1}, ValueError, r"seed: expected an int >= 0"),
    ("filters", {"device": "tpu"}, ValueError, r"device: expected 'cpu', 'cuda'"),
    ("filters", {"model": "resnet18", "channels": 65}, ValueError, r"channels: expected a count in 1\.\.64"),
    ("filters", {"weights": "hed"}, ValueError, r"weights: 'hed' holds VGG16 convolutions only"),
    ("filters", {"weights": "/no/such/ckpt.pth"}, FileNotFoundError, r"weights: checkpoint file"),
    ("filters", {"seed": -3}, ValueError, r"seed: expected an int in \[0, 2\*\*64\)"),
    ("class_model", {"classes": 1000}, ValueError, r"classes: expected a class int in 0\.\.999"),
    ("class_model", {"classes": ["no such thing"]}, ValueError, r"classes: expected a class int"),
    ("class_model", {"classes": []}, ValueError, r"classes: expected a class int"),
    ("class_model", {"classes": [1, "goldfish"]}, ValueError, r"classes: each class once"),
    ("class_model", {"regularizer": "l3"}, ValueError, r"regularizer: expected one of l2, l1"),
    ("class_model", {"weight": -1}, ValueError, r"weight: expected a finite number >= 0"),
    ("class_model", {"blur": -1.0}, ValueError, r"blur: expected a finite number >= 0"),
    ("class_model", {"size": 40}, ValueError, r"size: expected an int >= 63"),
    ("class_model", {"classes": [[1, 1]]}, ValueError, r"classes: each class once, got \[1, 1\]"),
    ("class_model", {"classes": [[]]}, ValueError, r"classes: a group of classes together needs at least"),
    (
        "class_model",
        {"classes": [1, [1]]},
        ValueError,
        r"classes: each class once, and each group of classes once",
    ),
    (
        "class_model",
        {"classes": [[1, 2], [2, 1]]},
        ValueError,
        r"classes: each class once, and each group of classes once",
    ),
    ("class_model", {"classes": [[1, [2]]]}, ValueError, r"classes: expected a class int in 0\.\.999"),
    ("deep_dream", {"images": []}, ValueError, r"images: expected a sample name or image path"),
    ("deep_dream", {"images": "no_such_sample"}, FileNotFoundError, r"image: .*not a bundled"),
    ("deep_dream", {"images": ["cat", "cat"]}, ValueError, r"images: each image needs its own"),
    ("deep_dream", {"stage": 0}, ValueError, r"stage: expected a stage 1\.\.5 or its name, .*got 0"),
    ("deep_dream", {"stage": "fc"}, ValueError, r"stage: 'fc' is neither a stage nor a module path"),
    ("deep_dream", {"channel": 384}, ValueError, r"channel: expected null .* 0\.\.383"),
    ("deep_dream", {"octaves": 0}, ValueError, r"octaves: expected an int >= 1"),
    ("deep_dream", {"octaves": 9}, ValueError, r"octaves: 9 octaves of scale 1\.4 shrink"),
    ("deep_dream", {"scale": 1.0}, ValueError, r"scale: expected an octave scale > 1"),
    ("deep_dream", {"jitter": -1}, ValueError, r"jitter: expected an int >= 0"),
    ("deep_dream", {"step_size": 0}, ValueError, r"step_size: expected a finite number > 0"),
    ("invert", {"image": ["cat", "coffee"]}, ValueError, r"image: expected a sample name or"),
    ("invert", {"stages": ["fc8"]}, ValueError, r"stages: 'fc8' is neither a stage nor a module path"),
    ("invert", {"tv_weight": -1}, ValueError, r"tv_weight: expected a finite number >= 0"),
    ("invert", {"size": 62}, ValueError, r"size: expected an int >= 63"),
    ("fooling", {"target": 1000}, ValueError, r"target: expected a class int in 0\.\.999"),
    ("fooling", {"target": [1, 2]}, ValueError, r"target: expected a class int"),
    ("fooling", {"target": None}, ValueError, r"target: expected a class int"),
    ("fooling", {"confidence": 1.0}, ValueError, r"confidence: expected a probability in"),
    ("fooling", {"amplify": 0}, ValueError, r"amplify: expected a finite number > 0"),
    ("fooling", {"steps": 2.5}, ValueError, r"steps: expected an int >= 1"),
    ("fooling", {"step": "fgsm"}, ValueError, r"step: expected one of sign, normalized, got 'fgsm'"),
    ("fooling", {"lr": 0}, ValueError, r"lr: expected a finite number > 0 or None"),
    ("fooling", {"max_change": 0}, ValueError, r"max_change: expected None \(no limit\) or a colour"),
    ("fooling", {"max_change": 1.5}, ValueError, r"max_change: expected None \(no limit\) or a colour"),
    ("fooling", {"model": "resnet18", "weights": "hed"}, ValueError, r"weights: 'hed' holds VGG16"),
    *(
        (name, {"dtype": bad}, ValueError, r"dtype: expected one of float32, float64, got " + shown)
        for name, bad, shown in (
            ("filters", "float16", "'float16'"),
            ("class_model", torch.float64, "torch.float64"),
            ("deep_dream", None, "None"),
            ("invert", "double", "'double'"),
            ("fooling", 64, "64"),
        )
    ),
]


@pytest.mark.parametrize("name, override, error, message", BAD_VALUES)
def test_bad_values_fail_before_the_model_is_built(
    runs, tmp_path, monkeypatch, name, override, error, message
):
    def no_heavy_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the values were checked")

    monkeypatch.setattr(deconvnet.jobs.request, "load_model", no_heavy_work)  # the loader
    monkeypatch.setattr(deconvnet, "load_model", no_heavy_work)
    run, kwargs = _settings(runs[1])[name]
    with pytest.raises(error, match=message):
        run(tmp_path / "out", **(MODEL | kwargs | override))
    assert not (tmp_path / "out").exists()


def test_names_and_counts_are_accepted(tmp_path, monkeypatch):
    """Class names in any case, a channel count, one stage as a bare int: parsed, not refused."""
    plan = class_model_job.validate_class_model(
        "alexnet", "random", 0, ["Tabby", 1], "l1", 0.1, 2, 0.05, 64, 0.0, 0, "cpu"
    )
    assert plan.classes == (281, 1)
    plan = filters_job.validate_filters("vgg16", "random", 0, 3, 4, 32, 2, 0.05, 0, "fourier", "cpu")
    assert plan.stages == (3,) and plan.channels == {3: [0, 1, 2, 3]}
    plan = invert_job.validate_invert("alexnet", "random", 0, "cat", "fc7", 2, 0.05, None, None, 0, 0, "cpu")
    assert plan.stages == ("fc7",) and plan.size == 224


# -------------------------------------------------------------------------------------- the CLI


CLI_TINY = {
    "filters": ["stages=[2]", "channels=2", "size=64", "steps=2"],
    "class_model": ["classes=[tabby]", "size=64", "steps=2"],
    "deep_dream": ["stage=2", "octaves=2", "size=64", "steps=2", "jitter=4"],
    "invert": ["stages=[2,fc7]", "size=64", "steps=2"],
    "fooling": ["size=64", "steps=2"],
}
CLI_BAD = {
    "filters": ("param=cppn", "error: param: expected one of pixels, fourier, got 'cppn'"),
    "class_model": ("regularizer=l3", "error: regularizer: expected one of l2, l1, none"),
    "deep_dream": ("stage=6", "error: stage: expected a stage 1..5 or its name"),
    "invert": ("stages=[fc9]", "error: stages: 'fc9' is neither a stage nor a module path"),
    "fooling": ("confidence=2", "error: confidence: expected a probability in (0, 1), got 2"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_cli_runs_and_a_bad_value_is_one_line(name, tmp_path):
    model = ["model=alexnet", "model.weights=random"]
    done = run_experiment(f"experiments.{name}", *model, *CLI_TINY[name], f"hydra.run.dir={tmp_path / 'job'}")
    assert done.returncode == 0, done.stderr[-3000:]
    job = tmp_path / "job"
    result = json.loads((job / "result.json").read_text())
    assert result["experiment"] == name and result["random_weights"] is True
    assert {"grid.png", "images.npz", "config.yaml", ".hydra"} <= {p.name for p in job.iterdir()}
    assert "weights: random initialisation" in (job / f"{name}.log").read_text()

    bad, message = CLI_BAD[name]
    done = run_experiment(f"experiments.{name}", *model, bad, f"hydra.run.dir={tmp_path / 'bad'}")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not list((tmp_path / "bad").glob("*.png"))
    assert not (tmp_path / "bad" / "config.yaml").exists()


@pytest.mark.slow
def test_cli_multirun_makes_a_folder_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_experiment(
        "experiments.invert",
        "-m",
        "model=alexnet",
        "model.weights=random",
        "size=64",
        "steps=2",
        "stages=[2],[5]",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2
    seen = []
    for job in jobs:
        result = json.loads((job / "result.json").read_text())
        seen += result["settings"]["stages"]
        assert yaml.safe_load((job / "config.yaml").read_text())["stages"] == result["settings"]["stages"]
        assert (job / ".hydra" / "config.yaml").is_file() and (job / "grid.png").is_file()
    assert sorted(seen) == [2, 5]
