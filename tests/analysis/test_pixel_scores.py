"""One score per pixel: each method's rule, occlusion as an attribution against a brute-force count
of the windows covering each pixel, the random and centre baselines."""

from __future__ import annotations

import torch

from deconvnet.analysis.occlusion import Occlusion
from deconvnet.analysis.pixel_scores import (
    centre_scores,
    occlusion_scores,
    pixel_scores,
    random_scores,
    score_rule,
)


def test_each_method_reduces_its_colours_by_its_rule():
    maps = torch.tensor([[[[1.0, -3.0]], [[-2.0, 1.0]], [[0.5, 1.0]]]])  # [1, 3, 1, 2]
    assert pixel_scores("gradient", maps).tolist() == [[[2.0, 3.0]]]
    assert pixel_scores("guided_gradcam", maps).tolist() == [[[2.0, 3.0]]]
    assert pixel_scores("integrated_gradients", maps).tolist() == [[[-0.5, -1.0]]]
    assert pixel_scores("lrp_epsilon_plus", maps).tolist() == [[[-0.5, -1.0]]]
    cam = torch.rand(2, 5, 5)
    assert torch.equal(pixel_scores("scorecam", cam), cam)
    assert score_rule("gradcam") == score_rule("occlusion") == "the map itself"


def test_occlusion_scores_average_the_drop_over_the_covering_windows():
    h, w, patch = 7, 9, 3
    top, left = torch.tensor([0, 2, 4]), torch.tensor([0, 3, 6])
    probability = torch.rand(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    unoccluded = torch.tensor([0.9, 0.4], dtype=torch.float64)
    result = Occlusion(
        probability, probability, probability.long(), torch.zeros(2), torch.zeros(2),
        unoccluded, unoccluded, torch.zeros(2), top, left,
    )  # fmt: skip
    got = occlusion_scores(result, (h, w), patch)
    for b in range(2):
        for y in range(h):
            for x in range(w):
                drops = [
                    unoccluded[b] - probability[b, i, j]
                    for i, t in enumerate(top.tolist())
                    for j, l in enumerate(left.tolist())
                    if t <= y < t + patch and l <= x < l + patch
                ]
                want = sum(drops) / len(drops) if drops else 0.0
                assert abs(float(got[b, y, x]) - float(want)) < 1e-12


def test_random_scores_follow_their_seed_and_centre_scores_peak_in_the_middle():
    assert torch.equal(random_scores(2, (4, 5), 3), random_scores(2, (4, 5), 3))
    assert not torch.equal(random_scores(2, (4, 5), 3), random_scores(2, (4, 5), 4))
    centre = centre_scores(1, (5, 7))
    assert (
        centre[0, 2, 3] == 0 and bool((centre[0] <= 0).all()) and centre[0, 0, 0] == -((2**2 + 3**2) ** 0.5)
    )
