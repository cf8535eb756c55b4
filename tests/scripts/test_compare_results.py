"""scripts/compare_results.py: a results folder against a copy of itself, with rounding noise (still
matches) and with real changes (differs), missing files, volatile files, bad arguments."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from deconvnet.data.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "compare_results.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("compare_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


compare = _load()
TRACKED_FIG1 = ("fig1.png", "fig1_data.npz", "result.json", ".hydra/config.yaml", ".hydra/overrides.yaml")


def _synthetic(root: Path) -> Path:
    """A small results folder: MANIFEST, one figure with every kind of file, and results/fig1."""
    rng = np.random.default_rng(0)
    fig = root / "figA"
    (fig / ".hydra").mkdir(parents=True)
    (root / "MANIFEST.json").write_text(json.dumps({"figures": [{"figure": "figA", "folder": "figA"}]}))
    (root / "MANIFEST.md").write_text("| figure | files |\n|---|---|\n| figA | `figA/img.png` |\n")
    result = {"score": 0.123456789, "curve": [1.5, 0.0, -2.25], "label": "tabby p=0.9912", "ok": True, "n": 7}
    (fig / "result.json").write_text(json.dumps(result))
    (fig / ".hydra" / "hydra.yaml").write_text("hydra:\n  run:\n    dir: results/figA\n")
    (fig / "table.md").write_text("| occlusion | Delta |\n|---|---|\n| right eye | 0.1857 ± 0.0093 |\n")
    pixels = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(fig / "img.png")
    np.savez(fig / "data.npz", maps=rng.standard_normal((4, 16, 16)).astype(np.float32), idx=np.arange(5))
    (fig / "notes.bin").write_bytes(b"\x00\x01")
    (fig / "run.json").write_text('{"seconds": 1.0}')
    (fig / "figA.log").write_text("run 1\n")
    (root / "RUNS.json").write_text("{}")
    (root / "fig1").mkdir()
    for name in TRACKED_FIG1:
        (root / "fig1" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "results" / "fig1" / name, root / "fig1" / name)
    return root


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """(theirs, committed): two identical small results folders."""
    committed = _synthetic(tmp_path / "committed")
    theirs = tmp_path / "theirs"
    shutil.copytree(committed, theirs)
    return theirs, committed


def _statuses(theirs: Path, committed: Path, **bounds: float) -> dict[str, str]:
    reports = compare.compare_results(theirs, committed, compare.Bounds(**bounds))
    return {r.name: r.status for r in reports}


def _report(theirs: Path, committed: Path, name: str) -> Any:
    return next(r for r in compare.compare_results(theirs, committed, compare.Bounds()) if r.name == name)


def _edit_png(path: Path, change) -> None:
    with Image.open(path) as im:
        mode = im.mode
        pixels = np.asarray(im).astype(np.int16)
    Image.fromarray(np.clip(change(pixels), 0, 255).astype(np.uint8), mode=mode).save(path)


def _rows(stdout: str) -> dict[str, str]:
    """{figure: status} of the printed summary table."""
    cells = [line.split() for line in stdout.splitlines()]
    return {c[0]: c[1] for c in cells if len(c) > 1 and c[1] in ("MATCH", "DIFFERS", "MISSING")}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_a_results_folder_matches_a_copy_of_itself_and_volatile_files_are_skipped(folders):
    theirs, committed = folders
    (theirs / "figA" / "run.json").write_text('{"seconds": 99.0}')  # what only one run has
    (theirs / "figA" / "figA.log").write_text("run 2, elsewhere\n")
    (theirs / "RUNS.json").write_text('{"other": 1}')
    (theirs / ".regenerate_state.json").write_text("{}")
    done = _run(str(theirs), str(committed))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _rows(done.stdout)
    assert {k: rows[k] for k in ("MANIFEST", "figA", "fig1")} == {
        k: "MATCH" for k in ("MANIFEST", "figA", "fig1")
    }
    assert "3 of 3 match" in done.stdout
    fig_a = _report(theirs, committed, "figA")
    assert fig_a.compared == 6  # result.json, hydra.yaml, table.md, img.png, data.npz, notes.bin


def test_rounding_noise_of_one_grey_level_in_every_pixel_matches(folders):
    theirs, committed = folders
    rng = np.random.default_rng(1)
    for path in (theirs / "figA" / "img.png", theirs / "fig1" / "fig1.png"):
        _edit_png(path, lambda p: p + rng.choice(np.array([-1, 1], dtype=np.int16), size=p.shape))
    assert _statuses(theirs, committed) == {"MANIFEST": "MATCH", "figA": "MATCH", "fig1": "MATCH"}
    # the same noise is beyond a mean bound of half a level
    assert _statuses(theirs, committed, mean_levels=0.5)["figA"] == "DIFFERS"


def test_a_40px_block_changed_by_100_levels_differs_even_in_a_large_figure(folders):
    theirs, committed = folders

    def block(p: np.ndarray) -> np.ndarray:
        q = p.copy()
        patch = q[50:90, 60:100, :3]
        q[50:90, 60:100, :3] = np.where(patch < 128, patch + 100, patch - 100)  # every value by 100
        return q

    _edit_png(theirs / "figA" / "img.png", block)
    _edit_png(theirs / "fig1" / "fig1.png", block)  # 1600 x 1200: 0.08% of its pixels
    report = _report(theirs, committed, "fig1")
    assert report.status == "DIFFERS" and report.worst.where == "fig1.png"
    assert "(max 100)" in report.worst.detail
    assert _statuses(theirs, committed) == {"MANIFEST": "MATCH", "figA": "DIFFERS", "fig1": "DIFFERS"}
    # the tile bound is what catches it on the large figure; in the small one also the fraction
    assert _statuses(theirs, committed, block_levels=101)["fig1"] == "MATCH"
    assert _statuses(theirs, committed, block_levels=101)["figA"] == "DIFFERS"  # 4% of its pixels


def test_a_png_of_another_size_differs(folders):
    theirs, committed = folders
    Image.new("RGB", (200, 201)).save(theirs / "figA" / "img.png")
    assert _report(theirs, committed, "figA").status == "DIFFERS"


@pytest.mark.parametrize(
    ("relative", "status"), [(1e-7, "MATCH"), (1e-5, "MATCH"), (1e-3, "DIFFERS"), (1e-2, "DIFFERS")]
)
def test_json_numbers_match_within_the_relative_bound(folders, relative, status):
    theirs, committed = folders
    path = theirs / "figA" / "result.json"
    result = json.loads(path.read_text())
    result["score"] *= 1 + relative
    path.write_text(json.dumps(result))
    assert _statuses(theirs, committed)["figA"] == status
    # the same in the real figure's result.json: the kept activation (711.13...)
    path = theirs / "fig1" / "result.json"
    result = json.loads(path.read_text())
    result["kept"]["value"] *= 1 + relative
    path.write_text(json.dumps(result))
    assert _statuses(theirs, committed)["fig1"] == status


def test_json_structure_strings_and_booleans_must_be_equal(folders):
    theirs, committed = folders
    path = theirs / "figA" / "result.json"
    original = json.loads(path.read_text())
    for changed in (
        {"ok": False},
        {"label": "tiger p=0.9912"},
        {"curve": [1.5, 0.0]},
        {"extra": 1},
        {"n": 8},
    ):
        path.write_text(json.dumps({**original, **changed}))
        assert _report(theirs, committed, "figA").status == "DIFFERS", changed
    # a printed number that rounds the other way (one unit in its last digit) matches
    path.write_text(json.dumps({**original, "label": "tabby p=0.9913"}))
    assert _report(theirs, committed, "figA").status == "MATCH"
    path.write_text(json.dumps({**original, "label": "tabby p=0.9915"}))
    assert _report(theirs, committed, "figA").status == "DIFFERS"


def test_other_code_or_versions_are_said_once_and_do_not_hide_the_results(folders):
    theirs, committed = folders
    path = theirs / "fig1" / "result.json"
    result = json.loads(path.read_text())
    result["provenance"]["code_commit"] = "0" * 40
    result["provenance"]["versions"]["torch"] = "0.0"
    path.write_text(json.dumps(result))
    report = _report(theirs, committed, "fig1")
    assert report.status == "MATCH" and report.worst.ratio == 0 and not report.failures
    assert report.notes == ["made by other code or versions (provenance): code_commit, versions/torch"]
    strict = compare.compare_figure(
        "fig1", theirs, committed, compare.Bounds(), compare.LOCAL_DATA, strict_provenance=True
    )
    assert strict.status == "DIFFERS" and strict.failures == report.notes
    result["kept"]["value"] *= 1.01
    path.write_text(json.dumps(result))
    report = _report(theirs, committed, "fig1")
    assert report.worst.where == "result.json/kept/value" and len(report.failures) == 1
    assert report.status == "DIFFERS" and report.notes


def test_markdown_tables_are_compared_as_their_numbers(folders):
    theirs, committed = folders
    table = theirs / "figA" / "table.md"
    for text, status in (
        ("| right eye | 0.1858 ± 0.0093 |", "MATCH"),  # last digit rounded the other way
        ("| right eye | 0.1857 ± 0.0092 |", "MATCH"),
        ("| right eye | 0.1860 ± 0.0093 |", "DIFFERS"),  # 3 units in the last digit
        ("| left eye | 0.1857 ± 0.0093 |", "DIFFERS"),
    ):
        table.write_text(f"| occlusion | Delta |\n|---|---|\n{text}\n")
        assert _report(theirs, committed, "figA").status == status, text


def test_arrays_match_relative_to_their_scale_and_integers_exactly(folders):
    theirs, committed = folders
    with np.load(committed / "figA" / "data.npz") as data:
        maps, idx = data["maps"], data["idx"]
    scale = np.abs(maps).max()
    for noise, status in ((1e-6, "MATCH"), (1e-3, "DIFFERS")):
        np.savez(theirs / "figA" / "data.npz", maps=maps + np.float32(noise * scale), idx=idx)
        assert _report(theirs, committed, "figA").status == status, noise
    np.savez(theirs / "figA" / "data.npz", maps=maps, idx=idx + np.eye(1, 5, 2, dtype=idx.dtype)[0])
    report = _report(theirs, committed, "figA")
    assert report.status == "DIFFERS" and "1 of 5" in report.worst.detail
    np.savez(theirs / "figA" / "data.npz", maps=maps)
    assert _report(theirs, committed, "figA").status == "DIFFERS"
    # near-ties of max-pooling switches taken the other way: a few in 50,176 match, 1% differ
    with np.load(committed / "fig1" / "fig1_data.npz") as data:
        arrays = dict(data)
    counts = arrays["switch_count"]
    assert counts.dtype.kind == "i" and counts.size == 224 * 224
    for changed, status in ((2, "MATCH"), (502, "DIFFERS")):
        flipped = counts.copy().reshape(-1)
        flipped[:changed] += 1
        np.savez_compressed(
            theirs / "fig1" / "fig1_data.npz", **{**arrays, "switch_count": flipped.reshape(counts.shape)}
        )
        assert _report(theirs, committed, "fig1").status == status, changed


def test_other_files_must_be_byte_equal_and_out_labels_read_as_results(folders):
    theirs, committed = folders
    (theirs / "figA" / ".hydra" / "hydra.yaml").write_text("hydra:\n  run:\n    dir: <out>/figA\n")
    assert _report(theirs, committed, "figA").status == "MATCH"
    (theirs / "figA" / "notes.bin").write_bytes(b"\x00\x02")
    assert _report(theirs, committed, "figA").status == "DIFFERS"


def test_missing_files_and_figures_are_reported(folders):
    theirs, committed = folders
    (theirs / "figA" / "img.png").unlink()
    shutil.rmtree(theirs / "fig1")
    (theirs / "figA" / "new.txt").write_text("only here\n")
    done = _run(str(theirs), str(committed))
    assert done.returncode == 1
    rows = _rows(done.stdout)
    assert rows["figA"] == "MISSING" and rows["fig1"] == "MISSING" and rows["MANIFEST"] == "MATCH"
    assert "missing: img.png" in done.stdout and "only in <theirs>: new.txt" in done.stdout
    assert "1 of 3 match" in done.stdout


def test_a_figure_only_in_theirs_differs_and_local_data_is_compared_on_request(folders):
    theirs, committed = folders
    shutil.copytree(theirs / "figA", theirs / "figB")
    np.savez(theirs / "figA" / "images.npz", x=np.zeros(3))  # git-ignored local data, one side
    statuses = _statuses(theirs, committed)
    assert statuses["figB"] == "DIFFERS" and statuses["figA"] == "MATCH"
    np.savez(committed / "figA" / "images.npz", x=np.ones(3))
    assert _statuses(theirs, committed)["figA"] == "MATCH"
    reports = compare.compare_results(theirs, committed, compare.Bounds(), ["figA"], local_data=True)
    assert reports[0].status == "DIFFERS" and reports[0].worst.where == "images.npz:x"
    shutil.rmtree(theirs / "figB")
    assert _run(str(theirs), str(committed)).returncode == 0
    assert _run(str(theirs), str(committed), "--local-data").returncode == 1


def test_exit_codes_and_errors_name_the_argument(folders, tmp_path):
    theirs, committed = folders
    (theirs / "figA" / "notes.bin").write_bytes(b"\x00\x02")
    assert _run(str(theirs), str(committed)).returncode == 1
    assert _run(str(theirs), str(committed), "--only", "fig1").returncode == 0
    missing = tmp_path / "nowhere"
    done = _run(str(missing), str(committed))
    assert done.returncode == 2 and f"error: <theirs> ({missing}) does not exist" in done.stderr
    (tmp_path / "plain").mkdir()
    done = _run(str(theirs), str(tmp_path / "plain"))
    assert done.returncode == 2 and "<committed>" in done.stderr and "is not a results folder" in done.stderr
    done = _run(str(theirs), str(committed), "--only", "figZ")
    assert done.returncode == 2 and "--only" in done.stderr and "figZ" in done.stderr
    done = _run(str(theirs), str(committed), "--pixel-fraction", "-1")
    assert done.returncode == 2 and "--pixel-fraction must be a finite number > 0" in done.stderr
    assert "--pixel-levels" in _run("--help").stdout


def test_local_data_names_are_those_git_ignores_under_results():
    names = [f"results/fig2/{n}" for n in sorted(compare.LOCAL_DATA)]
    names += [f"results/fig2/{n}" for n in sorted(compare.VOLATILE_NAMES) if n != "RUNS.json"]
    names += ["results/RUNS.json", "results/fig2/fig2.log", "results/fig2/partial/x.pt", "results/.staging/a"]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=REPO_ROOT,
        input="\n".join(names) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sorted(done.stdout.split()) == sorted(names)
