"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018): the model parameter
randomisation test, `sanity_check(model, images, ...)`, on any supported CNN.

For every method (the project's names, `deconvnet.gradient.METHODS`; default the six of
`DEFAULT_METHODS`: gradient, guided backprop, deconvnet, SmoothGrad of the gradient, Grad-CAM,
integrated gradients) the map of each image on the model is compared with the map on a copy
whose learnable layers were re-initialised (`deconvnet.analysis.randomize`: every parameterised
node of the traced graph, batch norms included, in execution order, top first):
- cascading: step k re-initialises the top k learnable layers (fc8 first, then fc7, ... down to
  conv1_1 on VGG16; fc, layer4.1.bn2, layer4.1.conv2, ... down to conv1 on ResNet-18), as
  Adebayo et al.'s Fig. 2 / 4;
- independent: step k re-initialises layer k alone (their Fig. 5).
The similarities are `deconvnet.analysis.similarity.METRICS` (Spearman of |.| and of the signed
map, SSIM, HOG), per image; curves are means over images.

Choices the paper leaves open (it explains a class logit of Inception v3):
- The target is fixed on the ORIGINAL model and kept for every step: Unit(5) (default) is each
  image's strongest stage-5 unit of the original model (channel, y, x), a Unit / Channel as
  given (its stage a number, name or path), a class int, or None = each image's predicted class
  of the original model. With the HED weights the classifier is random, so the default is a
  unit; on a model with its ImageNet classifier (EfficientNet-Lite0) give target=None or a class.
- A unit at stage s depends only on the layers computed on the way to the stage's output (its
  ancestors in the traced graph): the layers above it (the classifier, the blocks after stage s)
  do not enter its forward or backward pass, so their randomisation leaves every map bitwise
  unchanged (the tests check this). Those steps are not computed: they are recorded as
  similarity exactly 1.0 with `affects_map` False, and in the steps below them only the layers
  the map uses are re-initialised on the copy (the maps are bitwise those of a copy with every
  listed layer re-initialised; tested). A class target uses every layer.
- Grad-CAM's stage `cam_stage`: None (default) is the stage below a unit target's (4 for a
  stage-5 unit: at stage 5 itself the gradient of one unit is one-hot and Grad-CAM is just that
  channel's map; 1 for a stage-1 unit) and stage 5, the last convolutional stage as Selvaraju et
  al. take it, for a class target. It may also be given: a stage number, name or path (not above
  a unit target's stage) or, for a class target on a graph model, any module path whose output is
  a feature map (`deconvnet.gradient.gradcam`).
- SmoothGrad's noise uses the same seed for the original and every randomised model (the same
  noisy copies), integrated gradients the zero baseline; both as `deconvnet.explain` does them.
- A method "passes" (`verdicts`) when its maps decorrelate under cascading randomisation: the
  mean over images of Spearman(|.|) after re-initialising every layer from the top down to
  `pass_layer` (default: the first convolution computed after stage 2's output, i.e. the first of
  stage 3: conv3_1 on VGG16, conv3 on AlexNet, layer2.0.conv1 on ResNet) is below `pass_below`
  (default 0.5); another metric may be chosen (`pass_metric`). NaN correlations (a constant map)
  are left out of the mean; with none defined the verdict is None.
  Caveat, measured: a unit's maps share a spatial envelope (its receptive field, strongest near
  the unit, whatever the weights), which alone keeps Spearman(|.|) high; the signed Spearman and
  the pictures do not have that floor (Adebayo et al. report the |.| floor for class maps too).

The caller's model is only read: all work happens on one deep copy (on `device`, eval mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from deconvnet.analysis.randomize import (
    MODES,
    Layer,
    Randomized,
    check_layers,
    check_modes,
    check_seed,
    layers_used,
    learnable_layers,
    randomized_at,
)
from deconvnet.analysis.similarity import METRIC_TITLES, METRICS, similarities
from deconvnet.core.architecture import is_chain
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.architecture import stages as stages_of
from deconvnet.core.geometry import stage_sizes
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.precision import full_float32
from deconvnet.core.targets import Channel, Rows, Unit, resolve_target
from deconvnet.core.validation import as_list, check_count, check_device, check_images, check_real, is_int
from deconvnet.core.validation import check_seed as check_seed_value
from deconvnet.gradient.explained import resolve_explained
from deconvnet.gradient.gradcam import check_cam_point
from deconvnet.gradient.methods import CAM_METHODS, METHODS, explain, options_for

DEFAULT_METHODS = (
    "gradient",
    "guided",
    "deconvnet",
    "smoothgrad_gradient",
    "gradcam",
    "integrated_gradients",
)
TARGETS = "None (each image's predicted class), a class int, a deconvnet Unit or Channel"
PASS_METRIC, PASS_BELOW = "spearman_abs", 0.5


@dataclass(frozen=True)
class MapSettings:
    """The methods and their options (`deconvnet.explain`'s): SmoothGrad samples / noise /
    noise_seed, integrated-gradients steps, Grad-CAM's cam_stage."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    samples: int = 25
    noise: float = 0.15
    steps: int = 50
    cam_stage: int | str = 4
    noise_seed: int = 0
    scorecam_top: int | None = None  # Score-CAM's channels kept (Faster-ScoreCAM), None: all

    def options(self, method: str) -> dict[str, Any]:
        """The keyword options of these settings that `method` takes (`options_for`): SmoothGrad's
        samples / noise / seed, integrated gradients' steps, Grad-CAM's stage; none for the others."""
        every = {
            "samples": self.samples,
            "noise": self.noise,
            "seed": self.noise_seed,
            "steps": self.steps,
            "stage": self.cam_stage,
            "top": self.scorecam_top,
        }
        return options_for(method, every)


def check_methods(methods: object) -> tuple[str, ...]:
    """A method name or a non-empty list of names of METHODS, each once."""
    items = [methods] if isinstance(methods, str) else as_list(methods)
    accepted = f"one of {', '.join(METHODS)}, or a non-empty list of them"
    if not items:
        raise ValueError(f"methods: expected {accepted}, got {methods!r}")
    for item in items:
        if not isinstance(item, str) or item not in METHODS:
            raise ValueError(f"methods: unknown method {item!r}; expected {accepted}")
    if len(set(items)) != len(items):
        raise ValueError(f"methods: each method once, got {list(items)}")
    return tuple(items)


def target_stage(target: object) -> int | str | None:
    """The stage of a Unit / Channel target (its number, name or path); None for a class target."""
    return target.stage if isinstance(target, (Unit, Channel)) else None


def default_cam_stage(model: nn.Module, stage: int | str | None) -> int:
    """Grad-CAM's stage when none is given (module doc): the stage below a unit target's stage
    (at least 1), stage 5 for a class target."""
    return 5 if stage is None else max(stage_of(model, stage).number - 1, 1)


def cam_stage_number(model: nn.Module, cam_stage: str, stage: int | str | None) -> int | None:
    """The stage number of a stage name or path; None for another module path with a feature map
    (class targets on a graph model only); ValueError naming cam_stage otherwise."""
    names = ", ".join(f"{s.name} ({s.path})" if s.path != s.name else s.name for s in stages_of(model))
    if cam_stage in {name for s in stages_of(model) for name in (s.name, s.path)}:
        return stage_of(model, cam_stage).number
    if is_chain(model) or stage is not None:
        raise ValueError(
            f"cam_stage: {cam_stage!r} is not a stage of this model ({names}); any other module path "
            "takes a class target on a graph model"
        )
    try:
        check_cam_point(model, cam_stage, Rows("class", torch.arange(1)))
    except ValueError as error:
        raise ValueError(f"cam_{error}") from None
    return None


def check_cam_stage(
    model: nn.Module, cam_stage: object, stage: int | str | None, methods: Sequence[str]
) -> int | str:
    """Grad-CAM's stage: None -> `default_cam_stage`; an int in 1..5, a stage name or path, or
    (class target, graph model) a module path with a feature map; not above a unit target's
    `stage` when a Grad-CAM method is asked for. ValueError naming cam_stage otherwise."""
    if cam_stage is None:
        return default_cam_stage(model, stage)
    if isinstance(cam_stage, str):
        number = cam_stage_number(model, cam_stage, stage)
    elif is_int(cam_stage) and 1 <= cam_stage <= 5:
        number = int(cam_stage)
    else:
        raise ValueError(
            f"cam_stage: expected an int in 1..5 (Grad-CAM's stage), a stage name or path, or null "
            f"(automatic), got {cam_stage!r}"
        )
    top = None if stage is None else stage_of(model, stage).number
    if top is not None and number is not None and number > top and set(methods) & set(CAM_METHODS):
        raise ValueError(
            f"cam_stage: Grad-CAM at stage {number} lies above the target's "
            f"stage {top}; choose cam_stage in 1..{top}"
        )
    return cam_stage if isinstance(cam_stage, str) else int(cam_stage)


def check_settings(
    model: nn.Module,
    methods: object,
    samples: object,
    noise: object,
    steps: object,
    cam_stage: object,
    noise_seed: object,
    stage: int | str | None,
    scorecam_top: object = None,
) -> MapSettings:
    """Every map option checked (ValueError naming the argument); `stage`: the target's (None:
    a class target)."""
    names = check_methods(methods)
    chosen_cam = check_cam_stage(model, cam_stage, stage, names)
    check_seed_value(noise_seed, "SmoothGrad's noise", "noise_seed")
    return MapSettings(
        names,
        check_count("samples", samples),
        check_real("noise", noise),
        check_count("steps", steps),
        chosen_cam,
        int(noise_seed),
        None if scorecam_top is None else check_count("scorecam_top", scorecam_top),
    )


def check_target(model: nn.Module, target: object, images: Tensor) -> None:
    """ValueError naming `target` unless it is one of TARGETS valid for the model and images."""
    if target is not None and not is_int(target) and not isinstance(target, (Unit, Channel)):
        raise ValueError(f"target: expected {TARGETS}, got {target!r}")
    resolve_target(model, target, images.shape[0], stage_sizes(model, *images.shape[-2:]))


# ----------------------------------------------------------------------------------- the maps


def fix_targets(
    model: nn.Module, images: Tensor, target: object
) -> tuple[list[int | Unit | Channel], list[dict[str, Any]]]:
    """Each image's target resolved on `model` (the ORIGINAL weights): images [B, 3, H, W] ->
    (B explicit targets: a class int, Unit(stage, channel, y, x) or the Channel, kept for every
    step; B records of what was resolved, with the class score / unit activation)."""

    fixed, records = [], []
    for b in range(images.shape[0]):
        if isinstance(target, Channel):
            fixed.append(target)
            records.append({"kind": "channel", "stage": target.stage, "channel": target.channel})
            continue
        explained, _, _ = resolve_explained(model, images[b : b + 1], target, None)
        explained.pop("class_name", None)
        records.append(explained)
        fixed.append(
            explained["class"]
            if explained["kind"] == "class"
            else Unit(explained["stage"], explained["channel"], explained["y"], explained["x"])
        )
    return fixed, records


def explain_images(
    model: nn.Module, images: Tensor, targets: Sequence[object], settings: MapSettings
) -> dict[str, Tensor]:
    """Every method's maps of images [B, 3, H, W], image b explaining targets[b] ->
    {method: [B, 3, H, W] or [B, H, W] (Grad-CAM)}, float32 on the CPU."""
    return {
        method: torch.cat(
            [
                explain(model, images[b : b + 1], method, targets[b], **settings.options(method))
                for b in range(images.shape[0])
            ]
        )
        .float()
        .cpu()
        for method in settings.methods
    }


def compare(original: dict[str, Tensor], randomized: dict[str, Tensor]) -> np.ndarray:
    """Similarities of each method's map pairs, image by image -> [M, B, 4] float64 (METRICS)."""
    return np.stack(
        [
            np.stack([similarities(original[m][b], randomized[m][b]) for b in range(original[m].shape[0])])
            for m in original
        ]
    )


# ---------------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class Step:
    """One randomisation step: `randomized` = the layers it re-initialises (top first),
    `reinitialized` = those of them the maps use (what the copy really re-initialises);
    `affects_map` False when that is none (similarity exactly 1.0, nothing computed)."""

    mode: str
    layer: str
    randomized: tuple[str, ...]
    reinitialized: tuple[str, ...]

    @property
    def affects_map(self) -> bool:
        """Whether the step re-initialises any layer the maps use."""
        return bool(self.reinitialized)

    @property
    def key(self) -> str:
        """'<mode>__<layer>': the job's cell and npz key."""
        return f"{self.mode}__{self.layer}"


def plan_steps(
    every: Sequence[Layer], evaluated: Sequence[Layer], modes: Sequence[str], used: set[str]
) -> list[Step]:
    """The steps of each mode over the `evaluated` layers (top first); `every`: all learnable
    layers top first; `used`: the layers the maps depend on (`layers_used`)."""
    steps = []
    for mode in modes:
        for layer in evaluated:
            names = tuple(l.name for l in randomized_at(every, mode, layer))
            steps.append(Step(mode, layer.name, names, tuple(n for n in names if n in used)))
    return steps


def run_step(
    randomized: Randomized,
    step: Step,
    images: Tensor,
    targets: Sequence[object],
    settings: MapSettings,
    original: dict[str, Tensor],
) -> tuple[np.ndarray, dict[str, Tensor] | None]:
    """One step -> (similarities [M, B, 4], its maps or None when the step leaves them as they
    are: similarity exactly 1.0, module doc)."""
    if not step.affects_map:
        return np.ones((len(settings.methods), images.shape[0], len(METRICS))), None
    model = randomized.with_random(step.reinitialized)
    maps = explain_images(model, images, targets, settings)
    return compare(original, maps), maps


def default_pass_layer(model: nn.Module) -> str:
    """The first convolution computed after stage 2's output, in the graph's execution order:
    the first of stage 3 (conv3_1 on VGG16, conv3 on AlexNet, layer2.0.conv1 on ResNet)."""
    graph = ModelGraph.of(model)
    after = graph.position[graph.paths[stage_of(model, 2).path]]
    convs = [l for l in learnable_layers(model) if l.kind == "conv" and graph.position[l.node] > after]
    return convs[-1].name


# --------------------------------------------------------------------------------- the result


@dataclass
class SanityResult:
    """similarity[mode]: [S, M, B, 4] (steps top first x methods x images x METRICS), NaN where
    a correlation is undefined; steps[mode]: the Steps; maps: {"original": {method: maps},
    step key: maps or None} when kept."""

    methods: tuple[str, ...]
    layers: tuple[str, ...]
    steps: dict[str, list[Step]]
    similarity: dict[str, np.ndarray]
    targets: list[dict[str, Any]]
    settings: MapSettings
    seed: int
    maps: dict[str, Any] | None = field(default=None, repr=False)

    def curve(self, mode: str, metric: str) -> np.ndarray:
        """Mean over images (NaN left out) -> [S, M]."""
        values = self.similarity[mode][..., METRICS.index(metric)]
        return _nanmean(values, axis=2)

    def verdicts(
        self, pass_layer: str, below: float = PASS_BELOW, metric: str = PASS_METRIC
    ) -> dict[str, dict[str, Any]]:
        """Per method: the mean `metric` after cascading randomisation down to `pass_layer`,
        and whether it is below `below` (module doc)."""
        return verdicts(self.similarity, self.steps, self.methods, pass_layer, below, metric)


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over `axis` leaving NaN out; NaN where every value is NaN (no warning)."""
    count = np.sum(~np.isnan(values), axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mean_over_images(values: np.ndarray) -> list[float | None]:
    """[B, 4] -> 4 means over images, NaN left out (None where all are NaN)."""
    out = []
    for column in values.T:
        defined = column[~np.isnan(column)]
        out.append(float(defined.mean()) if defined.size else None)
    return out


def mean_curve(values: np.ndarray, method: int, metric: int) -> list[float | None]:
    """[S, M, B, 4] -> the mean over images per step (None where undefined)."""
    return [mean_over_images(values[s, method])[metric] for s in range(values.shape[0])]


def similarity_curves(
    similarity: Mapping[str, np.ndarray], methods: Sequence[str]
) -> dict[str, dict[str, dict[str, list[float | None]]]]:
    """{mode: [S, M, B, 4]} -> {mode: {metric: {method: the mean over images per step}}}."""
    return {
        mode: {
            metric: {m: mean_curve(similarity[mode], i, k) for i, m in enumerate(methods)}
            for k, metric in enumerate(METRICS)
        }
        for mode in similarity
    }


def verdicts(
    similarity: dict[str, np.ndarray],
    steps: dict[str, list[Step]],
    methods: Sequence[str],
    pass_layer: str,
    below: float = PASS_BELOW,
    metric: str = PASS_METRIC,
) -> dict[str, dict[str, Any]]:
    """{method: {"value", "images_defined", "passes"}} from the cascading similarities [S, M,
    B, 4]; ValueError naming pass_layer when the cascade has no such step."""
    check_pass_metric(metric)
    names = [s.layer for s in steps.get("cascading", [])]
    if pass_layer not in names:
        raise ValueError(
            f"pass_layer: expected a layer of the cascading steps ({', '.join(names)}), got {pass_layer!r}"
        )
    values = similarity["cascading"][names.index(pass_layer), :, :, METRICS.index(metric)]
    out = {}
    for m, method in enumerate(methods):
        defined = values[m][~np.isnan(values[m])]
        mean = float(defined.mean()) if defined.size else None
        out[method] = {
            "value": mean,
            "images_defined": int(defined.size),
            "passes": None if mean is None else bool(mean < below),
        }
    return out


def check_pass_metric(metric: object) -> str:
    """One of METRICS (the similarity the pass criterion reads)."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"pass_metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def pass_rule(pass_layer: str, below: float = PASS_BELOW, metric: str = PASS_METRIC) -> str:
    """The pass criterion in words."""
    return (
        f"passes = the mean over images of {METRIC_TITLES[metric]} between the original map "
        f"and the map after cascading randomisation from the top layer down to {pass_layer} "
        f"(inclusive) is below {below:g} (NaN values of constant maps left out)"
    )


# ---------------------------------------------------------------------------------- the check


@full_float32()
def sanity_check(
    model: nn.Module,
    images: Tensor,
    methods: object = DEFAULT_METHODS,
    target: object = Unit(5),
    modes: object = MODES,
    layers: object = None,
    seed: int = 0,
    *,
    samples: int = 25,
    noise: float = 0.15,
    steps: int = 50,
    cam_stage: int | str | None = None,
    noise_seed: int = 0,
    scorecam_top: int | None = None,
    device: str = "cpu",
    keep_maps: bool = False,
    progress: bool = True,
) -> SanityResult:
    """Adebayo et al.'s model parameter randomisation test (module doc) of images [B, 3, H, W].

    methods: names of `deconvnet.gradient.METHODS`; target: TARGETS (default each image's strongest
    stage-5 unit of the original model); modes: "cascading", "independent" or both; layers: the
    steps, by layer name (None: every learnable layer; a cascading step at layer L still
    re-initialises every layer above L); seed: the re-initialisation's; samples / noise / noise_seed:
    SmoothGrad's; steps: integrated gradients'; cam_stage: the CAMs' (None: the stage below a unit
    target's, 5 for a class target); scorecam_top: Score-CAM's `top`; device: "cpu" or "cuda".
    Every argument is checked (ValueError naming it) before any work. Returns a SanityResult whose
    similarity[mode] is [S, M, B, 4]; keep_maps=True keeps every map."""
    target_device = check_device(device)
    images = check_images(images, model)
    check_target(model, target, images)
    options = (samples, noise, steps, cam_stage, noise_seed, stage := target_stage(target), scorecam_top)
    settings = check_settings(model, methods, *options)
    chosen, evaluated = check_modes(modes), check_layers(model, layers)
    if not isinstance(keep_maps, bool) or not isinstance(progress, bool):
        raise ValueError(f"keep_maps / progress: expected True or False, got {keep_maps!r} / {progress!r}")
    randomized = Randomized(model, check_seed(seed), target_device)
    x = images.to(target_device, next(randomized.copy.parameters()).dtype)
    targets, records = fix_targets(randomized.copy, x, target)
    original = explain_images(randomized.copy, x, targets, settings)
    every = check_layers(model, None)
    plan = plan_steps(every, evaluated, chosen, layers_used(model, stage))
    kept: dict[str, Any] | None = {"original": original} if keep_maps else None
    values: dict[str, list[np.ndarray]] = {mode: [] for mode in chosen}
    for step in tqdm(plan, desc="sanity", unit="step", disable=not progress):
        similarity, maps = run_step(randomized, step, x, targets, settings, original)
        values[step.mode].append(similarity)
        if kept is not None:
            kept[step.key] = maps
    return SanityResult(
        settings.methods,
        tuple(l.name for l in every),
        {mode: [s for s in plan if s.mode == mode] for mode in chosen},
        {mode: np.stack(v) for mode, v in values.items()},
        records,
        settings,
        randomized.seed,
        kept,
    )
