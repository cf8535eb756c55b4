"""Regenerate every reproduced figure into results/, with a manifest of how each was made.

    python scripts/regenerate.py                 # all figures, default settings (minutes on 2 CPUs)
    python scripts/regenerate.py --only fig1     # one figure
    python scripts/regenerate.py --quick --out /tmp/r   # a tiny run (AlexNet, few maps), for checks

Each figure is one Hydra job (the same command a user would type, recorded in the manifest), run
into a staging folder and moved into results/<name>/ only when it finished: an interrupted run
leaves the previous results in place. Weights: every VGG16 figure uses `model.weights=hed` (VGG16
convolutions from HED, BSDS500 edge detection fine-tuned from ImageNet VGG16; classifier random;
installed by the README's main command); AlexNet has no learned weights offline and uses seeded
random weights. Every title and the manifest name the weights exactly.

Same code and inputs, same bytes: the tracked files hold only what follows from them. The tree's
state is recorded once, when this command starts (`code_commit`: the last commit outside results/
and README.md, `code_dirty`), and handed to every job; jobs run with fixed threads and instruction set
(`JOB_ENV`); runtimes, times, host, command lines and absolute paths go to the untracked
`results/RUNS.json` and `results/<name>/run.json`, and Hydra's record names folders relative to
the repository (`.`) or to the output folder (`<out>`). The run record names the CPU (model,
instruction set): other CPUs round float32 differently, and `python scripts/compare_results.py
<theirs> results` says per figure whether another run matches within tolerances.

Progress and resuming: before each figure a line `[k/n] <figure>: elapsed mm:ss, estimate mm:ss
left` (each remaining figure at its runtime in RUNS.json, else at the mean of this run's). The
untracked `<out>/.regenerate_state.json` records each finished figure's code state and command; a
rerun keeps a figure that finished with the same committed code (a tree with uncommitted changes
never counts as the same), the same versions and threads and the same command, and runs the others:
an interrupted run goes on where it stopped. `--restart` runs every figure again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from deconvnet.jobs.provenance import PROVENANCE_ENV, provenance  # noqa: E402
from deconvnet.jobs.registry import JOBS  # noqa: E402


@dataclass(frozen=True)
class Figure:
    """One figure: the registered job that makes it (`deconvnet.jobs.registry.JOBS`), what it
    shows, its model and its own overrides."""

    job: str
    shows: str
    model: str = "vgg16"  # the experiment's default model (conf/<experiment>.yaml)
    overrides: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # tiny settings added by --quick (always on AlexNet)


# Overrides every figure on a model gets, e.g. ("model.weights=hed",) for VGG16: the one place
# that chooses a model's weights. --quick runs everything on AlexNet.
MODEL_OVERRIDES: dict[str, tuple[str, ...]] = {
    "vgg16": ("model.weights=hed",),
    "alexnet": ("model=alexnet",),
    "efficientnet_lite0": ("model=efficientnet_lite0", "model.weights=imagenet"),
}
# committed PNGs stay modest: large receptive fields shown at 64 px, sheets at most 1400 px wide
SMALL_PNG = ("display.max_tile_px=64", "display.sheet_max_width=1400")
# the optimisation figures compute in float64: their gradient ascent amplifies rounding, and
# float32 rounding differs between CPUs (docs/reproducibility.md#optimised-images)
FLOAT64 = ("dtype=float64",)
# the atlas's --quick: two channels of two stages, tiny tiles and optimised images
ATLAS_QUICK = ("stages=[1,5]", "channels=2", "k=2", "data.size=80", "tile_px=16", "optimize.steps=2")
FIGURES: dict[str, Figure] = {
    "fig1": Figure(
        "fig1",
        "Fig. 1: the deconvnet layer attached to a convnet layer, "
        "every intermediate map from real data, and unpooling with switches",
    ),
    "fig2": Figure(
        "fig2",
        "Fig. 2: top-9 activations of 16 random live feature maps "
        "per layer, projected to pixels by the deconvnet and by guided backprop beside "
        "their image patches (VGG16)",
        overrides=(*SMALL_PNG, "rules=[deconvnet,guided]"),
        quick=("channels_per_stage=2", "k=4", "data.size=80", "stages=[1,5]"),
    ),
    "fig2_alexnet": Figure(
        "fig2",
        "Fig. 2 on AlexNet (the paper's own architecture family)",
        model="alexnet",
        overrides=SMALL_PNG,
        quick=("channels_per_stage=1", "k=2", "data.size=80", "stages=[2]"),
    ),
    "fig2_efficientnet_lite0": Figure(
        "fig2",
        "Fig. 2 on EfficientNet-Lite0 with its ImageNet weights (the first Fig. 2 here from a "
        "network trained on ImageNet end to end): both rules side by side; without max pooling "
        "the deconvnet rule has no switches and no masks, so its projections of one map look "
        "alike in every image, while guided backprop follows each image",
        model="efficientnet_lite0",
        overrides=(*SMALL_PNG, "rules=[deconvnet,guided]"),
        quick=("channels_per_stage=1", "k=2", "data.size=80", "stages=[2]"),
    ),
    "reconstruct": Figure(
        "reconstruct",
        "Reconstructions of one image at the 5 "
        "layers, from the whole feature map and from its strongest activation",
        quick=("stage=2",),
    ),
    "saliency": Figure(
        "saliency",
        "Gradient-family maps of every method (gradient, "
        "guided backprop, deconvnet, their SmoothGrad, Grad-CAM at stage 4, guided "
        "Grad-CAM, integrated gradients, gradient x image) of each image's strongest "
        "stage-5 unit (a unit, not a class: HED's classifier is random); Grad-CAM "
        "weighs whole pool4 maps, so it need not peak at the unit. SmoothGrad with "
        "PAIR's 25 samples, integrated gradients with 64 steps",
        overrides=("unit=[5]", "samples=25", "steps=64", "cam_stage=4"),
        quick=("images=cat", "samples=4", "steps=8"),
    ),
    # The optimisation family: filters on VGG16 with HED weights (learned convolutions), and
    # everything that needs a classifier (or is shown per stage of a real network) on
    # EfficientNet-Lite0 with its ImageNet weights.
    "saliency_efficientnet_lite0": Figure(
        "saliency",
        "Gradient-family maps of every method for each photo's predicted class on the real "
        "ImageNet classifier EfficientNet-Lite0 (classes named in the rows; Grad-CAM at stage 5, "
        "bn2, 7x7 at 224 px)",
        model="efficientnet_lite0",
        quick=("images=cat", "samples=4", "steps=8"),
    ),
    "filters": Figure(
        "filters",
        "Filter visualisations (activation maximisation, "
        "the Keras example's recipe) of the first 16 channels of each stage, "
        "without and with regularisers (Yosinski decay + blur, pad + jitter) side "
        "by side in the Keras example's mosaic; result.json: how strongly each "
        "image excites its channel compared with the sample photos",
        overrides=(*FLOAT64, "size=64", "steps=32", "channels=16"),
        quick=("stages=[1,5]", "channels=4", "size=64", "steps=3"),
    ),
    "class_model": Figure(
        "class_model",
        "Class models (Simonyan et al. 2014, L2 regulariser, 100 steps at 224 px) of the real classifier "
        "EfficientNet-Lite0 (ImageNet weights): four ImageNet classes (Simonyan et al.'s dumbbell, "
        "cup, dalmatian, bell pepper) and tabby + goldfish together (keras-vis' several classes: "
        "a cat-fish), each titled with the probabilities the model gives them",
        model="efficientnet_lite0",
        overrides=(*FLOAT64, "classes=[543,968,251,945,[281,1]]"),
        quick=("classes=[1,368]", "size=64", "steps=3"),
    ),
    "filters_efficientnet_lite0": Figure(
        "filters",
        "The Keras example's figure on EfficientNet-Lite0 (ImageNet weights): filter "
        "visualisations of the first 16 channels of its 28-px stage (stage 3, blocks.2, the "
        "middle of the network as the example's residual network), without and with regularisers",
        model="efficientnet_lite0",
        overrides=(*FLOAT64, "stages=[3]", "size=128", "steps=32", "channels=16"),
        quick=("stages=[1,5]", "channels=4", "size=64", "steps=3"),
    ),
    "deep_dream": Figure(
        "deep_dream",
        "Deep Dream (Mordvintsev et al. 2015) of one photo at EfficientNet-Lite0's stage 4 "
        "(blocks.4, ImageNet weights), three octaves of scale 1.4, 20 steps each; energy "
        "before / after",
        model="efficientnet_lite0",
        overrides=(*FLOAT64, "octaves=3"),
        quick=("size=96", "octaves=2", "steps=2", "stage=3", "jitter=8"),
    ),
    "invert": Figure(
        "invert",
        "One photo inverted from each of EfficientNet-Lite0's five stages and its logits "
        "(Mahendran & Vedaldi 2015, ImageNet weights), each titled with its relative feature error",
        model="efficientnet_lite0",
        # 60 steps: at 80, even in float64, stage 5's inversion took another turn between 60
        # and 70 steps on AVX-512 than on AVX2 kernels (docs/reproducibility.md#optimised-images)
        overrides=(*FLOAT64, "size=128", "steps=60", "stages=[1,2,3,4,5,logits]"),
        quick=("stages=[2,5]", "size=64", "steps=3"),
    ),
    "fooling": Figure(
        "fooling",
        "A fooling image (Nguyen et al. 2015) of the real classifier EfficientNet-Lite0 "
        "(ImageNet weights): the cat photo pushed by sign steps of 1/255 per colour value, "
        "within 8/255 of the photo, until the model says 'gibbon' with 99% confidence; its "
        "amplified difference, probabilities before / after, L-inf / L2 of the change in colour "
        "units",
        model="efficientnet_lite0",
        overrides=FLOAT64,
        quick=("size=64", "steps=3"),
    ),
    # The paper's other experiments, on the real classifier EfficientNet-Lite0.
    "occlusion": Figure(
        "occlusion",
        "Fig. 7 on EfficientNet-Lite0 (ImageNet weights): occlusion sensitivity of three photos "
        "(a 48 px grey square at stride 16, incremental inference) for their true classes "
        "(tiger cat, espresso, moped): the total activation of the strongest stage-4 map "
        "(blocks.4: Lite0's stage 5, bn2, saturates its ReLU6, so guided projections of its "
        "strongest maps are zero and deconvnet ones a checkerboard haze), that map projected by "
        "the deconvnet and by guided backprop beside its top 3 from a scan of the sample "
        "gallery, the probability of the true class and the most probable label",
        model="efficientnet_lite0",
        overrides=("images=[cat,coffee,motorcycle]", "target=[282,967,665]", "stage=4"),
        quick=("images=[cat]", "target=null", "size=96", "patch=32", "stride=32", "data.limit=8", "top_k=2"),
    ),
    "correspondence": Figure(
        "correspondence",
        "Correspondence (Table 1) on EfficientNet-Lite0 (ImageNet weights): the right "
        "eye, left eye and nose of 2 human portraits and 1 cat (NOT the "
        "paper's 5 dogs) occluded; Delta (Hamming of sign(x - x~)) at stage 5 (bn2) and at "
        "the pooled features the classifier reads (global_pool, the analogue of fc7) against "
        "10 draws of random boxes of the same sizes; table.md",
        model="efficientnet_lite0",
        quick=("random_draws=1",),
    ),
    # on VGG16 with HED weights: on EfficientNet-Lite0 (99 learnable layers, 199 cells of 6
    # methods) it takes about 20 s a cell here, over an hour; tests check class targets on it
    "sanity": Figure(
        "sanity",
        "Sanity checks (Adebayo et al. 2018): cascading and "
        "independent re-initialisation of every learnable layer; Spearman (|.| and "
        "signed), SSIM and HOG similarity to the original maps of gradient, guided "
        "backprop, deconvnet, SmoothGrad, Grad-CAM (stage 4) and integrated "
        "gradients, for each image's strongest stage-5 unit of the original model "
        "(a unit, not a class); result.json says which methods pass. 2 images at "
        "128 px, SmoothGrad 8 samples, IG 8 steps",
        overrides=("size=128", "samples=8", "steps=8"),
        quick=("images=cat", "size=64", "samples=2", "steps=2", "layers=[fc6,conv5,conv3,conv1]"),
    ),
    "faithfulness": Figure(
        "faithfulness",
        "Faithfulness table on EfficientNet-Lite0 (ImageNet weights): every method's map of each "
        "gallery photo's predicted class, deletion AUC (lower is better) and insertion AUC "
        "(higher is better; Petsiuk et al. 2018, 50 steps, deleted to the mean colour, inserted "
        "over the blurred photo) with each "
        "gradient-family method's sanity-check verdict (cascading re-initialisation down to the "
        "first convolution of stage 3); table.md, curves.png, grid.png",
        model="efficientnet_lite0",
        quick=(
            "images=cat",
            "steps=2",
            "methods=[gradient,gradcam,lrp,occlusion,random]",
            "samples=2",
            "integrated_steps=2",
            "patch=112",
            "stride=112",
        ),  # fmt: skip
    ),
    "atlas_vgg16_hed": Figure(
        "atlas",
        "An atlas of VGG16's units over the sample gallery (a subset: 16 channels per stage drawn "
        "with seed 0): index.html, a page per stage and per channel with its top-9 patches, their "
        "deconvnet and guided projections, its optimised images and a histogram of its per-image "
        "maximum",
        overrides=("channels=16",),
        quick=ATLAS_QUICK,
    ),
    "atlas_efficientnet_lite0": Figure(
        "atlas",
        "An atlas of EfficientNet-Lite0's units (ImageNet weights) over the sample gallery (a subset: "
        "16 channels per stage drawn with seed 0), pages as in atlas_vgg16_hed",
        model="efficientnet_lite0",
        overrides=("channels=16",),
        quick=ATLAS_QUICK,
    ),
    "invariance": Figure(
        "invariance",
        "Fig. 5 on EfficientNet-Lite0 (ImageNet weights): invariance of five photos to "
        "vertical translation (-60..60 px), scale (1..1.8) and rotation (0..360 degrees, "
        "every 30): Euclidean distance of the stage-1 (blocks.0) feature vector and of the "
        "pooled features the classifier reads (global_pool, the analogue of fc7) to the "
        "original's, and the probability of each photo's true class (tiger cat, espresso, "
        "moped, tripod, military uniform)",
        model="efficientnet_lite0",
        overrides=(
            "values.rotate=[0,30,60,90,120,150,180,210,240,270,300,330,360]",
            "images=[cat,coffee,motorcycle,camera,grace_hopper]",
            "labels=[282,967,665,872,652]",
        ),
        quick=(
            "images=[cat,coffee]",
            "labels=null",
            "size=96",
            "values.translate=[-16,0,16]",
            "values.scale=[1.0,1.4]",
            "values.rotate=[0,90,180]",
        ),
    ),
}

# The jobs' numerics: float sums (oneDNN's convolutions, PyTorch's vectorised reductions, MKL) run
# in an order that depends on the number of threads and on the CPU's instruction set; a 1e-7
# difference moves a pixel by a grey level, and AVX-512 vs AVX2 kernels moved thousands of Fig. 2
# pixels by up to 3. Fixed threads (torch caps OMP_NUM_THREADS at the cores it sees, so 2 is exact
# on >= 2 cores) and AVX2 kernels everywhere (any x86-64 CPU since 2013) give the same bytes.
JOB_THREADS = 2
JOB_ENV: dict[str, str] = {
    "MKL_DYNAMIC": "FALSE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "PYTHONHASHSEED": "0",
}
# result.json keys that measure the run, not the result: moved to run.json wherever they occur
VOLATILE_KEYS = frozenset({"seconds", "timings_s"})
# provenance kept in tracked files; the rest (HEAD, host, command line, time) goes to run.json
STABLE_PROVENANCE = ("versions", "code_commit", "code_dirty")
TEXT_SUFFIXES = (".json", ".yaml")
MANIFEST_JSON, MANIFEST_MD = "MANIFEST.json", "MANIFEST.md"
RUNS_JSON, RUN_JSON = "RUNS.json", "run.json"  # untracked (.gitignore)
STATE_JSON = ".regenerate_state.json"  # untracked: the figures finished, with their code and command


# --------------------------------------------------------------------------------------- helpers


def write_json(path: Path, data: Any) -> None:
    """Indented JSON with a final newline (the same bytes for the same data)."""
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's content, {} when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else {}


def job_overrides(name: str, quick: bool) -> list[str]:
    """The Hydra overrides of one figure: its model's, its own, then --quick's."""
    fig = FIGURES[name]
    model = "alexnet" if quick else fig.model
    return [*MODEL_OVERRIDES[model], *fig.overrides, *(fig.quick if quick else ())]


def figure_command(name: str, quick: bool) -> str:
    """The command a user would type for one figure: `python -m <module> <overrides...>`."""
    return " ".join(["python", "-m", JOBS[FIGURES[name].job].module, *job_overrides(name, quick)])


def job_env(record: dict[str, Any], threads: int) -> dict[str, str]:
    """The environment of every job: fixed numerics and the provenance taken at the start."""
    env = dict(os.environ, **JOB_ENV, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env[PROVENANCE_ENV] = json.dumps(record)
    return env


def split_provenance(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the code and environment determine, what this run alone has) of a provenance record."""
    stable = {k: record[k] for k in STABLE_PROVENANCE if k in record}
    return stable, {k: v for k, v in record.items() if k not in STABLE_PROVENANCE}


def pop_volatile(data: Any, path: str = "") -> dict[str, Any]:
    """Remove VOLATILE_KEYS from nested dicts / lists in place; {'a/0/seconds': value, ...}."""
    removed: dict[str, Any] = {}
    if isinstance(data, dict):
        for key in [k for k in data if k in VOLATILE_KEYS]:
            removed[f"{path}{key}"] = data.pop(key)
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return removed
    for key, value in items:
        removed |= pop_volatile(value, f"{path}{key}/")
    return removed


def folder_label(folder: Path, out_root: Path) -> str:
    """How tracked files name a job folder: relative to the repository, else as `<out>/name`."""
    if folder.is_relative_to(REPO):
        return str(folder.relative_to(REPO))
    return f"<out>/{folder.relative_to(out_root)}"


def relocate(text: str, staging: Path, label: str) -> str:
    """Absolute paths made location-free: the staging folder -> `label`, the repository -> `.`."""
    text = text.replace(str(staging), label)
    return re.sub(re.escape(str(REPO)) + r"(?=[/\s'\",\]]|$)", ".", text, flags=re.MULTILINE)


# ------------------------------------------------------------------------------------------ jobs


def tidy_job(staging: Path, final: Path, out_root: Path, run: dict[str, Any]) -> dict[str, Any]:
    """Move what only this run has out of the job's files into `run.json`; returns the result."""
    from deconvnet.jobs.folder import LOCK_FILE

    (staging / LOCK_FILE).unlink(missing_ok=True)  # the job has ended: its lock is nobody's now
    result_path = staging / "result.json"
    result = read_json(result_path)
    stable, volatile = split_provenance(result.get("provenance") or {})
    if "provenance" in result:
        result["provenance"] = stable
    run |= {"provenance": volatile, "removed_from_result": pop_volatile(result)}
    write_json(result_path, result)
    label = folder_label(final, out_root)
    for path in sorted(p for p in staging.rglob("*") if p.suffix in TEXT_SUFFIXES):
        path.write_text(relocate(path.read_text(), staging, label))
    run["paths"] = {label: str(final), ".": str(REPO), "staging": str(staging)}
    write_json(staging / RUN_JSON, run)
    return result


def run_job(name: str, out_root: Path, quick: bool, env: dict[str, str]) -> dict[str, Any]:
    """Run one figure's job into staging, tidy it, move it into place; its manifest entry."""
    fig = FIGURES[name]
    overrides = job_overrides(name, quick)
    staging = out_root / ".staging" / name
    shutil.rmtree(staging, ignore_errors=True)
    module = JOBS[fig.job].module
    command = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={staging}"]
    shown = figure_command(name, quick)
    print(f"\n=== {name}: {shown}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True)
    run = {
        "figure": name,
        "seconds": round(time.perf_counter() - started, 1),
        "finished": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
    }
    final = out_root / name
    result = tidy_job(staging, final, out_root, run)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    weights = result.get("weights", {})
    return {
        "figure": name,
        "shows": fig.shows,
        "command": shown,
        "folder": str(final.relative_to(out_root)),
        "figures": sorted(
            str(p.relative_to(out_root)) for p in [*final.glob("*.png"), *final.glob("index.html")]
        ),
        "weights": weights,
        "pretrained": weights.get("pretrained") is True,
        "dataset": result.get("dataset") or result.get("data") or result.get("image"),
    }


# -------------------------------------------------------------------------------------- manifest


def weights_cell(weights: dict[str, Any]) -> str:
    """The manifest's 'weights used': exactly which weights, bold unless pretrained."""
    from deconvnet.data.models import weights_label

    label = weights_label(weights)
    if weights.get("pretrained") is True:
        return label
    note = " (pretrained weights were not available)" if weights.get("weights") == "random" else ""
    return f"**{label}**{note}"


def data_cell(data: Any) -> str:
    """The manifest's 'data': a dataset's label, or the image's name."""
    if isinstance(data, dict):
        return str(data.get("label") or data.get("source") or data.get("kind") or json.dumps(data))
    return str(data)


def manifest_markdown(manifest: dict[str, Any]) -> str:
    """MANIFEST.md: the code's commit, versions, numerics and one table row per figure."""
    prov, settings = manifest["provenance"], manifest["job_settings"]
    versions = prov.get("versions", {})
    dirty = " with uncommitted changes" if prov.get("code_dirty") else ""
    lines = [
        "# Reproduced figures",
        "",
        "Made by `python scripts/regenerate.py`; redraw from the saved data without the model with "
        "`python scripts/render.py`.",
        f"Code: commit {prov.get('code_commit')} (the last commit outside `results/` and README.md){dirty}; "
        f"torch {versions.get('torch')}, torchvision {versions.get('torchvision')}, "
        f"python {versions.get('python')}.",
        f"Jobs ran with {settings['threads']} threads and "
        + ", ".join(f"{k}={v}" for k, v in settings["environment"].items())
        + ": the same code and inputs give the same files. Runtimes, host and times of the last "
        "run are in the untracked `RUNS.json` and `<figure>/run.json`.",
        "",
        "| figure | shows | command | weights used | data | files |",
        "|---|---|---|---|---|---|",
    ]
    for e in manifest["figures"]:
        files = ", ".join(f"`{f}`" for f in e["figures"])
        lines.append(
            f"| {e['figure']} | {e['shows']} | `{e['command']}` | "
            f"{weights_cell(e['weights'])} | {data_cell(e['dataset'])} | {files} |"
        )
    return "\n".join(lines) + "\n"


def write_manifest(out_root: Path, entries: list[dict], record: dict[str, Any], threads: int) -> None:
    """MANIFEST.json / .md (tracked: what the code determines); entries of earlier runs are kept."""
    figures = {e["figure"]: e for e in read_json(out_root / MANIFEST_JSON).get("figures", [])}
    figures.update({e["figure"]: e for e in entries})
    for entry in figures.values():
        pop_volatile(entry)  # an older manifest may still carry runtimes
    manifest = {
        "provenance": split_provenance(record)[0],
        "job_settings": {"threads": threads, "environment": JOB_ENV},
        "figures": [figures[k] for k in FIGURES if k in figures],
    }
    write_json(out_root / MANIFEST_JSON, manifest)
    (out_root / MANIFEST_MD).write_text(manifest_markdown(manifest))


def write_runs(out_root: Path, record: dict[str, Any]) -> None:
    """RUNS.json (untracked): this run's host, time, command and each figure's run.json."""
    runs = read_json(out_root / RUNS_JSON).get("figures", {})
    for name in FIGURES:
        run = read_json(out_root / name / RUN_JSON)
        if run:
            runs[name] = {k: run.get(k) for k in ("seconds", "finished")}
    write_json(
        out_root / RUNS_JSON, {"last_run": split_provenance(record)[1], "out": str(out_root), "figures": runs}
    )


# ------------------------------------------------------------------------------ progress, resume


def minutes(seconds: float) -> str:
    """`mm:ss` (minutes not capped at 60)."""
    whole = max(0, round(seconds))
    return f"{whole // 60:02d}:{whole % 60:02d}"


def progress_line(
    k: int, n: int, name: str, elapsed: float, todo: list[str], known: dict[str, float], done: list[float]
) -> str:
    """`[k/n] name: elapsed mm:ss, estimate mm:ss left`: each figure of `todo` (this one included)
    at its last known runtime (`known`, seconds), else at the mean of this run's runtimes `done`."""
    mean = sum(done) / len(done) if done else None
    guesses = [known.get(f) or mean for f in todo]
    estimate = "unknown" if None in guesses else minutes(sum(guesses))
    return f"[{k}/{n}] {name}: elapsed {minutes(elapsed)}, estimate {estimate} left"


def finished_figures(
    state: dict[str, Any], record: dict[str, Any], commands: dict[str, str]
) -> dict[str, str]:
    """{figure: when it finished} of the figures in `commands` ({figure: command}) that `state`
    (the state file's content) says finished with `record`'s code state and exactly that command.

    The code state is the record's stable provenance (versions incl. threads, code_commit,
    code_dirty); a tree with uncommitted changes, or without a commit, matches nothing: what
    its changes were is not recorded, so nothing made from it counts as the same.
    """
    code = split_provenance(record)[0]
    if code.get("code_dirty") is not False or not code.get("code_commit"):
        return {}
    done = state.get("figures", {})
    return {
        name: str(done[name].get("finished"))
        for name, command in commands.items()
        if name in done and done[name].get("code") == code and done[name].get("command") == command
    }


def record_finished(out_root: Path, name: str, record: dict[str, Any], command: str) -> None:
    """Add one finished figure, its code state and command to the state file (STATE_JSON)."""
    state = read_json(out_root / STATE_JSON)
    state.setdefault("figures", {})[name] = {
        "code": split_provenance(record)[0],
        "command": command,
        "finished": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_json(out_root / STATE_JSON, state)


def kept_figures(out_root: Path, record: dict[str, Any], commands: dict[str, str]) -> dict[str, str]:
    """`finished_figures` of the state file in `out_root` whose folder is still there."""
    done = finished_figures(read_json(out_root / STATE_JSON), record, commands)
    return {name: when for name, when in done.items() if (out_root / name / "result.json").is_file()}


# ------------------------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), default=list(FIGURES))
    parser.add_argument("--out", type=Path, default=REPO / "results")
    parser.add_argument("--quick", action="store_true", help="tiny settings, for checking the script")
    parser.add_argument(
        "--threads",
        type=int,
        default=JOB_THREADS,
        help=f"threads of every job (default {JOB_THREADS}; in the manifest)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help=f"run every figure, also those that finished earlier with this code (<out>/{STATE_JSON})",
    )
    return parser.parse_args()


def run_figures(names: list[str], out: Path, args: argparse.Namespace, record: dict[str, Any]) -> list[dict]:
    """Run the figures not kept from an earlier run, with a progress line before each; their
    manifest entries. The manifest, RUNS.json and the state file are written after every figure."""
    commands = {name: figure_command(name, args.quick) for name in names}
    kept = {} if args.restart else kept_figures(out, record, commands)
    if not args.restart and record.get("code_dirty") is not False and (out / STATE_JSON).is_file():
        print(
            "uncommitted changes (or no git): every figure runs, none is kept from earlier runs", flush=True
        )
    known = {k: v.get("seconds") for k, v in read_json(out / RUNS_JSON).get("figures", {}).items()}
    env = job_env(record, args.threads)
    entries: list[dict] = []
    runtimes: list[float] = []
    started = time.perf_counter()
    for k, name in enumerate(names, 1):
        if name in kept:
            print(f"[{k}/{len(names)}] {name}: kept, finished earlier at {kept[name]}", flush=True)
            continue
        todo = [n for n in names[k - 1 :] if n not in kept]
        elapsed = time.perf_counter() - started
        print(progress_line(k, len(names), name, elapsed, todo, known, runtimes), flush=True)
        entries.append(run_job(name, out, args.quick, env))
        runtimes.append(time.perf_counter() - started - elapsed)
        write_manifest(out, entries, record, args.threads)  # after every figure: work is kept
        write_runs(out, record)
        record_finished(out, name, record, commands[name])
    if kept:
        print(f"\nkept {', '.join(kept)} (finished earlier with this code; --restart runs them again)")
    return entries


def main() -> None:
    """Regenerate the chosen figures into --out (module docstring)."""
    args = parse_args()
    torch.set_num_threads(args.threads)  # versions() in the record names the jobs' thread count
    record = provenance()  # the tree as it was when this command started, for every job
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(args.only))
    try:
        entries = run_figures(names, out, args, record)
    except subprocess.CalledProcessError as error:
        raise SystemExit(
            f"error: {error.cmd[2]} failed with exit status {error.returncode}; "
            "results of the figures finished before it are kept (a rerun on a tree without "
            "uncommitted changes goes on from there)"
        ) from None
    finally:
        shutil.rmtree(out / ".staging", ignore_errors=True)
    wrote = ", ".join(e["figure"] for e in entries) or "nothing"
    print(f"\nwrote {wrote} into {out} (manifest: {out / MANIFEST_MD})")


if __name__ == "__main__":
    main()
