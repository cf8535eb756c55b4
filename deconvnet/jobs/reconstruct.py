"""Reconstruct one image at the paper's layers: the work behind `python -m experiments.reconstruct`.

`run_reconstruct(out_dir, ...)` loads the model, projects the image's activations at each requested
stage back to pixels (the whole feature map, keep=all; its single strongest activation, keep=max;
or one channel's strongest, keep=<c>) with the chosen rule, and writes into `out_dir`:

    input.png                the input as the model sees it (after the weights' preprocessing)
    stage<n>_<keep>.png      one reconstruction per stage and keep (keep: all | max | ch<c>)
    overview.png             rows = keeps, columns = input + stages (`deconvnet.figures.reconstruct`)
    result.json, config.yaml

Every value is checked before the model is built (ValueError / FileNotFoundError naming the key).
`render_reconstruct(job_dir)` redraws overview.png from the saved PNGs and result.json, without
the model.
"""

from __future__ import annotations

import json
import logging
import numbers
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from deconvnet.core.architecture import STAGES, Stage
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.display import save_png, to_display
from deconvnet.core.geometry import receptive_field
from deconvnet.core.graph_mirror import GraphMirror, make_mirror
from deconvnet.core.graph_ops import GraphRecord
from deconvnet.core.mirror import ForwardRecord, Mirror, check_rule
from deconvnet.core.seeds import select_seeds
from deconvnet.core.validation import check_device
from deconvnet.data.images import denormalize, describe_image, open_image, preprocess
from deconvnet.data.models import WeightsInfo, load_model, model_spec, weights_info
from deconvnet.figures.reconstruct import KeepItem, draw_overview, keep_tag, redraw_overview
from deconvnet.jobs.folder import CONFIG_FILE, JobFolder
from deconvnet.jobs.provenance import provenance
from deconvnet.jobs.request import model_arguments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """A validated request: which stages and keeps, on which device, from which image."""

    stages: tuple[Stage, ...]
    keeps: tuple[KeepItem, ...]
    device: torch.device
    picture: Image.Image
    image_info: dict[str, Any]


# ------------------------------------------------------------------------------------- validation


def parse_stages(stage: object) -> list[int]:
    """null -> [1..5]; an int (or digit string) in 1..5 -> [it]; ValueError otherwise."""
    if stage is None:
        return list(STAGES)
    value = stage
    if isinstance(stage, str) and re.fullmatch(r"\s*[+-]?\d+\s*", stage):
        value = int(stage)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in STAGES:
        raise ValueError(
            f"stage: expected an int in 1..5 (the paper's layers) or null (all five), got {stage!r}"
        )
    return [int(value)]


def parse_keep(keep: object) -> list[KeepItem]:
    """null -> ['all', 'max']; 'all' | 'max' | a channel int (or digit string) -> [it]."""
    accepted = "'all', 'max', a channel int, or null (both all and max)"
    if keep is None:
        return ["all", "max"]
    if isinstance(keep, numbers.Integral) and not isinstance(keep, bool):
        return [int(keep)]
    if isinstance(keep, str):
        text = keep.strip()
        if text in ("all", "max"):
            return [text]
        if re.fullmatch(r"[+-]?\d+", text):
            return [int(text)]
    raise ValueError(f"keep: expected {accepted}, got {keep!r}")


def validate(model: str, image: object, stage: object, keep: object, rule: object, device: object) -> Plan:
    """Check every request value before anything heavy runs; ValueError / FileNotFoundError."""
    check_rule(rule)
    stage_numbers = parse_stages(stage)
    keeps = parse_keep(keep)
    target = check_device(device)
    spec = model_spec(model)  # unknown model name -> ValueError listing the supported ones
    with torch.device("meta"):  # the architecture only: no weights, no memory
        skeleton = spec.constructor(weights=None)
    chosen = tuple(stage_of(skeleton, n) for n in stage_numbers)
    for item in keeps:
        if isinstance(item, int):
            for st in chosen:
                if not 0 <= item < st.channels:
                    raise ValueError(
                        f"keep: channel {item} is outside {model} stage {st.number} ({st.name}) "
                        f"channels 0..{st.channels - 1}"
                    )
    picture = open_image(image)  # missing file / unknown sample name -> clear error
    info = describe_image(image) | {"original_size_wh": list(picture.size)}
    return Plan(chosen, tuple(keeps), target, picture, info)


# ----------------------------------------------------------------------------------------- running


def _stats(r: torch.Tensor) -> dict[str, float]:
    r = r.double()
    return {
        "min": float(r.min()),
        "max": float(r.max()),
        "l2_norm": float(r.norm()),
        "nonzero_fraction": float((r != 0).double().mean()),
    }


def _uint8(shown: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> [H, W, 3] uint8, rounded exactly as `save_png` does."""
    return (shown.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _project(
    net: torch.nn.Module,
    mirror: Mirror | GraphMirror,
    record: ForwardRecord | GraphRecord,
    st: Stage,
    item: KeepItem,
    height: int,
    width: int,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One reconstruction [3, H, W] from a recorded forward pass, and what was kept."""
    output = record.output
    if item == "all":
        r = mirror.project_map(record)[0]
        kept = {
            "mode": "all",
            "shape": list(output.shape[1:]),
            "nonzero": int((output[0] != 0).sum()),
            "max_value": float(output[0].max()),
            "sum": float(output[0].double().sum()),
        }
        return r, kept
    seeds = select_seeds(output, item)
    r = mirror.project(record, seeds, frame="image")[0]
    y, x = int(seeds.y[0]), int(seeds.x[0])
    top, left, bottom, right = receptive_field(net, st.number).box(y, x)
    kept = {
        "mode": "max" if item == "max" else "channel",
        "channel": int(seeds.channel[0]),
        "y": y,
        "x": x,
        "value": float(seeds.value[0]),
        "receptive_field_box": {  # input pixels, bottom/right exclusive, clipped to the image
            "top": max(top, 0),
            "left": max(left, 0),
            "bottom": min(bottom, height),
            "right": min(right, width),
        },
    }
    return r, kept


def run_reconstruct(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    image: str | Path = "cat",
    stage: int | None = None,
    keep: str | int | None = None,
    rule: str = "deconvnet",
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Reconstruct `image` at the requested stages and keeps; write PNGs and result.json to `out_dir`.

    stage None = all five stages; keep None = both 'all' and 'max'. `config` is the resolved config
    recorded in config.yaml / result.json (default: these arguments). Returns the result dict.
    Raises ValueError / FileNotFoundError for bad values before building the model.
    """
    started = time.perf_counter()
    plan = validate(model, image, stage, keep, rule, device)
    if config is None:
        config = {
            "model": {"name": model, "weights": str(weights), "seed": seed},
            "image": str(image),
            "stage": stage,
            "keep": keep,
            "rule": rule,
            "device": device,
        }
    with JobFolder(out_dir) as folder:
        out = folder.path
        folder.write_yaml(CONFIG_FILE, config)
        net, winfo = load_model_logged(model, weights, seed, plan.device)
        x, input_shown = write_input(net, plan, rule, out)
        entries, tiles = reconstruct_all(net, plan, x, rule, out, progress)
        overview = "overview.png"
        draw_overview(
            out / overview,
            _uint8(input_shown),
            tiles,
            entries,
            list(plan.keeps),
            [(st.number, st.name) for st in plan.stages],
            plan.image_info["source"],
            winfo.as_dict(),
            model,
            rule,
        )
        result = build_result(plan, model, winfo, rule, x, entries, config)
        result["seconds"] = round(time.perf_counter() - started, 3)
        folder.write_result(result)
        log.info("wrote %d reconstruction(s), %s and result.json to %s", len(entries), overview, out)
    return result


def load_model_logged(
    model: str, weights: str, seed: int, device: torch.device
) -> tuple[torch.nn.Module, WeightsInfo]:
    """The model on `device` and its weights, logged (a warning for random or unknown weights)."""
    net = load_model(model, weights=weights, seed=seed, device=device)
    winfo = weights_info(net)
    if winfo.weights in ("random", "unknown"):
        log.warning("weights: %s. Reconstructions will not show learned features.", winfo.description)
    else:
        log.info("weights: %s", winfo.description)
    return net, winfo


def write_input(net: torch.nn.Module, plan: Plan, rule: str, out: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The preprocessed image x [1, 3, H, W] on the plan's device and its picture [3, H, W] in
    [0, 1] (written as input.png)."""
    x = preprocess(plan.picture, net).unsqueeze(0).to(plan.device)
    height, width = x.shape[-2:]
    input_shown = denormalize(x, net)[0].cpu()
    save_png(input_shown, out / "input.png")
    log.info(
        "image %s (%s), %dx%d after preprocessing; rule %s; device %s",
        plan.image_info["source"],
        plan.image_info["kind"],
        height,
        width,
        rule,
        plan.device,
    )
    return x, input_shown


def reconstruct_all(
    net: torch.nn.Module, plan: Plan, x: torch.Tensor, rule: str, out: Path, progress: bool
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], np.ndarray]]:
    """Every stage x keep reconstruction of x [1, 3, H, W], each written as a PNG: their
    result.json entries and their pictures ({(keep tag, stage): [H, W, 3] uint8})."""
    entries: list[dict[str, Any]] = []
    tiles: dict[tuple[str, int], np.ndarray] = {}
    total = len(plan.stages) * len(plan.keeps)
    with (
        logging_redirect_tqdm(),
        tqdm(total=total, desc="reconstruct", unit="map", disable=total <= 1 or not progress) as bar,
    ):
        for st in plan.stages:
            mirror = make_mirror(net, st.number, rule)
            with torch.no_grad():
                record = mirror.record(x)  # one forward pass per stage, shared by its keeps
                for item in plan.keeps:
                    entry, tiles[(keep_tag(item), st.number)] = reconstruct_one(
                        net, mirror, record, st, item, tuple(x.shape[-2:]), out
                    )
                    entries.append(entry)
                    bar.update(1)
    return entries, tiles


def reconstruct_one(
    net: torch.nn.Module,
    mirror: Mirror | GraphMirror,
    record: ForwardRecord | GraphRecord,
    st: Stage,
    item: KeepItem,
    size: tuple[int, int],
    out: Path,
) -> tuple[dict[str, Any], np.ndarray]:
    """One keep's reconstruction at one stage, from the stage's recorded forward pass: written as
    stage<n>_<keep>.png and logged; its result.json entry and its picture [H, W, 3] uint8."""
    height, width = size
    t0 = time.perf_counter()
    r, kept = _project(net, mirror, record, st, item, height, width)
    r = r.float().cpu()
    shown = to_display(r)
    name = f"stage{st.number}_{keep_tag(item)}.png"
    save_png(shown, out / name)
    tile = _uint8(shown)
    stats = _stats(r)
    entry = {
        "stage": st.number,
        "stage_name": st.name,
        "feature_index": st.index,
        "channels": st.channels,
        "stage_output_shape": list(record.output.shape[1:]),
        "keep": item,
        "kept": kept,
        "reconstruction": stats,
        "file": name,
        "seconds": round(time.perf_counter() - t0, 4),
    }
    log_reconstruction(st, item, kept, name, stats)
    return entry, tile


def log_reconstruction(
    st: Stage, item: KeepItem, kept: Mapping[str, Any], name: str, stats: Mapping[str, float]
) -> None:
    """Log what one reconstruction kept; a warning when the kept activation is not positive."""
    if item == "all":
        what = f"whole map ({kept['nonzero']} nonzero activations)"
    else:
        what = f"channel {kept['channel']} at ({kept['y']}, {kept['x']}) value {kept['value']:.4g}"
        if kept["value"] <= 0:
            log.warning(
                "stage %d keep=%s: the kept activation is %g, so the reconstruction is blank",
                st.number,
                item,
                kept["value"],
            )
    log.info(
        "stage %d (%s) keep=%s: %s -> %s (L2 %.4g)", st.number, st.name, item, what, name, stats["l2_norm"]
    )


def build_result(
    plan: Plan,
    model: str,
    winfo: WeightsInfo,
    rule: str,
    x: torch.Tensor,
    entries: list[dict[str, Any]],
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """result.json's content (without the run time); x [1, 3, H, W]: the preprocessed image."""
    height, width = x.shape[-2:]
    return {
        "experiment": "reconstruct",
        "model": model,
        "weights": winfo.as_dict(),
        "random_weights": winfo.weights == "random",
        "image": plan.image_info,
        "rule": rule,
        "device": str(plan.device),
        "image_size": [int(height), int(width)],
        "stages": [st.number for st in plan.stages],
        "keeps": list(plan.keeps),
        "files": {"input": "input.png", "overview": "overview.png", "config": "config.yaml"},
        "reconstructions": entries,
        "config": dict(config),
        "provenance": provenance(),
    }


def render_reconstruct(job_dir: str | Path) -> Path:
    """Redraw `overview.png` of a finished job from its saved PNGs and result.json (no model)."""
    job = Path(job_dir)
    return redraw_overview(job, json.loads((job / "result.json").read_text()))


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.reconstruct`: the config as the arguments of `run_reconstruct`."""
    return run_reconstruct(
        out,
        **model_arguments(config),
        image=config["image"],
        stage=config["stage"],
        keep=config["keep"],
        rule=config["rule"],
        device=config["device"],
        config=dict(config),
    )
