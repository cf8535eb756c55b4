"""Fig. 2: crops, display, provenance, projection path vs full-frame reference, files, CLI.

Everything runs offline on random-initialised AlexNet with a handful of gallery images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deconvnet
from deconvnet import fig2
from deconvnet.architecture import stage as stage_of
from deconvnet.fig2 import (
    crop_with_fill,
    display_size,
    display_tiles,
    load_fig2,
    make_dataset,
    project_tiles,
    render_fig2,
    run_fig2,
    select_channels,
)
from deconvnet.geometry import receptive_field
from deconvnet.scan import load_topk, scan_topk

REPO = Path(__file__).resolve().parent.parent
TINY_DATA = {"kind": "samples", "photos": ["chelsea", "coffee", "astronaut"], "limit": 10}
TINY = dict(model="alexnet", weights="random", seed=0, data=TINY_DATA, stages=[1, 3],
            channels_per_stage=2, k=3, progress=False)


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
    return data, topk, chosen, project_tiles(alexnet, data, topk, chosen, batch_size=3,
                                             progress=False)


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
        assert t.recon.shape == (len(chosen[s]), 3, 3, *size) and t.recon.dtype == np.float32
        assert t.patch.shape == t.recon.shape and t.patch.dtype == np.uint8
        for m in range(t.image.shape[0]):
            for r in range(t.image.shape[1]):
                top, left, bottom, right = t.box(m, r)
                assert (top, left, bottom, right) == receptive_field(alexnet, s).box(
                    int(t.y[m, r]), int(t.x[m, r]))
                rows = np.arange(top, bottom)
                cols = np.arange(left, right)
                outside = ~((rows[:, None] >= 0) & (rows[:, None] < 96)
                            & (cols[None, :] >= 0) & (cols[None, :] < 96))
                if outside.any():
                    crossed += 1
                assert (t.patch[m, r][:, outside] == fig2.GREY).all()
                assert (t.recon[m, r][:, outside] == 0).all()
                # the inside of the patch is the denormalised image, 8-bit
                shown = deconvnet.denormalize(data[int(t.image[m, r])][0], alexnet)
                expected = (shown.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                y0, x0 = max(top, 0), max(left, 0)
                y1, x1 = min(bottom, 96), min(right, 96)
                assert np.array_equal(t.patch[m, r][:, y0 - top : y1 - top, x0 - left : x1 - left],
                                      expected[:, y0:y1, x0:x1])
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
            got = t.recon[m, r]
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
    assert np.abs(t.recon[m, r] - want).max() <= 1e-5 * np.abs(want).max()


def test_mismatched_recorded_value_is_an_error_naming_the_tile(alexnet, small_tiles):
    data, topk, _, _ = small_tiles
    broken = {s: deconvnet.scan.TopK(t.values.clone(), t.image, t.y, t.x, t.images_scanned)
              for s, t in topk.items()}
    broken[2].values[3, 1] += 1.0
    with pytest.raises(fig2.TileMismatchError, match=r"stage 2 \(pool2\) channel 3 rank 2"):
        project_tiles(alexnet, data, broken, {2: [3]}, progress=False)


# ------------------------------------------------------------------------------ end to end


def test_run_fig2_writes_consistent_files(tiny_job):
    out, result = tiny_job
    names = {p.name for p in out.iterdir()}
    expected = {"result.json", "tiles.json", "tiles.npz", "topk.pt", "fig2.png",
                "fig2_stage1.png", "fig2_stage3.png"}
    assert expected <= names and not any(n.endswith(".tmp") for n in names)
    saved = json.loads((out / "result.json").read_text())
    assert saved["status"] == "complete" and result["status"] == "complete"
    assert saved["weights"]["pretrained"] is False and saved["dataset"]["images"] == 10
    assert saved["dataset"]["skipped_count"] == 0
    assert set(saved["timings_s"]) >= {"scan_s", "project_s", "render_s", "total_s"}
    assert saved["max_relative_value_difference"] <= fig2.VALUE_RTOL

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
    s, m, r = entry["stage"], list(arrays[entry["stage"]]["channels"]).index(entry["channel"]), \
        entry["rank"] - 1
    tile = tuple(meta["stages"][1]["tile_px"])
    shown_r, shown_p = display_tiles(arrays[s]["recon"][m, r][None], arrays[s]["patch"][m, r][None],
                                     tile)
    page = np.asarray(Image.open(out / entry["figure"]["file"]))
    for key, want in (("reconstruction_box", shown_r[0]), ("patch_box", shown_p[0])):
        t, l, b, rr = entry["figure"][key]
        assert np.array_equal(page[t:b, l:rr], want)
    sheet = Image.open(out / entry["sheet"]["file"])
    t, l, b, rr = entry["sheet"]["patch_box"]
    assert 0 <= t < b <= sheet.height and 0 <= l < rr <= sheet.width


def test_provenance_value_recomputed_with_model_features(tiny_job):
    out, _ = tiny_job
    model = deconvnet.load_model("alexnet", weights="random", seed=0)
    dataset, _ = make_dataset(TINY_DATA, model, progress=False)
    tiles = json.loads((out / "tiles.json").read_text())["tiles"]
    with torch.no_grad():
        for entry in tiles[:: 3]:
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


@pytest.mark.parametrize("change, message", [
    ({"k": 0}, "k: expected an int >= 1"),
    ({"stages": [0]}, "unknown stage 0"),
    ({"stages": []}, "at least one stage"),
    ({"channels": {1: [99]}}, "channel 99 is outside layer 1"),
    ({"data": {"kind": "folder"}}, "data.root: required"),
    ({"data": {"kind": "samples", "limit": 0}}, "data.limit"),
    ({"data": {"kind": "nope"}}, "data.kind"),
])
def test_bad_input_is_a_clear_error_before_the_scan(tmp_path, monkeypatch, change, message):
    monkeypatch.setattr("deconvnet.scan.scan_topk", lambda *a, **k: pytest.fail("scan ran"))
    with pytest.raises(ValueError, match=message):
        run_fig2(tmp_path, **{**TINY, **change})


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        run_fig2(tmp_path / "job", **{**TINY, "data": {"kind": "folder",
                                                      "root": str(tmp_path / "nowhere")}})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable images"):
        run_fig2(tmp_path / "job", **{**TINY, "data": {"kind": "folder",
                                                      "root": str(tmp_path / "empty")}})


def test_folder_with_a_corrupt_file_is_skipped_and_counted(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    result = run_fig2(tmp_path / "job", **{**TINY, "stages": [2], "channels_per_stage": 1,
                                           "data": {"kind": "folder", "root": str(root)}})
    assert result["dataset"]["skipped_count"] == 1
    assert result["dataset"]["skipped"][0]["path"] == "broken.jpg"
    tiles = json.loads((tmp_path / "job" / "tiles.json").read_text())["tiles"]
    assert all(Path(t["image_path"]).parent == root.resolve() for t in tiles)


# -------------------------------------------------------------------------------- the CLI


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "experiments.fig2", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_runs_a_tiny_job_and_rejects_bad_values(tmp_path):
    tiny = ["model=alexnet", "model.weights=random", "stages=[1,3]", "channels_per_stage=2", "k=3",
            "data.photos=[chelsea,coffee]", "data.limit=8", "progress=false"]
    done = _cli(*tiny, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "complete"
    assert (tmp_path / "run" / "fig2.png").is_file() and (tmp_path / "run" / "config.yaml").is_file()

    bad = _cli(*tiny, "k=0", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert bad.returncode != 0
    assert "error: k: expected an int >= 1, got 0" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_cli_stage_sweep_and_assembled_sheet(tmp_path):
    done = _cli("-m", "model=alexnet", "model.weights=random", "stage=1,5", "channels_per_stage=1",
                "k=2", "data.photos=[coffee]", "data.limit=4", "progress=false",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if (p / "tiles.npz").is_file())
    assert [json.loads((j / "result.json").read_text())["channels"] for j in jobs] == [
        {"1": select_channels(deconvnet.load_model("alexnet", "random"), [1], None, 1)[1]},
        {"5": select_channels(deconvnet.load_model("alexnet", "random"), [5], None, 1)[5]},
    ]
    sheet = fig2.assemble_sheet(jobs, tmp_path / "sweep.png")
    assert Image.open(sheet).width <= 2000
