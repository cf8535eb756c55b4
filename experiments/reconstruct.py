"""Reconstruct one image at the paper's layers: `python -m experiments.reconstruct [key=value ...]`.

Default job: VGG16 (ImageNet weights if cached, else RANDOM with a warning), the sample image `cat`,
all five stages, each projected from the whole feature map (keep=all) and from its single strongest
activation (keep=max), rule deconvnet. Into the job's own folder it writes `input.png`,
`stage<n>_<keep>.png` (keep: all | max | ch<c>), `overview.png`, `result.json`, `config.yaml`
(resolved; Hydra's own copy is in `.hydra/`).

    python -m experiments.reconstruct stage=3 keep=max              # one reconstruction
    python -m experiments.reconstruct model=alexnet keep=12 rule=guided
    python -m experiments.reconstruct -m stage=1,2,3,4,5 keep=all,max  # sweep, a folder per job

Config keys (conf/reconstruct.yaml): model=vgg16|alexnet with model.weights=auto|imagenet|random|
<checkpoint.pth> and model.seed; image=<path or sample name>; stage=1..5 or null (all five);
keep=all|max|<channel int> or null (all and max); rule=deconvnet|backprop|guided; device=cpu|cuda.
Every value is checked before the model is built; a bad one ends the run with one line
`error: <key>: expected ..., got ...` and exit status 1.
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

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import deconvnet
from deconvnet.core.architecture import STAGES, Stage
from deconvnet.core.mirror import Mirror, check_rule
from deconvnet.core.seeds import select_seeds
from deconvnet.core.validation import check_device
from deconvnet.data.images import describe_image, open_image
from deconvnet.data.models import model_spec
from deconvnet.jobs.files import provenance, write_json, write_yaml
from experiments.common import hydra_output_dir, user_errors

log = logging.getLogger("experiments.reconstruct")  # same name under python -m

KeepItem = str | int  # "all", "max" or a channel


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
    chosen = tuple(deconvnet.stage(skeleton, n) for n in stage_numbers)
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


def keep_tag(item: KeepItem) -> str:
    """File-name tag of a keep: 'all', 'max', 'ch<c>'."""
    return item if isinstance(item, str) else f"ch{item}"


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
    net: torch.nn.Module, mirror: Mirror, record, st: Stage, item: KeepItem, height: int, width: int
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
    top, left, bottom, right = deconvnet.receptive_field(net, st.number).box(y, x)
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", config)

    net = deconvnet.load_model(model, weights=weights, seed=seed, device=plan.device)
    winfo = deconvnet.weights_info(net)
    if winfo.weights in ("random", "unknown"):
        log.warning("weights: %s. Reconstructions will not show learned features.", winfo.description)
    else:
        log.info("weights: %s", winfo.description)

    x = deconvnet.preprocess(plan.picture, net).unsqueeze(0).to(plan.device)
    height, width = x.shape[-2:]
    input_shown = deconvnet.denormalize(x, net)[0].cpu()
    deconvnet.save_png(input_shown, out / "input.png")
    log.info(
        "image %s (%s), %dx%d after preprocessing; rule %s; device %s",
        plan.image_info["source"],
        plan.image_info["kind"],
        height,
        width,
        rule,
        plan.device,
    )

    entries: list[dict[str, Any]] = []
    tiles: dict[tuple[str, int], np.ndarray] = {}
    total = len(plan.stages) * len(plan.keeps)
    with (
        logging_redirect_tqdm(),
        tqdm(total=total, desc="reconstruct", unit="map", disable=total <= 1 or not progress) as bar,
    ):
        for st in plan.stages:
            mirror = Mirror(net, st.number, rule)
            with torch.no_grad():
                record = mirror.record(x)  # one forward pass per stage, shared by its keeps
                for item in plan.keeps:
                    t0 = time.perf_counter()
                    r, kept = _project(net, mirror, record, st, item, height, width)
                    r = r.float().cpu()
                    shown = deconvnet.to_display(r)
                    name = f"stage{st.number}_{keep_tag(item)}.png"
                    deconvnet.save_png(shown, out / name)
                    tiles[(keep_tag(item), st.number)] = _uint8(shown)
                    stats = _stats(r)
                    entries.append(
                        {
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
                    )
                    if item == "all":
                        what = f"whole map ({kept['nonzero']} nonzero activations)"
                    else:
                        what = (
                            f"channel {kept['channel']} at ({kept['y']}, {kept['x']}) "
                            f"value {kept['value']:.4g}"
                        )
                        if kept["value"] <= 0:
                            log.warning(
                                "stage %d keep=%s: the kept activation is %g, so the reconstruction is blank",
                                st.number,
                                item,
                                kept["value"],
                            )
                    log.info(
                        "stage %d (%s) keep=%s: %s -> %s (L2 %.4g)",
                        st.number,
                        st.name,
                        item,
                        what,
                        name,
                        stats["l2_norm"],
                    )
                    bar.update(1)

    overview = "overview.png"
    _overview(
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

    result = {
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
        "files": {"input": "input.png", "overview": overview, "config": "config.yaml"},
        "reconstructions": entries,
        "config": dict(config),
        "provenance": provenance(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(out / "result.json", result)
    log.info("wrote %d reconstruction(s), %s and result.json to %s", len(entries), overview, out)
    return result


def render_reconstruct(job_dir: str | Path) -> Path:
    """Redraw `overview.png` of a finished job from its saved PNGs and result.json (no model)."""
    job = Path(job_dir)
    result = json.loads((job / "result.json").read_text())
    entries = result["reconstructions"]
    tiles = {
        (keep_tag(e["keep"]), e["stage"]): np.asarray(Image.open(job / e["file"]).convert("RGB"))
        for e in entries
    }
    stages = sorted({(e["stage"], e["stage_name"]) for e in entries})
    input_tile = np.asarray(Image.open(job / result["files"]["input"]).convert("RGB"))
    path = job / result["files"]["overview"]
    _overview(
        path,
        input_tile,
        tiles,
        entries,
        result["keeps"],
        stages,
        result["image"]["source"],
        result["weights"],
        result["model"],
        result["rule"],
    )
    return path


def _overview(
    path: Path,
    input_tile: np.ndarray,
    tiles: Mapping[tuple[str, int], np.ndarray],
    entries: list[dict[str, Any]],
    keeps: list[KeepItem],
    stages: list[tuple[int, str]],
    image_source: str,
    weights: Mapping[str, Any],
    model: str,
    rule: str,
) -> None:
    """Rows = keeps, columns = input + stages; each tile labelled, receptive field of a seed boxed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    by_key = {(keep_tag(e["keep"]), e["stage"]): e for e in entries}
    rows, cols = len(keeps), 1 + len(stages)
    fig = Figure(figsize=(max(2.3 * cols, 6.0), 2.5 * rows + 0.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, item in enumerate(keeps):
        tag = keep_tag(item)
        axes[i][0].imshow(input_tile)
        axes[i][0].set_ylabel(f"keep={item}", fontsize=10)
        for j, (number, name) in enumerate(stages, start=1):
            ax = axes[i][j]
            ax.imshow(tiles[(tag, number)])
            kept = by_key[(tag, number)]["kept"]
            if kept["mode"] != "all":
                box = kept["receptive_field_box"]
                ax.add_patch(
                    Rectangle(
                        (box["left"] - 0.5, box["top"] - 0.5),
                        box["right"] - box["left"],
                        box["bottom"] - box["top"],
                        fill=False,
                        edgecolor="yellow",
                        linewidth=0.8,
                        linestyle="--",
                    )
                )
                ax.set_xlabel(
                    f"c{kept['channel']} @({kept['y']},{kept['x']}) = {kept['value']:.3g}", fontsize=7
                )
            if i == 0:
                ax.set_title(f"stage {number}: {name}", fontsize=9)
    axes[0][0].set_title("input", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    random = weights.get("weights") == "random"
    weights_line = deconvnet.weights_label(weights)
    fig.suptitle(
        f"{model} [{weights_line.upper() if random else weights_line}]\nimage: "
        f"{image_source}   rule: {rule}\n"
        "zero = mid-grey, each tile scaled by its own max|r|; dashed box: receptive "
        "field of the kept unit",
        fontsize=8,
        color="darkred" if random else "black",
    )
    fig.savefig(path)


# ------------------------------------------------------------------------------------------- hydra


@hydra.main(version_base="1.3", config_path="../conf", config_name="reconstruct")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the config as plain arguments to `run_reconstruct`, in the job's folder."""
    config = OmegaConf.to_container(cfg, resolve=True)
    with user_errors(log):
        run_reconstruct(
            hydra_output_dir(),
            model=cfg.model.name,
            weights=cfg.model.weights,
            seed=cfg.model.seed,
            image=cfg.image,
            stage=cfg.stage,
            keep=cfg.keep,
            rule=cfg.rule,
            device=cfg.device,
            config=config,
        )


if __name__ == "__main__":
    main()
