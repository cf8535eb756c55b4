"""scan_topk against a brute-force reference, plus its contract: ties, inputs, model untouched, files.

The reference runs `model.features` module by module on the same batches as the scan, keeps each
stage's output, and builds each channel's top-k by sorting (value descending, then image number)
the per-image maxima found with numpy's argmax (first position in row-major order).

Same batches: every image goes through convolutions of the same shape in the scan and in the
reference, so values, ranks, positions and ties agree bit for bit on every CPU. A convolution of
another batch shape may sum its products in another order (the kernels a CPU picks depend on the
shape), so only the test of other batchings compares across shapes, with a stated bound.

Models are random-initialised torchvision models with `features` in float64.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from deconvnet.analysis.scan import (
    Candidates,
    TopK,
    border_ring_share,
    check_exclude_border,
    load_topk,
    merge_topk,
    minimum_input_size,
    save_topk,
    scan_topk,
)
from deconvnet.core.architecture import stages as stage_table
from deconvnet.data.files import atomic_write

ALL_STAGES = (1, 2, 3, 4, 5)


def make_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)().eval()
    model.features.double()
    return model


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    return make_model("vgg16")


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    return make_model("alexnet")


def random_batches(sizes: list[tuple[int, int]], seed: int) -> list[torch.Tensor]:
    """One [B, 3, S, S] float64 batch per (B, S)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, s, s, generator=generator, dtype=torch.float64) for b, s in sizes]


def reference_stage_maps(model: nn.Module, batches: list[torch.Tensor]) -> dict[int, list[np.ndarray]]:
    """{stage: [C, h, w] output per image}, one forward pass per batch [B, 3, H, W] (the scan's
    batches, so the same convolution shapes), module by module."""
    index_to_stage = {s.index: s.number for s in stage_table(model)}
    maps: dict[int, list[np.ndarray]] = {n: [] for n in ALL_STAGES}
    with torch.no_grad():
        for batch in batches:
            x = batch.clone()
            for index, layer in enumerate(model.features):
                x = layer(x)
                if index in index_to_stage:
                    maps[index_to_stage[index]] += [m.clone().numpy() for m in x]
    return maps


def reference_topk(maps: list[np.ndarray], k: int, border: int = 0) -> dict[str, np.ndarray]:
    """Per channel: sort (value desc, image asc) of each image's max, keep k; positions by argmax.

    border n: each map is first cut to its interior [n, h - n) x [n, w - n); positions are shifted
    back to the whole map's coordinates at the end.
    """
    if border:
        maps = [m[:, border:-border, border:-border] for m in maps]
    channels, _, width = maps[0].shape
    k = min(k, len(maps))
    out = {
        key: np.zeros((channels, k), dtype=np.float64 if key == "values" else np.int64)
        for key in ("values", "image", "y", "x")
    }
    flat = [stage_map.reshape(channels, -1) for stage_map in maps]
    position = np.stack([np.argmax(f, axis=1) for f in flat], axis=1)  # [C, N], first max
    value = np.stack([f[np.arange(channels), p] for f, p in zip(flat, position.T)], axis=1)
    widths = np.array([m.shape[2] for m in maps])
    for c in range(channels):
        order = sorted(range(len(maps)), key=lambda n: (-value[c, n], n))[:k]
        out["values"][c] = value[c, order]
        out["image"][c] = order
        out["y"][c] = position[c, order] // widths[order] + border
        out["x"][c] = position[c, order] % widths[order] + border
    return out


def assert_matches_reference(
    result: dict[int, TopK], model: nn.Module, batches, k: int, border: int = 0, stages=ALL_STAGES
) -> None:
    images = [image for batch in batches for image in batch]
    maps = reference_stage_maps(model, batches)
    for number in stages:
        expected = reference_topk(maps[number], k, border)
        got = result[number]
        assert got.images_scanned == len(images)
        for key in ("image", "y", "x"):
            assert got[key].dtype == torch.int64
            np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=f"stage {number} {key}")
        np.testing.assert_array_equal(got.values.numpy(), expected["values"], err_msg=f"stage {number}")
        # k distinct images per channel, values descending
        for row in got.image.tolist():
            assert len(set(row)) == len(row)
        assert bool((got.values[:, :-1] >= got.values[:, 1:]).all())


# ------------------------------------------------------------------------------------------------
# values against brute force


def test_vgg16_matches_brute_force_uneven_batches_and_sizes(vgg):
    batches = random_batches([(3, 32), (1, 40), (2, 32), (2, 48)], seed=1)
    result = scan_topk(vgg, batches, k=4, progress=False)
    assert sorted(result) == list(ALL_STAGES)
    assert result[1].values.shape == (64, 4) and result[5].values.shape == (512, 4)
    assert_matches_reference(result, vgg, batches, k=4)


def test_alexnet_matches_brute_force_uneven_batches_and_sizes(alexnet):
    batches = random_batches([(2, 63), (3, 70), (1, 80), (4, 67)], seed=2)
    result = scan_topk(alexnet, batches, k=5, progress=False)
    assert [result[n].channels for n in ALL_STAGES] == [64, 192, 384, 256, 256]
    assert_matches_reference(result, alexnet, batches, k=5)


def test_zero_images_alexnet_stage1_is_relu_of_bias_first_position_lowest_images(alexnet):
    # conv1 of an all-zero image is its bias everywhere; relu and pool keep it constant, so every
    # position and every image ties: (y, x) = (0, 0) and the lowest image numbers win.
    batches = [torch.zeros(3, 3, 64, 64, dtype=torch.float64), torch.zeros(2, 3, 71, 71, dtype=torch.float64)]
    result = scan_topk(alexnet, batches, k=4, progress=False)
    bias = alexnet.features[0].bias.detach()
    expected = torch.relu(bias).unsqueeze(1).expand(64, 4)
    assert torch.equal(result[1].values, expected)
    assert torch.equal(result[1].image, torch.arange(4).expand(64, 4))
    assert not result[1].y.any() and not result[1].x.any()
    assert_matches_reference(result, alexnet, batches, k=4)


def test_zero_and_random_images_vgg16_match_brute_force(vgg):
    batches = random_batches([(2, 36), (1, 36)], seed=3)
    batches[0][1].zero_()
    batches[1][0].zero_()
    result = scan_topk(vgg, batches, k=3, progress=False)
    assert_matches_reference(result, vgg, batches, k=3)


def test_duplicate_images_tie_to_lower_image_number(alexnet):
    a, b, c, d = random_batches([(4, 64)], seed=4)[0]
    # image numbers: A=0, B=1 | A=2, C=3 | A=4, D=5 | A=6, B=7. Every copy of A is the first image
    # of a batch of 2: the same convolution shapes, so the copies' values are equal bit for bit
    # on every CPU (in batches of other shapes they may differ in the last bits)
    batches = [torch.stack([a, b]), torch.stack([a, c]), torch.stack([a, d]), torch.stack([a, b])]
    copies = [0, 2, 4, 6]
    result = scan_topk(alexnet, batches, k=8, progress=False)
    assert_matches_reference(result, alexnet, batches, k=8)
    for number in ALL_STAGES:
        top = result[number]
        for c_index, row in enumerate(top.image.tolist()):
            # the copies of A tie exactly, so they must appear in increasing image order
            assert [n for n in row if n in copies] == copies, f"stage {number} channel {c_index}"
        held = torch.isin(top.image, torch.tensor(copies))
        assert torch.equal(top.values[held].view(-1, 4), top.values[held].view(-1, 4)[:, :1].expand(-1, 4))


def test_other_batchings_change_the_values_only_by_rounding(alexnet):
    """The same images split [5], [1] * 5 and [2, 3]: the values agree to within rel = 1e-12 of
    each stage's largest value, and the same images and positions are kept.

    Bound: a convolution of another batch shape may sum each output's products (up to
    3 * 3 * 384 = 3456 in AlexNet's conv4) in another order, about sqrt(3456) * 2^-53 ~ 7e-15 of
    their scale per layer in float64 (measured on AlexNet and VGG16 features: 0 to 4e-15 with
    AVX-512, AVX2 and SSE4.1 kernels).
    Ranks and positions then agree as long as no two competing values lie within 2 * rel of each
    other, which is checked on the reference maps (ties at exactly 0, dead ReLU maps, stay ties)."""
    rel = 1e-12
    images = random_batches([(5, 64)], seed=5)[0]
    maps = reference_stage_maps(alexnet, [images])
    for number in ALL_STAGES:
        stacked = np.stack(maps[number])  # [N, C, h, w]
        scale = np.abs(stacked).max()
        per_image = np.sort(stacked.max(axis=(2, 3)), axis=0)  # [N, C]: competing images
        top_two = np.sort(stacked.reshape(*stacked.shape[:2], -1), axis=2)[:, :, -2:]  # positions
        for pairs in (np.diff(per_image, axis=0), np.diff(top_two, axis=2)):
            assert ((pairs == 0) | (pairs > 2 * rel * scale)).all(), f"stage {number}: a near tie"
    results = [
        scan_topk(alexnet, list(torch.split(images, s)), k=3, progress=False) for s in ([5], [1] * 5, [2, 3])
    ]
    for other in results[1:]:
        for number in ALL_STAGES:
            for key in ("image", "y", "x"):
                assert torch.equal(other[number][key], results[0][number][key])
            want = results[0][number].values
            torch.testing.assert_close(other[number].values, want, rtol=0, atol=rel * float(want.abs().max()))


def test_fewer_images_than_k_keeps_all_images(vgg):
    batches = random_batches([(2, 32), (1, 32)], seed=6)
    result = scan_topk(vgg, batches, k=9, progress=False)
    for number in ALL_STAGES:
        assert result[number].k == 3
        assert result[number].images_scanned == 3
        assert all(sorted(row) == [0, 1, 2] for row in result[number].image.tolist())
    assert_matches_reference(result, vgg, batches, k=9)


def test_stage_subset_equals_full_scan_and_allows_smaller_images(vgg):
    batches = random_batches([(2, 32), (3, 32)], seed=7)
    full = scan_topk(vgg, batches, k=2, progress=False)
    part = scan_topk(vgg, batches, k=2, stages=(4, 2), progress=False)
    assert sorted(part) == [2, 4]
    for number in (2, 4):
        for key in ("values", "image", "y", "x"):
            assert torch.equal(part[number][key], full[number][key])
    # stage 2 needs only 4x4 images, stage 5 needs 32x32
    tiny = random_batches([(2, 8)], seed=8)
    assert scan_topk(vgg, tiny, k=1, stages=(1, 2), progress=False)[2].values.shape == (128, 1)
    with pytest.raises(ValueError, match="batch 0: .*8x8.*stage 5.*32x32"):
        scan_topk(vgg, tiny, k=1, progress=False)


@pytest.mark.parametrize("border", [1, 2])
def test_exclude_border_matches_brute_force_on_the_interior(vgg, border):
    # stage 1..3 maps of 40 / 48 px VGG inputs: 20/24, 10/12, 5/6 positions a side
    batches = random_batches([(2, 40), (3, 48)], seed=21)
    result = scan_topk(vgg, batches, k=3, stages=(1, 2, 3), progress=False, exclude_border=border)
    assert_matches_reference(result, vgg, batches, k=3, border=border, stages=(1, 2, 3))
    sizes = {1: (20, 24), 2: (10, 12), 3: (5, 6)}
    for number, top in result.items():
        side = torch.tensor([sizes[number][0]] * 2 + [sizes[number][1]] * 3)[top.image]
        for position in (top.y, top.x):  # never within `border` of an edge of its image's map
            assert bool((position >= border).all()) and bool((position < side - border).all())
    whole = scan_topk(vgg, batches, k=3, stages=(1, 2, 3), progress=False)
    # the whole-map scan is never below the interior one; somewhere it finds a border position
    assert all(bool((whole[n].values >= result[n].values).all()) for n in (1, 2, 3))
    assert any(bool(((whole[n].y < border) | (whole[n].x < border)).any()) for n in (1, 2, 3))


def test_exclude_border_zero_is_the_whole_map_and_alexnet_overlapping_pools(alexnet):
    batches = random_batches([(2, 99), (1, 120)], seed=22)  # pool5 maps 2x2 and 3x3
    plain = scan_topk(alexnet, batches, k=2, progress=False)
    zero = scan_topk(alexnet, batches, k=2, progress=False, exclude_border=0)
    for number in ALL_STAGES:
        for key in ("values", "image", "y", "x"):
            assert torch.equal(plain[number][key], zero[number][key])
    one = scan_topk(alexnet, batches[1:], k=1, stages=(1, 2, 3), progress=False, exclude_border=1)
    assert_matches_reference(one, alexnet, batches[1:], k=1, border=1, stages=(1, 2, 3))


@pytest.mark.parametrize("border", [-1, 1.5, True, "1", None])
def test_bad_exclude_border_value(alexnet, border):
    with pytest.raises(ValueError, match=r"exclude_border: expected an int >= 0"):
        scan_topk(alexnet, random_batches([(1, 64)], seed=0), progress=False, exclude_border=border)


def test_exclude_border_that_leaves_nothing_names_the_stage(vgg):
    # 32 px VGG input: stage 5 map is 1x1, stage 4 is 2x2, stage 3 is 4x4
    batches = random_batches([(1, 32)], seed=0)
    with pytest.raises(
        ValueError,
        match=r"exclude_border: 1 leaves no candidate .* 2x2 map of "
        r"stage 4 \(pool4\) for 32x32 images \(batch 0\); use at most 0",
    ):
        scan_topk(vgg, batches, progress=False, exclude_border=1)
    with pytest.raises(ValueError, match=r"4x4 map of stage 3"):
        scan_topk(vgg, batches, stages=(3,), progress=False, exclude_border=2)
    assert scan_topk(vgg, batches, stages=(3,), progress=False, exclude_border=1)[3].k == 1
    # the same check without scanning, for a run's image size
    assert check_exclude_border(vgg, (1, 3), 1, 32, 32) == 1
    with pytest.raises(ValueError, match=r"4x4 map of stage 3 \(pool3\) for 32x32 images; "):
        check_exclude_border(vgg, (1, 3), 2, 32, 32)
    with pytest.raises(ValueError, match=r"exclude_border: expected an int >= 0"):
        check_exclude_border(vgg, (1,), -1, 32, 32)


def test_minimum_input_size_matches_design(vgg, alexnet):
    assert minimum_input_size(vgg, 5) == 32
    assert minimum_input_size(alexnet, 5) == 63
    assert minimum_input_size(vgg, 1) == 2


def test_merge_topk_stable_ties_by_image_number():
    def cand(values, images):
        v = torch.tensor([values], dtype=torch.float32)
        i = torch.tensor([images])
        return Candidates(v, i, torch.zeros_like(i), i * 10)

    running = merge_topk(None, cand([1.0, 3.0, 3.0], [0, 1, 2]), k=3)
    assert running.image.tolist() == [[1, 2, 0]]
    running = merge_topk(running, cand([3.0, 5.0, 1.0, 3.0], [3, 4, 5, 6]), k=4)
    assert running.image.tolist() == [[4, 1, 2, 3]]
    assert running.values.tolist() == [[5.0, 3.0, 3.0, 3.0]]
    assert running.x.tolist() == [[40, 10, 20, 30]]


# ------------------------------------------------------------------------------------------------
# one pass, model untouched


def hook_state(model: nn.Module) -> list[int]:
    names = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
    )
    return [len(getattr(m, n, {})) for m in model.modules() for n in names]


def test_scan_leaves_model_and_input_unchanged(alexnet):
    model = copy.deepcopy(alexnet)
    model.features[3].train()  # a module in training mode must be restored
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inplace = [getattr(m, "inplace", None) for m in model.modules()]
    training = [m.training for m in model.modules()]
    hooks = hook_state(model)
    batches = random_batches([(2, 64), (1, 64)], seed=12)
    copies = [b.clone() for b in batches]
    scan_topk(model, batches, k=2, progress=False)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [getattr(m, "inplace", None) for m in model.modules()] == inplace
    assert [m.training for m in model.modules()] == training
    assert hook_state(model) == hooks and not any(hooks)
    assert all(torch.equal(b, c) for b, c in zip(batches, copies))
    assert model.features.training is False and model.features[3].training is True


def test_one_forward_per_batch_and_no_classifier(alexnet):
    model = copy.deepcopy(alexnet)
    calls: dict[str, int] = {}
    handles = [
        module.register_forward_hook(
            lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
        )
        for name, module in model.named_modules()
        if name
    ]
    try:
        scan_topk(model, random_batches([(2, 64), (3, 64), (1, 64)], seed=14), k=2, progress=False)
    finally:
        for handle in handles:
            handle.remove()
    assert {name: n for name, n in calls.items() if name.startswith("features.")} == {
        f"features.{i}": 3 for i in range(len(model.features))
    }
    assert not any(name.startswith(("classifier", "avgpool")) for name in calls)


# ------------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "9", None])
def test_bad_k(alexnet, k):
    with pytest.raises(ValueError, match=r"k: expected an int >= 1"):
        scan_topk(alexnet, random_batches([(1, 64)], seed=0), k=k, progress=False)


@pytest.mark.parametrize("stages", [(0,), (6,), (1, 7), ("3",), (2.0,), ()])
def test_bad_stages(alexnet, stages):
    with pytest.raises(ValueError, match=r"stage"):
        scan_topk(alexnet, random_batches([(1, 64)], seed=0), stages=stages, progress=False)


def test_bad_stage_message_names_range(alexnet):
    with pytest.raises(ValueError, match=r"1\.\.5"):
        scan_topk(alexnet, random_batches([(1, 64)], seed=0), stages=(6,), progress=False)


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            torch.zeros(3, 64, 64, dtype=torch.float64),
            r"batch 1: expected a 4-D \[B, 3, H, W\] tensor, got shape \(3, 64, 64\)",
        ),
        (
            torch.zeros(1, 1, 64, 64, dtype=torch.float64),
            r"batch 1: expected a 4-D .* got shape \(1, 1, 64, 64\)",
        ),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), r"batch 1: expected a float tensor .* torch\.uint8"),
        (torch.full((1, 3, 64, 64), float("nan"), dtype=torch.float64), r"batch 1: contains NaN or infinite"),
        (torch.full((1, 3, 64, 64), float("inf"), dtype=torch.float64), r"batch 1: contains NaN or infinite"),
        (
            torch.zeros(1, 3, 62, 70, dtype=torch.float64),
            r"batch 1: images of 62x70 pixels are too small .* 63x63",
        ),
        (np.zeros((1, 3, 64, 64)), r"batch 1: expected a \[B, 3, H, W\] float tensor, got ndarray"),
        ((torch.zeros(1, 3, 64, 64), ["id"]), r"batch 1: .*got tuple.*datasets\.batches"),
    ],
)
def test_bad_batch_names_batch_number(alexnet, bad, message):
    good = torch.zeros(1, 3, 64, 64, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        scan_topk(alexnet, [good, bad], progress=False)


def test_empty_iterable(alexnet):
    with pytest.raises(ValueError, match="no images"):
        scan_topk(alexnet, [], progress=False)
    with pytest.raises(ValueError, match="no images"):
        scan_topk(alexnet, iter([torch.zeros(0, 3, 64, 64)]), progress=False)


def test_single_tensor_instead_of_batches(alexnet):
    with pytest.raises(ValueError, match="single tensor"):
        scan_topk(alexnet, torch.zeros(2, 3, 64, 64), progress=False)


def test_unsupported_model():
    with pytest.raises(ValueError, match=r"model: Sequential has 1 resolution levels .* not 5"):
        scan_topk(nn.Sequential(nn.Conv2d(3, 4, 3)), [torch.zeros(1, 3, 8, 8)], progress=False)
    with pytest.raises(ValueError, match=r"model: 1 \(SiLU\) has no deconvnet mirror"):
        scan_topk(nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU()), [torch.zeros(1, 3, 8, 8)], progress=False)


# ------------------------------------------------------------------------------------------------
# progress, callback, interruption


def test_progress_bar_on_and_off(alexnet, capsys):
    batches = random_batches([(1, 64), (1, 64)], seed=15)
    scan_topk(alexnet, batches, k=1, progress=False)
    assert capsys.readouterr().err == ""
    scan_topk(alexnet, batches, k=1, progress=True)
    assert "2/2" in capsys.readouterr().err
    scan_topk(alexnet, iter(batches), k=1, progress=True, total=2)
    assert "2/2" in capsys.readouterr().err


def test_on_batch_sees_running_result(alexnet):
    batches = random_batches([(2, 64), (3, 64)], seed=16)
    seen = []
    final = scan_topk(alexnet, batches, k=3, progress=False, on_batch=lambda r, n: seen.append((r, n)))
    assert [n for _, n in seen] == [2, 5]
    assert seen[0][0][1].k == 2 and seen[0][0][1].images_scanned == 2
    assert torch.equal(seen[-1][0][3].image, final[3].image)
    # ordinary tensors (not inference tensors): callers may modify them
    assert not final[3].values.is_inference() and not seen[0][0][3].values.is_inference()


def test_interrupted_scan_leaves_no_complete_looking_file(alexnet, tmp_path):
    path = tmp_path / "topk.pt"

    def interrupted():
        yield from random_batches([(2, 64), (2, 64)], seed=17)
        raise KeyboardInterrupt

    def checkpoint(result, images):
        save_topk(result, path, {"model": "alexnet"}, complete=False)

    with pytest.raises(KeyboardInterrupt):
        scan_topk(alexnet, interrupted(), k=2, progress=False, on_batch=checkpoint)
    with pytest.raises(ValueError, match="not marked complete"):
        load_topk(path)
    result, meta = load_topk(path, allow_incomplete=True)
    assert meta["complete"] is False and meta["images_scanned"] == 4
    assert result[5].images_scanned == 4


# ------------------------------------------------------------------------------------------------
# save / load


@pytest.fixture(scope="module")
def small_result(alexnet) -> dict[int, TopK]:
    return scan_topk(alexnet, random_batches([(2, 64), (1, 64)], seed=18), k=2, progress=False)


def test_save_load_round_trip(small_result, tmp_path):
    path = save_topk(small_result, tmp_path / "sub" / "topk.pt", {"model": "alexnet", "ids": ["a", "b", "c"]})
    loaded = load_topk(path)
    assert loaded.meta == {"model": "alexnet", "ids": ["a", "b", "c"], "complete": True, "images_scanned": 3}
    assert sorted(loaded.result) == list(ALL_STAGES)
    for number, topk in small_result.items():
        for key in ("values", "image", "y", "x"):
            assert torch.equal(loaded.result[number][key], topk[key])
        assert loaded.result[number].images_scanned == 3
    assert [p.name for p in path.parent.iterdir()] == ["topk.pt"]  # no temp files left


def test_save_is_atomic_when_writing_fails(small_result, tmp_path, monkeypatch):
    path = tmp_path / "topk.pt"
    save_topk(small_result, path, {"run": 1})
    original = path.read_bytes()

    def broken_save(obj, file):
        file.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("deconvnet.analysis.scan.torch.save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_topk(small_result, path, {"run": 2})
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["topk.pt"]
    assert load_topk(path).meta["run"] == 1


def test_atomic_write_replaces_the_whole_file_or_nothing(tmp_path):
    path = tmp_path / "new" / "file.txt"
    assert atomic_write(path, lambda temp: temp.write_text("first")) == path  # parents created
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_text() == "first" and path.stat().st_mode & 0o777 == 0o666 & ~umask

    def broken(temp: Path) -> None:
        temp.write_text("half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "first"
    assert os.listdir(path.parent) == ["file.txt"]  # no temp file left


def test_load_refuses_incomplete_or_foreign_files(small_result, tmp_path):
    payload = {
        "format": "deconvnet.topk",
        "version": 1,
        "meta": {"images_scanned": 3},
        "stages": {n: dict(t.items()) for n, t in small_result.items()},
    }
    torch.save(payload, tmp_path / "no_flag.pt")
    with pytest.raises(ValueError, match="not marked complete"):
        load_topk(tmp_path / "no_flag.pt")
    torch.save({"something": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a deconvnet top-k file"):
        load_topk(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01 not a torch file")
    with pytest.raises(ValueError, match="not a readable top-k file"):
        load_topk(tmp_path / "garbage.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_topk(tmp_path / "missing.pt")


def test_save_rejects_bad_meta_and_result(small_result, tmp_path):
    with pytest.raises(ValueError, match=r"meta\['path'\]: expected str"):
        save_topk(small_result, tmp_path / "x.pt", {"path": Path("/tmp")})
    with pytest.raises(ValueError, match="result: expected a non-empty dict"):
        save_topk({}, tmp_path / "x.pt", {})
    with pytest.raises(ValueError, match="keys must be stage numbers"):
        save_topk({7: small_result[1]}, tmp_path / "x.pt", {})
    assert not (tmp_path / "x.pt").exists()


def test_topk_mapping_access(small_result):
    topk = small_result[2]
    assert dict(topk).keys() == {"values", "image", "y", "x"}
    assert topk["values"] is topk.values
    assert (topk.channels, topk.k) == (192, 2)
    with pytest.raises(KeyError, match="fields are"):
        topk["value"]
    with pytest.raises(ValueError, match="TopK.image"):
        TopK(topk.values, topk.image.float(), topk.y, topk.x, 3)


def test_border_ring_share_by_brute_force():
    values = torch.tensor([[5.0, 4.0, 0.0], [3.0, 2.0, 1.0]])
    y = torch.tensor([[0, 2, 0], [3, 1, 1]])  # map 4 x 5: rows 0 and 3 are the ring
    x = torch.tensor([[2, 4, 0], [1, 1, 3]])  # columns 0 and 4 are the ring
    topk = TopK(values, torch.zeros_like(y), y, x, images_scanned=3)
    # live: (0,2) ring, (2,4) ring, [dead (0,0) ignored], (3,1) ring, (1,1) inner, (1,3) inner
    share = border_ring_share(topk, 4, 5)
    assert share == {
        "entries": 5,
        "on_ring": 3,
        "share": 0.6,
        "ring_share_of_map": round(1 - (2 * 3) / 20, 4),
    }
    dead = TopK(
        torch.zeros(1, 1),
        torch.zeros(1, 1, dtype=torch.int64),
        torch.zeros(1, 1, dtype=torch.int64),
        torch.zeros(1, 1, dtype=torch.int64),
        1,
    )
    assert border_ring_share(dead, 4, 5)["share"] is None
