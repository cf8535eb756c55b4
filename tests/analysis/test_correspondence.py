"""Correspondence analysis (Zeiler & Fergus 2014, Table 1): `deconvnet.analysis.correspondence`
and its job (`run_correspondence`, `python -m experiments.correspondence`).

Values are checked against independent references: a hand-computed Hamming sum, and a brute
force that occludes each image by hand (numpy slicing), runs the model's own modules on each
image alone and counts differing signs with numpy loops and scipy's pdist. Offline and fast:
AlexNet with seeded random weights at 96 px (float64) for the analysis, at the weights' 224 px
for the job. The subprocess test is marked slow.
"""

from __future__ import annotations

import copy
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import FIXED_PROVENANCE, run_experiment, without_seconds
from hydra import compose, initialize_config_dir
from PIL import Image
from scipy.spatial.distance import pdist, squareform
from torch import nn

import deconvnet
import deconvnet.jobs.request
from deconvnet.analysis import correspondence as corr
from deconvnet.data.paths import CONF_DIR
from deconvnet.figures import correspondence as corr_fig
from deconvnet.jobs import correspondence as corr_job
from deconvnet.jobs.folder import LOCK_FILE
from deconvnet.jobs.provenance import PROVENANCE_ENV

SIDE = 96
BOXES = {
    "eye": [(10, 12, 8, 9), (30, 40, 12, 10), (0, 0, 5, SIDE)],
    "nose": [(50, 50, 14, 14), (1, 2, 3, 4), (20, 20, 20, 20)],
}
LAYERS = (2, 5, "fc7")


def _photos(model: nn.Module, names=("astronaut", "cat", "coffee"), side: int = SIDE):
    """Sample photos with the weights' preprocessing, resized to side x side, model's dtype."""
    x = torch.cat([deconvnet.load_image(n, "alexnet") for n in names])
    x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return x.to(next(model.parameters()).dtype)


# ----------------------------------------------------------------- brute force (independent)


def _own_features(model: nn.Module, image: torch.Tensor) -> dict:
    """The model's own modules (inplace ReLUs, Dropout in eval mode) on ONE image
    [1, 3, H, W] -> every stage's output and fc6 / fc7 (the classifier's ReLUs), flattened."""
    ends = {deconvnet.stage(model, s).index: s for s in range(1, 6)}
    out, h = {}, image
    with torch.no_grad():
        for i, module in enumerate(model.features):
            h = module(h)
            if i in ends:
                out[ends[i]] = h[0].flatten().numpy().copy()
        h = torch.flatten(model.avgpool(h), 1)
        relus = 0
        for module in model.classifier:
            h = module(h)
            if isinstance(module, nn.ReLU):
                relus += 1
                out[f"fc{5 + relus}"] = h[0].numpy().copy()
    return out


def _brute_force(model: nn.Module, x: torch.Tensor, boxes) -> dict:
    """layer -> ([N, N] Hamming distances of numpy sign vectors, pair by pair; the signs)."""
    eps = []
    for k, (top, left, height, width) in enumerate(boxes):
        occluded = x[k : k + 1].numpy().copy()
        occluded[..., top : top + height, left : left + width] = 0.0
        before, after = (_own_features(model, x[k : k + 1]), _own_features(model, torch.from_numpy(occluded)))
        eps.append({layer: before[layer] - after[layer] for layer in before})
    n, out = len(eps), {}
    for layer in eps[0]:
        signs = [np.sign(e[layer]) for e in eps]
        h = np.zeros((n, n), dtype=np.int64)
        for i in range(n):
            for j in range(n):
                h[i, j] = sum(1 for a, b in zip(signs[i], signs[j]) if a != b)
        out[layer] = (h, signs)
    return out


@pytest.fixture(scope="module")
def analysed(alexnet_float64):
    x = _photos(alexnet_float64)
    return x, corr.correspondence(
        alexnet_float64, x, BOXES, layers=LAYERS, random_draws=2, seed=5, progress=False
    )


def test_delta_equals_a_brute_force(analysed, alexnet_float64):
    x, result = analysed
    assert result.parts == ("eye", "nose") and result.layers == LAYERS
    for part in BOXES:
        sets = [BOXES[part], *result.random_boxes[part]]
        brute = [_brute_force(alexnet_float64, x, boxes) for boxes in sets]
        for layer in LAYERS:
            key = corr.layer_key(layer)
            want, signs = brute[0][layer]
            np.testing.assert_array_equal(result.distances[part][key], want)
            assert result.feature_length[key] == len(signs[0])
            # scipy's Hamming (a fraction of the positions) on the same sign vectors
            np.testing.assert_allclose(
                squareform(pdist(np.stack(signs), "hamming")) * len(signs[0]), want, atol=1e-9
            )
            # the paper's Delta: every ordered pair i != j
            pairs = sum(want[i, j] for i in range(3) for j in range(3) if i != j)
            assert result.delta(part, layer) == pairs == 2 * result.row(part, layer)["delta_i_lt_j"]
            assert pairs > 0
            for d in range(2):
                shuffled = brute[1 + d][layer][0]
                np.testing.assert_array_equal(result.random_distances[part][key][d], shuffled)
                assert result.random_delta(part, layer)[d] == shuffled.sum()
        # sign(0) = 0 is exercised: stage-2 units outside the occluder's projective field
        assert all(0 < np.count_nonzero(s == 0) < len(s) for s in brute[0][2][1])


def test_batches_of_images_give_the_same_distances(analysed, alexnet_float64):
    x, one = analysed
    batched = corr.correspondence(
        alexnet_float64,
        x,
        {"eye": BOXES["eye"]},
        layers=LAYERS,
        random_draws=2,
        seed=5,
        batch_size=2,
        progress=False,
    )
    # Exact across batch shapes, in float64: within a run an image and its occluded copy share one
    # batch shape and position, so units outside the occluder's field get eps = 0 exactly in both
    # runs; another batch shape moves a nonzero eps by ~1e-15 of the features (kernels summing in
    # another order), which flips sign(eps) only for |eps| that small: none here (in float32,
    # ~1e-6, it can: the module doc's reason for batch_size=1)
    for part in ("eye",):
        for key in one.distances[part]:
            np.testing.assert_array_equal(batched.distances[part][key], one.distances[part][key])
            np.testing.assert_array_equal(
                batched.random_distances[part][key], one.random_distances[part][key]
            )


def test_hamming_and_delta_by_hand():
    original = torch.tensor([[1.0, 0.0, 2.0, 0.0]])
    occluded = torch.tensor([[0.5, 0.0, 3.0, 0.0]])
    assert corr.sign_changes(original, occluded).tolist() == [[1, 0, -1, 0]]  # sign(0) = 0
    signs = torch.tensor([[1, 0, -1, 1], [1, 1, -1, -1], [0, 0, 0, 0]], dtype=torch.int8)
    h = corr.hamming_matrix(signs)
    assert h.tolist() == [[0, 2, 3], [2, 0, 4], [3, 4, 0]]
    shuffled = np.stack(
        [np.ones((3, 3), dtype=np.int64) - np.eye(3, dtype=np.int64), np.zeros((3, 3), dtype=np.int64)]
    )
    result = corr.Correspondence(
        parts=("p",),
        layers=(5,),
        boxes={"p": ((0, 0, 1, 1),) * 3},
        random_boxes={"p": (((0, 0, 1, 1),) * 3,) * 2},
        feature_length={"stage5": 4},
        distances={"p": {"stage5": h.numpy()}},
        random_distances={"p": {"stage5": shuffled}},
    )
    row = result.row("p", 5)
    assert result.delta("p", 5) == 18 and row["delta_i_lt_j"] == 9 and row["pairs"] == 3
    assert row["normalized_mean"] == pytest.approx(18 / (3 * 2 * 4))  # (2 + 3 + 4) / 3 / 4
    assert row["normalized_std"] == pytest.approx(np.sqrt((0.25**2 + 0 + 0.25**2) / 3))
    r = row["random"]
    assert r["delta_per_draw"] == [6, 0] and (r["delta_mean"], r["delta_std"]) == (3.0, 3.0)
    assert r["normalized_per_draw"] == [0.25, 0.0]
    assert (r["normalized_mean"], r["normalized_std"]) == (0.125, 0.125)
    assert result.summary() == {"p": {"stage5": row}}


def test_occlude_sets_only_the_box():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    out = corr.occlude(x, [(1, 2, 3, 4), (0, 7, 8, 1)], fill=-0.5)
    assert torch.equal(x, before)  # the input is not changed
    inside = torch.zeros(2, 3, 8, 8, dtype=torch.bool)
    inside[0, :, 1:4, 2:6] = True
    inside[1, :, :, 7] = True
    assert (out[inside] == -0.5).all() and torch.equal(out[~inside], x[~inside])
    assert int(inside.sum()) == 3 * 3 * 4 + 3 * 8


# ---------------------------------------------------------------------------- random boxes


def test_random_boxes_are_seeded_inside_and_the_right_size():
    boxes = {"a": [(0, 0, 94, 77), (5, 5, 10, 20)], "b": [(1, 1, 30, 30), (2, 2, 1, 1)]}
    draws = corr.draw_random_boxes(boxes, 96, 80, 300, seed=3)
    assert draws == corr.draw_random_boxes(boxes, 96, 80, 300, seed=3)
    assert draws != corr.draw_random_boxes(boxes, 96, 80, 300, seed=4)
    for part, per_draw in draws.items():
        assert len(per_draw) == 300
        for drawn in per_draw:
            for (top, left, h, w), (_, _, h0, w0) in zip(drawn, boxes[part]):
                assert (h, w) == (h0, w0)
                assert 0 <= top <= 96 - h and 0 <= left <= 80 - w
    # every position that keeps the box inside is drawn (the last included): 3 x 4 of them
    corners = {(t, l) for drawn in draws["a"] for t, l, _, _ in drawn[:1]}
    assert corners == {(t, l) for t in range(3) for l in range(4)}
    # the documented stream: PCG64 seeded with (seed, crc32(part), draw), top then left
    rng = np.random.default_rng([3, zlib.crc32(b"b"), 7])
    want = [(int(rng.integers(0, 96 - h + 1)), int(rng.integers(0, 80 - w + 1))) for _, _, h, w in boxes["b"]]
    assert [b[:2] for b in draws["b"][7]] == want
    # a part's draws do not depend on the other parts
    assert corr.draw_random_boxes({"b": boxes["b"]}, 96, 80, 300, seed=3)["b"] == draws["b"]


def test_the_result_records_its_random_boxes(analysed):
    _, result = analysed
    checked = {p: [tuple(b) for b in boxes] for p, boxes in BOXES.items()}
    assert result.random_boxes == corr.draw_random_boxes(checked, SIDE, SIDE, 2, seed=5)
    assert result.boxes == {p: tuple(b) for p, b in checked.items()}
    assert result.settings == {
        "random_draws": 2,
        "seed": 5,
        "fill": 0.0,
        "batch_size": 1,
        "image_size": [SIDE, SIDE],
    }


# --------------------------------------------------------------------------- the caller's model


def test_the_callers_model_is_left_as_it_was():
    model = deconvnet.load_model("alexnet", weights="random", seed=1).train()
    calls = []
    model.features[0].register_forward_hook(lambda *args: calls.append(1))
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = [
        (
            name,
            m.training,
            getattr(m, "inplace", None),
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
        )
        for name, m in model.named_modules()
    ]
    grads = [p.requires_grad for p in model.parameters()]
    x = _photos(model, ("cat", "coffee"))
    boxes = {"a": [(10, 10, 20, 20), (40, 30, 10, 30)]}
    got = corr.correspondence(model, x, boxes, layers=(5, "fc7"), random_draws=1, progress=False)
    assert {k: v for k, v in model.state_dict().items()}.keys() == params.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in params.items())
    assert flags == [
        (
            name,
            m.training,
            getattr(m, "inplace", None),
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
        )
        for name, m in model.named_modules()
    ]
    assert grads == [p.requires_grad for p in model.parameters()]
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert len(calls) == 2 * (1 + 2)  # its own hook saw every forward pass; none was added
    evaluated = copy.deepcopy(model).eval()  # train mode changes nothing: Dropout is skipped
    same = corr.correspondence(evaluated, x, boxes, layers=(5, "fc7"), random_draws=1, progress=False)
    for key in ("stage5", "fc7"):
        np.testing.assert_array_equal(got.distances["a"][key], same.distances["a"][key])


# ---------------------------------------------------------------------------------- bad input


def _bad(**change):
    base = {
        "boxes": {"nose": [(0, 0, 4, 4), (10, 10, 8, 8)]},
        "layers": (5,),
        "random_draws": 1,
        "seed": 0,
        "fill": 0.0,
        "batch_size": 1,
        "device": None,
    }
    return base | change


BAD_INPUTS = [
    (
        _bad(boxes={"nose": [(0, 0, 4, 4), (90, 10, 10, 4)]}),
        r"boxes\['nose'\], image 1: the box \[90, 10, 10, 4\] \(rows 90\.\.99, columns 10\.\.13\) "
        r"is not inside the 96x96 image",
    ),
    (
        _bad(boxes={"nose": [(-1, 0, 4, 4), (0, 0, 4, 4)]}),
        r"boxes\['nose'\], image 0: the box \[-1, 0, 4, 4\] .* is not inside the 96x96 image",
    ),
    (
        _bad(boxes={"eye": [(0, 0, 4, 4), (0, 93, 4, 4)]}),
        r"boxes\['eye'\], image 1: .*columns 93\.\.96\) is not inside",
    ),
    (
        _bad(boxes={"nose": [(5, 5, 0, 4), (0, 0, 4, 4)]}),
        r"boxes\['nose'\], image 0: the box \[5, 5, 0, 4\] is empty; height and width must be >= 1",
    ),
    (
        _bad(boxes={"nose": [(0, 0, 4, 4)] * 3}),
        r"boxes\['nose'\]: expected 2 boxes \(one per "
        r"image\), got 3",
    ),
    (_bad(boxes={"nose": []}), r"boxes\['nose'\]: expected 2 boxes \(one per image\), got 0"),
    (_bad(boxes={}), r"boxes: expected a non-empty mapping part name -> list of 2 boxes"),
    (_bad(boxes=[(0, 0, 4, 4)]), r"boxes: expected a non-empty mapping"),
    (
        _bad(boxes={"nose": [(0, 0, 4), (0, 0, 4, 4)]}),
        r"boxes\['nose'\], image 0: expected \[top, left, height, width\]",
    ),
    (
        _bad(boxes={"nose": [(0, 0, 4.5, 4), (0, 0, 4, 4)]}),
        r"boxes\['nose'\], image 0: expected \[top, left, height, width\] \(ints",
    ),
    (_bad(boxes={"": [(0, 0, 4, 4), (0, 0, 4, 4)]}), r"boxes: part names must be non-empty"),
    (
        _bad(layers="fc8"),
        r"layers: 'fc8' is neither a stage nor a module path of this model's graph; expected a "
        r"stage 1\.\.5 or its name, a module path .*\(this model's stages 1\.\.5: pool1, pool2, relu3",
    ),
    (_bad(layers=[0]), r"layers: expected a stage 1\.\.5 or its name, .*got 0"),
    (_bad(layers=[5, "features.99"]), r"layers: 'features\.99' is neither a stage nor a module path"),
    (_bad(layers=[]), r"layers: expected a stage 1\.\.5 .* or a non-empty list of them, got \[\]"),
    (_bad(layers=[5, 5]), r"layers: each layer once, got 5 more than once"),
    (_bad(random_draws=0), r"random_draws: expected an int >= 1, got 0"),
    (_bad(seed=-1), r"seed: expected an int >= 0 \(the random boxes' draws\), got -1"),
    (_bad(fill=float("nan")), r"fill: expected a finite number"),
    (_bad(fill="grey"), r"fill: expected a finite number"),
    (_bad(batch_size=0), r"batch_size: expected an int >= 1, got 0"),
    (_bad(device="tpu"), r"device: expected 'cpu', 'cuda' or 'cuda:<index>', got 'tpu'"),
]


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS)
def test_bad_input_is_a_clear_error(alexnet_random, kwargs, message):
    x = _photos(alexnet_random, ("cat", "coffee"))
    with pytest.raises(ValueError, match=message):
        corr.correspondence(alexnet_random, x, progress=False, **kwargs)


def test_bad_images_model_and_device(alexnet_random):
    x = _photos(alexnet_random, ("cat", "coffee"))
    boxes = {"nose": [(0, 0, 4, 4)]}
    with pytest.raises(
        ValueError,
        match=r"images: expected at least 2 images \(Delta sums over "
        r"pairs\), got 1",
    ):
        corr.correspondence(alexnet_random, x[:1], boxes, progress=False)
    with pytest.raises(ValueError, match=r"images: expected shape \[B, 3, H, W\]"):
        corr.correspondence(alexnet_random, x[0], boxes, progress=False)
    with pytest.raises(ValueError, match=r"images: 40x40 is smaller than AlexNet accepts"):
        corr.correspondence(alexnet_random, x[..., :40, :40], boxes, progress=False)
    with torch.device("meta"):
        ghost = type(alexnet_random)()
    with pytest.raises(ValueError, match=r"model: its weights are on the meta device"):
        corr.correspondence(ghost, x, boxes, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(
            ValueError,
            match=r"device: 'cuda' requested but CUDA is not "
            r"available",
        ):
            corr.correspondence(alexnet_random, x, boxes, device="cuda", progress=False)
    assert corr.check_work_device(alexnet_random, "cpu") == torch.device("cpu")
    assert corr.check_work_device(alexnet_random, None) == torch.device("cpu")


# ------------------------------------------------------------------------------- box files


def test_the_shipped_box_file_is_consistent():
    boxes = corr.load_box_file(corr_job.box_file_path("faces"))
    assert boxes.source == "conf/correspondence/faces.yaml" and boxes.image_size == 224
    assert boxes.images == ("astronaut", "grace_hopper", "cat")
    assert set(boxes.images) <= set(deconvnet.sample_names())
    assert "NOT" not in boxes.description and "portraits" in boxes.description
    assert tuple(boxes.parts) == ("right_eye", "left_eye", "nose")

    def centre(box):
        top, left, h, w = box
        return top + h / 2, left + w / 2

    for k in range(3):
        right, left, nose = (centre(boxes.parts[p][k]) for p in ("right_eye", "left_eye", "nose"))
        assert right[1] < nose[1] < left[1]  # the subject's right eye is on the viewer's left
        assert nose[0] > max(right[0], left[0])  # the nose below the eyes
        r, l = boxes.parts["right_eye"][k], boxes.parts["left_eye"][k]
        assert r[1] + r[3] <= l[1]  # the eye boxes do not overlap


def _box_file(folder: Path, suffix: str = ".yaml", **change) -> Path:
    data = {
        "description": "test boxes",
        "image_size": 224,
        "images": ["cat", "coffee"],
        "parts": {
            "p1": {"cat": [10, 20, 30, 40], "coffee": [100, 100, 24, 24]},
            "p2": {"cat": [150, 60, 50, 30], "coffee": [0, 0, 16, 224]},
        },
    } | change
    path = folder / f"boxes{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    return path


BAD_FILES = [
    (
        {"parts": {"p1": {"cat": [10, 20, 30, 40]}}},
        ValueError,
        r"parts\.p1: expected one box for each image \(cat, coffee\), got \['cat'\]",
    ),
    (
        {"parts": {"p1": {"cat": [10, 20, 30, 40], "coffee": [200, 0, 30, 10]}}},
        ValueError,
        r"boxes\['p1'\], image 1 \(coffee\): the box \[200, 0, 30, 10\] .*not inside the 224x224",
    ),
    (
        {"parts": {"p1": {"cat": [1, 2, 3], "coffee": [0, 0, 1, 1]}}},
        ValueError,
        r"boxes\['p1'\], image 0 \(cat\): expected \[top, left, height, width\]",
    ),
    (
        {"parts": {"a b": {"cat": [1, 2, 3, 4], "coffee": [0, 0, 1, 1]}}},
        ValueError,
        r"part names must be letters, digits",
    ),
    ({"parts": {}}, ValueError, r"parts: expected a non-empty mapping"),
    ({"images": ["cat", "cat"]}, ValueError, r"images: expected a list of distinct"),
    ({"image_size": 0}, ValueError, r"image_size: expected an int >= 1, got 0"),
]


@pytest.mark.parametrize("change, error, message", BAD_FILES)
def test_bad_box_files(tmp_path, change, error, message):
    with pytest.raises(error, match=r"boxes: .*boxes\.yaml: " + message):
        corr.load_box_file(_box_file(tmp_path, **change))


def test_box_files_yaml_json_and_missing(tmp_path):
    from_yaml = corr.load_box_file(_box_file(tmp_path / "y"))
    from_json = corr.load_box_file(_box_file(tmp_path / "j", ".json"))
    assert (
        from_yaml.parts
        == from_json.parts
        == {"p1": ((10, 20, 30, 40), (100, 100, 24, 24)), "p2": ((150, 60, 50, 30), (0, 0, 16, 224))}
    )
    with pytest.raises(FileNotFoundError, match=r"boxes: expected a YAML or JSON box file"):
        corr.load_box_file(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("parts: [unclosed")
    with pytest.raises(ValueError, match=r"boxes: .*bad\.yaml is not valid YAML"):
        corr.load_box_file(tmp_path / "bad.yaml")
    (tmp_path / "keys.yaml").write_text("a: 1")
    with pytest.raises(
        ValueError,
        match=r"boxes: .*keys\.yaml: expected a mapping with keys "
        r"image_size, images, parts",
    ):
        corr.load_box_file(tmp_path / "keys.yaml")


# -------------------------------------------------------------------------------------- the job


JOB = {
    "model": "alexnet",
    "weights": "random",
    "seed": 0,
    "layers": [3, "fc6"],
    "random_draws": 1,
    "draw_seed": 1,
    "progress": False,
}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("correspondence")
    boxes = _box_file(root / "in")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PROVENANCE_ENV, json.dumps(FIXED_PROVENANCE))
        result = corr_job.run_correspondence(root / "job", boxes=str(boxes), **JOB)
    return root / "job", result, boxes


def test_the_job_writes_every_file(job):
    out, result, boxes = job
    tiles = {
        f"{i}__{kind}.png"
        for i in ("cat", "coffee")
        for kind in ("boxes", "p1__part", "p1__random0", "p2__part", "p2__random0")
    }
    assert {p.name for p in out.iterdir()} == {
        "table.md",
        "result.json",
        "config.yaml",
        LOCK_FILE,
        "boxes.png",
        "images.npz",
        *tiles,
    }
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    assert result["experiment"] == "correspondence" and result["model"] == "alexnet"
    assert result["weights_label"] == deconvnet.weights_label(result["weights"])
    assert result["random_weights"] is True
    assert result["provenance"] == {**FIXED_PROVENANCE, "command": sys.argv}
    assert result["config"] == yaml.safe_load((out / "config.yaml").read_text())
    assert result["config"]["boxes"] == str(boxes) and result["config"]["seed"] == 1
    assert result["settings"]["layers"] == [3, "fc6"] and result["settings"]["seed"] == 1
    assert result["feature_length"] == {"stage3": 384 * 13 * 13, "fc6": 4096}
    assert result["layer_names"] == {"stage3": "stage 3 (relu3)", "fc6": "fc6"}
    assert [c["key"] for c in result["cells"]] == ["p1", "p2"]
    assert result["cells"][0]["boxes"] == [[10, 20, 30, 40], [100, 100, 24, 24]]
    sheet = np.asarray(Image.open(out / "boxes.png"))
    assert sheet.shape[0] > 300 and sheet.shape[1] > 1000
    assert "RANDOM WEIGHTS — NOT PRETRAINED" in result["sheets"][0]["title"]
    assert "NOT the paper's 5 dogs" in result["sheets"][0]["title"]


def test_the_job_equals_the_library_on_the_same_inputs(job, alexnet_random):
    out, result, _ = job
    x = torch.cat([deconvnet.load_image(n, alexnet_random) for n in ("cat", "coffee")])
    boxes = {"p1": [(10, 20, 30, 40), (100, 100, 24, 24)], "p2": [(150, 60, 50, 30), (0, 0, 16, 224)]}
    want = corr.correspondence(
        alexnet_random, x, boxes, layers=(3, "fc6"), random_draws=1, seed=1, progress=False
    )
    assert result["table"] == json.loads(json.dumps(want.summary()))
    assert result["cells"][1]["random_boxes"] == json.loads(json.dumps(want.random_boxes["p2"]))
    with np.load(out / "images.npz") as arrays:
        np.testing.assert_array_equal(arrays["input"], x.numpy())
        for part in boxes:
            for key in ("stage3", "fc6"):
                np.testing.assert_array_equal(arrays[f"{part}__{key}"], want.distances[part][key])
                np.testing.assert_array_equal(
                    arrays[f"{part}__random_{key}"], want.random_distances[part][key]
                )


def test_table_md_holds_the_numbers(job):
    out, result, _ = job
    text = (out / "table.md").read_text()
    assert "— 2 images, NOT the paper's 5 dog images." in text
    assert deconvnet.weights_label(result["weights"]) in text
    assert "| occlusion | stage 3 (relu3) | fc6 |" in text
    for part in ("p1", "p2"):
        row = result["table"][part]
        cells = " | ".join(
            f"{row[k]['normalized_mean']:.4f} ± {row[k]['normalized_std']:.4f}" for k in ("stage3", "fc6")
        )
        assert f"| {part} | {cells} |" in text
        random = " | ".join(
            f"{row[k]['random']['normalized_mean']:.4f} ± {row[k]['random']['normalized_std']:.4f}"
            for k in ("stage3", "fc6")
        )
        assert f"| random, {part}'s box sizes | {random} |" in text
        assert f"| {part} | {row['stage3']['delta']} | {row['fc6']['delta']} |" in text
    assert "HED" not in text  # the fc note is for HED weights only


def test_the_tiles_show_the_boxes_and_the_grey_occluder(job):
    out, result, _ = job
    shown = np.asarray(Image.open(out / "coffee__p1__part.png")).astype(int)
    mean = np.rint(np.array(deconvnet.preprocessing("alexnet").mean) * 255)
    assert np.abs(shown[100:124, 100:124] - mean).max() <= 1  # the box is the mean colour
    assert np.abs(shown[:100] - mean).max() > 20  # the photo elsewhere
    outlined = np.asarray(Image.open(out / "cat__boxes.png")).astype(int)
    assert (outlined[10, 20:60] == corr_fig.PALETTE[0]).all()  # p1's top edge, first colour
    assert (outlined[150:200, 60] == corr_fig.PALETTE[1]).all()  # p2's left edge
    random_box = result["cells"][0]["random_boxes"][0][0]
    top, left, h, w = random_box
    shuffled = np.asarray(Image.open(out / "cat__p1__random0.png")).astype(int)
    assert np.abs(shuffled[top : top + h, left : left + w] - mean).max() <= 1


def test_same_bytes_after_an_interruption(job, tmp_path, monkeypatch):
    """A part is checkpointed as it finishes; a rerun computes only the missing ones and every
    file has the bytes of the uninterrupted run (result.json: but for its timings)."""
    whole, _, boxes = job
    monkeypatch.setenv(PROVENANCE_ENV, json.dumps(FIXED_PROVENANCE))
    real, calls, stop = corr_job.part_cell, [], [2]

    def failing_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop[0]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(corr_job, "part_cell", failing_second)
    with pytest.raises(KeyboardInterrupt):
        corr_job.run_correspondence(tmp_path, boxes=str(boxes), **JOB)
    assert len(list((tmp_path / "partial").glob("*.npz"))) == 1
    assert not (tmp_path / "result.json").exists()
    calls.clear()
    stop[0] = 0
    corr_job.run_correspondence(tmp_path, boxes=str(boxes), **JOB)
    assert len(calls) == 1 and not (tmp_path / "partial").exists()
    for path in sorted(whole.iterdir()):
        if path.name == "result.json":
            a, b = (json.loads((f / path.name).read_text()) for f in (whole, tmp_path))
            assert without_seconds(a) == without_seconds(b)
        else:
            assert path.read_bytes() == (tmp_path / path.name).read_bytes(), path.name


def _job_bad_values(root: Path) -> list:
    outside = _box_file(root / "o", parts={"p": {"cat": [0, 0, 4, 4], "coffee": [220, 0, 5, 5]}})
    return [
        ({"boxes": str(root / "none.yaml")}, FileNotFoundError, r"boxes: expected a YAML or JSON"),
        (
            {"boxes": "no_such_box_file"},
            FileNotFoundError,
            r"conf/correspondence/"
            r"no_such_box_file\.yaml does not",
        ),
        ({"boxes": 3}, ValueError, r"boxes: expected a box file's name"),
        (
            {"boxes": str(outside)},
            ValueError,
            r"boxes\['p'\], image 1 \(coffee\): the box "
            r"\[220, 0, 5, 5\]",
        ),
        (
            {"boxes": str(_box_file(root / "s", image_size=256))},
            ValueError,
            r"gives boxes in a 256-px frame; alexnet's preprocessing makes 224x224 images",
        ),
        (
            {"boxes": str(_box_file(root / "one", images=["cat"], parts={"p": {"cat": [0, 0, 1, 1]}}))},
            ValueError,
            r"images: expected at least 2 images",
        ),
        (
            {
                "boxes": str(
                    _box_file(
                        root / "u",
                        images=["cat", "no_such_photo"],
                        parts={"p": {"cat": [0, 0, 1, 1], "no_such_photo": [0, 0, 1, 1]}},
                    )
                )
            },
            FileNotFoundError,
            r"image: .*not a bundled sample",
        ),
        ({"layers": ["fc8"]}, ValueError, r"layers: 'fc8' is neither a stage nor a module path"),
        ({"random_draws": 0}, ValueError, r"random_draws: expected an int >= 1, got 0"),
        ({"draw_seed": -1}, ValueError, r"seed: expected an int >= 0"),
        ({"fill": "grey"}, ValueError, r"fill: expected a finite number"),
        ({"batch_size": 0}, ValueError, r"batch_size: expected an int >= 1"),
        ({"device": "tpu"}, ValueError, r"device: expected 'cpu', 'cuda'"),
        ({"model": "resnet18"}, ValueError, r"layers: 'fc6' is neither .*stages 1\.\.5: relu, layer1"),
        ({"model": "mobilenet_v2", "layers": [5, "features.30"]}, ValueError, r"layers: 'features\.30' is"),
        ({"weights": "hed"}, ValueError, r"weights: 'hed' holds VGG16 convolutions only"),
        ({"seed": -3}, ValueError, r"seed: expected an int in \[0, 2\*\*64\)"),
    ]


def test_bad_values_fail_before_the_model_is_built(job, tmp_path, monkeypatch):
    def no_heavy_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the values were checked")

    monkeypatch.setattr(deconvnet.jobs.request, "load_model", no_heavy_work)
    boxes = str(job[2])
    for override, error, message in _job_bad_values(tmp_path / "files"):
        with pytest.raises(error, match=message):
            corr_job.run_correspondence(tmp_path / "out", **(JOB | {"boxes": boxes} | override))
        assert not (tmp_path / "out").exists()


def test_the_fc_note_names_hed_weights_only(job):
    plan = corr_job.validate_correspondence("vgg16", "hed", 0, str(job[2]), [5, "fc7"], 1, 0, 0.0, 1, "cpu")
    h = np.zeros((2, 2), dtype=np.int64)
    outcome = corr.Correspondence(
        parts=("p1", "p2"),
        layers=(5, "fc7"),
        boxes=plan.boxes.parts,
        random_boxes={},
        feature_length={"stage5": 10, "fc7": 10},
        distances={p: {"stage5": h, "fc7": h} for p in ("p1", "p2")},
        random_distances={p: {"stage5": h[None], "fc7": h[None]} for p in ("p1", "p2")},
    )
    hed = {"weights": "hed"}
    text = corr_fig.table_markdown(
        corr_job.correspondence_result(plan, hed, plan.request.skeleton, outcome, [])
    )
    assert corr_job.HIDDEN_NOTE in text and deconvnet.HED_DESCRIPTION in text
    sheet = corr_job.boxes_sheet(plan, hed, [], outcome)
    assert corr_job.HIDDEN_NOTE.upper() in sheet["title"] and sheet["alarm"] is False
    imagenet = corr_job.correspondence_result(
        plan, {"weights": "imagenet"}, plan.request.skeleton, outcome, []
    )
    assert corr_job.HIDDEN_NOTE not in corr_fig.table_markdown(imagenet)


# -------------------------------------------------------------------------------------- the CLI


def test_the_default_config_composes():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("correspondence", return_hydra_config=True)
        other = compose("correspondence", overrides=["layers=[3,fc6]", "boxes=/x/b.json"])
    assert cfg.model.name == "vgg16" and cfg.hydra.job.chdir is False
    assert (cfg.boxes, cfg.layers, cfg.random_draws, cfg.seed, cfg.fill, cfg.batch_size, cfg.device) == (
        "faces",
        None,
        10,
        0,
        0.0,
        1,
        "cpu",
    )  # layers: the model's default
    assert list(other.layers) == [3, "fc6"] and other.boxes == "/x/b.json"
    assert corr_job.box_file_path(cfg.boxes) == CONF_DIR / "correspondence" / "faces.yaml"


@pytest.mark.slow
def test_cli_runs_and_a_bad_value_is_one_line(tmp_path):
    model = ["model=alexnet", "model.weights=random"]
    boxes = _box_file(tmp_path / "in", parts={"p1": {"cat": [10, 20, 30, 40], "coffee": [100, 100, 24, 24]}})
    done = run_experiment(
        "experiments.correspondence",
        *model,
        f"boxes={boxes}",
        "random_draws=1",
        f"hydra.run.dir={tmp_path / 'job'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    job = tmp_path / "job"
    result = json.loads((job / "result.json").read_text())
    assert result["experiment"] == "correspondence" and result["random_weights"] is True
    assert result["boxes_file"]["source"] == str(boxes) and list(result["table"]) == ["p1"]
    assert list(result["table"]["p1"]) == ["stage5", "fc7"]  # the default layers
    assert {"table.md", "boxes.png", "images.npz", "config.yaml", ".hydra"} <= {p.name for p in job.iterdir()}
    assert "2 images, NOT the paper's 5 dog images" in (job / "table.md").read_text()
    assert "weights: random initialisation" in (job / "correspondence.log").read_text()

    done = run_experiment(
        "experiments.correspondence", *model, "layers=[fc9]", f"hydra.run.dir={tmp_path / 'bad'}"
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(
        "error: layers: 'fc9' is neither a stage nor a module path"
    ), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "bad" / "config.yaml").exists()


# ------------------------------------------------------------------- any supported model
#
# ResNet-18, MobileNetV2 and EfficientNet-Lite0 with seeded random weights in float64 at 64 px,
# against a hand-made reference: each image occluded by numpy-style slicing, the model's own
# forward on each image alone with forward hooks on the layers' modules (removed afterwards) and
# `model(x)` for the logits, signs and Hamming distances counted with numpy.

GRAPH_SIDE = 64
GRAPH_BOXES = {"eye": [(10, 12, 16, 14), (30, 40, 12, 10)]}
GRAPH_LAYERS = {  # a stage number, a stage name, a module path, the logits' input, the logits
    "resnet18": (3, "layer4", "layer2.1", "avgpool", "logits"),
    "mobilenet_v2": (2, "features.13", "features.10", "classifier.0", "logits"),
    "efficientnet_lite0": (1, "blocks.4", "blocks.5.1", "global_pool", "logits"),
}


def _seeded_graph_model(name: str) -> nn.Module:
    """A supported graph model with seeded random weights, eval mode, float64."""
    if name == "efficientnet_lite0":
        return deconvnet.load_model(name, weights="random", seed=0).double()
    import torchvision.models as tvm

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return getattr(tvm, name)().eval().double()


def _hooked(model: nn.Module, image: torch.Tensor, layers) -> dict:
    """{layer: flattened output of ONE image [1, 3, H, W]} by forward hooks on the layers'
    modules (a stage number: its module path), "logits" = model(image); hooks removed after."""
    found, hooks = {}, []
    for layer in layers:
        if layer == "logits":
            continue
        path = deconvnet.stage(model, layer).path if isinstance(layer, int) else layer

        def keep(module, inputs, output, layer=layer):
            found[layer] = output.detach()[0].flatten().numpy().copy()

        hooks.append(model.get_submodule(path).register_forward_hook(keep))
    try:
        with torch.no_grad():
            found["logits"] = model(image)[0].numpy().copy()
    finally:
        for hook in hooks:
            hook.remove()
    return found


def _graph_brute_force(model: nn.Module, x: torch.Tensor, boxes, layers, fill: float = 0.0) -> dict:
    """layer -> [N, N] Hamming distances of numpy sign(eps) vectors, eps = features of image k
    minus those of image k with its box set to `fill` by slicing, pair by pair."""
    eps = []
    for k, (top, left, height, width) in enumerate(boxes):
        occluded = x[k : k + 1].clone()
        occluded[..., top : top + height, left : left + width] = fill
        before, after = _hooked(model, x[k : k + 1], layers), _hooked(model, occluded, layers)
        eps.append({layer: before[layer] - after[layer] for layer in layers})
    out = {}
    for layer in layers:
        signs = [np.sign(e[layer]) for e in eps]
        out[layer] = np.array([[int(np.sum(a != b)) for b in signs] for a in signs], dtype=np.int64)
    return out


@pytest.mark.parametrize("name", list(GRAPH_LAYERS))
def test_graph_models_delta_equals_a_hand_made_occlusion_and_the_models_forward(name):
    model = _seeded_graph_model(name)
    layers = GRAPH_LAYERS[name]
    x = torch.cat([deconvnet.load_image(n, name) for n in ("astronaut", "cat")])
    x = F.interpolate(x, size=(GRAPH_SIDE, GRAPH_SIDE), mode="bilinear", antialias=True, align_corners=False)
    x = x.double()
    fill = 0.5 if name == "mobilenet_v2" else 0.0
    result = corr.correspondence(
        model, x, GRAPH_BOXES, layers, random_draws=1, seed=2, fill=fill, progress=False
    )
    assert result.layers == layers
    checked = [(GRAPH_BOXES["eye"], result.distances["eye"])]
    if name == "resnet18":  # the random draw too (float64 depthwise convolutions are slow on CPUs)
        checked.append(
            (result.random_boxes["eye"][0], {k: v[0] for k, v in result.random_distances["eye"].items()})
        )
    for boxes, got in checked:
        want = _graph_brute_force(model, x, boxes, layers, fill)
        for layer in layers:
            np.testing.assert_array_equal(got[corr.layer_key(layer)], want[layer])
            assert want[layer][0, 1] > 0
    lengths = {corr.layer_key(layer): len(_hooked(model, x[:1], layers)[layer]) for layer in layers}
    assert result.feature_length == lengths


def test_graph_models_default_layers_are_stage_5_and_the_logits_input():
    model = _seeded_graph_model("resnet18")
    x = torch.cat([deconvnet.load_image(n, model) for n in ("astronaut", "cat")])[
        ..., :GRAPH_SIDE, :GRAPH_SIDE
    ]
    result = corr.correspondence(model, x.double(), GRAPH_BOXES, random_draws=1, progress=False)
    assert result.layers == (5, "avgpool") and list(result.distances["eye"]) == ["stage5", "avgpool"]
    want = _graph_brute_force(model, x.double(), GRAPH_BOXES["eye"], (5, "avgpool"))
    np.testing.assert_array_equal(result.distances["eye"]["avgpool"], want["avgpool"])


def test_graph_bad_layers_are_refused_before_any_forward(monkeypatch):
    model = _seeded_graph_model("mobilenet_v2")
    calls = []
    monkeypatch.setattr(corr, "probe", lambda *a, **k: calls.append(1))
    x = torch.zeros(2, 3, GRAPH_SIDE, GRAPH_SIDE, dtype=torch.float64)
    for layers, message in [
        ("fc7", r"layers: 'fc7' is neither a stage nor a module path .*stages 1\.\.5: features\.1, "),
        ([5, "features.19"], r"layers: 'features\.19' is neither"),
        ([5, "logits", 5], r"layers: each layer once, got 5 more than once"),
        ([1.5], r"layers: expected a stage 1\.\.5 .*got 1\.5"),
    ]:
        with pytest.raises(ValueError, match=message):
            corr.correspondence(model, x, GRAPH_BOXES, layers, progress=False)
    assert calls == []


# --------------------------------------------------------------- the job on a graph model


@pytest.fixture(scope="module")
def graph_job(tmp_path_factory):
    """MobileNetV2 (random weights) with its default layers, at its 224-px crop."""
    root = tmp_path_factory.mktemp("correspondence_graph")
    boxes = _box_file(root / "in", parts={"p1": {"cat": [10, 20, 30, 40], "coffee": [100, 100, 24, 24]}})
    job = JOB | {"model": "mobilenet_v2", "layers": None}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PROVENANCE_ENV, json.dumps(FIXED_PROVENANCE))
        result = corr_job.run_correspondence(root / "job", boxes=str(boxes), **job)
    return root / "job", result


def test_the_job_on_a_graph_model_equals_the_library(graph_job):
    out, result = graph_job
    model = deconvnet.load_model("mobilenet_v2", weights="random", seed=0)
    x = torch.cat([deconvnet.load_image(n, model) for n in ("cat", "coffee")])
    boxes = {"p1": [(10, 20, 30, 40), (100, 100, 24, 24)]}
    want = corr.correspondence(model, x, boxes, random_draws=1, seed=1, progress=False)
    assert want.layers == (5, "classifier.0")
    assert result["model"] == "mobilenet_v2" and result["table"] == json.loads(json.dumps(want.summary()))
    assert result["config"]["layers"] == [5, "classifier.0"]  # written resolved
    assert yaml.safe_load((out / "config.yaml").read_text())["layers"] == [5, "classifier.0"]
    assert result["layer_names"] == {
        "stage5": "stage 5 (features.18)",
        "classifier.0": "classifier.0 (the logits' input)",
    }
    assert result["feature_length"] == {"stage5": 1280 * 7 * 7, "classifier.0": 1280}
    assert result["classifier_note"] is None  # random weights: the title says so, no HED note
    assert "RANDOM WEIGHTS — NOT PRETRAINED" in result["sheets"][0]["title"]
    text = (out / "table.md").read_text()
    assert "| occlusion | stage 5 (features.18) | classifier.0 (the logits' input) |" in text
    with np.load(out / "images.npz") as arrays:
        np.testing.assert_array_equal(arrays["p1__classifier.0"], want.distances["p1"]["classifier.0"])


def test_the_hed_note_names_the_layers_its_random_classifier_computes(job):
    boxes = str(job[2])
    hed = {"weights": "hed"}
    notes = {
        tuple(layers): corr_job.hidden_note(
            corr_job.validate_correspondence("vgg16", "hed", 0, boxes, layers, 1, 0, 0.0, 1, "cpu"), hed
        )
        for layers in (
            [5, "fc7"],
            [5, "fc6", "fc7"],
            [5, "logits"],
            [5, "classifier.3", "logits"],
            [5, "avgpool"],
        )
    }
    assert notes[(5, "fc7")] == notes[(5, "fc6", "fc7")] == corr_job.HIDDEN_NOTE
    assert notes[(5, "logits")].startswith("logits is computed by HED's RANDOM classifier (HED has no")
    assert notes[(5, "classifier.3", "logits")].startswith(
        "classifier.3, logits are computed by HED's RANDOM"
    )
    assert notes[(5, "avgpool")] is None  # pool5 averaged: HED's learned maps, no classifier weight
    plan = corr_job.validate_correspondence("resnet18", "random", 0, boxes, None, 1, 0, 0.0, 1, "cpu")
    assert plan.layers == (5, "avgpool")
    assert corr_job.hidden_note(plan, {"weights": "random"}) is None
    assert corr_job.hidden_note(plan, {"weights": "imagenet"}) is None
