"""Receptive fields and map sizes, derived from the modules and checked against the paper's tables
and against an empirical measurement."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deconvnet
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.geometry import level_sizes, stage_layers

# docs/stages.md#receptive-fields-derived: receptive field / jump at 224x224, stages 1..5
TABLE = {
    "vgg": [(6, 2), (16, 4), (44, 8), (100, 16), (212, 32)],
    "alexnet": [(19, 8), (67, 16), (99, 16), (131, 16), (195, 32)],
}


@pytest.mark.parametrize("kind", ["vgg", "alexnet"])
def test_receptive_fields_match_the_papers_table(kind, vgg_float32, alexnet_float32):
    model = vgg_float32 if kind == "vgg" else alexnet_float32
    got = [
        (deconvnet.receptive_field(model, s).size, deconvnet.receptive_field(model, s).jump)
        for s in range(1, 6)
    ]
    assert got == [((size, size), (jump, jump)) for size, jump in TABLE[kind]]


def test_receptive_field_is_derived_from_the_modules(alexnet_float32):
    model = copy.deepcopy(alexnet_float32)
    model.features[2] = nn.MaxPool2d(kernel_size=5, stride=2)  # a wider pool1
    assert deconvnet.receptive_field(model, 1).size == (11 + 4 * 4, 11 + 4 * 4)


@pytest.mark.parametrize(
    "kind,stage,size", [("alexnet", 1, 63), ("alexnet", 2, 79), ("vgg", 1, 32), ("vgg", 2, 33)]
)
def test_receptive_field_box_equals_the_pixels_that_can_move_the_unit(
    kind, stage, size, vgg_float32, alexnet_float32
):
    """With positive weights, no bias and a black image, a single lit pixel raises a stage unit
    exactly when it lies in that unit's receptive field (clipped to the image)."""
    model = copy.deepcopy(vgg_float32 if kind == "vgg" else alexnet_float32)
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            m.weight.data.abs_()
            m.bias.data.zero_()
    features = model.features[: stage_of(model, stage).index + 1]
    lit = torch.zeros(size * size, 3, size, size)  # all values >= 0: no cancellation
    lit.view(size * size, 3, size * size)[torch.arange(size * size), :, torch.arange(size * size)] = 1
    with torch.no_grad():
        out = features(lit)  # [pixels, C, h, w]
    rf = deconvnet.receptive_field(model, stage)
    h, w = out.shape[-2:]
    for y, x in {(0, 0), (h // 2, w // 2), (h - 1, w - 1), (1, w - 2)}:
        moved = (out[:, :, y, x] > 0).any(1).view(size, size)
        top, left, bottom, right = rf.box(y, x)
        want = torch.zeros(size, size, dtype=torch.bool)
        want[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
        assert torch.equal(moved, want), (y, x)


@pytest.mark.parametrize("h,w", [(32, 32), (63, 90), (224, 224), (101, 77)])
def test_level_sizes_match_the_real_forward_pass(alexnet_float32, vgg_float32, h, w):
    for model in (vgg_float32, alexnet_float32):
        if min(h, w) < deconvnet.min_input_size(model):
            continue
        layers = stage_layers(model, 5)
        x = torch.zeros(1, 3, h, w)
        want = [(h, w)]
        with torch.no_grad():
            for m in layers:
                x = m(x)
                want.append(tuple(x.shape[-2:]))
        assert level_sizes(layers, h, w) == want


def test_minimum_input_sizes(vgg_float32, alexnet_float32):
    assert deconvnet.min_input_size(vgg_float32) == 32
    assert deconvnet.min_input_size(alexnet_float32) == 63
    assert deconvnet.min_input_size(alexnet_float32, stage=1) == 15  # conv1 3x3 out, pool1 1x1
