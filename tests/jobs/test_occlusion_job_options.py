"""The occlusion job's per-image targets and stage option, checked before anything is built, and
panel (c)'s percentile scaling (the figure of the real classifier's Fig. 7)."""

from __future__ import annotations

import pytest
import torch

from deconvnet.figures.occlusion import percentile_display
from deconvnet.jobs.occlusion import validate_occlusion


def _plan(**changes):
    args = dict(
        model="resnet18",
        weights="random",
        seed=0,
        images=["cat", "coffee"],
        target=None,
        patch=48,
        stride=16,
        fill=0.0,
        size=None,
        top_k=3,
        data={"kind": "samples"},
        method="incremental",
        batch_size=16,
        device="cpu",
    )
    args.update(changes)
    return validate_occlusion(**args)


def test_targets_per_image_and_stage():
    assert _plan().target == (None, None)
    assert _plan(target=281).target == (281, 281)
    assert _plan(target=[282, 967]).target == (282, 967)
    assert _plan(target=[282, None]).target == (282, None)
    assert _plan().stage == 5 and _plan(stage=4).stage == 4


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"target": [282]}, r"target: expected .* a list of 2 of them .*got 1 targets for 2 images"),
        ({"target": [282, 1000]}, r"target: expected .* 0\.\.999.*got 1000"),
        ({"target": "cat"}, r"target: expected null"),
        ({"stage": 0}, r"stage: expected the stage of panels \(b\) and \(c\), an int in 1\.\.5, got 0"),
        ({"stage": "layer3"}, r"stage: expected .* an int in 1\.\.5"),
    ],
)
def test_bad_targets_and_stages(changes, message):
    with pytest.raises(ValueError, match=message):
        _plan(**changes)


def testpercentile_display_scales_by_the_995th_percentile():
    r = torch.zeros(2, 3, 20, 20)
    r[0, 0, :10] = 1.0  # half the values of one channel
    r[0, 1, 0, 0] = 100.0  # one extreme value, above the percentile: clipped
    shown = percentile_display(r)
    assert shown[0, 0, 0, 1] == pytest.approx(1.0) and shown[0, 1, 0, 0] == 1.0
    assert shown[0, 2].eq(0.5).all() and shown[1].eq(0.5).all()  # zeros (an all-zero image) grey
