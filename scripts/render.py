"""Redraw every figure from saved results, without loading or running any model.

    python scripts/render.py                      # every job folder under results/
    python scripts/render.py results/fig2         # one job folder (any Hydra job folder works)
    python scripts/render.py --sheet out.png multirun/2026-11-22/10-00-00/*   # one Fig. 2 sheet
                                                  # assembled from a sweep's fig2 jobs
    python scripts/render.py multirun/2026-11-22/10-00-00    # a sweep folder: each of its jobs

Files among the arguments (a sweep's multirun.yaml, as the shell glob above passes it) are
ignored with a note; a job that did not finish (running, stale after a kill, interrupted, failed)
is skipped with its status named.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def render_job(job: Path) -> list[Path]:
    """Redraw one job folder with its registered kind's `render` (the experiment recorded in its
    result.json); a kind that draws its figures only while it runs redraws nothing (said)."""
    from deconvnet.jobs.registry import job_kind

    kind = job_kind(job)
    if kind.render is None:
        print(
            f"{job}: {kind.name} figures are drawn by the job itself; rerun the experiment to "
            "redraw them (nothing changed here)",
            file=sys.stderr,
        )
        return []
    return kind.render(job)


UNFINISHED = ("running", "stale", "interrupted", "failed")


def job_folders(paths: list[Path]) -> list[Path]:
    """Job folders among `paths`: a folder with result.json is a job, a sweep folder stands for
    its jobs, files are ignored (noted on stderr); SystemExit naming folders that hold no job."""
    jobs, missing = [], []
    for path in paths:
        if path.is_file():
            print(f"ignored {path}: a file, not a job folder", file=sys.stderr)
        elif (path / "result.json").is_file():
            jobs.append(path)
        elif path.is_dir() and any(path.glob("*/result.json")):
            jobs.extend(sorted(p.parent for p in path.glob("*/result.json")))
        else:
            missing.append(str(path))
    if missing:
        raise SystemExit(
            f"error: no result.json in {', '.join(missing)} (not a job folder or a sweep folder of jobs)"
        )
    return jobs


def finished_jobs(jobs: list[Path]) -> list[Path]:
    """The jobs that finished; the others are named on stderr with their status."""
    from deconvnet.jobs.folder import job_status

    kept = []
    for job in jobs:
        status = job_status(job)
        if status in UNFINISHED:
            print(
                f"skipped {job}: the job's status is {status!r}, not finished"
                + (" (killed before it could say so; rerun it to resume)" if status == "stale" else ""),
                file=sys.stderr,
            )
        else:
            kept.append(job)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "jobs",
        nargs="*",
        type=Path,
        help="job folders (default: every folder under results/ with a result.json)",
    )
    parser.add_argument("--sheet", type=Path, help="assemble the given fig2 jobs into one sheet")
    args = parser.parse_args()
    if args.jobs:
        jobs = finished_jobs(job_folders(args.jobs))
        if not jobs:
            raise SystemExit("error: none of the given job folders holds a finished job")
    else:
        jobs = sorted(p.parent for p in (REPO / "results").glob("*/result.json"))
        if not jobs:
            raise SystemExit(
                "error: no job folders given and none under results/; run scripts/regenerate.py first"
            )
    if args.sheet:
        from deconvnet.jobs.fig2 import assemble_sheet

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
                print(
                    "  (Fig. 2's raw tiles.npz is not committed to results/; "
                    "`python scripts/regenerate.py --only fig2 fig2_alexnet` recreates it)",
                    file=sys.stderr,
                )
    if failed:
        raise SystemExit(f"error: {len(failed)} of {len(jobs)} job(s) could not be redrawn")


if __name__ == "__main__":
    main()
