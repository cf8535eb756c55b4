"""The faithfulness job: its files and table, AUCs against the deletion / insertion loop written in
the test, every key checked before the model is built, and a resumed run equal to an
uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FIXED_PROVENANCE, run_experiment

import deconvnet.jobs.faithfulness as job_module
from deconvnet.jobs.faithfulness import run_faithfulness, validate_faithfulness
from deconvnet.jobs.provenance import PROVENANCE_ENV


def config(**changes) -> dict:
    base = {
        "model": {"name": "alexnet", "weights": "random", "seed": 0},
        "images": ["cat"],
        "methods": ["gradient", "random", "centre"],
        "steps": 4,
        "deletion_baseline": "zero",
        "insertion_baseline": "blur",
        "batch_size": 3,
        "stage": 5,
        "samples": 2,
        "noise": 0.15,
        "integrated_steps": 2,
        "patch": 48,
        "stride": 16,
        "scorecam_top": None,
        "sanity": False,
        "seed": 0,
        "device": "cpu",
    }
    return base | changes


@pytest.fixture
def fixed_provenance(monkeypatch):
    monkeypatch.setenv(PROVENANCE_ENV, json.dumps(FIXED_PROVENANCE))


def deletion_loop(model, x, scores, target, steps):
    """Deletion with the zero baseline, one image, one step at a time (numpy order)."""
    order = np.argsort(-scores.flatten(), kind="stable")
    pixels = order.size
    probabilities = []
    for i in range(steps + 1):
        removed = (2 * i * pixels + steps) // (2 * steps)  # round half up, as documented
        keep = np.ones(pixels)
        keep[order[:removed]] = 0.0
        mask = torch.from_numpy(keep.reshape(scores.shape)).to(x)
        with torch.no_grad():
            probabilities.append(F.softmax(model(x * mask), 1)[0, target].item())
    return np.trapezoid(probabilities, np.linspace(0, 1, steps + 1))


def test_files_table_and_aucs(tmp_path, fixed_provenance, alexnet_random):
    result = run_faithfulness(tmp_path, config(), progress=False)
    for name in ("table.md", "result.json", "curves.png", "grid.png", "images.npz", "config.yaml"):
        assert (tmp_path / name).is_file(), name
    table = (tmp_path / "table.md").read_text()
    assert "| gradient | max abs over colours |" in table and "| centre | the map itself |" in table
    arrays = np.load(tmp_path / "images.npz")
    x, target = torch.from_numpy(arrays["input"]), result["images"][0]["class"]
    with torch.no_grad():
        assert target == int(alexnet_random(x).argmax())
    for cell in result["cells"]:
        scores = arrays[cell["method"]][0]
        want = deletion_loop(alexnet_random, x, scores, target, 4)
        assert cell["deletion_auc"][0] == pytest.approx(want, rel=1e-5)
    centre = arrays["centre"][0]
    assert np.unravel_index(centre.argmax(), centre.shape) in {(111, 111), (111, 112), (112, 111), (112, 112)}


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, fixed_provenance, monkeypatch):
    whole = run_faithfulness(tmp_path / "whole", config(), progress=False)
    real = job_module.method_cell

    def interrupted(job, plan, x, classes, method):
        if method == "centre":
            raise KeyboardInterrupt
        return real(job, plan, x, classes, method)

    monkeypatch.setattr(job_module, "method_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_faithfulness(tmp_path / "resumed", config(), progress=False)
    assert (tmp_path / "resumed" / "partial").is_dir()
    monkeypatch.setattr(job_module, "method_cell", real)
    resumed = run_faithfulness(tmp_path / "resumed", config(), progress=False)
    assert resumed["table"] == whole["table"]
    assert (tmp_path / "resumed" / "table.md").read_bytes() == (tmp_path / "whole" / "table.md").read_bytes()


def test_the_sanity_verdict_is_recorded_for_gradient_methods_only(tmp_path, fixed_provenance):
    result = run_faithfulness(tmp_path, config(methods=["gradcam", "random"], sanity=True), progress=False)
    verdicts = {cell["method"]: cell["sanity"] for cell in result["cells"]}
    assert verdicts["random"] is None
    assert verdicts["gradcam"]["layer"] == "conv3" and isinstance(verdicts["gradcam"]["passes"], bool)
    assert "conv3" in result["settings"]["sanity"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"methods": ["gradient", "nope"]}, r"methods: expected null \(the table's 18\), or names among"),
        ({"methods": ["random", "random"]}, r"methods: each method once"),
        ({"deletion_baseline": "noise"}, r"deletion_baseline: expected one of blur, zero, got 'noise'"),
        ({"insertion_baseline": None}, r"insertion_baseline: expected one of blur, zero, got None"),
        ({"steps": 0}, r"steps: expected an int >= 1, got 0"),
        ({"sanity": "yes"}, r"sanity: expected true or false"),
        ({"stage": 1.5}, r"stage: expected a stage number, name or module path"),
        ({"images": ["no_such_photo"]}, r"no_such_photo"),
        ({"model": {"name": "lenet", "weights": "random", "seed": 0}}, r"model"),
    ],
)
def test_bad_values_are_named_before_the_model_is_built(changes, message, monkeypatch):
    monkeypatch.setattr(job_module, "Job", lambda *a, **k: pytest.fail("built before checking"))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        validate_faithfulness(config(**changes))


@pytest.mark.slow
def test_the_experiment_writes_its_folder(tmp_path):
    done = run_experiment(
        "experiments.faithfulness", "model=alexnet", "model.weights=random", "images=cat",
        "methods=[random,gradcam]", "steps=2", "sanity=false", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "result.json").read_text())["experiment"] == "faithfulness"
    bad = run_experiment("experiments.faithfulness", "steps=0", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 1 and "error: steps: expected an int >= 1, got 0" in bad.stderr


def test_render_redraws_the_figures_and_the_table_from_the_folder(tmp_path, fixed_provenance):
    from conftest import png_pixels

    from deconvnet.jobs.registry import JOBS

    run_faithfulness(tmp_path, config(methods=["random", "centre"]), progress=False)
    files = {name: (tmp_path / name) for name in ("grid.png", "curves.png", "table.md")}
    before = {
        name: path.read_bytes() if name.endswith(".md") else png_pixels(path) for name, path in files.items()
    }
    for path in files.values():
        path.unlink()
    drawn = JOBS["faithfulness"].render(tmp_path)
    assert {p.name for p in drawn} == set(files)
    assert files["table.md"].read_bytes() == before["table.md"]
    for name in ("grid.png", "curves.png"):
        assert np.array_equal(png_pixels(files[name]), before[name]), name
