"""Every job, named once: the Hydra config it reads, the function that runs it from that config, and
how its figures are redrawn from its folder. The entry points in `experiments/`, `scripts/render.py`
and `scripts/regenerate.py` all read `JOBS` (docs/architecture.md#jobs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deconvnet.jobs import (
    atlas,
    class_model,
    correspondence,
    deep_dream,
    faithfulness,
    fig1,
    fig2,
    filters,
    fooling,
    invariance,
    invert,
    occlusion,
    reconstruct,
    saliency,
    sanity,
    scan,
)
from deconvnet.jobs.folder import RESULT_FILE
from deconvnet.jobs.job import render_synthesis

RunFromConfig = Callable[[Path, Mapping[str, Any]], Any]
Render = Callable[[Path], list[Path]]


@dataclass(frozen=True)
class JobKind:
    """One kind of job: `run(out, config)` does the work of `python -m experiments.<name>` into the
    folder `out`; `render(job_dir)` redraws its figures from the folder's files (None: the job
    draws them while it runs and keeps no data to redraw from)."""

    name: str
    run: RunFromConfig
    render: Render | None

    @property
    def module(self) -> str:
        """The Hydra entry point: `python -m <module>`."""
        return f"experiments.{self.name}"


def _kinds(*kinds: JobKind) -> dict[str, JobKind]:
    """The kinds by name, in the order given."""
    return {kind.name: kind for kind in kinds}


def _files(render: Callable[[Path], Path | Sequence[Path]]) -> Render:
    """`render` as a function that returns the list of files it drew."""

    def render_files(job_dir: Path) -> list[Path]:
        drawn = render(job_dir)
        return [drawn] if isinstance(drawn, Path) else list(drawn)

    return render_files


JOBS: dict[str, JobKind] = _kinds(
    JobKind("fig1", fig1.run_from_config, _files(fig1.render_fig1)),
    JobKind("fig2", fig2.run_from_config, _files(fig2.render_fig2)),
    JobKind("scan", scan.run_from_config, None),
    JobKind("merge_scans", scan.merge_from_config, None),
    JobKind("reconstruct", reconstruct.run_from_config, _files(reconstruct.render_reconstruct)),
    JobKind("saliency", saliency.run_from_config, _files(saliency.render_saliency)),
    JobKind("filters", filters.run_from_config, _files(render_synthesis)),
    JobKind("class_model", class_model.run_from_config, _files(render_synthesis)),
    JobKind("deep_dream", deep_dream.run_from_config, _files(render_synthesis)),
    JobKind("invert", invert.run_from_config, _files(render_synthesis)),
    JobKind("fooling", fooling.run_from_config, _files(render_synthesis)),
    JobKind("occlusion", occlusion.run_from_config, None),
    JobKind("invariance", invariance.run_from_config, _files(invariance.render_invariance)),
    JobKind("correspondence", correspondence.run_from_config, None),
    JobKind("sanity", sanity.run_from_config, None),
    JobKind("faithfulness", faithfulness.run_from_config, _files(faithfulness.render_faithfulness)),
    JobKind("atlas", atlas.run_from_config, _files(atlas.render_atlas)),
)


def check_job(name: object) -> JobKind:
    """The registered job `name`, or ValueError listing the jobs."""
    if not isinstance(name, str) or name not in JOBS:
        raise ValueError(f"job: expected one of {', '.join(JOBS)}, got {name!r}")
    return JOBS[name]


def job_kind(job_dir: str | Path) -> JobKind:
    """The kind of the finished job in `job_dir`, read from its result.json's "experiment"."""
    source = Path(job_dir) / RESULT_FILE
    if not source.is_file():
        raise FileNotFoundError(f"job_dir: {source} does not exist (run the experiment first)")
    experiment = json.loads(source.read_text()).get("experiment")
    if experiment not in JOBS:
        raise ValueError(
            f"job_dir: {source} names experiment {experiment!r}; expected one of {', '.join(JOBS)}"
        )
    return JOBS[experiment]
