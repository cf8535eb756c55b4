"""The sanity-check job (`run_sanity`, the work behind `python -m experiments.sanity`): Adebayo et
al.'s (NeurIPS 2018) model parameter randomisation test of the gradient-family methods on a few
photos, on every supported model, with the choices of `deconvnet.analysis.sanity` (target fixed
on the original model, the architecture's own re-initialisation of every parameterised node of
the graph in execution order, batch norms included, the four similarities, the pass criterion).

Files in the job folder:
- `curves.png`: one panel per similarity metric (columns) and mode (rows: cascading,
  independent); x = the layer randomised, top -> bottom (x = 0: none); y = the similarity, the
  mean over the images; one curve per method. Steps that cannot change the map (layers above
  the target's stage) are shaded and sit at exactly 1.0. The title names the weights exactly
  (`weights_label`) and the target.
- `cascade_<image>.png`: Adebayo's Fig. 2 for one image: rows = methods, columns = input,
  original map, then the map after each SHOWN cascading step (`shown_layers`; null: every step
  that changes the map when there are at most 20, else the step completing each module block,
  `deconvnet.figures.sanity.cascade_columns`: ResNet-50's 107 layers show as its 16 residual
  blocks, the stem and the head); every map shown as `deconvnet.analysis.similarity.normalized`
  (sum |.| over colour / 99th percentile). Every step is computed whatever is shown.
- `images.npz` (float32): `inputs` [B, 3, S, S] (normalised input space); `original__<method>` the
  raw original maps [B, 3, S, S] (Grad-CAM [B, S, S]); `similarity__<mode>` [steps, methods,
  images, 4] (METRICS order; NaN where undefined); per step `<mode>__<layer>__similarity`
  [methods, images, 4] and, for the shown cascading steps, `<mode>__<layer>__maps` the
  normalised maps [methods, images, S, S]. The randomised maps' raw values are not kept.
- `result.json` (model header, every setting, targets, per-step records, the curves, the
  verdicts with the pass rule, provenance), `config.yaml`; `partial/` while running (a rerun
  with the same config resumes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.analysis.randomize import (
    MODES,
    Randomized,
    check_layers,
    check_modes,
    check_seed,
    init_description,
    layers_used,
)
from deconvnet.analysis.sanity import (
    DEFAULT_METHODS,
    PASS_BELOW,
    PASS_METRIC,
    MapSettings,
    Step,
    check_pass_metric,
    check_settings,
    default_pass_layer,
    explain_images,
    fix_targets,
    mean_over_images,
    pass_rule,
    plan_steps,
    run_step,
    similarity_curves,
    verdicts,
)
from deconvnet.analysis.similarity import METRIC_TITLES, METRICS, normalized
from deconvnet.core.targets import Unit
from deconvnet.core.validation import as_list, check_real
from deconvnet.figures.sanity import COLUMN_RULE, cascade_columns, draw_cascade, draw_curves
from deconvnet.figures.sheet import COLOURS, colours
from deconvnet.jobs.job import (
    Job,
    Picture,
    check_image_size,
    check_pictures,
    classifier_note,
    model_header,
    prepare,
    title_lines,
)
from deconvnet.jobs.request import ModelRequest, check_model, model_arguments

DEFAULT_IMAGES = ("cat", "coffee")
CURVES_FILE = "curves.png"


@dataclass(frozen=True)
class SanityPlan:
    """A checked request."""

    request: ModelRequest
    pictures: tuple[Picture, ...]
    unit: tuple[int, ...] | None
    settings: MapSettings
    modes: tuple[str, ...]
    layers: tuple[str, ...] | None
    size: int
    seed: int
    pass_layer: str | None
    pass_below: float
    pass_metric: str
    shown: tuple[str, ...]
    shown_given: tuple[str, ...] | None

    @property
    def target(self) -> Unit | None:
        """What the maps explain before it is fixed on the original model."""
        return None if self.unit is None else Unit(*self.unit)


def validate_sanity(
    model: object,
    weights: object,
    seed: object,
    images: object,
    methods: object,
    unit: object,
    modes: object,
    layers: object,
    size: object,
    samples: object,
    noise: object,
    steps: object,
    cam_stage: object,
    rand_seed: object,
    noise_seed: object,
    pass_layer: object,
    pass_below: object,
    pass_metric: object,
    device: object,
    shown_layers: object = None,
) -> SanityPlan:
    """Every value checked before anything is built or written (ValueError naming the key)."""
    from deconvnet.jobs.saliency import parse_unit

    request = check_model(model, weights, seed, device)
    skeleton = request.skeleton
    size = check_image_size(request, size)
    chosen = parse_unit(unit, skeleton, (size, size))
    stage = None if chosen is None else chosen[0]
    settings = check_settings(skeleton, methods, samples, noise, steps, cam_stage, noise_seed, stage)
    chosen_modes = check_modes(modes)
    evaluated = [layer.name for layer in check_layers(skeleton, layers)]
    metric = check_pass_metric(pass_metric)
    below = check_real("pass_below", pass_below, low=-1.0)
    if below > 1:
        raise ValueError(f"pass_below: expected a number in -1..1 (a similarity), got {pass_below!r}")
    chosen_pass = check_pass_layer(pass_layer, evaluated, chosen_modes, skeleton)
    shown = check_shown_layers(shown_layers, skeleton, evaluated, chosen_modes, stage)
    pictures = check_pictures(images, "images")
    return SanityPlan(
        request,
        tuple(pictures),
        chosen,
        settings,
        chosen_modes,
        None if layers is None else tuple(evaluated),
        size,
        check_seed(rand_seed),
        chosen_pass,
        below,
        metric,
        shown,
        None if shown_layers is None else shown,
    )


def check_shown_layers(
    shown_layers: object,
    skeleton: nn.Module,
    evaluated: Sequence[str],
    modes: Sequence[str],
    stage: int | None,
) -> tuple[str, ...]:
    """The cascading steps the cascade figure shows, top first: null -> `cascade_columns` of the
    evaluated cascading steps that change the maps; else a name or a non-empty list of such steps,
    each once; () without cascading (ValueError naming shown_layers otherwise)."""
    if "cascading" not in modes:
        if shown_layers is not None:
            raise ValueError(
                f"shown_layers: the cascade figure shows cascading steps; modes {list(modes)} has "
                "none (give shown_layers=null)"
            )
        return ()
    every = check_layers(skeleton, None)
    steps = plan_steps(
        every, check_layers(skeleton, list(evaluated)), ("cascading",), layers_used(skeleton, stage)
    )
    changing = [s.layer for s in steps if s.affects_map]
    if shown_layers is None:
        return tuple(cascade_columns(changing))
    names = [shown_layers] if isinstance(shown_layers, str) else as_list(shown_layers)
    if (
        not names
        or any(not isinstance(n, str) or n not in changing for n in names)
        or len(set(names)) < len(names)
    ):
        raise ValueError(
            f"shown_layers: expected null (automatic: {COLUMN_RULE}) or a non-empty list of distinct "
            f"cascading steps that change the maps ({', '.join(changing)}), got {shown_layers!r}"
        )
    return tuple(n for n in changing if n in names)


def check_pass_layer(
    pass_layer: object, evaluated: Sequence[str], modes: Sequence[str], skeleton: nn.Module
) -> str | None:
    """null or one of the `evaluated` layers (cascading mode needed) -> the pass layer: null
    means the default layer if it is evaluated, else no verdict (None, as without cascading)."""
    chosen_pass = None
    if pass_layer is not None and pass_layer not in evaluated:
        raise ValueError(
            f"pass_layer: expected null or one of the evaluated layers "
            f"({', '.join(evaluated)}), got {pass_layer!r}"
        )
    if pass_layer is not None and "cascading" not in modes:
        raise ValueError(
            f"pass_layer: the pass criterion reads the cascading steps; modes "
            f"{list(modes)} has none (give pass_layer=null)"
        )
    if "cascading" in modes:  # null: the default layer if it is evaluated, else no verdict
        default = default_pass_layer(skeleton)
        chosen_pass = pass_layer or (default if default in evaluated else None)
    return chosen_pass


def sanity_config(plan: SanityPlan, weights: object) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    r, s = plan.request, plan.settings
    return {
        "model": {"name": r.name, "weights": str(weights), "seed": r.seed},
        "images": [p.info["source"] for p in plan.pictures],
        "methods": list(s.methods),
        "unit": None if plan.unit is None else list(plan.unit),
        "modes": list(plan.modes),
        "layers": None if plan.layers is None else list(plan.layers),
        "size": plan.size,
        "samples": s.samples,
        "noise": s.noise,
        "steps": s.steps,
        "cam_stage": s.cam_stage,
        "seed": plan.seed,
        "noise_seed": s.noise_seed,
        "pass_layer": plan.pass_layer,
        "pass_below": plan.pass_below,
        "pass_metric": plan.pass_metric,
        "shown_layers": None if plan.shown_given is None else list(plan.shown_given),
        "device": str(r.device),
    }


# ------------------------------------------------------------------------------------- cells


def original_cell(
    randomized: Randomized, plan: SanityPlan, x: Tensor
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The targets fixed on the original model and its maps -> ({method: maps}, record)."""
    targets, records = fix_targets(randomized.copy, x, plan.target)
    maps = explain_images(randomized.copy, x, targets, plan.settings)
    return {m: r.numpy() for m, r in maps.items()}, {"targets": records}


def fixed_target(record: Mapping[str, Any]) -> int | Unit:
    """A resolved target record -> what every step explains."""
    if record["kind"] == "class":
        return int(record["class"])
    return Unit(record["stage"], record["channel"], record["y"], record["x"])


def step_cell(
    randomized: Randomized,
    plan: SanityPlan,
    step: Step,
    x: Tensor,
    targets: Sequence[int | Unit],
    original: dict[str, Tensor],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One randomisation step -> (arrays: similarity [M, B, 4], and for a cascading step that
    changes the maps their normalised versions [M, B, S, S]; its record)."""
    similarity, maps = run_step(randomized, step, x, targets, plan.settings, original)
    arrays = {"similarity": similarity}
    if maps is not None and step.mode == "cascading" and step.layer in plan.shown:
        arrays["maps"] = np.stack([np.stack([normalized(r) for r in maps[m]]) for m in plan.settings.methods])
    record = {
        "mode": step.mode,
        "layer": step.layer,
        "randomized": list(step.randomized),
        "reinitialized": list(step.reinitialized),
        "affects_map": step.affects_map,
        "mean": {
            m: dict(zip(METRICS, mean_over_images(similarity[i])))
            for i, m in enumerate(plan.settings.methods)
        },
    }
    return arrays, record


# ---------------------------------------------------------------------------------------- run


def run_sanity(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    images: str | Sequence[str] = DEFAULT_IMAGES,
    methods: str | Sequence[str] = DEFAULT_METHODS,
    unit: int | Sequence[int] | None = (5,),
    modes: str | Sequence[str] = MODES,
    layers: str | Sequence[str] | None = None,
    size: int | None = None,
    samples: int = 8,
    noise: float = 0.15,
    steps: int = 8,
    cam_stage: int | str | None = None,
    rand_seed: int = 0,
    noise_seed: int = 0,
    pass_layer: str | None = None,
    pass_below: float = PASS_BELOW,
    pass_metric: str = PASS_METRIC,
    device: str = "cpu",
    shown_layers: str | Sequence[str] | None = None,
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The randomisation test of `images` (files: module doc); the result dict.

    seed: the model's; rand_seed: config key `seed` (the re-initialisation); noise_seed:
    SmoothGrad's noise; unit: [stage] (each image's strongest unit of that stage in the original
    model), [stage, channel], [stage, channel, y, x], or None (each image's predicted class of
    the original model); size None: the weights' crop size; layers None: every learnable layer;
    cam_stage None: the stage below the unit's, 5 for a class; pass_layer None: the first conv
    of stage 3; shown_layers None: `cascade_columns`. Every value is checked before any work.
    """
    plan = validate_sanity(
        model,
        weights,
        seed,
        images,
        methods,
        unit,
        modes,
        layers,
        size,
        samples,
        noise,
        steps,
        cam_stage,
        rand_seed,
        noise_seed,
        pass_layer,
        pass_below,
        pass_metric,
        device,
        shown_layers,
    )
    config = config if config is not None else sanity_config(plan, weights)
    steps_ = sanity_steps(plan)
    job = Job(out_dir, "sanity", plan.request, config, 1 + len(steps_), progress)
    return sanity_job(job, plan, steps_)


def sanity_steps(plan: SanityPlan) -> list[Step]:
    """The randomisation steps of the plan's modes over its layers (top first)."""
    skeleton = plan.request.skeleton
    every = check_layers(skeleton, None)
    stage = None if plan.unit is None else plan.unit[0]
    return plan_steps(every, check_layers(skeleton, plan.layers), plan.modes, layers_used(skeleton, stage))


def sanity_job(job: Job, plan: SanityPlan, steps_: Sequence[Step]) -> dict[str, Any]:
    """Every cell computed (or taken from its checkpoint), the figures drawn, the files written;
    the result dict."""
    randomized = Randomized(job.net, plan.seed, plan.request.device)
    x = torch.cat([prepare(p.image, job.net, plan.size) for p in plan.pictures])
    x = x.to(plan.request.device)
    with job.progress():
        first = job.cell("original", lambda: original_cell(randomized, plan, x))
        original = {m: job.images("original", m) for m in plan.settings.methods}
        targets = [fixed_target(t) for t in first["targets"]]
        cells = [
            job.cell(s.key, lambda s=s: step_cell(randomized, plan, s, x, targets, original)) for s in steps_
        ]
    similarity = {
        mode: np.stack([job.images(s.key, "similarity").double().numpy() for s in steps_ if s.mode == mode])
        for mode in plan.modes
    }
    job.keep("inputs", x)
    for mode, values in similarity.items():
        job.keep(f"similarity__{mode}", torch.from_numpy(values))
    result = sanity_result(plan, job, first, cells, similarity, steps_)
    draw_sanity(job, plan, result, x, original, steps_)
    return job.finish(result, [])


def draw_sanity(
    job: Job,
    plan: SanityPlan,
    result: Mapping[str, Any],
    x: Tensor,
    original: Mapping[str, Tensor],
    steps_: Sequence[Step],
) -> None:
    """curves.png and each image's cascade_<image>.png (x: the inputs [B, 3, S, S]; original:
    {method: the original maps})."""
    heading = title_lines(
        "Sanity checks (Adebayo et al. 2018), model parameter randomisation",
        plan.request,
        result["weights"],
        result["classifier_note"],
    )
    draw_curves(job.out / CURVES_FILE, heading, result)
    for b, picture in enumerate(plan.pictures):
        heading = title_lines(
            f"Cascading randomisation of {picture.label}",
            plan.request,
            result["weights"],
            result["classifier_note"],
        )
        draw_cascade(
            job.out / f"cascade_{picture.label}.png",
            heading,
            result,
            colours(x[b : b + 1].cpu(), plan.request.preprocessing)[0],
            {m: original[m][b] for m in plan.settings.methods},
            {
                s.layer: job.images(s.key, "maps")[:, b]
                for s in steps_
                if s.mode == "cascading" and s.layer in plan.shown
            },
        )


# ------------------------------------------------------------------------------------ result


def sanity_result(
    plan: SanityPlan,
    job: Job,
    first: Mapping[str, Any],
    cells: Sequence[Mapping[str, Any]],
    similarity: Mapping[str, np.ndarray],
    steps_: Sequence[Step],
) -> dict[str, Any]:
    """result.json's content (before `Job.finish` adds sheets, files, config, provenance)."""
    methods = list(plan.settings.methods)
    note = classifier_note(job.weights) if plan.unit is None else None
    by_mode = {mode: [s for s in steps_ if s.mode == mode] for mode in plan.modes}
    curves = similarity_curves(similarity, methods)
    verdict = None
    if plan.pass_layer is not None:
        verdict = verdicts(similarity, by_mode, methods, plan.pass_layer, plan.pass_below, plan.pass_metric)
    skeleton = plan.request.skeleton
    figures = [CURVES_FILE] + [f"cascade_{p.label}.png" for p in plan.pictures]
    return {
        **model_header("sanity", plan.request, job.weights, note),
        "settings": sanity_settings(plan, skeleton),
        "target": describe_target(plan),
        "images": [
            {"label": p.label, **p.info, "target": t} for p, t in zip(plan.pictures, first["targets"])
        ],
        "layers": {
            "all_top_first": [l.name for l in check_layers(skeleton, None)],
            "used_by_the_maps": sorted(layers_used(skeleton, None if plan.unit is None else plan.unit[0])),
        },
        "steps": {mode: [s.layer for s in by_mode[mode]] for mode in plan.modes},
        "metrics": {m: METRIC_TITLES[m] for m in METRICS},
        "display": {
            "inputs": COLOURS,
            "maps": "normalized: sum |.| over colour / 99th percentile, clipped to [0, 1]",
            "cascade_steps_shown": list(plan.shown),
            "cascade_steps_changing_the_maps": [
                s.layer for s in by_mode.get("cascading", []) if s.affects_map
            ],
            "cascade_rule": COLUMN_RULE if plan.shown_given is None else "shown_layers as given",
        },
        "curves": curves,
        "pass_rule": None
        if verdict is None
        else pass_rule(plan.pass_layer, plan.pass_below, plan.pass_metric),
        "at_pass_layer": _at_pass_layer(plan, curves, by_mode),
        "verdicts": verdict,
        "passing": _names(verdict, True),
        "failing": _names(verdict, False),
        "cells": [first, *cells],
        "figures": figures,
    }


def _at_pass_layer(
    plan: SanityPlan, curves: Mapping[str, Any], by_mode: Mapping[str, Sequence[Step]]
) -> dict[str, Any] | None:
    """Every metric's mean at the pass layer of the cascade, per method (the verdict reads one)."""
    if plan.pass_layer is None:
        return None
    s = [step.layer for step in by_mode["cascading"]].index(plan.pass_layer)
    return {
        m: {metric: curves["cascading"][metric][m][s] for metric in METRICS} for m in plan.settings.methods
    }


def _names(verdict: Mapping[str, Mapping[str, Any]] | None, passes: bool) -> list[str] | None:
    if verdict is None:
        return None
    return [m for m, v in verdict.items() if v["passes"] is passes]


def describe_target(plan: SanityPlan) -> str:
    """The target in words, as the figures say it."""
    if plan.unit is None:
        return "each image's predicted class of the ORIGINAL model (its logit), fixed for all steps"
    unit = plan.unit
    if len(unit) == 1:
        what = f"each image's strongest stage-{unit[0]} unit"
    elif len(unit) == 2:
        what = f"each image's strongest unit of stage {unit[0]} channel {unit[1]}"
    else:
        what = f"unit: stage {unit[0]} channel {unit[1]} at (y, x) = ({unit[2]}, {unit[3]})"
    return (
        what + " of the ORIGINAL model, fixed for all steps (a unit, not a "
        "class: every method, Grad-CAM and integrated gradients included, explains it)"
    )


def sanity_settings(plan: SanityPlan, skeleton: nn.Module) -> dict[str, Any]:
    """Every setting, in words where it is a choice."""
    s = plan.settings
    return {
        "methods": list(s.methods),
        "unit": None if plan.unit is None else list(plan.unit),
        "modes": list(plan.modes),
        "layers": None if plan.layers is None else list(plan.layers),
        "size": plan.size,
        "seed": plan.seed,
        "smoothgrad": {
            "samples": s.samples,
            "noise": s.noise,
            "seed": s.noise_seed,
            "squared": False,
            "the same noise for every model": True,
        },
        "integrated_gradients": {"steps": s.steps, "baseline": "zeros (the mean colour)"},
        "gradcam": {"stage": s.cam_stage},
        "reinitialization": init_description(skeleton) + "; one torch.Generator per layer seeded with "
        "layer_seed(seed, position), float32 on the CPU, then cast",
        "learnable_layers": "every parameterised node of the traced graph (convolutions, batch "
        "norms, linear layers) in execution order, top first",
        "cascading": "step k re-initialises the top k learnable layers",
        "independent": "step k re-initialises layer k alone",
        "layers_above_the_target": "not used by the map: similarity exactly 1.0, nothing "
        "computed (affects_map false)",
        "similarity": "per image, original vs randomised map; Spearman on sum |.| / sum "
        "over colour (average ranks for ties); SSIM and HOG on the maps "
        "normalised to [0, 1]; NaN when a map is constant",
        "pass_layer": plan.pass_layer,
        "pass_below": plan.pass_below,
        "pass_metric": plan.pass_metric,
    }


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.sanity`: the config as the arguments of `run_sanity`."""
    return run_sanity(
        out,
        **model_arguments(config),
        images=config["images"],
        methods=config["methods"],
        unit=config["unit"],
        modes=config["modes"],
        layers=config["layers"],
        size=config["size"],
        samples=config["samples"],
        noise=config["noise"],
        steps=config["steps"],
        cam_stage=config["cam_stage"],
        rand_seed=config["seed"],
        noise_seed=config["noise_seed"],
        pass_layer=config["pass_layer"],
        pass_below=config["pass_below"],
        pass_metric=config["pass_metric"],
        device=config["device"],
        shown_layers=config.get("shown_layers"),
        config=dict(config),
    )
