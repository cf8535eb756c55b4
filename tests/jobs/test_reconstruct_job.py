"""`python -m experiments.reconstruct`: config composition, the plain run function
(`deconvnet.jobs.reconstruct.run_reconstruct`), bad values, CLI.

Offline and fast: AlexNet with random weights on the bundled sample image (224x224 after the
weights' preprocessing). The two subprocess tests are marked slow (a few seconds each).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_experiment
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf
from PIL import Image

import deconvnet
import deconvnet.jobs.reconstruct as job_module
from deconvnet.data.paths import CONF_DIR

SMALL = {"model": "alexnet", "weights": "random", "seed": 0, "image": "cat", "progress": False}


def _compose(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("reconstruct", overrides=list(overrides), return_hydra_config=True)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int16)


def _levels(shown: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> [H, W, 3] 8-bit levels, computed here without the experiment code."""
    return np.rint(shown.clamp(0, 1).permute(1, 2, 0).double().numpy() * 255).astype(np.int16)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default job (all 5 stages x keep all/max, deconvnet) on AlexNet with random weights."""
    out = tmp_path_factory.mktemp("default_run")
    result = job_module.run_reconstruct(out, **SMALL)
    return out, result


# ------------------------------------------------------------------------------------------ config


def test_default_config_composes():
    cfg = _compose()
    assert cfg.model.name == "vgg16" and cfg.model.weights == "auto" and cfg.model.seed == 0
    assert cfg.image == "cat" and cfg.stage is None and cfg.keep is None
    assert cfg.rule == "deconvnet" and cfg.device == "cpu"
    assert cfg.hydra.job.chdir is False
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"  # a folder a job


def test_overrides_compose():
    cfg = _compose(
        "model=alexnet",
        "stage=3",
        "keep=5",
        "rule=guided",
        "model.weights=random",
        "model.seed=7",
        "image=/data/some image.jpg",
    )
    assert cfg.model.name == "alexnet" and cfg.model.weights == "random" and cfg.model.seed == 7
    assert cfg.stage == 3 and cfg.keep == 5 and isinstance(cfg.keep, int)
    assert cfg.rule == "guided" and cfg.image == "/data/some image.jpg"
    assert _compose("keep=max").keep == "max"
    assert _compose("model.weights=/ckpt/alexnet.pth").model.weights == "/ckpt/alexnet.pth"


def test_unknown_model_group_names_the_options():
    with pytest.raises(MissingConfigException, match="model/resnet") as info:
        _compose("model=resnet")
    assert {"alexnet", "vgg16"} <= set(info.value.options or [])


# ------------------------------------------------------------------------------- run_reconstruct


def test_default_run_writes_every_file(default_run):
    out, result = default_run
    expected = {"input.png", "overview.png", "result.json", "config.yaml"} | {
        f"stage{s}_{k}.png" for s in range(1, 6) for k in ("all", "max")
    }
    assert expected <= {p.name for p in out.iterdir()}
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == {"name": "alexnet", "weights": "random", "seed": 0}
    overview = _png(out / "overview.png")
    assert overview.shape[1] > overview.shape[0] > 300 and overview.shape[2] in (3, 4)  # 2 rows x 6 columns


def test_result_json_records_what_was_done(default_run):
    _, result = default_run
    assert result["model"] == "alexnet" and result["rule"] == "deconvnet"
    assert result["weights"]["weights"] == "random" and result["weights"]["pretrained"] is False
    assert result["random_weights"] is True and "NOT pretrained" in result["weights"]["description"]
    assert result["image"]["source"] == "cat" and result["image"]["kind"] == "sample"
    assert result["image_size"] == [224, 224] and result["device"] == "cpu"
    prov = result["provenance"]
    assert prov["versions"]["torch"] == torch.__version__
    assert {"torchvision", "deconvnet"} <= set(prov["versions"]) and "git_commit" in prov
    entries = result["reconstructions"]
    assert [(e["stage"], e["keep"]) for e in entries] == [(s, k) for s in range(1, 6) for k in ("all", "max")]
    names = [st.name for st in deconvnet.stages(deconvnet.load_model("alexnet", "random"))]
    for e in entries:
        assert e["stage_name"] == names[e["stage"] - 1]
        stats = e["reconstruction"]
        assert stats["min"] <= 0 <= stats["max"] and stats["l2_norm"] > 0
        assert e["file"] == f"stage{e['stage']}_{e['keep']}.png"
        if e["keep"] == "max":
            kept = e["kept"]
            assert {"channel", "y", "x", "value"} <= set(kept) and kept["value"] > 0


def test_written_pngs_match_an_independent_reconstruction(default_run, alexnet_random):
    out, result = default_run
    x = deconvnet.load_image("cat", alexnet_random)
    assert np.abs(_png(out / "input.png") - _levels(deconvnet.denormalize(x, alexnet_random)[0])).max() <= 1
    by_name = {e["file"]: e for e in result["reconstructions"]}
    for stage, keep in [(1, "max"), (2, "all"), (5, "max")]:
        assert Image.open(out / f"stage{stage}_{keep}.png").mode == "RGB"
        r = deconvnet.reconstruct(alexnet_random, x, stage, keep=keep)
        want = _levels(deconvnet.to_display(r)[0])
        got = _png(out / f"stage{stage}_{keep}.png")
        assert np.abs(got - want).max() <= 1
        assert len(np.unique(want)) > 10  # a real picture, not a blank tile
        entry = by_name[f"stage{stage}_{keep}.png"]
        assert entry["reconstruction"]["l2_norm"] == pytest.approx(float(r.double().norm()), rel=1e-5)
    with torch.no_grad():  # the recorded max is the layer's max, at the recorded place
        a = alexnet_random.features[: deconvnet.stage(alexnet_random, 5).index + 1](x.clone())
    kept = by_name["stage5_max.png"]["kept"]
    assert kept["value"] == pytest.approx(float(a.max()), rel=1e-5)
    assert float(a[0, kept["channel"], kept["y"], kept["x"]]) == pytest.approx(kept["value"], rel=1e-5)


def test_single_channel_guided_run(tmp_path, alexnet_random):
    result = job_module.run_reconstruct(tmp_path, **SMALL, stage=3, keep="5", rule="guided")
    (entry,) = result["reconstructions"]
    assert entry["keep"] == 5 and entry["kept"]["channel"] == 5 and entry["kept"]["mode"] == "channel"
    assert result["rule"] == "guided"
    files = {p.name for p in tmp_path.iterdir()}
    assert {"input.png", "stage3_ch5.png", "overview.png", "result.json"} <= files
    assert not any(name.startswith("stage") and name != "stage3_ch5.png" for name in files)
    x = deconvnet.load_image("cat", alexnet_random)
    r = deconvnet.reconstruct(alexnet_random, x, 3, keep=5, rule="guided")
    assert np.abs(_png(tmp_path / "stage3_ch5.png") - _levels(deconvnet.to_display(r)[0])).max() <= 1


def test_image_from_a_file(tmp_path):
    picture = tmp_path / "in" / "picture.png"
    picture.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(picture)
    result = job_module.run_reconstruct(
        tmp_path / "out", **(SMALL | {"image": str(picture)}), stage=1, keep="max"
    )
    assert result["image"]["kind"] == "file" and result["image"]["path"] == str(picture.resolve())
    assert result["image"]["original_size_wh"] == [120, 90]


# ------------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize(
    "override, error, message",
    [
        ({"stage": 7}, ValueError, r"stage: expected an int in 1\.\.5"),
        ({"stage": 0}, ValueError, r"stage: expected an int in 1\.\.5"),
        ({"stage": "pool3"}, ValueError, r"stage: expected an int in 1\.\.5"),
        ({"keep": "mean"}, ValueError, r"keep: expected 'all', 'max', a channel int"),
        ({"keep": True}, ValueError, r"keep: expected 'all', 'max', a channel int"),
        (
            {"keep": 64, "stage": 1},
            ValueError,
            r"keep: channel 64 is outside alexnet stage 1 "
            r"\(pool1\) channels 0\.\.63",
        ),
        ({"keep": "300"}, ValueError, r"keep: channel 300 is outside alexnet stage 1"),  # all stages
        ({"keep": -1}, ValueError, r"keep: channel -1 is outside"),
        ({"rule": "fancy"}, ValueError, r"rule: expected one of deconvnet, backprop, guided"),
        ({"model": "resnet152"}, ValueError, r"model name: expected one of \['vgg16', 'alexnet', 'vgg11'"),
        ({"image": "/no/such/picture.png"}, FileNotFoundError, r"image: .*does not exist"),
        ({"image": "no_such_sample"}, FileNotFoundError, r"not a bundled sample name"),
        ({"device": "tpu"}, ValueError, r"device: expected 'cpu', 'cuda'"),
        ({"device": 3}, ValueError, r"device: expected 'cpu', 'cuda'"),
    ],
)
def test_bad_values_fail_early_with_a_clear_message(tmp_path, monkeypatch, override, error, message):
    def no_heavy_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the values were checked")

    monkeypatch.setattr(job_module, "load_model", no_heavy_work)
    with pytest.raises(error, match=message):
        job_module.run_reconstruct(tmp_path / "out", **(SMALL | override))
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_but_unavailable(tmp_path):
    with pytest.raises(ValueError, match=r"device: 'cuda' requested but CUDA is not available"):
        job_module.run_reconstruct(tmp_path, **SMALL, device="cuda")


def test_bad_weights_are_reported(tmp_path):
    with pytest.raises(ValueError, match=r"weights: expected one of"):
        job_module.run_reconstruct(tmp_path, **(SMALL | {"weights": "pretrained"}), stage=1, keep="max")
    with pytest.raises(FileNotFoundError, match=r"weights: checkpoint file .* does not exist"):
        job_module.run_reconstruct(tmp_path, **(SMALL | {"weights": "/no/such/ckpt.pth"}), stage=1)


def test_keep_and_stage_parsing():
    assert job_module.parse_keep(None) == ["all", "max"]
    assert (
        job_module.parse_keep("5") == [5]
        and job_module.parse_keep(5) == [5]
        and job_module.parse_keep("max") == ["max"]
    )
    assert job_module.parse_stages(None) == [1, 2, 3, 4, 5] and job_module.parse_stages("3") == [3]


# -------------------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_bad_stage_exits_with_a_short_message(tmp_path):
    done = run_experiment(
        "experiments.reconstruct",
        "model=alexnet",
        "model.weights=random",
        "stage=7",
        f"hydra.run.dir={tmp_path}",
    )
    assert done.returncode == 1
    assert "error: stage: expected an int in 1..5" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.slow
def test_cli_multirun_gives_each_job_its_own_folder(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_experiment(
        "experiments.reconstruct",
        "-m",
        "model=alexnet",
        "model.weights=random",
        "stage=1,5",
        "keep=all,max",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        result = json.loads((job / "result.json").read_text())
        (entry,) = result["reconstructions"]
        seen.add((entry["stage"], entry["keep"]))
        assert result["random_weights"] is True
        assert (job / ".hydra" / "config.yaml").is_file() and (job / "config.yaml").is_file()
        config = yaml.safe_load((job / "config.yaml").read_text())
        assert (config["stage"], config["keep"]) == (entry["stage"], entry["keep"])
        assert {"input.png", "overview.png", entry["file"]} <= {p.name for p in job.iterdir()}
    assert seen == {(1, "all"), (1, "max"), (5, "all"), (5, "max")}


def test_render_reconstruct_redraws_the_overview_from_saved_files(tmp_path):
    from PIL import Image

    job_module.run_reconstruct(tmp_path, model="alexnet", weights="random", stage=2, progress=False)
    before = np.asarray(Image.open(tmp_path / "overview.png"))
    (tmp_path / "overview.png").unlink()
    job_module.render_reconstruct(tmp_path)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "overview.png")), before)
