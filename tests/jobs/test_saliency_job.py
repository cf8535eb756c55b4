"""`python -m experiments.saliency`: the plain run function (`deconvnet.jobs.saliency.run_saliency`),
its files, bad values, determinism, and the Hydra entry point.

Offline and fast: AlexNet with random weights, one bundled sample and one tiny image file (both
224x224 after the weights' preprocessing), a few methods, few SmoothGrad samples and IG steps.
The subprocess test is marked slow.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import FIXED_PROVENANCE, run_experiment, tiny_picture, without_seconds
from hydra import compose, initialize_config_dir
from PIL import Image

import deconvnet
import deconvnet.jobs.request
import deconvnet.jobs.saliency as sal
from deconvnet.data.paths import CONF_DIR
from deconvnet.figures.saliency import DISPLAYS
from deconvnet.gradient.methods import options_for
from deconvnet.jobs.provenance import PROVENANCE_ENV

METHODS = ["gradient", "smoothgrad_guided", "gradcam", "integrated_gradients"]
OPTIONS = {"samples": 3, "noise": 0.15, "steps": 6, "cam_stage": 5}
SMALL = {"model": "alexnet", "weights": "random", "seed": 0, "progress": False, **OPTIONS}


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """Predicted-class targets on two images (a sample and a file), four methods."""
    root = tmp_path_factory.mktemp("saliency")
    picture = tiny_picture(root / "in")
    out = root / "out"
    result = sal.run_saliency(out, images=["cat", str(picture)], methods=METHODS, **SMALL)
    return out, result, picture


# ------------------------------------------------------------------------------------------ config


def test_default_config_composes():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("saliency", return_hydra_config=True)
        other = compose(
            "saliency",
            overrides=["model=alexnet", "images=dog", "unit=[5,3]", "methods=[gradient,gradcam]", "target=7"],
        )
    assert cfg.model.name == "vgg16" and list(cfg.images) == list(sal.DEFAULT_IMAGES)
    assert cfg.methods is None and cfg.target is None and cfg.unit is None
    assert (cfg.samples, cfg.noise, cfg.steps, cfg.cam_stage, cfg.seed, cfg.device) == (
        50,
        0.15,
        50,
        5,
        0,
        "cpu",
    )
    assert cfg.hydra.job.chdir is False
    assert other.images == "dog" and list(other.methods) == ["gradient", "gradcam"]
    assert list(other.unit) == [5, 3] and other.target == 7 and other.model.name == "alexnet"
    assert set(DISPLAYS) == set(deconvnet.METHODS)


# ------------------------------------------------------------------------------------ run_saliency


def test_every_file_is_written(class_run):
    out, result, _ = class_run
    labels = ["cat", "tiny_pic"]
    expected = {"grid.png", "maps.npz", "result.json", "config.yaml"}
    expected |= {f"{label}__{m}.png" for label in labels for m in [*METHODS, "input"]}
    assert expected <= {p.name for p in out.iterdir()}
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == {"name": "alexnet", "weights": "random", "seed": 0}
    assert config["methods"] == METHODS and config["samples"] == 3
    with np.load(out / "maps.npz") as maps:
        assert sorted(maps.files) == sorted(f"{label}__{m}" for label in labels for m in METHODS)
        assert all(maps[k].dtype == np.float32 for k in maps.files)
        assert maps["cat__gradcam"].shape == (224, 224)
        assert maps["cat__gradient"].shape == (3, 224, 224)
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape[1] > grid.shape[0] > 300  # 2 rows x 5 columns
    for name in ("cat__gradient.png", "cat__gradcam.png", "tiny_pic__integrated_gradients.png"):
        assert Image.open(out / name).mode == "RGB" and Image.open(out / name).size == (224, 224)


def test_maps_equal_an_independent_explain(class_run, alexnet_random):
    out, result, picture = class_run
    options = {"samples": 3, "noise": 0.15, "steps": 6, "stage": 5, "seed": 0}
    with np.load(out / "maps.npz") as maps:
        for source, label, method in [
            ("cat", "cat", "smoothgrad_guided"),
            (str(picture), "tiny_pic", "integrated_gradients"),
            ("cat", "cat", "gradcam"),
        ]:
            x = deconvnet.load_image(source, alexnet_random)
            want = deconvnet.explain(alexnet_random, x, method, None, **options_for(method, options))[0]
            # the job explains one image per call, as here: the same arithmetic in the same
            # shapes, so the same float32 maps bit for bit on every CPU
            np.testing.assert_array_equal(maps[f"{label}__{method}"], want.numpy(), err_msg=method)
        # the grayscale saliency PNG is the map's display, computed here without the experiment
        g = torch.from_numpy(maps["cat__gradient"])
        gray = deconvnet.to_grayscale(deconvnet.saliency_map(g).unsqueeze(0))[0]
        want = np.rint(gray.numpy() * 255).astype(np.int16)
        got = np.asarray(Image.open(out / "cat__gradient.png")).astype(np.int16)
        assert np.abs(got[..., 0] - want).max() <= 1 and (got[..., 0] == got[..., 2]).all()


def test_result_json_records_what_was_done(class_run, alexnet_random):
    _, result, picture = class_run
    assert result["experiment"] == "saliency" and result["model"] == "alexnet"
    assert result["weights"]["weights"] == "random" and result["random_weights"] is True
    assert result["methods"] == METHODS and result["image_size"] == [224, 224]
    assert (
        result["options"].items()
        >= {"samples": 3, "noise": 0.15, "steps": 6, "cam_stage": 5, "seed": 0}.items()
    )
    assert result["provenance"]["versions"]["torch"] == torch.__version__
    images = result["images"]
    assert [e["label"] for e in images] == ["cat", "tiny_pic"]
    assert images[1]["kind"] == "file" and images[1]["path"] == str(picture.resolve())
    assert images[1]["original_size_wh"] == [40, 30]
    names = deconvnet.class_names("alexnet")
    for entry in images:  # the explained class is the prediction, asked of the model directly
        x = deconvnet.load_image(entry["source"], alexnet_random)
        with torch.no_grad():
            logits = alexnet_random(x)[0]
        c = int(logits.argmax())
        assert entry["explained"]["kind"] == "class" and entry["explained"]["class"] == c
        assert entry["explained"]["predicted"] is True
        assert entry["explained"]["class_name"] == names[c]
        assert entry["explained"]["score"] == pytest.approx(float(logits[c]), rel=1e-4)
        assert f"predicted class {c} ({names[c]})" in entry["explained_label"]
    cells = result["cells"]
    assert [(c["image"], c["method"]) for c in cells] == [
        (label, m) for label in ("cat", "tiny_pic") for m in METHODS
    ]
    for cell in cells:
        assert cell["key"] == f"{cell['image']}__{cell['method']}"
        assert cell["file"] == f"{cell['key']}.png"
        stats = cell["map"]
        assert stats["min"] <= stats["max"] and stats["l2_norm"] > 0 and cell["seconds"] >= 0
        assert (
            cell["target"]["class"]
            == next(e for e in images if e["label"] == cell["image"])["explained"]["class"]
        )
        assert ("completeness" in cell) == (cell["method"] == "integrated_gradients")
    for cell in (c for c in cells if c["method"] == "integrated_gradients"):
        check = cell["completeness"]
        assert check["map_sum"] == pytest.approx(cell["map"]["sum"])
        assert check["score_difference"] == pytest.approx(check["score_input"] - check["score_baseline"])
        x = deconvnet.load_image("cat" if cell["image"] == "cat" else str(picture), alexnet_random)
        c = cell["target"]["class"]
        with torch.no_grad():
            base = float(alexnet_random(torch.zeros_like(x))[0, c])
        assert check["score_baseline"] == pytest.approx(base, rel=1e-4, abs=1e-6)


def test_a_random_classifier_is_named_as_such(class_run):
    out, result, _ = class_run
    assert result["random_classifier"] is True
    assert result["target"]["kind"] == "class" and result["target"]["class"] is None
    assert result["target"]["warning"] == "class scores of a RANDOM classifier: not meaningful"
    title = result["grid"]["title"]
    assert deconvnet.weights_label(result["weights"]).upper() in title
    assert "CLASS SCORES OF A RANDOM CLASSIFIER: NOT MEANINGFUL" in title
    assert sal.classifier_is_random({"weights": "hed"}) is True
    assert sal.classifier_is_random({"weights": "imagenet"}) is False
    assert sal.classifier_is_random({"weights": "checkpoint"}) is None


def test_unit_target(tmp_path, alexnet_random):
    result = sal.run_saliency(
        tmp_path, images="cat", methods=["guided", "gradcam"], unit=[5], **(SMALL | {"cam_stage": 4})
    )
    (entry,) = result["images"]
    unit = entry["explained"]
    with torch.no_grad():  # the stage's strongest unit, found here without the experiment
        x = deconvnet.load_image("cat", alexnet_random)
        a = alexnet_random.features[: deconvnet.stage(alexnet_random, 5).index + 1](x)[0]
    c, y, xx = np.unravel_index(int(a.argmax()), tuple(a.shape))
    assert (unit["kind"], unit["stage"], unit["channel"], unit["y"], unit["x"]) == ("unit", 5, c, y, xx)
    assert unit["activation"] == pytest.approx(float(a.max()), rel=1e-5)
    assert entry["explained_label"] == f"stage 5 ch {c} ({y}, {xx})"
    assert result["target"]["warning"] is None and result["target"]["unit"] == [5]
    assert "RANDOM CLASSIFIER" not in result["grid"]["title"]
    with np.load(tmp_path / "maps.npz") as maps:
        want = deconvnet.explain(alexnet_random, x, "guided", deconvnet.Unit(5))[0]
        np.testing.assert_array_equal(maps["cat__guided"], want.numpy())  # same arithmetic, shapes


def test_same_inputs_same_bytes_and_the_grid_redraws(tmp_path, monkeypatch):
    monkeypatch.setenv(PROVENANCE_ENV, json.dumps(FIXED_PROVENANCE))
    kwargs = SMALL | {"images": "cat", "methods": ["smoothgrad_gradient", "gradient_x_image"], "unit": [3, 7]}
    a, b = tmp_path / "a", tmp_path / "b"
    results = [sal.run_saliency(out, **kwargs) for out in (a, b)]
    assert without_seconds(results[0]) == without_seconds(results[1])
    for name in sorted(p.name for p in a.iterdir()):
        if name != "result.json":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    text = (a / "result.json").read_text()
    assert json.loads(text)["provenance"] == {**FIXED_PROVENANCE, "command": sys.argv}
    grid = (a / "grid.png").read_bytes()
    (a / "grid.png").unlink()
    sal.render_saliency(a)
    assert np.array_equal(np.asarray(Image.open(a / "grid.png")), np.asarray(Image.open(b / "grid.png")))
    assert (a / "grid.png").read_bytes() == grid


# ------------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize(
    "override, error, message",
    [
        ({"images": []}, ValueError, r"images: expected .* got an empty list"),
        ({"images": [3]}, ValueError, r"images: expected .* got the item 3"),
        ({"images": "no_such_sample"}, FileNotFoundError, r"image: .*not a bundled sample name"),
        ({"images": ["cat", "cat"]}, ValueError, r"images: each image needs its own name"),
        ({"methods": "fancy"}, ValueError, r"methods: expected one of gradient, guided"),
        ({"methods": ["gradient", "gradient"]}, ValueError, r"methods: each method once"),
        ({"methods": []}, ValueError, r"methods: expected one of"),
        ({"target": 1000}, ValueError, r"target: expected null .* class int in 0\.\.999, got 1000"),
        ({"target": True}, ValueError, r"target: expected null"),
        ({"target": 3, "unit": [5]}, ValueError, r"target: give a class target or a unit, not both"),
        ({"unit": [6]}, ValueError, r"unit: the stage must be an int in 1\.\.5"),
        ({"unit": [5, 1, 2]}, ValueError, r"unit: expected null, \[stage\]"),
        ({"unit": "pool5"}, ValueError, r"unit: expected null, \[stage\]"),
        ({"unit": [1, 64]}, ValueError, r"unit: channel 64 is outside stage 1's channels 0\.\.63"),
        (
            {"unit": [5, 0, 6, 0]},
            ValueError,
            r"unit: position \(y, x\) = \(6, 0\) is outside stage 5's "
            r"6x6 map",
        ),
        ({"unit": [3], "cam_stage": 4}, ValueError, r"cam_stage: Grad-CAM at stage 4 lies above"),
        ({"cam_stage": 0}, ValueError, r"cam_stage: expected an int in 1\.\.5"),
        ({"samples": 0}, ValueError, r"samples: expected an int >= 1, got 0"),
        ({"samples": 2.5}, ValueError, r"samples: expected an int >= 1"),
        ({"noise": -0.1}, ValueError, r"noise: expected a finite number >= 0"),
        ({"noise": "lots"}, ValueError, r"noise: expected a finite number"),
        ({"steps": 0}, ValueError, r"steps: expected an int >= 1"),
        ({"noise_seed": -1}, ValueError, r"seed: expected an int >= 0"),
        ({"device": "tpu"}, ValueError, r"device: expected 'cpu', 'cuda'"),
        ({"model": "resnet152"}, ValueError, r"model name: expected one of"),
        ({"weights": "pretrained"}, ValueError, r"weights: expected one of"),
        ({"weights": "hed"}, ValueError, r"weights: 'hed' holds VGG16 convolutions only"),
        ({"weights": "/no/such/ckpt.pth"}, FileNotFoundError, r"weights: checkpoint file"),
        ({"seed": -3}, ValueError, r"seed: expected an int in \[0, 2\*\*64\)"),
    ],
)
def test_bad_values_fail_before_the_model_is_built(tmp_path, monkeypatch, override, error, message):
    def no_heavy_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the values were checked")

    monkeypatch.setattr(deconvnet.jobs.request, "load_model", no_heavy_work)  # the loader
    monkeypatch.setattr(deconvnet, "load_model", no_heavy_work)
    with pytest.raises(error, match=message):
        sal.run_saliency(tmp_path / "out", **({"images": "cat"} | SMALL | override))
    assert not (tmp_path / "out").exists()


def test_parsing(tmp_path):
    assert sal.parse_methods(None) == list(deconvnet.METHODS)
    assert sal.parse_methods("gradcam") == ["gradcam"]
    assert sal.parse_images(None) == list(sal.DEFAULT_IMAGES) and sal.parse_images("cat") == ["cat"]
    assert sal.image_label("cat") == "cat"
    assert sal.image_label(tiny_picture(tmp_path)) == "tiny_pic"
    assert sal.parse_unit(5, None, (224, 224)) == (5,)


# -------------------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_bad_value_and_a_multirun_with_a_folder_per_job(tmp_path):
    done = run_experiment(
        "experiments.saliency",
        "model=alexnet",
        "model.weights=random",
        "unit=[9]",
        f"hydra.run.dir={tmp_path}",
    )
    assert done.returncode == 1
    assert "error: unit: the stage must be an int in 1..5" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout and not list(tmp_path.glob("*.png"))

    sweep = tmp_path / "sweep"
    done = run_experiment(
        "experiments.saliency",
        "-m",
        "model=alexnet",
        "model.weights=random",
        "images=cat",
        "unit=[4]",
        "methods=gradient,guided",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2
    seen = set()
    for job in jobs:
        result = json.loads((job / "result.json").read_text())
        (method,) = result["methods"]
        seen.add(method)
        assert result["random_weights"] is True and result["target"]["unit"] == [4]
        assert yaml.safe_load((job / "config.yaml").read_text())["methods"] == method
        assert (job / ".hydra" / "config.yaml").is_file()
        assert {"grid.png", "maps.npz", f"cat__{method}.png"} <= {p.name for p in job.iterdir()}
        assert "weights: random initialisation" in (job / "saliency.log").read_text()
    assert seen == {"gradient", "guided"}


def test_an_interrupted_job_resumes_from_its_finished_cells(tmp_path, monkeypatch):
    """Cells are checkpointed as they finish; a rerun with the same config into the same folder
    computes only the missing ones and writes the same bytes as an uninterrupted run."""
    monkeypatch.setenv(PROVENANCE_ENV, json.dumps(FIXED_PROVENANCE))
    kwargs = SMALL | {"images": "cat", "methods": ["gradient", "guided", "gradcam"]}
    whole = sal.run_saliency(tmp_path / "whole", **kwargs)
    calls = []
    real = sal.explain

    def failing_third(net, x, method, *args, **options):
        calls.append(method)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the job during its third map
        return real(net, x, method, *args, **options)

    monkeypatch.setattr(sal, "explain", failing_third)
    job = tmp_path / "job"
    with pytest.raises(KeyboardInterrupt):
        sal.run_saliency(job, **kwargs)
    assert sorted(p.name for p in (job / "partial").iterdir()) == ["cat__gradient.npz", "cat__guided.npz"]
    calls.clear()
    resumed = sal.run_saliency(job, **kwargs)
    assert calls == ["gradcam"]  # only the missing cell was computed again
    assert not (job / "partial").exists()
    assert without_seconds(resumed) == without_seconds(whole)
    for name in ("maps.npz", "grid.png", "cat__gradient.png", "cat__gradcam.png"):
        assert (job / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    # a different config in the same folder starts afresh
    sal.run_saliency(job, **(kwargs | {"methods": ["gradient"]}))
    assert calls == ["gradcam", "gradient"]
