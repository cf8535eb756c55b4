"""The filters, Deep Dream and inversion jobs on graph models (small, random weights): each
writes its result with module paths and stage numbers as asked, and the numbers it reports are
those of the library functions it calls."""

from __future__ import annotations

import json

import pytest

from deconvnet.jobs.deep_dream import run_deep_dream
from deconvnet.jobs.filters import run_filters
from deconvnet.jobs.invert import run_invert


def _result(folder) -> dict:
    return json.loads((folder / "result.json").read_text())


def test_filters_job_on_efficientnet_lite0(tmp_path):
    result = run_filters(
        tmp_path,
        model="efficientnet_lite0",
        weights="random",
        stages=[3],
        channels=2,
        size=48,
        steps=2,
        progress=False,
    )
    assert (tmp_path / "result.json").exists()
    assert "efficientnet_lite0" in json.dumps(_result(tmp_path)["model"]) and result


@pytest.mark.parametrize("stage, key", [(3, 3), ("layer2.0", "layer2.0"), ("layer3", 4)])
def test_deep_dream_job_takes_points(tmp_path, stage, key):
    run_deep_dream(
        tmp_path,
        model="resnet18",
        weights="random",
        stage=stage,
        octaves=2,
        steps=2,
        jitter=4,
        size=64,
        progress=False,
    )
    result = _result(tmp_path)
    assert result["settings"]["stage"] == key
    assert result["settings"]["stage_name"] == ("layer2" if stage == 3 else stage)
    cell = result["cells"][0]
    assert cell["energy_ratio"] == pytest.approx(cell["energy_after"] / cell["energy_before"])


def test_invert_job_takes_points(tmp_path):
    run_invert(
        tmp_path,
        model="mobilenet_v2",
        weights="random",
        image="cat",
        stages=[2, "features.4", "logits"],
        size=64,
        steps=2,
        progress=False,
    )
    text = json.dumps(_result(tmp_path))
    assert "features.4" in text and "logits" in text and "stage2" in text
