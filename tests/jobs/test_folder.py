"""JobFolder, the one bookkeeping every job writes through: config first, checkpoints kept only for
the same config, atomic files, a failure status when the work raises, the lock held and released."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from deconvnet.jobs.folder import CONFIG_FILE, PARTIAL_FOLDER, RESULT_FILE, JobFolder, job_status, lock_held


def test_start_writes_the_config_and_keeps_checkpoints_only_for_the_same_config(tmp_path):
    config = {"model": {"name": "alexnet"}, "steps": [1, 2]}
    with JobFolder(tmp_path) as folder:
        done = folder.start(config)
        assert yaml.safe_load((tmp_path / CONFIG_FILE).read_text()) == config
        done.save("cell", {"images": np.arange(6, dtype=np.float32)}, {"key": "cell"})
    with JobFolder(tmp_path) as folder:  # a rerun with the same config resumes
        again = folder.start(config)
        assert again.load("cell") == {"key": "cell"}
        np.testing.assert_array_equal(again.arrays("cell")["images"], np.arange(6, dtype=np.float32))
    with JobFolder(tmp_path) as folder:  # another config starts afresh
        fresh = folder.start({**config, "steps": [3]})
        assert fresh.load("cell") is None and not (tmp_path / PARTIAL_FOLDER).exists()


def test_files_are_written_whole_and_no_temp_file_is_left(tmp_path):
    data = {"a": [1, 2.5, None], "b": "x"}
    with JobFolder(tmp_path) as folder:
        path = folder.write_result(data)
    assert path == tmp_path / RESULT_FILE
    assert path.read_text() == json.dumps(data, indent=2) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".job.lock", RESULT_FILE]


@pytest.mark.parametrize(
    "error, status", [(KeyboardInterrupt(), "interrupted"), (RuntimeError("boom"), "failed")]
)
def test_failing_work_leaves_its_status_and_the_error_goes_on(tmp_path, error, status):
    with JobFolder(tmp_path) as folder:
        folder.write_result({"experiment": "x", "status": "running"})
        assert folder.status() == "running" and lock_held(tmp_path)
        with pytest.raises(type(error)), folder.failing({"experiment": "x", "status": "running"}):
            raise error
    saved = json.loads((tmp_path / RESULT_FILE).read_text())
    assert saved["status"] == status and job_status(tmp_path) == status
    assert saved.get("error") == (None if status == "interrupted" else "RuntimeError: boom")
    assert not lock_held(tmp_path)  # released on the way out


def test_a_running_status_without_its_job_reads_stale(tmp_path):
    with JobFolder(tmp_path) as folder:
        folder.write_result({"status": "running"})
        assert job_status(tmp_path) == "running"
    assert job_status(tmp_path) == "stale"
