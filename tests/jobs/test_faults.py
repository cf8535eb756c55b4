"""A disk that fills up in the middle of a job: what was finished stays, the job says why it
stopped, and a rerun resumes.

The full disk is simulated at the operating system's boundary: `os.fsync` raises ENOSPC ("No space
left on device") for the second checkpoint file of the saliency job, as a real full disk does when
the data reach it. Nothing of the job itself is replaced.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from conftest import without_seconds

from deconvnet.jobs import saliency as sal
from deconvnet.jobs.folder import (
    CONFIG_FILE,
    PARTIAL_FOLDER,
    RESULT_FILE,
    JobFolder,
    failure_marked,
    write_json,
    write_yaml,
)

RUN = {
    "model": "alexnet",
    "weights": "random",
    "seed": 0,
    "progress": False,
    "images": ["cat"],
    "methods": ["gradient", "guided", "deconvnet", "gradcam"],
}


def fill_the_disk_at(monkeypatch: pytest.MonkeyPatch, folder: str, nth: int) -> list[str]:
    """From the `nth` file synced under a folder named `folder` on, os.fsync raises ENOSPC;
    returns the list of the files synced there (it grows as the job runs)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if f"/{folder}/" in path:
            synced.append(path)
            if len(synced) >= nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def file_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc to name synced files")
def test_a_full_disk_mid_job_keeps_what_was_finished_and_a_rerun_resumes(tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    sal.run_saliency(clean, **RUN)  # the same job with room on the disk: the reference bytes
    out = tmp_path / "out"
    fill_the_disk_at(monkeypatch, PARTIAL_FOLDER, nth=2)
    with pytest.raises(OSError) as stopped:
        sal.run_saliency(out, **RUN)
    assert stopped.value.errno == errno.ENOSPC
    monkeypatch.undo()

    result = json.loads((out / RESULT_FILE).read_text())
    assert result["status"] == "failed"
    assert "No space left on device" in result["error"]
    kept = file_bytes(out)
    checkpoints = sorted(k for k in kept if k.startswith(PARTIAL_FOLDER + "/"))
    assert checkpoints == [f"{PARTIAL_FOLDER}/cat__gradient.npz"]  # the first: whole; no temp file
    assert not [k for k in kept if k.endswith(".tmp")]
    finished = [k for k in kept if k.endswith(".png")]
    assert "cat__gradient.png" in finished
    reference = file_bytes(clean)
    for name in finished:  # every finished file as a run with room on the disk wrote it
        assert kept[name] == reference[name], name

    computed: list[str] = []
    real_cell = sal.explain_cell
    monkeypatch.setattr(sal, "explain_cell", lambda *a, **k: computed.append(a[3]) or real_cell(*a, **k))
    sal.run_saliency(out, **RUN)
    assert computed == ["guided", "deconvnet", "gradcam"]  # the finished cell was not redone
    resumed = file_bytes(out)
    made, want = (without_seconds(json.loads(r[RESULT_FILE])) for r in (resumed, reference))
    assert made.pop("provenance") and want.pop("provenance")  # the time and process differ
    assert made == want
    assert not (out / PARTIAL_FOLDER).exists()  # finished: the checkpoints are gone
    for name in [k for k in reference if k.endswith((".png", ".npz"))]:
        assert resumed[name] == reference[name], name


def test_when_even_the_failure_cannot_be_written_the_jobs_own_error_is_raised(tmp_path, monkeypatch, caplog):
    """The disk stays full: result.json keeps its last content, a warning names the file, and
    the error that stopped the job (not the second one) reaches the caller."""
    folder = JobFolder(tmp_path / "job")
    with pytest.raises(RuntimeError, match="the job's own error"):
        with folder:
            folder.start({"k": 1})
            folder.write_result({"status": "running", "done": 1})
            fill_the_disk_at(monkeypatch, "job", nth=1)
            raise RuntimeError("the job's own error")
    monkeypatch.undo()
    assert json.loads(folder.file(RESULT_FILE).read_text()) == {"status": "running", "done": 1}
    assert f"could not record the failure in {folder.file(RESULT_FILE)}" in caplog.text


def test_every_entry_point_marks_a_job_that_failed_after_it_began(tmp_path):
    """`failure_marked` (around every registered job in experiments/common.py): a job that
    raised after writing its config.yaml says so in result.json, keeping what it had written; a
    job that stopped before (a folder holding another job's files) leaves it as it was."""
    began = tmp_path / "began"
    with pytest.raises(OSError, match="No space left"):
        with failure_marked(began):
            write_yaml(began / CONFIG_FILE, {"k": 1})
            write_json(began / RESULT_FILE, {"status": "running", "cells": 3})
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    result = json.loads((began / RESULT_FILE).read_text())
    assert result == {"status": "failed", "cells": 3, "error": "OSError: [Errno 28] No space left on device"}

    other = tmp_path / "other"
    write_yaml(other / CONFIG_FILE, {"k": 2})  # another job's finished folder
    write_json(other / RESULT_FILE, {"status": "complete"})
    files = file_bytes(other)
    with pytest.raises(ValueError, match="holds the files of another job"):
        with failure_marked(other):
            raise ValueError("out: holds the files of another job")
    assert file_bytes(other) == files

    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        with failure_marked(interrupted):
            write_yaml(interrupted / CONFIG_FILE, {"k": 3})
            raise KeyboardInterrupt
    assert json.loads((interrupted / RESULT_FILE).read_text()) == {"status": "interrupted"}
