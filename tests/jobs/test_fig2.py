"""Fig. 2: crops, display, provenance, projection path vs full-frame reference, files, CLI.

Everything runs offline on random-initialised AlexNet with a handful of gallery images.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_experiment
from PIL import Image

import deconvnet
from deconvnet.analysis import top_projections
from deconvnet.analysis.scan import load_topk, scan_topk
from deconvnet.analysis.top_projections import crop_with_fill, project_tiles, select_channels
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.geometry import receptive_field
from deconvnet.core.mirror import Mirror
from deconvnet.figures.fig2 import stage_panel
from deconvnet.figures.fig2_layout import PanelData, display_size, display_tiles
from deconvnet.jobs import fig2
from deconvnet.jobs.data_config import make_dataset
from deconvnet.jobs.fig2 import load_fig2, render_fig2, run_fig2

TINY_DATA = {"kind": "samples", "photos": ["chelsea", "coffee", "astronaut"], "limit": 10}
TINY = dict(
    model="alexnet",
    weights="random",
    seed=0,
    data=TINY_DATA,
    stages=[1, 3],
    channels_per_stage=2,
    k=3,
    progress=False,
)


class TensorList:
    """A minimal dataset: items (tensor, id), ids."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.ids = [f"random:{i}" for i in range(len(images))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.ids[i]


@pytest.fixture(scope="module")
def alexnet(alexnet_random):
    return alexnet_random


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig2_job")
    result = run_fig2(out, **TINY)
    return out, result


@pytest.fixture(scope="module")
def small_tiles(alexnet):
    """Tiles of AlexNet stages 1, 2, 5 over 4 random 96x96 images (pool5's field crosses borders)."""
    images = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    data = TensorList(images)
    topk = scan_topk(alexnet, [images], k=3, stages=(1, 2, 5), progress=False)
    chosen = {1: [0, 7], 2: [3], 5: [1, 100]}
    return (data, topk, chosen, project_tiles(alexnet, data, topk, chosen, batch_size=3, progress=False))


# ------------------------------------------------------------------------------------ crops


def test_crop_with_fill_inside_and_across_the_border():
    image = torch.arange(2 * 5 * 6, dtype=torch.float32).view(2, 5, 6)
    inside = crop_with_fill(image, 1, 2, (3, 3), 0.5)
    assert torch.equal(inside, image[:, 1:4, 2:5])
    across = crop_with_fill(image, -2, 4, (4, 4), 0.5)
    assert across.shape == (2, 4, 4)
    assert torch.equal(across[:, 2:, :2], image[:, 0:2, 4:6])
    assert (across[:, :2] == 0.5).all() and (across[:, :, 2:] == 0.5).all()
    outside = crop_with_fill(image, 50, 50, (2, 2), 0.25)
    assert (outside == 0.25).all()


def test_tiles_have_the_layers_receptive_field_size_and_border_fill(alexnet, small_tiles):
    data, _, chosen, tiles = small_tiles
    crossed = 0
    for s, t in tiles.items():
        size = receptive_field(alexnet, s).size
        recon = t.recon["deconvnet"]
        assert list(t.recon) == ["deconvnet"]
        assert recon.shape == (len(chosen[s]), 3, 3, *size) and recon.dtype == np.float32
        assert t.patch.shape == recon.shape and t.patch.dtype == np.uint8
        for m in range(t.image.shape[0]):
            for r in range(t.image.shape[1]):
                top, left, bottom, right = t.box(m, r)
                assert (top, left, bottom, right) == receptive_field(alexnet, s).box(
                    int(t.y[m, r]), int(t.x[m, r])
                )
                rows = np.arange(top, bottom)
                cols = np.arange(left, right)
                outside = ~(
                    (rows[:, None] >= 0) & (rows[:, None] < 96) & (cols[None, :] >= 0) & (cols[None, :] < 96)
                )
                if outside.any():
                    crossed += 1
                assert (t.patch[m, r][:, outside] == top_projections.GREY).all()
                assert (recon[m, r][:, outside] == 0).all()
                # the inside of the patch is the denormalised image, 8-bit
                shown = deconvnet.denormalize(data[int(t.image[m, r])][0], alexnet)
                expected = (shown.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                y0, x0 = max(top, 0), max(left, 0)
                y1, x1 = min(bottom, 96), min(right, 96)
                assert np.array_equal(
                    t.patch[m, r][:, y0 - top : y1 - top, x0 - left : x1 - left], expected[:, y0:y1, x0:x1]
                )
    assert crossed > 0  # pool5's 195 px field always crosses a 96 px image's border


def test_tile_display_normalisation_zero_is_mid_grey_and_per_tile():
    recon = np.zeros((2, 3, 4, 4), np.float32)
    recon[0, 0, 1, 1] = 2.0
    recon[0, 1, 2, 2] = -1.0
    recon[1, 2, 0, 0] = -1000.0  # a much larger tile must not dim the other one
    patch = np.full((2, 3, 4, 4), 7, np.uint8)
    shown, patches = display_tiles(recon, patch, (8, 8))  # x2 nearest
    assert shown.shape == (2, 8, 8, 3) and patches.shape == (2, 8, 8, 3)
    assert shown[0, 0, 0, 0] == 128 and shown[1, 7, 7, 1] == 128  # zero -> mid-grey
    assert shown[0, 2, 2, 0] == 255 and shown[0, 3, 3, 0] == 255  # tile's own max|x| -> 255
    assert shown[0, 4, 4, 1] == round(255 * 0.25)  # -1 of peak 2 -> 0.25
    assert shown[1, 0, 0, 2] == 0
    assert (patches == 7).all()


def test_display_size_enlarges_small_and_reduces_large_fields():
    assert display_size((6, 6)) == (48, 48)  # VGG16 pool1: x8 nearest
    assert display_size((16, 16)) == (48, 48)
    assert display_size((19, 19)) == (57, 57)  # AlexNet pool1: x3
    assert display_size((67, 67)) == (67, 67)
    assert display_size((212, 212)) == (96, 96)


# ------------------------------------------------------------------------ channel choice


def test_select_channels_seeded_explicit_and_errors(alexnet):
    a = select_channels(alexnet, [1, 3], None, 4, 0)
    b = select_channels(alexnet, [3], None, 4, 0)
    assert a[3] == b[3] and len(a[1]) == 4 and a[1] == sorted(set(a[1]))
    assert select_channels(alexnet, [1, 3], None, 4, 1)[1] != a[1]
    explicit = select_channels(alexnet, [1, 3], {1: [5, 0, 5], "3": [7]}, 4, 0)
    assert explicit == {1: [5, 0], 3: [7]}
    with pytest.raises(ValueError, match="channel 64 is outside layer 1"):
        select_channels(alexnet, [1], {1: [64]})
    with pytest.raises(ValueError, match="stage 2 is not among"):
        select_channels(alexnet, [1], {2: [0]})
    with pytest.raises(ValueError, match="exceeds layer 1"):
        select_channels(alexnet, [1], None, 65)
    with pytest.raises(ValueError, match="unknown stage 6"):
        select_channels(alexnet, [6])


# ---------------------------------------------------------- projection vs independent references


def test_projection_equals_full_frame_reconstruction_cropped(alexnet, small_tiles):
    data, _, _, tiles = small_tiles
    checked = 0
    for s, t in tiles.items():
        for m, r in [(0, 0), (t.image.shape[0] - 1, t.image.shape[1] - 1)]:
            image = data[int(t.image[m, r])][0][None]
            channel = int(t.channels[m])
            full = deconvnet.reconstruct(alexnet, image, s, keep=channel)[0]
            top, left, bottom, right = t.box(m, r)
            want = crop_with_fill(full, top, left, (bottom - top, right - left), 0.0).numpy()
            got = t.recon["deconvnet"][m, r]
            peak = max(float(np.abs(want).max()), 1e-30)
            assert float(np.abs(got - want).max()) <= 1e-5 * peak, (s, m, r)
            # the full-frame reconstruction is zero outside the receptive-field box
            outside = full.abs().sum() - torch.from_numpy(want).abs().sum()
            assert float(outside) <= 1e-6 * float(full.abs().sum()) + 1e-12
            checked += 1
    assert checked == 6


def test_projection_equals_hooked_autograd_for_a_tile(alexnet, small_tiles):
    """The same tile by a forward + ReLU-hooked backward on the full image (deconvnet rule)."""
    import copy

    data, _, _, tiles = small_tiles
    t = tiles[2]
    m, r = 0, 1
    index = stage_of(alexnet, 2).index
    features = copy.deepcopy(alexnet.features[: index + 1])
    for module in features:
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
            module.register_full_backward_hook(lambda mod, gin, gout: (torch.relu(gout[0]),))
    x = data[int(t.image[m, r])][0][None].clone().requires_grad_(True)
    a = features(x)
    seed = torch.zeros_like(a)
    c, y, xx = int(t.channels[m]), int(t.y[m, r]), int(t.x[m, r])
    seed[0, c, y, xx] = a[0, c, y, xx].detach()
    (grad,) = torch.autograd.grad(a, x, seed)
    top, left, bottom, right = t.box(m, r)
    want = crop_with_fill(grad[0], top, left, (bottom - top, right - left), 0.0).numpy()
    assert np.abs(t.recon["deconvnet"][m, r] - want).max() <= 1e-5 * np.abs(want).max()


def test_mismatched_recorded_value_is_an_error_naming_the_tile(alexnet, small_tiles):
    data, topk, _, _ = small_tiles
    broken = {
        s: deconvnet.analysis.scan.TopK(t.values.clone(), t.image, t.y, t.x, t.images_scanned)
        for s, t in topk.items()
    }
    broken[2].values[3, 1] += 1.0
    with pytest.raises(top_projections.TileMismatchError, match=r"stage 2 \(pool2\) channel 3 rank 2"):
        project_tiles(alexnet, data, broken, {2: [3]}, progress=False)


# ------------------------------------------------------------------------------ end to end


def test_run_fig2_writes_consistent_files(tiny_job):
    out, result = tiny_job
    names = {p.name for p in out.iterdir()}
    expected = {
        "result.json",
        "tiles.json",
        "tiles.npz",
        "topk.pt",
        "fig2.png",
        "fig2_stage1.png",
        "fig2_stage3.png",
    }
    assert expected <= names and not any(n.endswith(".tmp") for n in names)
    saved = json.loads((out / "result.json").read_text())
    assert saved["status"] == "complete" and result["status"] == "complete"
    assert saved["weights"]["pretrained"] is False and saved["dataset"]["images"] == 10
    assert saved["dataset"]["skipped_count"] == 0
    assert set(saved["timings_s"]) >= {"scan_s", "project_s", "render_s", "total_s"}
    assert saved["max_relative_value_difference"] <= top_projections.VALUE_RTOL

    tiles = json.loads((out / "tiles.json").read_text())["tiles"]
    assert len(tiles) == 2 * 2 * 3 == saved["tiles"]
    meta, arrays = load_fig2(out)
    topk, scan_meta = load_topk(out / "topk.pt")
    assert scan_meta["complete"] is True
    ranks = {}
    names = {s.number: s.name for s in deconvnet.stages(deconvnet.load_model("alexnet", "random"))}
    for entry in tiles:
        s, c = entry["stage"], entry["channel"]
        m = list(arrays[s]["channels"]).index(c)
        r = entry["rank"] - 1
        assert entry["model"] == "alexnet" and entry["weights"] == "random"
        assert entry["stage_name"] == names[s]
        assert entry["image_index"] == int(arrays[s]["image"][m, r]) == int(topk[s].image[c, r])
        assert (entry["y"], entry["x"]) == (int(topk[s].y[c, r]), int(topk[s].x[c, r]))
        assert entry["value"] == pytest.approx(float(topk[s].values[c, r]), rel=1e-6)
        assert entry["image_id"] == scan_meta["dataset_ids"][entry["image_index"]]
        box = entry["rf_box"]
        assert box["bottom"] - box["top"] == meta["stages"][[1, 3].index(s)]["rf_size"][0]
        ranks.setdefault((s, c), []).append(entry["rank"])
    assert all(sorted(v) == [1, 2, 3] for v in ranks.values()) and len(ranks) == 4
    # values decrease with rank, images are distinct per feature map
    for s in (1, 3):
        assert (np.diff(arrays[s]["value"], axis=1) <= 0).all()
        assert all(len(set(row)) == 3 for row in arrays[s]["image"].tolist())


def test_figure_boxes_point_at_the_tiles(tiny_job):
    out, _ = tiny_job
    meta, arrays = load_fig2(out)
    entry = json.loads((out / "tiles.json").read_text())["tiles"][-1]  # stage 3, last rank
    s, m, r = (
        entry["stage"],
        list(arrays[entry["stage"]]["channels"]).index(entry["channel"]),
        entry["rank"] - 1,
    )
    tile = tuple(meta["stages"][1]["tile_px"])
    shown_r, shown_p = display_tiles(
        arrays[s]["recon"]["deconvnet"][m, r][None], arrays[s]["patch"][m, r][None], tile
    )
    assert list(entry["figure"]["reconstruction_boxes"]) == entry["rules"] == ["deconvnet"]
    for where in ("figure", "sheet"):  # the tiny job's sheet keeps the tiles at full size
        page = np.asarray(Image.open(out / entry[where]["file"]))
        boxes = [
            (entry[where]["reconstruction_boxes"]["deconvnet"], shown_r[0]),
            (entry[where]["patch_box"], shown_p[0]),
        ]
        for (t, l, b, rr), want in boxes:
            assert np.array_equal(page[t:b, l:rr], want), where


def test_provenance_value_recomputed_with_model_features(tiny_job):
    out, _ = tiny_job
    model = deconvnet.load_model("alexnet", weights="random", seed=0)
    dataset, _ = make_dataset(TINY_DATA, model, progress=False)
    tiles = json.loads((out / "tiles.json").read_text())["tiles"]
    with torch.no_grad():
        for entry in tiles[::3]:
            image, image_id = dataset[entry["image_index"]]
            assert image_id == entry["image_id"]
            index = stage_of(model, entry["stage"]).index
            activation = model.features[: index + 1](image[None].clone())
            value = float(activation[0, entry["channel"], entry["y"], entry["x"]])
            assert value == pytest.approx(entry["value"], rel=1e-4, abs=1e-6)
            assert value == pytest.approx(float(activation[0, entry["channel"]].max()), rel=1e-5)


def test_render_fig2_reproduces_the_pngs_from_saved_data(tiny_job, tmp_path):
    out, _ = tiny_job
    written = render_fig2(out, tmp_path)
    assert sorted(p.name for p in written) == ["fig2.png", "fig2_stage1.png", "fig2_stage3.png"]
    for path in written:
        again = np.asarray(Image.open(path))
        original = np.asarray(Image.open(out / path.name))
        assert again.shape == original.shape and np.array_equal(again, original), path.name
    assert Image.open(out / "fig2.png").width <= 2000


def test_assemble_sheet_from_several_jobs(tiny_job, tmp_path):
    out, _ = tiny_job
    sheet = fig2.assemble_sheet([out, out], tmp_path / "sweep.png", max_width=800)
    image = Image.open(sheet)
    assert image.width <= 800 and image.height > 100
    with pytest.raises(FileNotFoundError, match="no tiles.npz"):
        fig2.assemble_sheet([tmp_path], tmp_path / "x.png")


def test_interrupted_run_is_marked_and_leaves_no_figures(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fig2, "project_tiles", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_fig2(tmp_path, **{**TINY, "stages": [1], "channels_per_stage": 1})
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "interrupted"
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "tiles.npz").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"k": 0}, "k: expected an int >= 1"),
        ({"stages": [0]}, "unknown stage 0"),
        ({"stages": []}, "at least one stage"),
        ({"channels": {1: [99]}}, "channel 99 is outside layer 1"),
        ({"data": {"kind": "folder"}}, "data.root: required"),
        ({"data": {"kind": "samples", "limit": 0}}, "data.limit"),
        ({"data": {"kind": "nope"}}, "data.kind"),
        ({"rules": []}, "rules: expected at least one rule"),
        ({"rules": ["deconvnet", "gradcam"]}, "rules: unknown rule 'gradcam'"),
        ({"live_only": "yes"}, "live_only: expected true or false"),
        ({"exclude_border": -1}, "exclude_border: expected an int >= 0"),
        (
            {"exclude_border": 7},
            r"exclude_border: 7 leaves no candidate position in the 13x13 map of "
            r"stage 3 \(relu3\)",
        ),
    ],
)
def test_bad_input_is_a_clear_error_before_the_scan(tmp_path, monkeypatch, change, message):
    monkeypatch.setattr("deconvnet.analysis.scan.scan_topk", lambda *a, **k: pytest.fail("scan ran"))
    with pytest.raises(ValueError, match=message):
        run_fig2(tmp_path, **{**TINY, **change})


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        run_fig2(tmp_path / "job", **{**TINY, "data": {"kind": "folder", "root": str(tmp_path / "nowhere")}})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable images"):
        run_fig2(tmp_path / "job", **{**TINY, "data": {"kind": "folder", "root": str(tmp_path / "empty")}})


def test_folder_with_a_corrupt_file_is_skipped_and_counted(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    result = run_fig2(
        tmp_path / "job",
        **{**TINY, "stages": [2], "channels_per_stage": 1, "data": {"kind": "folder", "root": str(root)}},
    )
    assert result["dataset"]["skipped_count"] == 1
    assert result["dataset"]["skipped"][0]["path"] == "broken.jpg"
    tiles = json.loads((tmp_path / "job" / "tiles.json").read_text())["tiles"]
    assert all(Path(t["image_path"]).parent == root.resolve() for t in tiles)


# ------------------------------------------------------------------ (a) rules side by side

RULES3 = ["guided", "deconvnet", "backprop"]


@pytest.fixture(scope="module")
def rule_tiles(alexnet, small_tiles):
    data, topk, chosen, _ = small_tiles
    return project_tiles(alexnet, data, topk, chosen, batch_size=3, progress=False, rules=RULES3)


def _crop(full: torch.Tensor, box) -> np.ndarray:
    top, left, bottom, right = box
    return crop_with_fill(full, top, left, (bottom - top, right - left), 0.0).numpy()


def _close(got: np.ndarray, want: np.ndarray, rel: float = 1e-5) -> bool:
    return float(np.abs(got - want).max()) <= rel * max(float(np.abs(want).max()), 1e-30)


def test_each_rules_tile_equals_reconstruct_with_that_rule_cropped(alexnet, small_tiles, rule_tiles):
    data, _, _, single = small_tiles
    differ = 0
    for s, t in rule_tiles.items():
        assert t.rules == RULES3
        assert np.array_equal(t.recomputed, single[s].recomputed)
        assert np.array_equal(t.patch, single[s].patch)
        assert _close(t.recon["deconvnet"], single[s].recon["deconvnet"], 1e-6)
        for m, r in [(0, 0), (t.image.shape[0] - 1, t.image.shape[1] - 1)]:
            image = data[int(t.image[m, r])][0][None]
            for rule in RULES3:
                full = deconvnet.reconstruct(alexnet, image, s, keep=int(t.channels[m]), rule=rule)
                assert _close(t.recon[rule][m, r], _crop(full[0], t.box(m, r))), (s, m, r, rule)
            differ += not np.allclose(t.recon["guided"][m, r], t.recon["deconvnet"][m, r])
    assert differ > 0  # the rules really give different pictures


def _autograd_tile(
    alexnet, image: torch.Tensor, s: int, c: int, y: int, x: int, guided: bool
) -> torch.Tensor:
    """Gradient of the seed (its own value at (c, y, x)) w.r.t. the image: plain autograd
    (backprop), or with every ReLU's backward followed by relu (guided backprop)."""
    import copy

    features = copy.deepcopy(alexnet.features[: stage_of(alexnet, s).index + 1])
    for module in features:
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
            if guided:
                module.register_full_backward_hook(lambda mod, gin, gout: (torch.relu(gin[0]),))
    image = image[None].clone().requires_grad_(True)
    a = features(image)
    seed = torch.zeros_like(a)
    seed[0, c, y, x] = a[0, c, y, x].detach()
    return torch.autograd.grad(a, image, seed)[0][0]


def test_guided_and_backprop_tiles_equal_hooked_autograd(alexnet, small_tiles, rule_tiles):
    data, _, _, _ = small_tiles
    for s, m, r in [(2, 0, 1), (5, 1, 0)]:
        t = rule_tiles[s]
        image = data[int(t.image[m, r])][0]
        c, y, x = int(t.channels[m]), int(t.y[m, r]), int(t.x[m, r])
        for rule, guided in (("guided", True), ("backprop", False)):
            want = _crop(_autograd_tile(alexnet, image, s, c, y, x, guided), t.box(m, r))
            assert np.abs(want).max() > 0
            assert _close(t.recon[rule][m, r], want), (s, rule)


def test_all_rules_share_one_forward_record_per_batch(alexnet, small_tiles, monkeypatch):
    data, topk, chosen, _ = small_tiles
    calls = []
    original = Mirror.record

    def counting(self, images):
        calls.append((self.stage, self.rule, int(images.shape[0])))
        return original(self, images)

    monkeypatch.setattr(Mirror, "record", counting)
    tiles = project_tiles(alexnet, data, topk, chosen, batch_size=3, progress=False, rules=RULES3)
    images = {int(i) for t in tiles.values() for i in t.image.ravel()}
    assert len(calls) == -(-len(images) // 3) and sum(n for _, _, n in calls) == len(images)
    assert all(stage == 5 and rule == "guided" for stage, rule, _ in calls)  # masks recorded once
    calls.clear()
    project_tiles(alexnet, data, topk, chosen, batch_size=8, progress=False)
    assert [(stage, rule) for stage, rule, _ in calls] == [(5, "deconvnet")]


@pytest.mark.parametrize(
    "rules, message",
    [
        ([], "rules: expected at least one rule"),
        (
            ["deconvnet", "nope"],
            "rules: unknown rule 'nope'; expected names among deconvnet, backprop, guided",
        ),
        (3, "rules: expected a list of rule names"),
        ([None], "rules: unknown rule None"),
    ],
)
def test_bad_rules_are_a_clear_error(rules, message):
    with pytest.raises(ValueError, match=message):
        top_projections.check_rules(rules)


def test_check_rules_keeps_order_and_drops_duplicates():
    assert top_projections.check_rules(["guided", "deconvnet", "guided"]) == ["guided", "deconvnet"]
    assert top_projections.check_rules("backprop") == ["backprop"]


@pytest.fixture(scope="module")
def rules_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig2_rules_job")
    result = run_fig2(out, **{**TINY, "rules": ["deconvnet", "guided"], "exclude_border": 1})
    return out, result


def test_rules_job_files_record_rules_and_reproduce(rules_job, tmp_path):
    out, result = rules_job
    assert result["status"] == "complete" and result["rules"] == ["deconvnet", "guided"]
    with np.load(out / "tiles.npz") as npz:
        assert {"recon_deconvnet_stage1", "recon_guided_stage3", "patch_stage3"} <= set(npz.files)
        assert json.loads(str(npz["meta"]))["version"] == fig2.NPZ_VERSION == 2
    meta, arrays = load_fig2(out)
    assert meta["rules"] == ["deconvnet", "guided"] and list(arrays[3]["recon"]) == meta["rules"]
    assert "guided = relu(R)·[f>0]" in meta["legend"] and "then the matching image" in meta["legend"]
    written = render_fig2(out, tmp_path)
    for path in written:  # the same bytes again: nothing random in drawing
        assert path.read_bytes() == (out / path.name).read_bytes(), path.name


def test_rules_job_boxes_point_at_each_rules_tile(rules_job):
    out, _ = rules_job
    meta, arrays = load_fig2(out)
    tiles = json.loads((out / "tiles.json").read_text())
    assert tiles["rules"] == ["deconvnet", "guided"]
    for entry in (tiles["tiles"][0], tiles["tiles"][-1]):
        s = entry["stage"]
        m = list(arrays[s]["channels"]).index(entry["channel"])
        r = entry["rank"] - 1
        sm = next(x for x in meta["stages"] if x["stage"] == s)
        assert entry["rules"] == ["deconvnet", "guided"]
        for where in ("figure", "sheet"):
            page = np.asarray(Image.open(out / entry[where]["file"]))
            for rule in ("deconvnet", "guided"):
                shown, patch = display_tiles(
                    arrays[s]["recon"][rule][m, r][None], arrays[s]["patch"][m, r][None], tuple(sm["tile_px"])
                )
                t, l, b, rr = entry[where]["reconstruction_boxes"][rule]
                assert np.array_equal(page[t:b, l:rr], shown[0]), (where, rule)
            t, l, b, rr = entry[where]["patch_box"]
            assert np.array_equal(page[t:b, l:rr], patch[0]), where


def test_rules_job_guided_tiles_equal_reconstruct(rules_job):
    out, _ = rules_job
    model = deconvnet.load_model("alexnet", weights="random", seed=0)
    dataset, _ = make_dataset(TINY_DATA, model, progress=False)
    meta, arrays = load_fig2(out)
    for sm in meta["stages"]:
        s, a = sm["stage"], arrays[sm["stage"]]
        image = dataset[int(a["image"][0, 0])][0][None]
        full = deconvnet.reconstruct(model, image, s, keep=int(a["channels"][0]), rule="guided")
        top = int(a["y"][0, 0]) * sm["rf_jump"][0] + sm["rf_start"][0]
        left = int(a["x"][0, 0]) * sm["rf_jump"][1] + sm["rf_start"][1]
        box = (top, left, top + sm["rf_size"][0], left + sm["rf_size"][1])
        assert _close(a["recon"]["guided"][0, 0], _crop(full[0], box))


# --------------------------------------------------------------- (b) dead feature maps


def test_map_activity_counts_the_images_each_map_fires_on(alexnet):
    images = torch.randn(6, 3, 70, 70, generator=torch.Generator().manual_seed(3))
    topk = scan_topk(alexnet, [images[:4], images[4:]], k=3, stages=(3, 5), progress=False)
    unusual = 0
    for s in (3, 5):
        with torch.no_grad():
            maps = alexnet.features[: stage_of(alexnet, s).index + 1](images.clone())
        fires = (maps.amax(dim=(2, 3)) > 0).sum(dim=0)  # [C] images on which each map fires
        activity = top_projections.map_activity(topk[s])
        assert activity.dead == torch.nonzero(fires == 0).flatten().tolist()
        assert activity.sparse == torch.nonzero((fires > 0) & (fires < 3)).flatten().tolist()
        assert activity.eligible == torch.nonzero(fires >= 3).flatten().tolist()
        assert (
            activity.as_dict()["dead"]
            + activity.as_dict()["firing_on_fewer_than_k"]
            + activity.as_dict()["eligible"]
            == maps.shape[1]
            == activity.channels
        )
        unusual += len(activity.dead) + len(activity.sparse)
    assert unusual > 0


def test_live_only_draw_is_seeded_among_eligible_maps(alexnet, caplog):
    eligible = {1: [1, 4, 9, 20, 33, 40], 3: list(range(0, 384, 7))}
    chosen = select_channels(alexnet, [1, 3], None, 4, 0, eligible)
    rng = np.random.default_rng([0, 1])  # the documented draw, done here by hand
    assert chosen[1] == sorted(eligible[1][i] for i in rng.choice(6, 4, replace=False))
    assert set(chosen[3]) <= set(eligible[3]) and len(chosen[3]) == 4
    assert select_channels(alexnet, [3], None, 4, 0, {3: eligible[3]})[3] == chosen[3]
    assert (
        select_channels(alexnet, [1, 3], None, 4, 0, {1: eligible[1]})[3]
        == select_channels(alexnet, [3], None, 4, 0)[3]
    )  # a stage not listed: drawn among all
    assert select_channels(alexnet, [1], {1: [2, 0]}, 4, 0, {1: [1]})[1] == [2, 0]  # as given
    with caplog.at_level("WARNING", logger="deconvnet.analysis.top_projections"):
        assert select_channels(alexnet, [1], None, 4, 0, {1: [5, 3]}) == {1: [3, 5]}
    assert "only 2 feature maps that fire on k images" in caplog.text
    with pytest.raises(ValueError, match="live_only: no feature map of layer 1 fires"):
        select_channels(alexnet, [1], None, 4, 0, {1: []})


def test_run_reports_dead_maps_and_shows_only_live_ones(tiny_job):
    out, result = tiny_job
    topk, _ = load_topk(out / "topk.pt")
    meta, arrays = load_fig2(out)
    assert result["live_only"] is True
    for sm in meta["stages"]:
        s = sm["stage"]
        activity = top_projections.map_activity(topk[s])
        assert result["map_activity"][str(s)] == activity.as_dict() == sm["map_activity"]
        assert set(result["channels"][str(s)]) <= set(activity.eligible)
        assert (arrays[s]["value"] > 0).all()  # every tile of every block shows a firing map
        assert f"{len(activity.dead)} dead (fire on no image)" in sm["detail"]
        assert f"among the {len(activity.eligible)} that fire on >= 3 images" in sm["selection"]
    assert result["map_activity"]["3"]["dead"] > 0  # random AlexNet relu3 has dead maps here
    model = deconvnet.load_model("alexnet", weights="random", seed=0)
    height, width = meta["image_size"]
    for s in (1, 3):
        with torch.no_grad():  # the map size from a real forward pass
            out_map = model.features[: deconvnet.stage(model, s).index + 1](torch.zeros(1, 3, height, width))
        map_h, map_w = out_map.shape[-2:]
        live = topk[s].values > 0
        on_ring = (
            (topk[s].y == 0) | (topk[s].x == 0) | (topk[s].y == map_h - 1) | (topk[s].x == map_w - 1)
        ) & live
        assert result["border_ring"][str(s)]["entries"] == int(live.sum())
        assert result["border_ring"][str(s)]["on_ring"] == int(on_ring.sum())


def test_live_only_off_draws_among_all_maps(tmp_path):
    result = run_fig2(tmp_path, **{**TINY, "stages": [3], "channels_per_stage": 3, "live_only": False})
    model = deconvnet.load_model("alexnet", weights="random", seed=0)
    assert result["channels"] == {"3": select_channels(model, [3], None, 3, 0)[3]}
    assert result["map_activity"]["3"]["dead"] > 0 and result["live_only"] is False
    meta, _ = load_fig2(tmp_path)
    assert "dead ones included (live_only off)" in meta["stages"][0]["selection"]


# --------------------------------------------------------------- (c) border positions


def test_exclude_border_is_applied_and_recorded(rules_job):
    out, result = rules_job
    meta, arrays = load_fig2(out)
    tiles = json.loads((out / "tiles.json").read_text())
    assert result["exclude_border"] == tiles["exclude_border"] == meta["exclude_border"] == 1
    assert result["arguments"]["exclude_border"] == 1
    assert all(t["exclude_border"] == 1 for t in tiles["tiles"])
    assert "exclude_border=1" in meta["dataset_label"]
    assert load_topk(out / "topk.pt").meta["exclude_border"] == 1
    sizes = {1: 27, 3: 13}  # AlexNet pool1 / relu3 maps of 224 px images
    for s, size in sizes.items():
        for key in ("y", "x"):
            assert (arrays[s][key] >= 1).all() and (arrays[s][key] <= size - 2).all()


def test_exclude_border_scan_matches_interior_brute_force(alexnet):
    images = torch.randn(5, 3, 80, 80, generator=torch.Generator().manual_seed(4))
    topk = scan_topk(alexnet, [images], k=5, stages=(2,), progress=False, exclude_border=1)[2]
    with torch.no_grad():
        maps = alexnet.features[: stage_of(alexnet, 2).index + 1](images.clone())  # [5, C, 4, 4]
    inner = maps[:, :, 1:-1, 1:-1]
    best = inner.flatten(2).amax(dim=2).t()  # [C, 5]
    want = torch.sort(best, dim=1, descending=True, stable=True)
    assert torch.equal(topk.values, want.values) and torch.equal(topk.image, want.indices)
    picked = maps[topk.image, torch.arange(maps.shape[1])[:, None], topk.y, topk.x]
    assert torch.equal(picked, topk.values)


# ----------------------------------------------------------------- (d) readable sheet


def _wide_panel(rules=("deconvnet", "guided"), maps: int = 16) -> PanelData:
    rng = np.random.default_rng(0)
    recon = {r: rng.standard_normal((maps, 9, 3, 8, 8)).astype(np.float32) for r in rules}
    patch = rng.integers(0, 256, (maps, 9, 3, 8, 8), dtype=np.uint8)
    return PanelData(recon, patch, list(range(100, 100 + maps)), (64, 64))


def test_sheet_text_is_wrapped_to_the_sheet_width():
    from deconvnet.figures import fig2_layout as lay

    legend = "Per feature map, left to right: " + "a rather long legend sentence " * 12 + "end."
    title = [("Fig. 2 reproduction — a model, its weights", lay.SHEET_TITLE_FONT), (legend, lay.TEXT_FONT)]
    labels = [
        [
            ("Layer 3  (pool3, receptive field 44 px)", lay.LAYER_FONT),
            ("16 of 256 feature maps, " + "selection words " * 10, lay.TEXT_FONT),
        ]
    ]
    layout = lay.sheet_layout(title, labels, [_wide_panel()], 700)
    sheet = lay.render_sheet(title, labels, [_wide_panel()], 700)
    assert sheet.size == (layout.size[1], layout.size[0]) and sheet.width <= 700
    lines = list(layout.title_lines) + list(layout.placements[0].label_lines)
    assert all(lay._text_width(t, spec) <= sheet.width - 2 * lay.MARGIN for t, spec in lines)
    assert " ".join(t for t, spec in layout.title_lines[1:]) == legend  # nothing lost
    pixels = np.asarray(sheet)
    assert (pixels[:, -lay.MARGIN // 2 :] == 255).all()  # nothing runs into the right edge


def test_sheet_shrinks_tiles_not_labels():
    from PIL import ImageDraw

    from deconvnet.figures import fig2_layout as lay

    panel = _wide_panel()
    title = [("Fig. 2", lay.SHEET_TITLE_FONT)]
    labels = [[("Layer 2", lay.LAYER_FONT)]]
    sheet = np.asarray(lay.render_sheet(title, labels, [panel], 700))
    place = lay.sheet_layout(title, labels, [panel], 700).placements[0]
    assert place.layout.tile[0] < 64 and place.layout.width <= 700 - 2 * lay.MARGIN
    assert lay.panel_layout(16, 9, (64, 64), panel.rules).width > 700  # it had to shrink
    # the block label is drawn at LABEL_FONT, pixel for pixel as if drawn alone at full size
    for m, text in ((0, "feature map 100"), (15, "feature map 115")):
        top, left = place.layout.block_origin(m)
        width = lay._text_width(text, lay.LABEL_FONT)
        alone = Image.new("RGB", (width, lay.LABEL_H), (255, 255, 255))
        ImageDraw.Draw(alone).text((0, 0), text, fill=(0, 0, 0), font=lay._font(*lay.LABEL_FONT))
        y, x = place.body_top + top, place.left + left
        assert np.array_equal(sheet[y : y + lay.LABEL_H, x : x + width], np.asarray(alone))
    cap = lay._font(*lay.LABEL_FONT).getbbox("H")
    assert cap[3] - cap[1] >= 12  # cap height of labels and text, at any sheet width
    # the reduced tiles are the display tiles resized (Lanczos) into their boxes
    shown, _ = display_tiles(panel.recon["guided"][3, 4][None], panel.patch[3, 4][None], (64, 64))
    th, tw = place.layout.tile
    want = np.asarray(Image.fromarray(shown[0]).resize((tw, th), Image.Resampling.LANCZOS))
    t, l, b, r = place.layout.tile_boxes(3, 4)[0][1]
    assert np.array_equal(
        sheet[place.body_top + t : place.body_top + b, place.left + l : place.left + r], want
    )


def test_committed_width_sheet_keeps_fixed_size_text(tiny_job, tmp_path):
    """At the committed 1400 px, as at any width, labels and header use the fixed fonts."""
    from deconvnet.figures import fig2_layout as lay

    out, _ = tiny_job
    meta, arrays = load_fig2(out)
    panels = [stage_panel(arrays[sm["stage"]], sm) for sm in meta["stages"]]
    for width in (1400, 400):
        layout = lay.sheet_layout(lay.sheet_title_lines(meta), lay.sheet_label_lines(meta), panels, width)
        assert layout.size[1] <= width
        specs = {spec for _, spec in layout.title_lines}
        specs |= {spec for p in layout.placements for _, spec in p.label_lines}
        assert specs <= {lay.SHEET_TITLE_FONT, lay.TEXT_FONT, lay.LAYER_FONT}
        assert all(lay._text_width(t, s) <= width - 2 * lay.MARGIN for t, s in layout.title_lines)


def test_same_inputs_give_the_same_bytes(tiny_job, tmp_path):
    out, _ = tiny_job
    run_fig2(tmp_path, **TINY)
    for name in ("fig2.png", "fig2_stage1.png", "fig2_stage3.png", "tiles.npz"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


# -------------------------------------------------------------------------------- the CLI


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_experiment("experiments.fig2", *args, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.slow
def test_cli_runs_a_tiny_job_and_rejects_bad_values(tmp_path):
    tiny = [
        "model=alexnet",
        "model.weights=random",
        "stages=[1,3]",
        "channels_per_stage=2",
        "k=3",
        "data.photos=[chelsea,coffee]",
        "data.limit=8",
        "progress=false",
    ]
    done = _cli(*tiny, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "complete"
    assert (tmp_path / "run" / "fig2.png").is_file() and (tmp_path / "run" / "config.yaml").is_file()

    bad = _cli(*tiny, "k=0", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert bad.returncode != 0
    assert "error: k: expected an int >= 1, got 0" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_cli_rules_border_and_live_only_options(tmp_path):
    tiny = [
        "model=alexnet",
        "model.weights=random",
        "stages=[3]",
        "channels_per_stage=2",
        "k=2",
        "data.photos=[coffee]",
        "data.limit=4",
        "progress=false",
    ]
    done = _cli(
        *tiny,
        "rules=[deconvnet,guided]",
        "exclude_border=1",
        "live_only=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["rules"] == ["deconvnet", "guided"] and result["exclude_border"] == 1
    assert result["live_only"] is False and result["config"]["rules"] == ["deconvnet", "guided"]
    bad = _cli(*tiny, "rules=[deconvnet,nope]", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert bad.returncode != 0 and "error: rules: unknown rule 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_cli_stage_sweep_and_assembled_sheet(tmp_path):
    done = _cli(
        "-m",
        "model=alexnet",
        "model.weights=random",
        "stage=1,5",
        "channels_per_stage=1",
        "k=2",
        "data.photos=[coffee]",
        "data.limit=4",
        "progress=false",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if (p / "tiles.npz").is_file())
    model = deconvnet.load_model("alexnet", "random")
    expected = []
    for job, s in zip(jobs, (1, 5)):  # live_only: drawn among the maps that fire on k images
        eligible = top_projections.map_activity(load_topk(job / "topk.pt").result[s]).eligible
        expected.append({str(s): select_channels(model, [s], None, 1, 0, {s: eligible})[s]})
    assert [json.loads((j / "result.json").read_text())["channels"] for j in jobs] == expected
    sheet = fig2.assemble_sheet(jobs, tmp_path / "sweep.png")
    assert Image.open(sheet).width <= 2000
