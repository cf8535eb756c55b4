"""Fig. 1 from real data: every panel against an independent computation, the illustration's
numbers, drawing + re-rendering from the saved data, and the Hydra entry end to end."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import png_pixels, run_experiment

import deconvnet
from deconvnet.analysis.layer_maps import fig1_data
from deconvnet.data.paths import REPO_ROOT
from deconvnet.figures.fig1 import draw_fig1
from deconvnet.jobs import fig1 as fig1_module
from deconvnet.jobs.fig1 import load_fig1_data, render_fig1, run_fig1


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def _reference_unpool(rectified: np.ndarray, seed: np.ndarray, k: int, s: int) -> np.ndarray:
    """Independent unpooling: per window, the first maximum in row-major order gets the seed value
    (added, so a position chosen by several windows receives their sum)."""
    out = np.zeros_like(rectified, dtype=np.float64)
    hp, wp = seed.shape
    for i in range(hp):
        for j in range(wp):
            window = rectified[i * s : i * s + k, j * s : j * s + k]
            r, c = np.unravel_index(np.argmax(window), window.shape)
            out[i * s + r, j * s + c] += seed[i, j]
    return out


@pytest.fixture(scope="module")
def alex_x() -> torch.Tensor:
    return _image(91, 99, seed=1)


@pytest.fixture(scope="module")
def alex_all(alexnet_float32, alex_x):
    return fig1_data(alexnet_float32, alex_x, 1, keep="all")


@pytest.fixture(scope="module")
def alex_max(alexnet_float32, alex_x):
    return fig1_data(alexnet_float32, alex_x, 1, keep="max")


def test_convnet_panels_equal_an_independent_forward_pass(alexnet_float32, alex_x, alex_max):
    d, meta = alex_max, alex_max["meta"]
    c = meta["channel"]
    with torch.no_grad():
        feature = alexnet_float32.features[:1](alex_x.clone())[0, c]
        pooled = alexnet_float32.features[:3](alex_x.clone())
    torch.testing.assert_close(_t(d["feature"]), feature)
    torch.testing.assert_close(_t(d["rectified"]), F.relu(feature))
    # pooled map = F.max_pool2d of the rectified feature map; = the stage output
    torch.testing.assert_close(_t(d["pooled"]), F.max_pool2d(_t(d["rectified"])[None], 3, 2)[0])
    torch.testing.assert_close(_t(d["pooled"]), pooled[0, c])
    # default channel: the one holding the strongest activation of the stage output
    assert c == int(pooled[0].flatten(1).amax(1).argmax())
    assert meta["kept"]["value"] == pytest.approx(float(pooled[0, c].max()))
    assert meta["below_is_image"] and d["below"].shape == (3, 91, 99)
    assert meta["shown"] == {**meta["shown"], "conv": 0, "relu": 1, "pool": 2, "whole_stage": True}


def test_unpooled_map_holds_the_pooled_values_at_the_switches_summed_where_shared(alex_all):
    d = alex_all
    assert np.array_equal(d["seed"], d["pooled"])  # keep="all": the channel's whole pooled map
    want = _reference_unpool(d["rectified"], d["seed"], 3, 2)
    np.testing.assert_allclose(d["unpooled"], want, rtol=1e-6, atol=1e-7)
    count = d["switch_count"]
    assert count.sum() == d["pooled"].size and count.max() >= 2  # overlapping: shared switches
    shared = count >= 2
    assert (d["unpooled"][shared] > d["rectified"][shared] * 1.5).any()  # summed, not overwritten
    assert np.all(d["unpooled"][count == 0] == 0)
    assert d["unpooled"].sum() == pytest.approx(float(d["pooled"].sum()), rel=1e-5)
    # the seed is >= 0, so the deconvnet's relu leaves it unchanged
    np.testing.assert_array_equal(d["rectified_unpooled"], d["unpooled"])


def test_single_seed_lands_at_its_switch_only(alex_max):
    d, kept = alex_max, alex_max["meta"]["kept"]
    assert np.count_nonzero(d["seed"]) == 1 and d["seed"][kept["y"], kept["x"]] == kept["value"]
    nonzero = np.argwhere(d["unpooled"])
    assert nonzero.tolist() == [[kept["switch_y"], kept["switch_x"]]]
    assert d["unpooled"][kept["switch_y"], kept["switch_x"]] == pytest.approx(kept["value"])
    assert d["rectified"][kept["switch_y"], kept["switch_x"]] == pytest.approx(kept["value"])


def test_alexnet_stage1_reconstruction_is_the_librarys(alexnet_float32, alex_x, alex_max):
    c = alex_max["meta"]["channel"]
    want = deconvnet.reconstruct(alexnet_float32, alex_x, 1, keep=c)[0]
    torch.testing.assert_close(_t(alex_max["reconstruction"]), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_t(alex_max["pixels"]), want, rtol=1e-5, atol=1e-6)
    assert want.abs().max() > 0


@pytest.mark.parametrize("stage", [1, 2])
def test_vgg_shows_the_last_conv_of_the_stage_and_projects_like_reconstruct(vgg_float32, stage):
    x = _image(40, 44, seed=stage)
    d = fig1_data(vgg_float32, x, stage)
    meta = d["meta"]
    want_conv = {1: 2, 2: 7}[stage]
    assert meta["shown"]["conv"] == want_conv and not meta["shown"]["whole_stage"]
    assert meta["shown"]["conv_name"] == f"conv{stage}_2" and meta["below_name"] == f"relu{stage}_1"
    with torch.no_grad():
        below = vgg_float32.features[:want_conv](x.clone())
        conv = vgg_float32.features[want_conv]
        feature = conv(below)
    c, cb = meta["channel"], meta["below_channel"]
    torch.testing.assert_close(_t(d["below"]), below[0, cb])
    torch.testing.assert_close(_t(d["feature"]), feature[0, c], rtol=1e-5, atol=1e-5)
    # F^T at the layer below: the transposed conv of the rectified unpooled map, same weights
    full = torch.zeros_like(feature)
    full[0, c] = _t(d["rectified_unpooled"])
    recon = F.conv_transpose2d(full, conv.weight, None, 1, 1)
    torch.testing.assert_close(_t(d["reconstruction"]), recon[0, cb], rtol=1e-5, atol=1e-6)
    # the rest of the mirror: the same as deconvnet.reconstruct(keep=channel)
    want = deconvnet.reconstruct(vgg_float32, x, stage, keep=c)[0]
    torch.testing.assert_close(_t(d["pixels"]), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(d["pooled"], F.max_pool2d(_t(d["rectified"])[None], 2, 2)[0].numpy())


def test_illustration_numbers_are_real_and_unpooling_puts_values_at_switches(alex_all):
    d, ill = alex_all, alex_all["meta"]["illustration"]
    k, s, size = ill["kernel"], ill["stride"], ill["size"]
    (y0, x0), (by, bx) = ill["origin"], ill["pooled_origin"]
    patch, pooled = d["patch"], d["patch_pooled"]
    switches, unpooled = d["patch_switches"], d["patch_unpooled"]
    assert patch.shape == (size, size) == ((2 - 1) * s + k,) * 2
    np.testing.assert_array_equal(patch, d["rectified"][y0 : y0 + size, x0 : x0 + size])
    np.testing.assert_array_equal(pooled, d["pooled"][by : by + 2, bx : bx + 2])
    # switches: inside each window, at a maximum; the same positions as the full map's switches
    for i in range(2):
        for j in range(2):
            r, c = divmod(int(switches[i, j]), size)
            assert i * s <= r < i * s + k and j * s <= c < j * s + k
            assert patch[r, c] == pooled[i, j] == patch[i * s : i * s + k, j * s : j * s + k].max()
    np.testing.assert_allclose(unpooled, _reference_unpool(patch, pooled, k, s), rtol=1e-6)
    expect = np.zeros_like(patch)
    for f, v in zip(switches.flatten().tolist(), pooled.flatten().tolist()):
        expect.flat[f] += v
    np.testing.assert_array_equal(unpooled, expect)
    assert np.count_nonzero(unpooled) == len(set(switches.flatten().tolist()))
    # overlapping AlexNet pooling: the chosen block shows a shared switch whose values are summed
    assert ill["overlapping"] and ill["shared_switches"]
    sh = ill["shared_switches"][0]
    assert sh["windows"] >= 2
    assert unpooled[sh["row"], sh["col"]] == pytest.approx(sh["windows"] * patch[sh["row"], sh["col"]])


def test_tiling_illustration_has_no_shared_switch(vgg_float32):
    d = fig1_data(vgg_float32, _image(36, 36, seed=5), 1)
    ill = d["meta"]["illustration"]
    assert not ill["overlapping"] and ill["shared_switches"] == []
    assert d["patch"].shape == (4, 4) and d["patch_pooled"].shape == (2, 2)
    unpooled = d["patch_unpooled"]
    for f, v in zip(d["patch_switches"].flatten().tolist(), d["patch_pooled"].flatten().tolist()):
        assert unpooled.flat[f] == v  # each value at its own switch, none shared
    assert np.isclose(d["patch_unpooled"].sum(), d["patch_pooled"].sum())
    assert np.count_nonzero(d["patch_unpooled"]) == np.count_nonzero(d["patch_pooled"])


def test_stage_without_pooling_passes_the_seed_through(alexnet_float32, tmp_path):
    x = _image(67, 67, seed=2)
    d = fig1_data(alexnet_float32, x, 3, channel=5)
    assert d["meta"]["shown"]["pool"] is None and "switch_count" not in d and "patch" not in d
    np.testing.assert_array_equal(d["pooled"], d["rectified"])
    np.testing.assert_array_equal(d["unpooled"], d["seed"])
    want = deconvnet.reconstruct(alexnet_float32, x, 3, keep=5)[0]
    torch.testing.assert_close(_t(d["pixels"]), want, rtol=1e-4, atol=1e-6)
    assert draw_fig1(d, tmp_path / "f.png").is_file()


def test_bad_values_are_refused_with_the_key_named(alexnet_float32, alex_x):
    for stage in (0, 6, True, 2.0):
        with pytest.raises(ValueError, match="stage"):
            fig1_data(alexnet_float32, alex_x, stage)
    with pytest.raises(ValueError, match="channel: 64 is outside"):
        fig1_data(alexnet_float32, alex_x, 1, channel=64)
    with pytest.raises(ValueError, match="keep"):
        fig1_data(alexnet_float32, alex_x, 1, keep="mean")
    with pytest.raises(ValueError, match="below_channel"):
        fig1_data(alexnet_float32, alex_x, 1, below_channel=0)
    with pytest.raises(ValueError, match="below_channel"):
        fig1_data(alexnet_float32, alex_x, 2, below_channel=64)


def test_run_fig1_checks_before_loading_the_model(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise AssertionError("the model must not be loaded for a bad request")

    monkeypatch.setattr(fig1_module, "load_model", boom)
    with pytest.raises(ValueError, match="stage"):
        run_fig1(tmp_path, model="vgg16", stage=9)
    with pytest.raises(ValueError, match="channel: 512 is outside"):
        run_fig1(tmp_path, model="vgg16", stage=5, channel=512)
    with pytest.raises(FileNotFoundError, match="image"):
        run_fig1(tmp_path, model="alexnet", image=str(tmp_path / "missing.png"))
    assert not any(tmp_path.iterdir())


def test_run_fig1_writes_figure_data_and_result_and_render_reproduces_it(tmp_path):
    result = run_fig1(tmp_path, model="alexnet", weights="random", image="cat", stage=1)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"fig1.png", "fig1_data.npz", "result.json"} <= files
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["weights"]["pretrained"] is False and saved["weights"]["weights"] == "random"
    assert saved["model"] == "alexnet" and saved["image"] == "cat" and saved["stage"] == 1
    assert saved["channel"] == result["channel"] and saved["rule"] == "deconvnet"
    assert set(saved["kept"]) == {"y", "x", "value", "switch_y", "switch_x"}
    assert saved["files"]["figure"] == "fig1.png" and "torch" in saved["versions"]
    first = png_pixels(tmp_path / "fig1.png")
    assert first.shape == (1200, 1600, 3)
    data = load_fig1_data(tmp_path / "fig1_data.npz")
    assert data["meta"]["weights"]["pretrained"] is False
    assert data["image"].shape == (3, 224, 224) and data["reconstruction"].shape == (3, 224, 224)
    (tmp_path / "fig1.png").unlink()
    assert render_fig1(tmp_path) == tmp_path / "fig1.png"
    np.testing.assert_array_equal(png_pixels(tmp_path / "fig1.png"), first)
    with pytest.raises(FileNotFoundError):
        render_fig1(tmp_path / "nowhere")


def _run(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DECONVNET_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return run_experiment("experiments.fig1", *overrides, cwd=cwd, env=env)


@pytest.mark.slow
def test_hydra_entry_end_to_end(tmp_path):
    out = tmp_path / "job"
    done = _run("model=alexnet", "model.weights=random", f"hydra.run.dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {"fig1.png", "fig1_data.npz", "result.json"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "result.json").read_text())
    assert saved["config"]["model"]["name"] == "alexnet" and saved["weights"]["weights"] == "random"
    assert not (tmp_path / "outputs").exists()  # the run directory is the one given

    bad = tmp_path / "bad"
    done = _run("model=alexnet", "model.weights=random", "stage=9", f"hydra.run.dir={bad}", cwd=tmp_path)
    assert done.returncode != 0
    assert "error: stage: expected an int in 1..5" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (bad / "fig1.png").exists()
