"""The atlas job, without a browser: what its pages show equals an independent scan, every page
parses and every link and image resolves, the same inputs give the same bytes, a killed build
resumes, a saved scan is reused, and bad input stops before anything is written.

Runs offline on random-initialised AlexNet (and every supported model once) with a few gallery images.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from conftest import ATLAS_DATA as TINY_DATA
from conftest import TINY_ATLAS as TINY
from PIL import Image

from deconvnet.analysis.scan import scan_topk
from deconvnet.data.models import MODELS, load_model
from deconvnet.jobs import atlas
from deconvnet.jobs import scan as scan_jobs
from deconvnet.jobs.atlas import record_path, render_atlas, run_atlas
from deconvnet.jobs.data_config import make_dataset
from deconvnet.jobs.folder import RESULT_FILE, job_status

VOLATILE = {RESULT_FILE, ".job.lock"}


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file of an atlas folder but result.json (timings) and the lock, by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in VOLATILE
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("atlas")
    run_atlas(folder, **TINY)
    return folder


class StrictPage(HTMLParser):
    """Parses a page, failing on a closing tag that does not match the open one; collects links."""

    VOID = {"meta", "img", "br", "input", "link", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.captions: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in self.VOID:
            self.open.append(tag)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "td" and "data-image" in attrs:
            self.captions.append(attrs)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def parse_page(path: Path) -> StrictPage:
    page = StrictPage()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.open == [], f"{path}: unclosed {page.open}"
    return page


def test_every_page_parses_and_every_link_and_image_resolves(built):
    pages = sorted(built.rglob("*.html"))
    assert {p.name for p in pages} >= {"index.html", "stage1.html", "stage1_by_firing.html", "stage5.html"}
    assert len([p for p in pages if p.parent.name.startswith("stage")]) == 6  # 3 channels x 2 stages
    for page in pages:
        parsed = parse_page(page)
        for target in parsed.links + parsed.images:
            url = urlparse(target)
            assert not url.scheme and not url.netloc, f"{page}: {target} leaves the atlas"
            assert (page.parent / unquote(url.path)).is_file(), f"{page}: {target} does not exist"


def test_channel_pages_show_an_independent_scans_top_k_in_order(built):
    net = load_model("alexnet", weights="random", seed=0)
    dataset, _ = make_dataset(TINY_DATA, net, progress=False)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    scan = scan_topk(net, [images], k=4, stages=[1, 5], progress=False)
    result = json.loads((built / RESULT_FILE).read_text())
    for s, channels in result["channels"].items():
        top = scan[int(s)]
        for c in channels:
            captions = parse_page(record_path(built, int(s), c).with_suffix(".html")).captions
            shown = [(int(t["data-image"]), int(t["data-y"]), int(t["data-x"])) for t in captions]
            assert shown == list(zip(top.image[c].tolist(), top.y[c].tolist(), top.x[c].tolist()))
            values = [float(t["data-value"]) for t in captions]
            assert values == pytest.approx(top.values[c].tolist(), rel=1e-5, abs=1e-6)


def test_a_rerun_gives_the_same_bytes_and_pages_redraw_from_the_files(built, tmp_path):
    run_atlas(tmp_path, **TINY)
    assert files_of(tmp_path) == files_of(built)
    before = files_of(tmp_path)
    drawn = render_atlas(tmp_path)
    assert len(drawn) == 6 + 4 + 1 and files_of(tmp_path) == before
    again = run_atlas(tmp_path, **TINY)  # a finished atlas is not redone
    assert again["channels_built_in_this_run"] == 6 and files_of(tmp_path) == before


def test_a_killed_build_resumes_with_the_channels_it_had_not_finished(built, tmp_path, monkeypatch):
    original, written = atlas.write_channel, []

    def killed_inside_a_group(job, meta, tiles, mi, optimized):
        if len(written) == 4:  # stage 1 done (groups of 2 and 1), stage 5's first group half written
            raise KeyboardInterrupt
        written.append((tiles.stage, int(tiles.channels[mi])))
        original(job, meta, tiles, mi, optimized)

    monkeypatch.setattr(atlas, "write_channel", killed_inside_a_group)
    with pytest.raises(KeyboardInterrupt):
        run_atlas(tmp_path, **TINY)
    assert job_status(tmp_path) == "interrupted"
    assert len(list(tmp_path.rglob("channel*.json"))) == 4
    monkeypatch.setattr(atlas, "write_channel", original)
    result = run_atlas(tmp_path, **TINY)
    assert result["status"] == "complete" and result["channels_built_in_this_run"] == 2
    assert files_of(tmp_path) == files_of(built)  # the half-done group was computed whole again


def test_a_saved_scan_is_used_instead_of_scanning(built, tmp_path, monkeypatch):
    monkeypatch.setattr(scan_jobs, "scan_dataset", lambda *a, **k: pytest.fail("scanned again"))
    result = run_atlas(tmp_path, **TINY, scan=built)
    assert result["scan_source"] == str(built.resolve())
    same = {n: b for n, b in files_of(built).items() if n.startswith("stage")}
    assert {n: b for n, b in files_of(tmp_path).items() if n.startswith("stage")} == same


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stages": [1, 6]}, r"stage"),
        ({"channels": [70]}, r"channels\[1\]: channel 70 is outside layer 1"),
        ({"rules": ["deconvnet", "lrp"]}, r"rules: unknown rule 'lrp'"),
        ({"tile_px": 4}, r"tile_px: expected an int >= 8"),
        ({"optimize": {"size": 64, "step": 3}}, r"optimize: unknown key\(s\) \['step'\]"),
        ({"optimize": {"size": 8}}, r"optimize.size: expected an int >= 16"),
        ({"group_size": 0}, r"group_size: expected an int >= 1"),
        ({"data": {**TINY_DATA, "num_shards": 2}}, r"atlas"),
    ],
)
def test_bad_values_stop_before_anything_is_written(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        run_atlas(tmp_path / "new", **{**TINY, **change})
    left = {p.name for p in (tmp_path / "new").rglob("*")} if (tmp_path / "new").exists() else set()
    assert left <= {".job.lock"}  # the folder's lock, released


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seed": 1}, r"scan: .* was made with alexnet \(random.*seed 0.*this job uses alexnet"),
        ({"data": {**TINY_DATA, "limit": 9}}, r"scan: .* was made over another dataset"),
    ],
)
def test_a_scan_of_another_model_weights_or_dataset_is_refused(built, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        run_atlas(tmp_path, **{**TINY, **change}, scan=built)
    assert not (tmp_path / RESULT_FILE).exists()


def test_a_folder_holding_another_jobs_files_is_left_as_it_was(built, tmp_path):
    other = {"experiment": "fig2", "status": "complete", "fingerprint": {}}
    (tmp_path / RESULT_FILE).write_text(json.dumps(other))
    (tmp_path / "fig2.png").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="holds the files of another job"):
        run_atlas(tmp_path, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".job.lock") == ["fig2.png", RESULT_FILE]
    assert json.loads((tmp_path / RESULT_FILE).read_text()) == other
    # a finished atlas asked for with another config is refused too, its channels kept
    with pytest.raises(ValueError, match="holds the files of another job"):
        run_atlas(built, **{**TINY, "tile_px": 40})
    assert json.loads((built / RESULT_FILE).read_text())["status"] == "complete"


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_supported_model_gets_an_atlas_of_all_five_stages(model, tmp_path):
    weights = "imagenet" if model == "efficientnet_lite0" else "random"
    data = {"kind": "samples", "photos": ["chelsea"], "size": 128, "limit": 3}
    result = run_atlas(
        tmp_path,
        model=model,
        weights=weights,
        data=data,
        channels=1,
        k=2,
        tile_px=16,
        optimize={"size": 64, "steps": 1},
        progress=False,
    )
    assert result["status"] == "complete" and sorted(result["channels"]) == ["1", "2", "3", "4", "5"]
    for s, (c,) in result["channels"].items():
        record = json.loads(record_path(tmp_path, int(s), c).read_text())
        assert len(record["top"]) == 2 and record["firing"]["images"] == 3
        assert (tmp_path / f"stage{s}" / record["files"]["sprite"]).is_file()


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


@pytest.mark.slow
def test_two_worker_processes_build_the_same_atlas(built, tmp_path):
    result = run_atlas(tmp_path, **TINY, workers=2)
    assert result["channels_built_in_this_run"] == 6
    ours, serial = files_of(tmp_path), files_of(built)
    assert ours.keys() == serial.keys()
    for name in ours:
        if name.endswith(("_plain.png", "_regularized.png")):
            # gradient ascent amplifies the last bit a convolution rounds differently with 1 thread
            # (each worker's share) than with 2: the images are made, not compared
            assert Image.open(tmp_path / name).size == Image.open(built / name).size
        elif name.endswith(".png"):  # tiles: the same up to rounding
            assert np.abs(_pixels(tmp_path / name) - _pixels(built / name)).max() <= 1, name
        else:
            assert ours[name] == serial[name], name
