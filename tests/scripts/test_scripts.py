"""The README's main job end to end: regenerate every figure (tiny settings) twice and get the same
bytes in every file git tracks, redraw them from the saved data alone and get the same pixels; and
the pieces that make the tracked files a function of code and inputs only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXED_PROVENANCE, load_regenerate, png_pixels
from PIL import Image

from deconvnet.data.paths import REPO_ROOT
from deconvnet.jobs.provenance import ISA_FLAGS, PROVENANCE_ENV, code_state, cpuinfo_fields, provenance

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


def test_the_run_record_names_the_cpu_in_untracked_files_only(tmp_path):
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) 8480+\n"
    text += "flags\t\t: fpu avx2 avx512f amx_tile\n\nprocessor\t: 1\nmodel name\t: other\n"
    assert cpuinfo_fields(text) == {
        "vendor_id": "GenuineIntel",
        "model name": "Intel(R) Xeon(R) 8480+",
        "flags": "fpu avx2 avx512f amx_tile",
    }
    assert cpuinfo_fields("") == {}
    record = provenance()
    cpu = record["cpu"]
    assert {"model", "vendor", "machine", "cores", "torch_capability", "isa_flags"} == set(cpu)
    assert cpu["torch_capability"] in ("DEFAULT", "NO AVX", "AVX2", "AVX512", "Z VECTOR", "VSX", "SVE256")
    assert cpu["isa_flags"] is None or set(cpu["isa_flags"]) <= set(ISA_FLAGS)
    # a job's record: the CPU goes to run.json and RUNS.json, never to the tracked result.json
    staging, out = tmp_path / ".staging" / "fig1", tmp_path
    staging.mkdir(parents=True)
    (staging / "result.json").write_text(json.dumps({"provenance": record, "k": 1}))
    result = regenerate.tidy_job(staging, out / "fig1", out, {"figure": "fig1"})
    assert result == {"provenance": {k: record[k] for k in ("versions", "code_commit", "code_dirty")}, "k": 1}
    assert "cpu" not in (staging / "result.json").read_text()
    assert json.loads((staging / "run.json").read_text())["provenance"]["cpu"] == cpu
    regenerate.write_runs(out, record)
    assert json.loads((out / "RUNS.json").read_text())["last_run"]["cpu"] == cpu


def test_progress_line_estimates_from_known_runtimes_else_this_runs_mean():
    line = regenerate.progress_line
    known = {"fig2": 300.0, "saliency": 60.0}
    # fig2 300 s + saliency 60 s + invert at the mean of this run's (30 + 50) / 2 = 40 s
    assert line(2, 5, "fig2", 75.4, ["fig2", "saliency", "invert"], known, [30.0, 50.0]) == (
        "[2/5] fig2: elapsed 01:15, estimate 06:40 left"
    )
    assert line(1, 3, "invert", 0.0, ["invert", "fig2"], known, []) == (
        "[1/3] invert: elapsed 00:00, estimate unknown left"
    )
    assert line(3, 3, "fig2", 3725.0, ["fig2"], known, []) == "[3/3] fig2: elapsed 62:05, estimate 05:00 left"


def test_finished_figures_are_those_of_the_same_committed_code_and_command(tmp_path):
    code = {"versions": {"torch": "x", "threads": 2}, "code_commit": "abc", "code_dirty": False}
    record = {**code, "timestamp": "now", "cpu": {"model": "any"}}  # what only this run has: ignored
    command = "python -m experiments.fig1 model=alexnet"
    state = {
        "figures": {
            "fig1": {"code": code, "command": command, "finished": "T1"},
            "reconstruct": {
                "code": code,
                "command": "python -m experiments.reconstruct stage=2",
                "finished": "T2",
            },
            "saliency": {"code": {**code, "code_commit": "old"}, "command": "s", "finished": "T3"},
            "filters": {
                "code": {**code, "versions": {"torch": "y", "threads": 2}},
                "command": "f",
                "finished": "T4",
            },
        }
    }
    commands = {"fig1": command, "reconstruct": "python -m experiments.reconstruct stage=3", "saliency": "s"}
    commands |= {"filters": "f", "invert": "i"}
    assert regenerate.finished_figures(state, record, commands) == {"fig1": "T1"}
    # uncommitted changes, or no git: nothing counts as the same code state
    assert regenerate.finished_figures(state, {**record, "code_dirty": True}, commands) == {}
    dirty_state = {
        "figures": {"fig1": {"code": {**code, "code_dirty": True}, "command": command, "finished": "T"}}
    }
    assert regenerate.finished_figures(dirty_state, {**record, "code_dirty": True}, commands) == {}
    assert (
        regenerate.finished_figures(state, {**record, "code_commit": None, "code_dirty": None}, commands)
        == {}
    )
    assert regenerate.finished_figures({}, record, commands) == {}
    # the state file: a recorded figure is kept while its folder is there
    regenerate.record_finished(tmp_path, "fig1", record, command)
    assert regenerate.kept_figures(tmp_path, record, {"fig1": command}) == {}
    (tmp_path / "fig1").mkdir()
    (tmp_path / "fig1" / "result.json").write_text("{}")
    kept = regenerate.kept_figures(tmp_path, record, {"fig1": command})
    assert list(kept) == ["fig1"] and kept["fig1"][:4].isdigit()


def _regenerate(out: Path, *args: str, quick: bool = True, timeout: int = 600) -> str:
    """Run regenerate.py (--quick unless `quick` is False) into `out` with a fixed, clean code
    state; its stdout."""
    env = dict(os.environ, **{PROVENANCE_ENV: json.dumps(FIXED_PROVENANCE)})
    done = subprocess.run(
        [sys.executable, "scripts/regenerate.py", *(["--quick"] if quick else []), "--out", str(out), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_regenerate_shows_progress_keeps_finished_figures_and_restarts(tmp_path):
    out = tmp_path / "results"
    progress = r"\[{k}/{n}\] {name}: elapsed \d\d:\d\d, estimate (unknown|\d\d:\d\d) left"
    first = _regenerate(out, "--only", "fig1")
    assert re.search(progress.format(k=1, n=1, name="fig1"), first)
    state = json.loads((out / ".regenerate_state.json").read_text())
    assert state["figures"]["fig1"]["code"] == FIXED_PROVENANCE
    assert state["figures"]["fig1"]["command"] == regenerate.figure_command("fig1", quick=True)
    before = _mtimes(out / "fig1")

    # an interrupted run of two figures, run again: the finished one is kept, the other runs
    second = _regenerate(out, "--only", "fig1", "reconstruct")
    assert re.search(r"\[1/2\] fig1: kept, finished earlier at \d{4}-", second)
    assert re.search(progress.format(k=2, n=2, name="reconstruct"), second)
    assert "=== fig1" not in second and "=== reconstruct" in second
    assert _mtimes(out / "fig1") == before
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert [f["figure"] for f in manifest["figures"]] == ["fig1", "reconstruct"]

    third = _regenerate(out, "--only", "fig1", "--restart")
    assert re.search(progress.format(k=1, n=1, name="fig1"), third) and "=== fig1" in third
    assert _mtimes(out / "fig1")["result.json"] != before["result.json"]


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


@pytest.mark.slow
def test_a_full_quality_vgg16_figure_regenerated_twice_gives_the_same_bytes(tmp_path):
    """The byte-identical claim at full quality (the runs above are --quick AlexNet runs): the
    `reconstruct` figure (VGG16 with the HED weights, all five stages) regenerated twice into two
    folders, every tracked file equal. The code state is fixed (FIXED_PROVENANCE), so an edit of
    the working tree between the two runs cannot make their manifests differ."""
    outs = [tmp_path / name / "results" for name in ("a", "b")]
    for out in outs:
        _regenerate(out, "--only", "reconstruct", quick=False, timeout=900)
    a, b = outs
    tracked = _tracked(a)
    assert tracked == _tracked(b)
    assert {"MANIFEST.json", "reconstruct/result.json"} <= set(tracked)
    assert any(f.startswith("reconstruct/") and f.endswith(".png") for f in tracked)
    assert "--quick" not in (a / "MANIFEST.md").read_text()
    assert [f for f in tracked if (a / f).read_bytes() != (b / f).read_bytes()] == []
