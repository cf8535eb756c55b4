"""The README's main job end to end: regenerate every figure (tiny settings), then redraw them
from the saved data alone and get the same pixels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.slow
def test_regenerate_writes_every_figure_and_render_redraws_them(tmp_path):
    out = tmp_path / "results"
    subprocess.run([sys.executable, "scripts/regenerate.py", "--quick", "--out", str(out)],
                   cwd=REPO, check=True, capture_output=True, text=True, timeout=900)
    manifest = json.loads((out / "MANIFEST.json").read_text())
    names = [f["figure"] for f in manifest["figures"]]
    assert names == ["fig1", "fig2", "fig2_alexnet", "reconstruct"]
    for entry in manifest["figures"]:
        assert entry["command"].startswith("python -m experiments.")
        assert entry["weights"]["weights"] == "random" and entry["pretrained"] is False
        assert entry["figures"] and all((out / f).is_file() for f in entry["figures"])
    table = (out / "MANIFEST.md").read_text()
    assert table.count("NOT pretrained") == 4
    assert not (out / ".staging").exists()

    # the figures (not the reconstruction PNGs that the overview is drawn from)
    figures = [p for p in out.glob("*/*.png") if p.name.startswith("fig") or p.name == "overview.png"]
    before = {p: _pixels(p) for p in figures}
    assert len(before) >= 6
    for p in before:
        p.unlink()
    jobs = [str(out / n) for n in names]
    subprocess.run([sys.executable, "scripts/render.py", *jobs], cwd=REPO, check=True,
                   capture_output=True, text=True, timeout=600)
    for p, pixels in before.items():
        assert np.array_equal(_pixels(p), pixels), p


def test_render_refuses_a_folder_without_results(tmp_path):
    done = subprocess.run([sys.executable, "scripts/render.py", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"error: no result.json in {tmp_path}" in done.stderr
