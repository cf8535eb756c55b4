"""The Fig. 1 job: one image, one stage, one channel in; a folder with `fig1.png`,
`fig1_data.npz` (every panel + meta) and `result.json` out.

    run_fig1(out_dir, model="vgg16", image="cat", stage=1, ...)   # computes, saves, draws
    render_fig1(out_dir)                                          # redraws fig1.png from the .npz

The maps come from `deconvnet.analysis.layer_maps.fig1_data`, the drawing from
`deconvnet.figures.fig1.draw_fig1`; a figure redrawn from `fig1_data.npz` is pixel-identical.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deconvnet.analysis.layer_maps import check_channel, check_keep, check_stage, fig1_data
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.validation import check_device
from deconvnet.data.images import open_image, preprocess
from deconvnet.data.models import load_model, model_name, model_spec
from deconvnet.figures.fig1 import draw_fig1
from deconvnet.jobs.folder import RESULT_FILE, JobFolder
from deconvnet.jobs.provenance import provenance as record_provenance
from deconvnet.jobs.provenance import versions
from deconvnet.jobs.request import model_arguments

log = logging.getLogger(__name__)

FIGURE_FILE = "fig1.png"
DATA_FILE = "fig1_data.npz"


def save_fig1_data(data: dict[str, Any], path: str | Path) -> Path:
    """All arrays + the meta (as JSON text) into one .npz."""
    arrays = {k: v for k, v in data.items() if k != "meta"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, meta_json=np.array(json.dumps(data["meta"])), **arrays)
    return path


def load_fig1_data(path: str | Path) -> dict[str, Any]:
    """Inverse of `save_fig1_data`."""
    with np.load(Path(path), allow_pickle=False) as f:
        data: dict[str, Any] = {k: f[k] for k in f.files if k != "meta_json"}
        data["meta"] = json.loads(str(f["meta_json"]))
    return data


def render_fig1(job_dir: str | Path, path: str | Path | None = None) -> Path:
    """Redraw `fig1.png` (or `path`) from `job_dir/fig1_data.npz`; no model needed."""
    job_dir = Path(job_dir)
    source = job_dir / DATA_FILE
    if not source.is_file():
        raise FileNotFoundError(f"job_dir: {source} does not exist (run experiments.fig1 first)")
    return draw_fig1(load_fig1_data(source), path if path is not None else job_dir / FIGURE_FILE)


def _channel_count(name: str, stage: int) -> int:
    """Channels of the stage output, from the architecture alone (meta device: no weights)."""
    with torch.device("meta"):
        skeleton = model_spec(name).constructor(weights=None)
    return stage_of(skeleton, stage).channels


def _result(data: dict[str, Any], keep: str) -> dict[str, Any]:
    """result.json's content (without `extra`) from the figure's data."""
    meta = data["meta"]
    return {
        "experiment": "fig1",
        "model": meta["model"],
        "weights": meta["weights"],
        "image": meta["image"],
        "stage": meta["stage"],
        "stage_name": meta["stage_name"],
        "layer_shown": meta["shown"],
        "channel": meta["channel"],
        "channel_by": meta["channel_by"],
        "keep": keep,
        "kept": meta["kept"],
        "below_channel": meta["below_channel"],
        "illustration": meta["illustration"],
        "rule": "deconvnet",
        "files": {"figure": FIGURE_FILE, "data": DATA_FILE, "result": RESULT_FILE},
        "arrays": {k: list(v.shape) for k, v in data.items() if k != "meta"},
        "versions": versions(),
    }


def run_fig1(
    out_dir: str | Path,
    model: str | nn.Module = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    image: str | Path = "cat",
    stage: int = 1,
    channel: int | None = None,
    keep: str = "max",
    below_channel: int | None = None,
    device: str = "cpu",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute, save and draw Fig. 1 into `out_dir`: fig1.png, fig1_data.npz, result.json.

    model: a name (loaded with `load_model(model, weights, seed, device)`) or a loaded model.
    Inputs are checked (stage, keep, channel range, image) before the model is loaded.
    `extra` is merged into result.json (e.g. the Hydra config and provenance).
    Returns the result dict (also written to result.json).
    """
    stage = check_stage(stage)
    keep = check_keep(keep)
    name = model if isinstance(model, str) else model_name(model)
    count = _channel_count(name, stage)
    check_channel(channel, count, "channel", f"stage {stage}")
    # the config key `image` named in a FileNotFoundError / ValueError before any heavy work
    x = preprocess(open_image(image, "image"), name).unsqueeze(0)
    with JobFolder(out_dir) as folder:
        if isinstance(model, str):
            model = load_model(model, weights=weights, seed=seed, device=device)
        data = fig1_data(
            model, x, stage, channel=channel, keep=keep, below_channel=below_channel, image_name=str(image)
        )
        save_fig1_data(data, folder.file(DATA_FILE))
        draw_fig1(data, folder.file(FIGURE_FILE))
        result = _result(data, keep)
        if extra:
            result.update(extra)
        folder.write_json(RESULT_FILE, result, default=str)
    return result


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.fig1`: the rule checked (Fig. 1 is the deconvnet), then `run_fig1`
    with the config and the provenance in result.json; the figure's path logged."""
    if config["rule"] != "deconvnet":
        raise ValueError(
            f"rule: Fig. 1 is the deconvnet; expected 'deconvnet', got {config['rule']!r}"
            " (other rules: python -m experiments.reconstruct rule=...)"
        )
    device = check_device(config["device"])
    result = run_fig1(
        out,
        **model_arguments(config),
        image=config["image"],
        stage=config["stage"],
        channel=config["channel"],
        keep=config["keep"],
        below_channel=config["below_channel"],
        device=str(device),
        extra={"config": dict(config), "provenance": record_provenance()},
    )
    log.info(
        "%s stage %s channel %s (%s): %s",
        result["model"],
        result["stage"],
        result["channel"],
        result["weights"]["description"],
        Path(out) / result["files"]["figure"],
    )
    return result
