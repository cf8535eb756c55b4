"""The faithfulness table as a job folder (`run_faithfulness`, the work behind `python -m
experiments.faithfulness`; docs/faithfulness.md#the-table): every method's map of each photo's
predicted class, scored by deletion (lower is better) and insertion (higher is better; Petsiuk et
al. 2018), with the method's sanity-check verdict beside it (Adebayo et al. 2018: cascading
re-initialisation of the model down to the default pass layer).

Methods: names of `deconvnet.METHODS` (gradient, guided, deconvnet, SmoothGrad, integrated
gradients, gradient x image, the CAMs, LRP with each composite), "occlusion" (the mean drop of the
class's probability under a grey square covering the pixel), "random" and "centre" (baselines:
no sanity check). Each map becomes one score per pixel (`deconvnet.analysis.pixel_scores`).

Files: `table.md` (the table), `result.json` (every AUC per image, the means, the verdicts, every
setting, provenance), `curves.png` (mean deletion and insertion curves), `grid.png` (each
method's scores over each photo) with its tiles, `images.npz` (`<method>` [B, H, W] scores,
`<method>__deletion` / `__insertion` [B, steps + 1] curves, `input`), config.yaml. One cell per
method, checkpointed in `partial/`: an interrupted job resumes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.analysis.faithfulness import BASELINES, deletion, insertion
from deconvnet.analysis.occlusion import occlusion
from deconvnet.analysis.pixel_scores import (
    BASELINE_MAPS,
    centre_scores,
    occlusion_scores,
    pixel_scores,
    random_scores,
    score_rule,
)
from deconvnet.analysis.sanity import default_pass_layer, pass_rule, sanity_check
from deconvnet.core.validation import as_list, check_count, check_real, check_seed
from deconvnet.data.models import class_names
from deconvnet.figures.faithfulness import draw_curves, scores_tile, table_markdown
from deconvnet.figures.sheet import colours, draw_sheet
from deconvnet.gradient.methods import METHODS, explain, options_for
from deconvnet.jobs.folder import RESULT_FILE
from deconvnet.jobs.job import Job, Picture, check_pictures, model_header, prepare, title_lines
from deconvnet.jobs.request import ModelRequest, check_model, model_arguments

DEFAULT_IMAGES = ("astronaut", "camera", "cat", "coffee", "grace_hopper", "horse", "motorcycle", "rocket")
TABLE_METHODS = (
    "gradient", "guided", "deconvnet", "smoothgrad_gradient", "integrated_gradients",
    "gradient_x_image", "gradcam", "guided_gradcam", "gradcam_plus_plus", "layercam", "scorecam",
    "lrp", "lrp_epsilon_plus_flat", "lrp_epsilon_alpha2_beta1", "lrp_epsilon_plus",
    "occlusion", "random", "centre",
)  # fmt: skip
TABLE_FILE, CURVES_FILE, GRID_FILE = "table.md", "curves.png", "grid.png"


@dataclass(frozen=True)
class FaithfulnessPlan:
    """A checked request."""

    request: ModelRequest
    pictures: tuple[Picture, ...]
    methods: tuple[str, ...]
    steps: int
    baselines: dict[str, str]  # "deletion" / "insertion" -> its baseline
    batch_size: int
    stage: int | str
    samples: int
    noise: float
    integrated_steps: int
    patch: int
    stride: int
    scorecam_top: int | None
    sanity: bool
    seed: int


def check_methods(methods: object) -> tuple[str, ...]:
    """null -> TABLE_METHODS; a name or a list of names of METHODS or BASELINE_MAPS, each once."""
    known = (*METHODS, *BASELINE_MAPS)
    accepted = f"null (the table's {len(TABLE_METHODS)}), or names among {', '.join(known)}"
    if methods is None:
        return TABLE_METHODS
    names = as_list(methods) if not isinstance(methods, str) else [methods]
    if not names or any(not isinstance(m, str) or m not in known for m in names):
        raise ValueError(f"methods: expected {accepted}, got {methods!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"methods: each method once, got {methods!r}")
    return tuple(names)


def validate_faithfulness(config: Mapping[str, Any]) -> FaithfulnessPlan:
    """Every value of the config checked before anything is built or written (ValueError naming
    the key)."""
    c = config
    request = check_model(c["model"]["name"], c["model"]["weights"], c["model"]["seed"], c["device"])
    images = DEFAULT_IMAGES if c["images"] is None else c["images"]
    for key in ("deletion_baseline", "insertion_baseline"):
        if not isinstance(c[key], str) or c[key] not in BASELINES:
            raise ValueError(f"{key}: expected one of {', '.join(BASELINES)}, got {c[key]!r}")
    if not isinstance(c["sanity"], bool):
        raise ValueError(f"sanity: expected true or false, got {c['sanity']!r}")
    stage = c["stage"]
    if not isinstance(stage, (int, str)) or isinstance(stage, bool):
        raise ValueError(f"stage: expected a stage number, name or module path, got {stage!r}")
    return FaithfulnessPlan(
        request,
        tuple(check_pictures(images)),
        check_methods(c["methods"]),
        check_count("steps", c["steps"]),
        {"deletion": c["deletion_baseline"], "insertion": c["insertion_baseline"]},
        check_count("batch_size", c["batch_size"]),
        stage,
        check_count("samples", c["samples"]),
        check_real("noise", c["noise"]),
        check_count("integrated_steps", c["integrated_steps"]),
        check_count("patch", c["patch"]),
        check_count("stride", c["stride"]),
        None if c["scorecam_top"] is None else check_count("scorecam_top", c["scorecam_top"]),
        c["sanity"],
        check_seed(c["seed"], "the random map and the re-initialisation"),
    )


def method_options(plan: FaithfulnessPlan, method: str) -> dict[str, Any]:
    """The options `method` takes among the plan's (stage, samples, noise, steps, Score-CAM's top)."""
    shared = {
        "stage": plan.stage,
        "samples": plan.samples,
        "noise": plan.noise,
        "steps": plan.integrated_steps,
    }
    return options_for(method, shared)


def method_scores(net: nn.Module, plan: FaithfulnessPlan, x: Tensor, classes: Tensor, method: str) -> Tensor:
    """[B, H, W] float64 scores of `method` for images x [B, 3, H, W] and their classes [B]."""
    size = tuple(x.shape[-2:])
    if method == "random":
        return random_scores(x.shape[0], size, plan.seed)
    if method == "centre":
        return centre_scores(x.shape[0], size)
    if method == "occlusion":
        result = occlusion(net, x, classes, plan.patch, plan.stride, batch_size=plan.batch_size)
        return occlusion_scores(result, size, plan.patch).double().cpu()
    maps = torch.cat(
        [
            explain(net, x[b : b + 1], method, int(classes[b]), **method_options(plan, method))
            for b in range(len(x))
        ]
    )
    return pixel_scores(method, maps.detach()).double().cpu()


def verdict(net: nn.Module, plan: FaithfulnessPlan, x: Tensor, method: str) -> dict[str, Any] | None:
    """The sanity check's verdict of `method` for the images' predicted classes: one cascading
    step, every layer from the top down to the default pass layer re-initialised (seed)."""
    if not plan.sanity or method in BASELINE_MAPS:
        return None
    layer = default_pass_layer(net)
    checked = sanity_check(
        net, x, [method], target=None, modes="cascading", layers=[layer], seed=plan.seed,
        samples=plan.samples, noise=plan.noise, steps=plan.integrated_steps,
        cam_stage=plan.stage, scorecam_top=plan.scorecam_top, progress=False,
    )  # fmt: skip
    return {**checked.verdicts(layer)[method], "layer": layer}


def method_cell(
    job: Job, plan: FaithfulnessPlan, x: Tensor, classes: Tensor, method: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One method: its scores, both curves, the verdict, the tiles -> (arrays, record)."""
    scores = method_scores(job.net, plan, x, classes, method)
    curves = {}
    for name, metric in (("deletion", deletion), ("insertion", insertion)):
        curves[name] = metric(
            job.net, x, scores.to(x), classes, plan.steps, plan.baselines[name], batch_size=plan.batch_size
        )
    shown = colours(x.cpu(), plan.request.preprocessing)
    tiles = [scores_tile(job.out, method, p.label, scores[b], shown[b]) for b, p in enumerate(plan.pictures)]
    record = {
        "method": method,
        "options": method_options(plan, method) if method in METHODS else {},
        "score_rule": score_rule(method),
        "deletion_auc": curves["deletion"].auc.tolist(),
        "insertion_auc": curves["insertion"].auc.tolist(),
        "sanity": verdict(job.net, plan, x, method),
        "tiles": tiles,
    }
    arrays = {"images": scores.numpy(), **{k: v.curve.cpu().numpy() for k, v in curves.items()}}
    return arrays, record


def summary_rows(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per method: mean and population std over images of both AUCs, and the verdict."""
    rows = []
    for cell in cells:
        row = {"method": cell["method"], "score_rule": cell["score_rule"], "sanity": cell["sanity"]}
        for name in ("deletion_auc", "insertion_auc"):
            values = np.asarray(cell[name], dtype=np.float64)
            row[name] = {"mean": float(values.mean()), "std": float(values.std())}
        rows.append(row)
    return rows


def run_faithfulness(out_dir: str | Path, config: Mapping[str, Any], progress: bool = True) -> dict[str, Any]:
    """The table (module doc) for `config` (conf/faithfulness.yaml's keys), written into
    `out_dir`; the result dict. Every value is checked before the model is built."""
    plan = validate_faithfulness(config)
    job = Job(out_dir, "faithfulness", plan.request, config, len(plan.methods), progress)
    size = plan.request.preprocessing.crop_size
    x = torch.cat([prepare(p.image, job.net, size) for p in plan.pictures]).to(plan.request.device)
    with torch.no_grad():
        classes = job.net(x).argmax(1).cpu()
    with job.progress():
        cells = [job.cell(m, lambda m=m: method_cell(job, plan, x, classes, m)) for m in plan.methods]
    job.keep("input", x)
    result = faithfulness_result(plan, job, classes, cells)
    (job.out / TABLE_FILE).write_text(table_markdown(result))
    curves = {
        m: {k: job.done.arrays(m)[k].mean(0).tolist() for k in ("deletion", "insertion")}
        for m in plan.methods
    }
    title = title_lines("Deletion and insertion", plan.request, job.weights)
    draw_curves(job.out / CURVES_FILE, curves, title)
    extra = {"curves_file": CURVES_FILE, "curves_title": title, "mean_curves": curves}
    return job.finish({**result, **extra}, [grid_sheet(plan, job, cells)])


def faithfulness_result(
    plan: FaithfulnessPlan, job: Job, classes: Tensor, cells: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """result.json's content (before `Job.finish` adds the sheet, files, config, provenance)."""
    names = class_names(plan.request.name)
    return {
        **model_header("faithfulness", plan.request, job.weights),
        "settings": settings(plan, job.net),
        "images": [
            {"label": p.label, **p.info, "class": int(c), "class_name": names[int(c)]}
            for p, c in zip(plan.pictures, classes)
        ],
        "table": summary_rows(cells),
        "table_file": TABLE_FILE,
        "cells": list(cells),
    }


def settings(plan: FaithfulnessPlan, net: nn.Module) -> dict[str, Any]:
    """result.json's "settings": every value used and every choice, in words."""
    return {
        "methods": list(plan.methods),
        "target": "each image's predicted class on the model (argmax of its logits)",
        "steps": plan.steps,
        "baselines": plan.baselines,
        "batch_size": plan.batch_size,
        "cam_stage": plan.stage,
        "smoothgrad": {"samples": plan.samples, "noise": plan.noise},
        "integrated_gradients_steps": plan.integrated_steps,
        "occlusion": {"patch": plan.patch, "stride": plan.stride, "fill": 0.0},
        "scorecam_top": plan.scorecam_top,
        "seed": plan.seed,
        "metrics": "deconvnet.deletion / deconvnet.insertion: the target's softmax probability as "
        "pixels are removed (replaced by the baseline) or revealed in decreasing order of the "
        "scores; area under the curve over the fraction of pixels (trapezoid rule)",
        "sanity": pass_rule(default_pass_layer(net)) if plan.sanity else None,
    }


def grid_sheet(plan: FaithfulnessPlan, job: Job, cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """grid.png: a row per method, its scores over each photo, titled with both AUCs."""
    lines = title_lines(
        "Faithfulness: each method's scores (deletion / insertion AUC)", plan.request, job.weights
    )
    rows = []
    for cell in cells:
        tiles = [
            {"file": tile, "title": f"{p.label}: del {d:.3f} / ins {i:.3f}"}
            for tile, p, d, i in zip(
                cell["tiles"], plan.pictures, cell["deletion_auc"], cell["insertion_auc"]
            )
        ]
        rows.append({"label": cell["method"], "tiles": tiles})
    return {
        "file": GRID_FILE,
        "title": "\n".join(lines),
        "alarm": job.weights.get("weights") == "random",
        "rows": rows,
    }


def render_faithfulness(job_dir: str | Path) -> list[Path]:
    """Redraw grid.png, curves.png and table.md of a finished job from its result.json and tiles,
    without the model."""
    job = Path(job_dir)
    source = job / RESULT_FILE
    if not source.is_file():
        raise FileNotFoundError(f"job_dir: {source} does not exist (run the experiment first)")
    result = json.loads(source.read_text())
    if result.get("experiment") != "faithfulness":
        raise ValueError(
            f"job_dir: {source} names experiment {result.get('experiment')!r}, not 'faithfulness'"
        )
    drawn = [draw_sheet(job, sheet) for sheet in result["sheets"]]
    (job / TABLE_FILE).write_text(table_markdown(result))
    curves = draw_curves(job / CURVES_FILE, result["mean_curves"], result["curves_title"])
    return [*drawn, job / TABLE_FILE, curves]


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.faithfulness`: the config as given (model_arguments checks its shape)."""
    model_arguments(config)
    return run_faithfulness(out, dict(config))
