"""Regenerate every reproduced figure into results/, with a manifest of how each was made.

    python scripts/regenerate.py                 # all figures, default settings (minutes on 2 CPUs)
    python scripts/regenerate.py --only fig1     # one figure
    python scripts/regenerate.py --quick --out /tmp/r   # a tiny run (AlexNet, few maps), for checks

Each figure is one Hydra job (the same command a user would type, recorded in the manifest), run
into a staging folder and moved into results/<name>/ only when it finished: an interrupted run
leaves the previous results in place. Weights are `auto`: pretrained when torchvision's file is in
the torch hub cache, otherwise seeded random weights, which every title and the manifest say.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.common import provenance  # noqa: E402

# committed PNGs stay modest: large receptive fields shown at 64 px, sheets at most 1400 px wide
SMALL_PNG = ["display.max_tile_px=64", "display.sheet_max_width=1400"]
# name -> (Hydra module, overrides, what it shows)
FIGURES = {
    "fig1": ("experiments.fig1", [], "Fig. 1: the deconvnet layer attached to a convnet layer, "
             "every intermediate map from real data, and unpooling with switches"),
    "fig2": ("experiments.fig2", SMALL_PNG, "Fig. 2: top-9 activations of 16 random feature maps per "
             "layer, projected to pixels beside their image patches (VGG16)"),
    "fig2_alexnet": ("experiments.fig2", ["model=alexnet", *SMALL_PNG], "Fig. 2 on AlexNet (the paper's "
                     "own architecture family)"),
    "reconstruct": ("experiments.reconstruct", [], "Reconstructions of one image at the 5 "
                    "layers, from the whole feature map and from its strongest activation"),
}
QUICK = {
    "fig1": ["model=alexnet"],
    "fig2": ["model=alexnet", "channels_per_stage=2", "k=4", "data.size=80", "stages=[1,5]"],
    "fig2_alexnet": ["model=alexnet", "channels_per_stage=1", "k=2", "data.size=80",
                     "stages=[2]"],
    "reconstruct": ["model=alexnet", "stage=2"],
}


def run_job(name: str, out_root: Path, quick: bool) -> dict:
    module, overrides, what = FIGURES[name]
    overrides = overrides + (QUICK[name] if quick else [])
    staging = out_root / ".staging" / name
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={staging}"]
    shown = " ".join(["python", "-m", module, *overrides])
    print(f"\n=== {name}: {shown}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    seconds = time.perf_counter() - started
    final = out_root / name
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    result = json.loads((final / "result.json").read_text())
    weights = result.get("weights", {})
    return {
        "figure": name,
        "shows": what,
        "command": shown,
        "folder": str(final.relative_to(out_root)),
        "figures": sorted(str(p.relative_to(out_root)) for p in final.glob("*.png")),
        "weights": weights,
        "pretrained": weights.get("pretrained") is True,
        "dataset": result.get("dataset") or result.get("data") or result.get("image"),
        "seconds": round(seconds, 1),
    }


def write_manifest(out_root: Path, entries: list[dict]) -> None:
    manifest_path = out_root / "MANIFEST.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    figures = {e["figure"]: e for e in old.get("figures", [])}
    figures.update({e["figure"]: e for e in entries})
    manifest = {"provenance": provenance(), "figures": [figures[k] for k in FIGURES if k in figures]}
    manifest_path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    prov = manifest["provenance"]
    lines = [
        "# Reproduced figures",
        "",
        "Made by `python scripts/regenerate.py`; redraw from the saved data without the model with "
        "`python scripts/render.py`.",
        f"Versions: torch {prov['versions'].get('torch')}, torchvision "
        f"{prov['versions'].get('torchvision')}, python {prov['versions'].get('python')}; "
        f"commit {prov.get('git_commit')}{' (with uncommitted changes)' if prov.get('git_dirty') else ''}.",
        "",
        "| figure | shows | command | weights used | data | files | runtime (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in manifest["figures"]:
        weights = e["weights"].get("description", "unknown")
        if not e["pretrained"]:
            weights = f"**{weights}** (pretrained weights were not available)"
        data = e["dataset"]
        if isinstance(data, dict):
            data = data.get("label") or data.get("source") or data.get("kind") or json.dumps(data)
        files = ", ".join(f"`{f}`" for f in e["figures"])
        lines.append(f"| {e['figure']} | {e['shows']} | `{e['command']}` | {weights} | {data} | "
                     f"{files} | {e['seconds']} |")
    (out_root / "MANIFEST.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), default=list(FIGURES))
    parser.add_argument("--out", type=Path, default=REPO / "results")
    parser.add_argument("--quick", action="store_true", help="tiny settings, for checking the script")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    entries = []
    try:
        for name in args.only:
            entries.append(run_job(name, args.out, args.quick))
            write_manifest(args.out, entries)  # after every figure: finished work is kept
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"error: {error.cmd[2]} failed with exit status {error.returncode}; "
                         "results of the figures finished before it are kept") from None
    finally:
        shutil.rmtree(args.out / ".staging", ignore_errors=True)
    print(f"\nwrote {', '.join(e['figure'] for e in entries)} into {args.out} "
          f"(manifest: {args.out / 'MANIFEST.md'})")


if __name__ == "__main__":
    main()
