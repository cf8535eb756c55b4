"""The scan at scale: shards and their merge, resuming after a kill, decode failures, job folders.

References: a brute force over every image's own forward pass (each image's per-channel maximum,
sorted by value then image number), and one uninterrupted scan over the same images.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import deconvnet
from deconvnet.analysis.scan import TopK, load_topk, merge_scans, scan_topk
from deconvnet.core.architecture import stage as stage_of
from deconvnet.data.datasets import NumberedBatch
from deconvnet.data.loader import ScanLoader
from deconvnet.data.paths import REPO_ROOT
from deconvnet.jobs.data_config import check_data, shard_range
from deconvnet.jobs.fig2 import run_fig2
from deconvnet.jobs.folder import JobLock, job_status, lock_held
from deconvnet.jobs.scan import load_scan, merge_scan_jobs, run_scan

FIELDS = ("values", "image", "y", "x")
SAMPLES = {"kind": "samples", "photos": ["chelsea", "coffee", "astronaut"], "size": 72, "limit": 14}
TINY_SCAN = dict(
    model="alexnet", weights="random", seed=0, data=SAMPLES, stages=[1, 5], k=3, batch_size=2, progress=False
)


def _images(count: int, seed: int = 0, size: int = 67) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _equal(a: dict[int, TopK], b: dict[int, TopK]) -> bool:
    return (
        sorted(a) == sorted(b)
        and all(torch.equal(a[s][f], b[s][f]) for s in a for f in FIELDS)
        and all(a[s].images_scanned == b[s].images_scanned for s in a)
    )


def _brute_force(
    model, images: torch.Tensor, stage: int, k: int, batch: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, image) [C, k]: the images through features in consecutive batches of `batch` (the
    scan's batches: the same convolution shapes, so the same values bit for bit on every CPU;
    another batch shape may round differently), each image's per-channel maximum; sorted by value
    (descending), ties to the lower image number."""
    index = stage_of(model, stage).index
    with torch.no_grad():
        maxima = torch.cat(
            [model.features[: index + 1](part).flatten(2).max(2).values for part in images.split(batch)]
        )  # [N, C]
    rows_v, rows_i = [], []
    for c in range(maxima.shape[1]):
        order = sorted(range(len(images)), key=lambda n: (-float(maxima[n, c]), n))[:k]
        rows_v.append(maxima[order, c])
        rows_i.append(torch.tensor(order))
    return torch.stack(rows_v), torch.stack(rows_i)


# ------------------------------------------------------------------------------ shards and merge


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_shard_range_splits_every_image_once_in_whole_batches(batch_size):
    for images in (0, 1, 7, 14, 50_000):
        for shards in (1, 3, 4, 7):
            ranges = [shard_range(images, i, shards, batch_size) for i in range(shards)]
            assert ranges[0][0] == 0 and ranges[-1][1] == images
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            assert all(a % batch_size == 0 for a, _ in ranges)  # the unsharded scan's batches
            counts = [-(-(b - a) // batch_size) for a, b in ranges]
            assert max(counts) - min(counts) <= 1


def test_first_image_numbers_a_shard_from_its_offset(alexnet_float64):
    images = _images(5).double()
    whole = scan_topk(alexnet_float64, [images], k=2, stages=(1,), progress=False)[1]
    shifted = scan_topk(alexnet_float64, [images], k=2, stages=(1,), first_image=100, progress=False)[1]
    assert torch.equal(shifted.image, whole.image + 100) and torch.equal(shifted.values, whole.values)
    assert (shifted.first_image, shifted.end, shifted.requested_k) == (100, 105, 2)


def test_merged_shards_equal_one_scan_and_brute_force_with_a_tie_across_shards(alexnet_float64):
    images = _images(10, seed=3).double()
    images[7] = images[2]  # the same picture in both shards: equal values, the lower number wins
    one = scan_topk(
        alexnet_float64, [images[i : i + 1] for i in range(10)], k=4, stages=(1, 5), progress=False
    )
    left = scan_topk(
        alexnet_float64, [images[i : i + 1] for i in range(5)], k=4, stages=(1, 5), progress=False
    )
    right = scan_topk(
        alexnet_float64,
        [images[i : i + 1] for i in range(5, 10)],
        k=4,
        stages=(1, 5),
        first_image=5,
        progress=False,
    )
    for merged in (merge_scans([left, right]), merge_scans([right, left])):
        assert _equal(merged, one)
        for s in (1, 5):
            values, image = _brute_force(alexnet_float64, images, s, 4)
            assert torch.equal(merged[s].image, image) and torch.equal(merged[s].values, values)
    # the tie really happens and goes to image 2: both in some top-4 lists, 2 always first
    both = [row.tolist() for row in one[1].image if 2 in row and 7 in row]
    assert both and all(row.index(2) < row.index(7) for row in both)


def test_merge_breaks_a_tie_at_the_cut_by_image_number():
    def shard(values, images, first, end):
        v = torch.tensor([values], dtype=torch.float32)
        i = torch.tensor([images])
        return {1: TopK(v, i, torch.zeros_like(i), torch.zeros_like(i), end - first, 2, first, end)}

    late = shard([5.0, 3.0], [7, 8], 5, 10)
    early = shard([3.0, 1.0], [4, 0], 0, 5)
    merged = merge_scans([late, early])[1]
    assert merged.values.tolist() == [[5.0, 3.0]] and merged.image.tolist() == [[7, 4]]
    assert (merged.images_scanned, merged.first_image, merged.end) == (10, 0, 10)


def test_merge_refuses_what_is_not_one_scan():
    one = {
        1: TopK(
            torch.ones(2, 1),
            torch.zeros(2, 1, dtype=torch.int64),
            torch.zeros(2, 1, dtype=torch.int64),
            torch.zeros(2, 1, dtype=torch.int64),
            3,
            1,
            0,
            3,
        )
    }
    with pytest.raises(ValueError, match=r"shards overlap: images \[0, 3\) and \[0, 3\)"):
        merge_scans([one, one])
    with pytest.raises(ValueError, match="non-empty list"):
        merge_scans([])
    other_k = {1: TopK(*(one[1][f] for f in FIELDS), 3, 2, 3, 6)}
    with pytest.raises(ValueError, match="2 channels, k=1 against 2 channels, k=2"):
        merge_scans([one, other_k])


def test_numbered_batches_leave_out_images_and_keep_numbers(alexnet_float64):
    images = _images(6, seed=5).double()
    keep = [0, 2, 4, 5]  # images 1 and 3 failed to decode
    numbered = [
        NumberedBatch(images[[0, 2]], torch.tensor([0, 2]), 3),
        NumberedBatch(images[:0], torch.tensor([], dtype=torch.int64), 4),
        NumberedBatch(images[[4, 5]], torch.tensor([4, 5]), 6),
    ]
    got = scan_topk(alexnet_float64, numbered, k=3, stages=(2,), progress=False)[2]
    values, order = _brute_force(alexnet_float64, images[keep], 2, 3, batch=2)  # [0, 2], [4, 5]
    assert torch.equal(got.image, torch.tensor(keep)[order]) and torch.equal(got.values, values)
    assert (got.images_scanned, got.end) == (4, 6)
    bad = [NumberedBatch(images[:2], torch.tensor([1, 0]), 2)]
    with pytest.raises(ValueError, match="batch 0: image numbers must increase"):
        scan_topk(alexnet_float64, bad, k=1, stages=(1,), progress=False)
    with pytest.raises(ValueError, match="first_image: expected an int >= 0"):
        scan_topk(alexnet_float64, [images], k=1, stages=(1,), first_image=-1, progress=False)


def test_a_scan_continued_from_its_checkpoint_equals_the_uninterrupted_one(alexnet_float64):
    images = _images(9, seed=7).double()
    batches = [images[i : i + 3] for i in range(0, 9, 3)]
    whole = scan_topk(alexnet_float64, batches, k=4, stages=(1, 5), progress=False)
    part = scan_topk(alexnet_float64, batches[:2], k=4, stages=(1, 5), progress=False)
    rest = scan_topk(
        alexnet_float64, batches[2:], k=4, stages=(1, 5), first_image=6, initial=part, progress=False
    )
    assert _equal(rest, whole)
    with pytest.raises(ValueError, match="initial\\[1\\]: expected a TopK of k=4 covering images below"):
        scan_topk(
            alexnet_float64, batches[2:], k=4, stages=(1, 5), first_image=3, initial=part, progress=False
        )


# ------------------------------------------------------------------------------ decode failures


def _jpeg_folder(root: Path, count: int, truncated: tuple[int, ...]) -> Path:
    from deconvnet.data.datasets import SampleGallery

    gallery = SampleGallery(size=80, photos=["chelsea", "coffee"], flips=False)
    root.mkdir(parents=True)
    for i in range(count):
        gallery.pil_image(i % len(gallery)).save(root / f"{i:03d}.jpg", quality=90)
    for i in truncated:  # passes PIL's header check, fails when decoded
        data = (root / f"{i:03d}.jpg").read_bytes()
        (root / f"{i:03d}.jpg").write_bytes(data[: len(data) // 2])
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_jpegs_are_skipped_counted_and_named(tmp_path, workers):
    root = _jpeg_folder(tmp_path / "images", 8, truncated=(0, 5))
    data = {"kind": "folder", "root": str(root), "workers": workers}
    result = run_scan(tmp_path / "job", **{**TINY_SCAN, "data": data})
    assert result["status"] == "complete" and result["images_scanned"] == 6
    named = result["decode_failures"]["images"]
    assert [(f["image"], f["id"]) for f in named] == [(0, "000.jpg"), (5, "005.jpg")]
    assert all("truncated" in f["reason"] for f in named)
    topk = load_topk(tmp_path / "job" / "topk.pt").result
    assert not set(topk[1].image.flatten().tolist()) & {0, 5}
    # the same scan over only the good files, renumbered: the same values, bit for bit. In batches
    # of 1 both jobs run every image through the same [1, 3, H, W] convolutions; in batches of 2
    # they would not ([1], [2, 3], [4], [6, 7] against [1, 2], [3, 4], [6, 7]), and a CPU's
    # kernels may round differently for another batch shape (float32: ~1e-6 of the values)
    one_by_one = {**TINY_SCAN, "batch_size": 1}
    skipped = run_scan(tmp_path / "skipped", **{**one_by_one, "data": data})
    assert skipped["decode_failures"]["count"] == 2
    topk = load_topk(tmp_path / "skipped" / "topk.pt").result
    good = tmp_path / "good"
    good.mkdir()
    for f in sorted(root.iterdir()):
        if f.name not in ("000.jpg", "005.jpg"):
            (good / f.name).write_bytes(f.read_bytes())
    clean = run_scan(tmp_path / "clean", **{**one_by_one, "data": {"kind": "folder", "root": str(good)}})
    assert clean["decode_failures"]["count"] == 0
    reference = load_topk(tmp_path / "clean" / "topk.pt").result
    renumber = torch.tensor([1, 2, 3, 4, 6, 7])
    for s in (1, 5):
        assert torch.equal(topk[s].values, reference[s].values)
        assert torch.equal(topk[s].image, renumber[reference[s].image])


def test_fig2_skips_a_truncated_first_image(tmp_path):
    root = _jpeg_folder(tmp_path / "images", 6, truncated=(0,))
    result = run_fig2(
        tmp_path / "job",
        model="alexnet",
        weights="random",
        stages=[1],
        channels_per_stage=2,
        k=2,
        progress=False,
        data={"kind": "folder", "root": str(root)},
    )
    assert result["status"] == "complete"
    assert result["decode_failures"]["count"] == 1
    assert result["decode_failures"]["images"][0]["id"] == "000.jpg"


def test_scan_loader_batches_in_order_with_numbers():
    class Items:
        ids = [f"i{n}" for n in range(7)]

        def __len__(self):
            return 7

        def __getitem__(self, n):
            if n == 3:
                raise OSError("broken")
            return torch.full((3, 2, 2), float(n)), self.ids[n]

    loader = ScanLoader(Items(), 3, start=1, stop=7)
    got = [(b.numbers.tolist(), b.images[:, 0, 0, 0].tolist(), b.end) for b in loader]
    assert got == [([1, 2], [1.0, 2.0], 4), ([4, 5, 6], [4.0, 5.0, 6.0], 7)]
    assert [(f.number, f.id, f.reason) for f in loader.failures] == [(3, "i3", "OSError: broken")]
    with pytest.raises(ValueError, match="start, stop: expected 0 <= start <= stop <= 7"):
        ScanLoader(Items(), 3, start=5, stop=9)


# ------------------------------------------------------------------------------ jobs and resume


def test_scan_job_shards_merged_equal_one_job(tmp_path):
    one = run_scan(tmp_path / "one", **TINY_SCAN)
    for shard in range(3):
        run_scan(
            tmp_path / "sweep" / str(shard),
            **{**TINY_SCAN, "data": {**SAMPLES, "shard": shard, "num_shards": 3}},
        )
    merged = merge_scan_jobs([tmp_path / "sweep"], tmp_path / "merged")
    assert merged["images_scanned"] == one["images_scanned"] == 14
    assert _equal(
        load_topk(tmp_path / "merged" / "topk.pt").result, load_topk(tmp_path / "one" / "topk.pt").result
    )
    with pytest.raises(ValueError, match=r"shard\(s\) \[2\] of 3 missing"):
        merge_scan_jobs([tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"], tmp_path / "m2")


def test_threads_are_set_while_scanning_recorded_per_shard_and_mixed_counts_warned(tmp_path, caplog):
    """On some CPUs (AVX2 kernels) a convolution's rounding depends on torch's thread count, so
    `threads` pins it for the scan; merge_scans warns when its shards ran with different counts."""
    seen: list[int] = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(torch.get_num_threads())
    )
    before = torch.get_num_threads()
    try:
        for shard, threads in enumerate((1, 2)):
            data = {**SAMPLES, "shard": shard, "num_shards": 2}
            run_scan(tmp_path / "sweep" / str(shard), **{**TINY_SCAN, "data": data}, threads=threads)
    finally:
        hook.remove()
    assert torch.get_num_threads() == before
    assert set(seen) == {1, 2}
    with caplog.at_level(logging.WARNING, logger="deconvnet"):
        merged = merge_scan_jobs([tmp_path / "sweep"], tmp_path / "merged")
    assert [s["threads"] for s in merged["shards"]] == [1, 2]
    assert "different thread counts" in caplog.text
    with pytest.raises(ValueError, match=r"threads: expected an int >= 1, got 0"):
        run_scan(tmp_path / "bad", **TINY_SCAN, threads=0)
    assert not (tmp_path / "bad").exists()


def test_a_finished_scan_is_not_redone_and_other_jobs_files_are_kept(tmp_path, monkeypatch):
    out = tmp_path / "job"
    first = run_scan(out, **TINY_SCAN)
    before = (out / "topk.pt").read_bytes()
    monkeypatch.setattr("deconvnet.analysis.scan.scan_topk", lambda *a, **k: pytest.fail("scanned again"))
    assert run_scan(out, **TINY_SCAN) == first
    assert (out / "topk.pt").read_bytes() == before
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="holds the files of another job"):
        run_scan(out, **{**TINY_SCAN, "k": 2})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


@pytest.mark.parametrize(
    "error,status", [(KeyboardInterrupt(), "interrupted"), (RuntimeError("disk full"), "failed")]
)
def test_a_scan_that_stops_says_why_in_result_json(tmp_path, monkeypatch, error, status):
    def stop(*args, **kwargs):
        raise error

    monkeypatch.setattr("deconvnet.analysis.scan.scan_topk", stop)
    with pytest.raises(type(error)):
        run_scan(tmp_path / "job", **TINY_SCAN)
    result = json.loads((tmp_path / "job" / "result.json").read_text())
    assert result["status"] == status and result["experiment"] == "scan"
    assert result.get("error") == (None if status == "interrupted" else "RuntimeError: disk full")


KILLER = textwrap.dedent("""
    import os, signal, sys
    from deconvnet.data.datasets import SampleGallery
    from deconvnet.jobs.scan import run_scan
    original = SampleGallery.__getitem__
    def dying(self, index):
        if index == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, index)
    SampleGallery.__getitem__ = dying
    run_scan(sys.argv[1], model="alexnet", weights="random", data={data!r}, stages=[1, 5], k=3,
             batch_size=2, checkpoint_every=4, progress=False)
""")


def test_a_scan_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    out = tmp_path / "job"
    script = KILLER.format(data=SAMPLES)
    done = subprocess.run(
        [sys.executable, "-c", script, str(out), "11"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert json.loads((out / "result.json").read_text())["status"] == "running"
    assert job_status(out) == "stale"  # nobody holds the folder any more
    checkpoint = load_topk(out / "checkpoint.pt", allow_incomplete=True).result
    assert checkpoint[1].end == 8  # the last multiple of 4 images before image 11 (batches of 2)
    resumed = run_scan(out, **{**TINY_SCAN, "checkpoint_every": 4})
    assert resumed["status"] == "complete" and resumed["resumed_from"] == 8
    assert not (out / "checkpoint.pt").exists()
    run_scan(tmp_path / "whole", **{**TINY_SCAN, "checkpoint_every": 4})
    assert (out / "topk.pt").read_bytes() == (tmp_path / "whole" / "topk.pt").read_bytes()


def test_job_lock_refuses_a_second_job_in_the_same_folder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, time
        from deconvnet.jobs.folder import JobLock
        with JobLock({str(tmp_path)!r}):
            print("held", flush=True)
            sys.stdin.readline()
    """),
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_held(tmp_path)
        with pytest.raises(ValueError, match=rf"another job \(pid {holder.pid} on .*\) is running in"):
            with JobLock(tmp_path):
                pass
    finally:
        holder.communicate("\n", timeout=30)
    assert not lock_held(tmp_path)
    with JobLock(tmp_path):
        assert lock_held(tmp_path)


def test_fig2_from_a_saved_scan_equals_fig2_scanning_itself(tmp_path):
    common = dict(
        model="alexnet",
        weights="random",
        data=SAMPLES,
        stages=[1, 5],
        channels_per_stage=2,
        k=2,
        progress=False,
        batch_size=2,
    )
    run_scan(tmp_path / "scan", **{**TINY_SCAN, "k": 3})  # k 3 >= 2: cut to the top 2
    saved = run_fig2(tmp_path / "from_scan", scan=tmp_path / "scan", **common)
    itself = run_fig2(tmp_path / "itself", **common)
    assert saved["channels"] == itself["channels"] and saved["scan_source"]
    for name in ("fig2.png", "fig2_stage1.png", "fig2_stage5.png", "tiles.npz"):
        assert (tmp_path / "from_scan" / name).read_bytes() == (tmp_path / "itself" / name).read_bytes()
    with pytest.raises(ValueError, match="scan: .* kept the top 3 per feature map; this job asks for k=4"):
        run_fig2(tmp_path / "bad_k", scan=tmp_path / "scan", **{**common, "k": 4})
    with pytest.raises(ValueError, match="scan: .* over another dataset"):
        run_fig2(
            tmp_path / "bad_data", scan=tmp_path / "scan", **{**common, "data": {**SAMPLES, "limit": 12}}
        )
    with pytest.raises(
        ValueError,
        match=r"scan: .* was made with alexnet \(random weights .*\(seed 0\)\), "
        r"this job uses alexnet \(random weights .*\(seed 1\)\)",
    ):
        run_fig2(tmp_path / "bad_seed", scan=tmp_path / "scan", seed=1, **common)
    with pytest.raises(FileNotFoundError, match="scan: no topk.pt"):
        load_scan(tmp_path / "nowhere")


def test_shards_are_for_the_scan_only():
    with pytest.raises(ValueError, match=r"data.shard: expected an int in 0..1 \(data.num_shards=2\)"):
        check_data({**SAMPLES, "shard": 2, "num_shards": 2})
    with pytest.raises(ValueError, match="data.num_shards: fig2 needs the whole dataset"):
        run_fig2(
            "/nonexistent/never-created", model="alexnet", weights="random", data={**SAMPLES, "num_shards": 2}
        )
    assert not os.path.exists("/nonexistent/never-created")


def test_package_exports_the_scan_contract():
    import inspect

    params = inspect.signature(deconvnet.scan_topk).parameters
    assert list(params)[:5] == ["model", "batches", "k", "stages", "first_image"]
    assert params["k"].default == 9 and params["stages"].default == (1, 2, 3, 4, 5)
    assert params["first_image"].default == 0
    assert deconvnet.merge_scans is merge_scans and deconvnet.scan_topk is scan_topk


# ------------------------------------------------------------------------------ the CLI


def _python(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


CLI_SCAN = [
    "model=alexnet",
    "model.weights=random",
    "data.photos=[chelsea,coffee,astronaut]",
    "data.size=72",
    "data.limit=14",
    "stages=[1,5]",
    "k=3",
    "batch_size=2",
    "progress=false",
    "threads=1",  # joblib's workers default to fewer threads than one job: pinned for bit-equality
]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launcher_sweep_of_two_shards_and_merge_equal_one_scan(tmp_path, launcher):
    sweep = _python(
        "-m",
        "experiments.scan",
        "-m",
        *CLI_SCAN,
        "data.shard=0,1",
        "data.num_shards=2",
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    _merged_equals_one(tmp_path, CLI_SCAN)
    shards = json.loads((tmp_path / "merged" / "result.json").read_text())["shards"]
    assert [s["images_scanned"] for s in shards] == [6, 8]  # 3 and 4 whole batches of 2
    assert [s["threads"] for s in shards] == [1, 1]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launcher_shards_decode_a_folder_with_dataloader_workers(tmp_path, launcher):
    """Each shard's DataLoader starts its own decoding processes inside the launcher's worker
    (loky replaces the default multiprocessing context there)."""
    root = _jpeg_folder(tmp_path / "images", 10, truncated=(7,))
    cli = [*CLI_SCAN[:2], "data=folder", f"data.root={root}", "data.workers=2", *CLI_SCAN[5:]]
    assert "threads=1" in cli
    sweep = _python(
        "-m",
        "experiments.scan",
        "-m",
        *cli,
        "data.shard=0,1",
        "data.num_shards=2",
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    merged = _merged_equals_one(tmp_path, cli)
    assert [(f["image"], f["id"]) for f in merged["decode_failures"]["images"]] == [(7, "007.jpg")]


def _merged_equals_one(tmp_path: Path, cli: list[str]) -> dict:
    """Merge the sweep in tmp_path/sweep, scan the same data in one job; assert equal topk.pt."""
    merge = _python(
        "-m",
        "experiments.merge_scans",
        f"inputs=[{tmp_path / 'sweep'}]",
        f"hydra.run.dir={tmp_path / 'merged'}",
        cwd=tmp_path,
    )
    assert merge.returncode == 0, merge.stderr[-3000:]
    one = _python("-m", "experiments.scan", *cli, f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    assert _equal(
        load_topk(tmp_path / "merged" / "topk.pt").result, load_topk(tmp_path / "one" / "topk.pt").result
    )
    return json.loads((tmp_path / "merged" / "result.json").read_text())


@pytest.mark.slow
def test_two_jobs_started_together_keep_separate_folders(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO_ROOT)}
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "experiments.scan", *CLI_SCAN],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for job in jobs:
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-3000:]
    folders = sorted(p.parent for p in (tmp_path / "outputs").glob("*/*/result.json"))
    assert len(folders) == 2
    for folder in folders:
        result = json.loads((folder / "result.json").read_text())
        assert result["status"] == "complete" and result["provenance"]["command"]
        assert (folder / "topk.pt").is_file() and (folder / "config.yaml").is_file()
    assert {json.loads((f / "result.json").read_text())["pid"] for f in folders} == {job.pid for job in jobs}


def test_every_experiment_config_gives_each_job_its_own_folder():
    from omegaconf import OmegaConf

    for path in sorted((REPO_ROOT / "conf").glob("*.yaml")):
        hydra = OmegaConf.load(path).get("hydra")
        assert hydra is not None, path.name
        for key in ("run", "sweep"):
            folder = OmegaConf.to_container(hydra)[key]["dir"]
            assert "${pid:}" in folder and "${now:" in folder, (path.name, key, folder)
