"""The README's main job end to end: regenerate every figure (tiny settings) twice and get the same
bytes in every file git tracks, redraw them from the saved data alone and get the same pixels; and
the pieces that make the tracked files a function of code and inputs only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_regenerate, png_pixels
from PIL import Image

from deconvnet.data.paths import REPO_ROOT
from deconvnet.jobs.provenance import PROVENANCE_ENV, code_state, provenance

regenerate = load_regenerate()
FIGURES = list(regenerate.FIGURES)


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    done = subprocess.run(
        [
            "git",
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip()


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _tracked(out: Path) -> list[str]:
    """The files of a regeneration into `out` that git would track in results/ (.gitignore)."""
    files = _files(out)
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=REPO_ROOT,
        text=True,
        input="".join(f"results/{f}\n" for f in files),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: nothing ignored
    ignored = {line.removeprefix("results/") for line in done.stdout.splitlines()}
    return [f for f in files if f not in ignored]


def _code_commit() -> str:
    """The last commit that touched anything but results/ and README.md, asked of git directly."""
    return _git("log", "-1", "--format=%H", "--", ".", ":(exclude)results", ":(exclude)README.md")


@pytest.fixture(scope="module")
def code_commits() -> list[str]:
    """The code's commit when each of `two_runs` started."""
    return []


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, code_commits) -> list[Path]:
    """Two quick regenerations into two folders (the slow part, shared by the tests below)."""
    outs = []
    for name in ("a", "b"):
        out = tmp_path_factory.mktemp(f"regenerate_{name}") / "results"
        code_commits.append(_code_commit())
        subprocess.run(
            [sys.executable, "scripts/regenerate.py", "--quick", "--out", str(out)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
        outs.append(out)
    return outs


@pytest.mark.slow
def test_regenerate_writes_every_figure_and_render_redraws_them(two_runs, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(two_runs[0], out)  # redrawn here, the shared runs stay as they were
    manifest = json.loads((out / "MANIFEST.json").read_text())
    names = [f["figure"] for f in manifest["figures"]]
    assert names == FIGURES
    for entry in manifest["figures"]:
        assert entry["command"].startswith("python -m experiments.")
        assert entry["weights"]["weights"] == "random" and entry["pretrained"] is False
        assert entry["figures"] and all((out / f).is_file() for f in entry["figures"])
    table = (out / "MANIFEST.md").read_text()
    assert table.count("NOT pretrained") == len(FIGURES)
    assert not (out / ".staging").exists()

    # the figures (not the reconstruction PNGs that the overview is drawn from)
    figures = [
        p for p in out.glob("*/*.png") if p.name.startswith("fig") or p.name in ("overview.png", "grid.png")
    ]
    before = {p: png_pixels(p) for p in figures}
    assert len(before) >= 7
    for p in before:
        p.unlink()
    jobs = [str(out / n) for n in names]
    subprocess.run(
        [sys.executable, "scripts/render.py", *jobs],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    for p, pixels in before.items():
        assert np.array_equal(png_pixels(p), pixels), p

    # the README's sheet command on a sweep folder's glob, which passes multirun.yaml along
    (out / "multirun.yaml").write_text("hydra: {}\n")
    fig2_jobs = [str(out / n) for n in names if n.startswith("fig2")]
    done = subprocess.run(
        [
            sys.executable,
            "scripts/render.py",
            "--sheet",
            str(tmp_path / "s.png"),
            *fig2_jobs,
            str(out / "multirun.yaml"),
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert f"ignored {out / 'multirun.yaml'}: a file" in done.stderr
    assert Image.open(tmp_path / "s.png").size[0] > 0


@pytest.mark.slow
def test_regenerate_twice_gives_the_same_bytes_in_every_tracked_file(two_runs):
    a, b = two_runs
    tracked = _tracked(a)
    assert tracked == _tracked(b)
    assert {
        "MANIFEST.json",
        "MANIFEST.md",
        "fig1/fig1.png",
        "fig1/fig1_data.npz",
        "fig2/tiles.json",
        "reconstruct/result.json",
        "fig1/.hydra/hydra.yaml",
    } <= set(tracked)
    different = [f for f in tracked if (a / f).read_bytes() != (b / f).read_bytes()]
    assert different == []
    # what only one run has is kept, in files git ignores
    untracked = set(_files(a)) - set(tracked)
    assert {"RUNS.json", *(f"{n}/run.json" for n in FIGURES)} <= untracked
    assert all(json.loads((a / n / "run.json").read_text())["seconds"] > 0 for n in FIGURES)
    # no absolute path, staging folder or runtime in a tracked text file
    for f in tracked:
        if f.endswith((".json", ".yaml", ".md")):
            text = (a / f).read_text()
            assert str(a) not in text and str(REPO_ROOT) not in text and ".staging" not in text, f
            assert '"seconds"' not in text and "timings_s" not in text, f


@pytest.mark.slow
def test_manifest_records_the_code_commit_as_it_was_at_the_start(two_runs, code_commits):
    a, _ = two_runs
    prov = json.loads((a / "MANIFEST.json").read_text())["provenance"]
    assert set(prov) == {"versions", "code_commit", "code_dirty"}
    assert prov["code_commit"] == code_commits[0]
    for name in FIGURES:  # every job reports the state taken once, before the first job ran
        result = json.loads((a / name / "result.json").read_text())
        assert result["provenance"] == prov, name
    runs = json.loads((a / "RUNS.json").read_text())
    assert set(runs["figures"]) == set(FIGURES) and "timestamp" in runs["last_run"]


def test_code_state_leaves_results_out(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "fig.txt").write_text("old\n")
    _git("init", "-q", cwd=tmp_path)
    _git("add", ".", cwd=tmp_path)
    _git("commit", "-q", "-m", "code", cwd=tmp_path)
    code = _git("rev-parse", "HEAD", cwd=tmp_path)
    assert code_state(tmp_path) == {"code_commit": code, "code_dirty": False}

    (tmp_path / "results" / "fig.txt").write_text("regenerated\n")
    (tmp_path / "README.md").write_text("the figures show ...\n")
    assert code_state(tmp_path) == {"code_commit": code, "code_dirty": False}
    _git("add", "README.md", cwd=tmp_path)
    _git("commit", "-q", "-am", "results and the README that reports them", cwd=tmp_path)
    assert _git("rev-parse", "HEAD", cwd=tmp_path) != code
    assert code_state(tmp_path) == {"code_commit": code, "code_dirty": False}

    (tmp_path / "code.py").write_text("x = 2\n")
    assert code_state(tmp_path) == {"code_commit": code, "code_dirty": True}


def test_provenance_taken_at_the_start_is_handed_to_jobs(monkeypatch):
    record = {"versions": {"torch": "x"}, "code_commit": "abc", "code_dirty": False, "timestamp": "then"}
    monkeypatch.setenv(PROVENANCE_ENV, json.dumps(record))
    assert provenance() == {**record, "command": sys.argv}
    monkeypatch.delenv(PROVENANCE_ENV)
    own = provenance()
    assert {"versions", "code_commit", "code_dirty", "timestamp", "platform"} <= set(own)


def test_volatile_values_leave_the_tracked_files(tmp_path):
    result = {
        "seconds": 1.5,
        "timings_s": {"scan_s": 2.0},
        "config": {"seconds": 3},
        "reconstructions": [{"stage": 1, "seconds": 0.1}],
        "k": 9,
    }
    removed = regenerate.pop_volatile(result)
    assert result == {"config": {}, "reconstructions": [{"stage": 1}], "k": 9}
    assert removed == {
        "seconds": 1.5,
        "timings_s": {"scan_s": 2.0},
        "config/seconds": 3,
        "reconstructions/0/seconds": 0.1,
    }
    stable, volatile = regenerate.split_provenance(
        {
            "versions": {},
            "code_commit": "c",
            "code_dirty": False,
            "git_commit": "h",
            "platform": "p",
            "command": ["x"],
            "timestamp": "t",
        }
    )
    assert set(stable) == {"versions", "code_commit", "code_dirty"}
    assert set(volatile) == {"git_commit", "platform", "command", "timestamp"}

    staging = tmp_path / ".staging" / "fig1"
    text = f"dir: {staging}\n- hydra.run.dir={staging}\ncwd: {REPO_ROOT}\n- path: {REPO_ROOT}/conf\nother: {REPO_ROOT}other\n"
    assert regenerate.relocate(text, staging, "<out>/fig1") == (
        f"dir: <out>/fig1\n- hydra.run.dir=<out>/fig1\ncwd: .\n- path: ./conf\nother: {REPO_ROOT}other\n"
    )
    assert regenerate.folder_label(REPO_ROOT / "results" / "fig1", REPO_ROOT / "results") == "results/fig1"
    assert regenerate.folder_label(tmp_path / "fig1", tmp_path) == "<out>/fig1"


def test_manifest_names_the_weights_exactly():
    cell = regenerate.weights_cell
    assert cell({"weights": "imagenet", "pretrained": True}) == (
        "ImageNet-pretrained weights (torchvision IMAGENET1K_V1)"
    )
    assert cell({"weights": "hed", "pretrained": True}).startswith("VGG16 convolutions from HED")
    random = cell({"weights": "random", "source": "seed 0", "pretrained": False})
    assert "NOT pretrained (seed 0)" in random and "were not available" in random


def test_quick_runs_every_figure_on_alexnet_with_its_own_overrides():
    for name, fig in regenerate.FIGURES.items():
        assert regenerate.job_overrides(name, quick=True) == [
            *regenerate.MODEL_OVERRIDES["alexnet"],
            *fig.overrides,
            *fig.quick,
        ]
        assert regenerate.job_overrides(name, quick=False) == [
            *regenerate.MODEL_OVERRIDES[fig.model],
            *fig.overrides,
        ]
    assert regenerate.job_overrides("fig2_alexnet", quick=False)[0] == "model=alexnet"


def test_render_takes_a_sweep_glob_skips_files_and_names_unfinished_jobs(tmp_path):
    sweep = tmp_path / "multirun" / "10-00-00"
    for name, result in (
        ("0", {"experiment": "occlusion"}),
        ("1", {"experiment": "fig2", "status": "running", "pid": 1}),
        ("2", {"experiment": "fig2", "status": "failed"}),
    ):
        (sweep / name).mkdir(parents=True)
        (sweep / name / "result.json").write_text(json.dumps(result))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for args in (sorted(str(p) for p in sweep.iterdir()), [str(sweep)]):
        done = subprocess.run(
            [sys.executable, "scripts/render.py", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "occlusion figures are drawn by the job itself" in done.stderr  # job 0 was read
        # job 1 says "running" but no process holds its lock: killed, so stale
        assert f"skipped {sweep / '1'}: the job's status is 'stale'" in done.stderr
        assert f"skipped {sweep / '2'}: the job's status is 'failed'" in done.stderr
        assert ("ignored" in done.stderr) == (len(args) > 1)
    done = subprocess.run(
        [
            sys.executable,
            "scripts/render.py",
            "--sheet",
            str(tmp_path / "s.png"),
            str(sweep / "1"),
            str(sweep / "2"),
            str(sweep / "multirun.yaml"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        done.returncode != 0
        and "none of the given job folders holds a finished job" in done.stderr
        and not (tmp_path / "s.png").exists()
    )


def test_render_refuses_a_folder_without_results(tmp_path):
    done = subprocess.run(
        [sys.executable, "scripts/render.py", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert f"error: no result.json in {tmp_path}" in done.stderr
