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
the repository (`.`) or to the output folder (`<out>`).
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
    # The optimisation family, on VGG16 with HED weights (learned convolutions, RANDOM
    # classifier: class models and fooling images are labelled not meaningful). Measured on 2
    # idle CPU cores, 2 threads: filters 110 s, class_model 36 s, deep_dream 11 s, invert 34 s,
    # fooling 11 s; 201 s together (344 s on one thread); other jobs on the machine stretch it.
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
        overrides=("size=64", "steps=32", "channels=16"),
        quick=("stages=[1,5]", "channels=4", "size=64", "steps=3"),
    ),
    "class_model": Figure(
        "class_model",
        "Class models (Simonyan et al. 2014, L2 "
        "regulariser, blur) of four ImageNet classes, each titled with the "
        "probability the model gives it; HED's classifier is random, so the "
        "scores are labelled not meaningful",
        overrides=("size=128", "steps=48", "blur=1.0"),
        quick=("classes=[1,368]", "size=64", "steps=3"),
    ),
    "deep_dream": Figure(
        "deep_dream",
        "Deep Dream (Mordvintsev et al. 2015) of one "
        "photo at stage 4, three octaves of scale 1.4; energy before / after",
        overrides=("octaves=3",),
        quick=("size=96", "octaves=2", "steps=2", "stage=3", "jitter=8"),
    ),
    "invert": Figure(
        "invert",
        "One photo inverted from each of the five stages "
        "(Mahendran & Vedaldi 2015), each titled with its relative feature error",
        overrides=("size=128", "steps=80"),
        quick=("stages=[2,5]", "size=64", "steps=3"),
    ),
    "fooling": Figure(
        "fooling",
        "A fooling image (Nguyen et al. 2015): a photo "
        "pushed until the model says 'gibbon' with 99% confidence, its amplified "
        "difference, probabilities before / after, L-inf / L2 of the change; "
        "HED's classifier is random, so the scores are labelled not meaningful",
        overrides=("size=160", "steps=100"),
        quick=("size=64", "steps=3"),
    ),
    # The paper's other experiments (issue 8), on VGG16 with HED weights.
    "occlusion": Figure(
        "occlusion",
        "Fig. 7: occlusion sensitivity of three photos "
        "(a 48 px grey square at stride 16, incremental inference): the total "
        "activation of the strongest stage-5 map, that map projected by the "
        "deconvnet beside its top 3 from a scan of the sample gallery, the "
        "probability of the predicted class and the most probable label (HED's "
        "classifier is random: (d) and (e) are labelled not meaningful)",
        quick=("images=[cat]", "size=96", "patch=32", "stride=32", "data.limit=8", "top_k=2"),
    ),
    "correspondence": Figure(
        "correspondence",
        "Correspondence (Table 1): the right "
        "eye, left eye and nose of 2 human portraits and 1 cat (NOT the "
        "paper's 5 dogs) occluded; Delta (Hamming of sign(x - x~)) at pool5 "
        "and fc7 (fc7 random with HED weights) against 10 draws of random "
        "boxes of the same sizes; table.md",
        quick=("random_draws=1",),
    ),
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
    "invariance": Figure(
        "invariance",
        "Fig. 5: invariance of five photos to vertical "
        "translation (-60..60 px), scale (1..1.8) and rotation (0..360 degrees, "
        "every 30): Euclidean distance of the layer-1 (pool1) and fc7 feature "
        "vectors to the original's, and the probability of each original's "
        "predicted class; HED's classifier is random, so fc7 and the "
        "probability are labelled as random / not meaningful",
        overrides=("values.rotate=[0,30,60,90,120,150,180,210,240,270,300,330,360]",),
        quick=(
            "images=[cat,coffee]",
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
    shown = " ".join(["python", "-m", module, *overrides])
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
        "figures": sorted(str(p.relative_to(out_root)) for p in final.glob("*.png")),
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


# ------------------------------------------------------------------------------------------ main


def main() -> None:
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # versions() in the record names the jobs' thread count
    record = provenance()  # the tree as it was when this command started, for every job
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = job_env(record, args.threads)
    entries = []
    try:
        for name in args.only:
            entries.append(run_job(name, out, args.quick, env))
            write_manifest(out, entries, record, args.threads)  # after every figure: work is kept
            write_runs(out, record)
    except subprocess.CalledProcessError as error:
        raise SystemExit(
            f"error: {error.cmd[2]} failed with exit status {error.returncode}; "
            "results of the figures finished before it are kept"
        ) from None
    finally:
        shutil.rmtree(out / ".staging", ignore_errors=True)
    print(f"\nwrote {', '.join(e['figure'] for e in entries)} into {out} (manifest: {out / MANIFEST_MD})")


if __name__ == "__main__":
    main()
