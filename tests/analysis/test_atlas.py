"""The atlas's computations: the channels it shows, and the firing counts and histograms of one
pass, checked against a brute-force reference (every image alone through forward hooks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconvnet.analysis.atlas import atlas_channels, channel_groups, firing_histograms
from deconvnet.analysis.scan import scan_topk
from deconvnet.core.architecture import stage as stage_of


def test_all_channels_by_default_and_a_list_for_every_stage(alexnet_random):
    every = atlas_channels(alexnet_random, [1, 5])
    assert every == {s: list(range(stage_of(alexnet_random, s).channels)) for s in (1, 5)}
    assert atlas_channels(alexnet_random, [1, 5], [7, 2, 7]) == {1: [7, 2], 5: [7, 2]}


def test_a_count_is_a_seeded_sorted_draw_that_does_not_depend_on_the_other_stages(alexnet_random):
    drawn = atlas_channels(alexnet_random, [1, 5], 6, seed=3)
    for s, chosen in drawn.items():
        assert chosen == sorted(set(chosen)) and len(chosen) == 6
        assert all(0 <= c < stage_of(alexnet_random, s).channels for c in chosen)
    assert atlas_channels(alexnet_random, [5], 6, seed=3)[5] == drawn[5]
    assert atlas_channels(alexnet_random, [1, 5], 6, seed=4) != drawn


def test_a_mapping_sets_its_stages_and_leaves_the_others_whole(alexnet_random):
    chosen = atlas_channels(alexnet_random, [1, 2], {"2": [5, 1]})
    assert chosen == {1: list(range(64)), 2: [5, 1]}


@pytest.mark.parametrize(
    "channels, message",
    [
        ([64], r"channels\[1\]: channel 64 is outside layer 1 .* channels 0..63"),
        ({3: [0]}, r"channels: stage 3 is not among the requested stages \[1\]"),
        ({9: [0]}, r"channels: unknown stage 9"),
        (65, r"channels_per_stage: 65 exceeds layer 1"),
        (0, r"channels: expected an int >= 1"),
        ("all", r"channels: expected null, a count, a list"),
        (True, r"channels: expected null, a count, a list"),
    ],
)
def test_bad_channels_are_named(alexnet_random, channels, message):
    with pytest.raises(ValueError, match=message):
        atlas_channels(alexnet_random, [1], channels)


def test_channel_groups_cut_in_order():
    assert channel_groups([5, 1, 9, 3, 7], 2) == [[5, 1], [9, 3], [7]]
    with pytest.raises(ValueError, match="group_size"):
        channel_groups([1], 0)


def _brute_force_maxima(model, images: torch.Tensor, stage: int) -> np.ndarray:
    """[N, C] spatial maxima of a stage, every image alone, read by a forward hook."""
    module = model.get_submodule(stage_of(model, stage).path)
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o.detach().amax(dim=(2, 3))))
    try:
        with torch.no_grad():
            for image in images:
                model(image[None])
    finally:
        handle.remove()
    return torch.cat(seen).double().numpy()


def test_firing_counts_and_histograms_match_every_image_alone(alexnet_float64):
    images = torch.randn(7, 3, 96, 96, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scan = scan_topk(alexnet_float64, [images[:4], images[4:]], k=3, stages=[2, 5], progress=False)
    hist = firing_histograms(alexnet_float64, [images[:3], images[3:]], scan, bins=5, progress=False)
    for s in (2, 5):
        maxima = _brute_force_maxima(alexnet_float64, images, s)
        top = maxima.max(axis=0)
        assert hist[s].images == 7
        np.testing.assert_array_equal(hist[s].fires, (maxima > 0).sum(axis=0))
        np.testing.assert_allclose(hist[s].top, np.maximum(top, 0), rtol=1e-12)
        for c in range(maxima.shape[1]):
            edges = np.linspace(0, top[c], 6)
            expected = [
                int(sum(1 for v in maxima[:, c] if v > 0 and lo < v <= hi))
                for lo, hi in zip(edges, edges[1:])
            ]
            expected[-1] += int(sum(1 for v in maxima[:, c] if v > edges[-1]))  # rounding above the top
            assert hist[s].counts[c].tolist() == expected, (s, c)
            record = hist[s].channel(c)
            assert record["fires"] == sum(record["counts"]) and len(record["edges"]) == 6
