"""One test over every registered job (`deconvnet.jobs.registry.JOBS`): its config and its thin
Hydra main exist, and a tiny run from its own config writes a complete job folder whose figures
redraw to the same bytes from the folder alone."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from conftest import load_regenerate
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from deconvnet.data.paths import CONF_DIR, REPO_ROOT
from deconvnet.jobs.folder import CONFIG_FILE, RESULT_FILE, job_status, lock_held
from deconvnet.jobs.registry import JOBS, check_job, job_kind

regenerate = load_regenerate()
TINY_SCAN = ["model=alexnet", "model.weights=random", "data.size=80", "data.limit=6", "stages=[1,5]", "k=2"]


def _tiny_overrides(name: str, scan_folder: Path) -> list[str]:
    """The --quick overrides of the first figure made by job `name` (AlexNet, random weights)."""
    if name == "scan":
        return [*TINY_SCAN, "progress=false"]
    if name == "merge_scans":
        return [f"inputs=[{scan_folder}]"]
    figure = next(f for f, fig in regenerate.FIGURES.items() if fig.job == name)
    return regenerate.job_overrides(figure, quick=True)


def _config(name: str, overrides: list[str]) -> dict:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return OmegaConf.to_container(compose(config_name=name, overrides=overrides), resolve=True)


def _main_body(name: str) -> list[ast.stmt]:
    tree = ast.parse((REPO_ROOT / "experiments" / f"{name}.py").read_text())
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert len(mains) == 1, f"experiments/{name}.py: expected one main()"
    return [s for s in mains[0].body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]


@pytest.mark.parametrize("name", list(JOBS))
def test_every_job_has_its_config_and_a_thin_main(name: str) -> None:
    assert (CONF_DIR / f"{name}.yaml").is_file()
    assert JOBS[name].module == f"experiments.{name}"
    (call,) = _main_body(name)  # one statement: run_registered("<name>", cfg)
    assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call)
    assert ast.unparse(call.value) == f"run_registered('{name}', cfg)"


def test_every_entry_point_and_figure_is_registered() -> None:
    mains = {p.stem for p in (REPO_ROOT / "experiments").glob("*.py")} - {"__init__", "common"}
    assert mains == set(JOBS)
    assert {fig.job for fig in regenerate.FIGURES.values()} <= set(JOBS)
    with pytest.raises(ValueError, match="job: expected one of fig1, fig2, .*got 'fig3'"):
        check_job("fig3")


@pytest.fixture(scope="module")
def scan_folder(tmp_path_factory) -> Path:
    """A finished tiny scan (the input of merge_scans)."""
    folder = tmp_path_factory.mktemp("scan")
    JOBS["scan"].run(folder, _config("scan", _tiny_overrides("scan", folder)))
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(JOBS))
def test_every_job_runs_from_its_config_and_redraws_from_its_folder(name, scan_folder, tmp_path) -> None:
    config = _config(name, _tiny_overrides(name, scan_folder))
    kind = JOBS[name]
    kind.run(tmp_path, config)
    result = json.loads((tmp_path / RESULT_FILE).read_text())
    assert result["experiment"] == name and job_kind(tmp_path) is kind
    assert job_status(tmp_path) not in ("running", "stale", "interrupted", "failed", "missing")
    assert not lock_held(tmp_path)  # the job released its folder
    assert (tmp_path / CONFIG_FILE).is_file() or name == "fig1"  # fig1 keeps its config in result.json
    before = _files(tmp_path)
    drawn = kind.render(tmp_path) if kind.render is not None else []
    assert all(p.is_file() for p in drawn)
    assert {str(p.relative_to(tmp_path)) for p in drawn} <= set(before)
    assert _files(tmp_path) == before  # every redrawn file has the bytes the job wrote
