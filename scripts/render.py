"""Redraw every figure from saved results, without loading or running any model.

    python scripts/render.py                      # every job folder under results/
    python scripts/render.py results/fig2         # one job folder (any Hydra job folder works)
    python scripts/render.py --sheet out.png multirun/2026-11-22/10-00-00/*   # one Fig. 2 sheet
                                                  # assembled from a sweep's fig2 jobs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# analyses whose figure is drawn only when the job runs (no redraw from saved data yet)
DRAWN_BY_THE_JOB = ("occlusion", "correspondence", "sanity")


def render_job(job: Path) -> list[Path]:
    """Redraw one job folder according to the experiment recorded in its result.json."""
    from deconvnet.fig1 import render_fig1
    from deconvnet.fig2 import render_fig2
    from deconvnet.saliency import render_saliency
    from deconvnet.synthesis import SYNTHESIS_EXPERIMENTS, render_synthesis
    from experiments.reconstruct import render_reconstruct

    result = json.loads((job / "result.json").read_text())
    kind = result.get("experiment")
    if kind == "fig1":
        return [render_fig1(job)]
    if kind == "fig2":
        return list(render_fig2(job))
    if kind == "reconstruct":
        return [render_reconstruct(job)]
    if kind == "saliency":
        return [render_saliency(job)]
    if kind in SYNTHESIS_EXPERIMENTS:
        return render_synthesis(job)
    if kind == "invariance":
        from deconvnet.analysis.jobs.invariance import render_invariance

        return [render_invariance(job)]
    if kind in DRAWN_BY_THE_JOB:
        print(f"{job}: {kind} figures are drawn by the job itself; rerun the experiment to "
              "redraw them (nothing changed here)", file=sys.stderr)
        return []
    raise ValueError(f"{job}: result.json names experiment {kind!r}; expected fig1, fig2, "
                     f"reconstruct, saliency, invariance or one of "
                     f"{', '.join((*SYNTHESIS_EXPERIMENTS, *DRAWN_BY_THE_JOB))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="*", type=Path,
                        help="job folders (default: every folder under results/ with a result.json)")
    parser.add_argument("--sheet", type=Path, help="assemble the given fig2 jobs into one sheet")
    args = parser.parse_args()
    jobs = args.jobs or sorted(p.parent for p in (REPO / "results").glob("*/result.json"))
    missing = [str(j) for j in jobs if not (j / "result.json").is_file()]
    if missing:
        raise SystemExit(f"error: no result.json in {', '.join(missing)} (not a finished job folder)")
    if not jobs:
        raise SystemExit("error: no job folders given and none under results/; run "
                         "scripts/regenerate.py first")
    if args.sheet:
        from deconvnet.fig2 import assemble_sheet

        print(assemble_sheet(jobs, args.sheet))
        return
    failed = []
    for job in jobs:
        try:
            for path in render_job(job):
                print(path)
        except (FileNotFoundError, ValueError) as error:  # one job's missing data stops no other
            failed.append(job)
            print(f"skipped {job}: {error}", file=sys.stderr)
            if (job / "tiles.json").is_file():
                print("  (Fig. 2's raw tiles.npz is not committed to results/; "
                      "`python scripts/regenerate.py --only fig2 fig2_alexnet` recreates it)",
                      file=sys.stderr)
    if failed:
        raise SystemExit(f"error: {len(failed)} of {len(jobs)} job(s) could not be redrawn")


if __name__ == "__main__":
    main()
