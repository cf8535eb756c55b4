"""What every job folder gets, whoever writes it: the device check, provenance, JSON / YAML files.

Library functions that write a job folder (e.g. `deconvnet.jobs.saliency.run_saliency`) use these;
`experiments.common` re-exports them for the Hydra entry points.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deconvnet.data.paths import REPO_ROOT
from deconvnet.jobs.versions import versions

# a provenance record (JSON) that `provenance()` returns instead of looking at the tree itself
PROVENANCE_ENV = "DECONVNET_PROVENANCE"


def _git(*args: str, cwd: Path = REPO_ROOT) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def code_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The state of the code, `results/` and README.md left out: {'code_commit', 'code_dirty'}
    (None without git).

    code_commit: the last commit that touched anything but results/ and README.md (so committing
    regenerated results, or the README that reports them, does not change it); code_dirty: tracked
    files other than those differ from HEAD.
    """
    outside = ["--", ".", ":(exclude)results", ":(exclude)README.md"]
    status = _git("status", "--porcelain", "--untracked-files=no", *outside, cwd=root)
    return {
        "code_commit": _git("log", "-1", "--format=%H", *outside, cwd=root) or None,
        "code_dirty": None if status is None else bool(status),
    }


def provenance() -> dict[str, Any]:
    """Versions, the code's commit and state (`code_state`), HEAD, host, command line and time.

    When `PROVENANCE_ENV` holds a JSON record (scripts/regenerate.py sets it to the tree's state
    when *it* started), that record is returned with this process's command line: every job of one
    regeneration reports the same state, whatever an earlier job wrote meanwhile.
    """
    inherited = os.environ.get(PROVENANCE_ENV)
    if inherited:
        return {**json.loads(inherited), "command": sys.argv}
    return {
        "versions": versions(),
        **code_state(),
        "git_commit": _git("rev-parse", "HEAD") or None,
        "platform": platform.platform(),
        "command": sys.argv,
        "timestamp": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write `data` as indented JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    """Write a plain mapping as YAML (via OmegaConf, which Hydra already depends on)."""
    from omegaconf import OmegaConf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(dict(data))))
    return path


# ----------------------------------------------------------------------------------------------
# one job per folder: a lock held while the job runs, and what a killed job's status means

LOCK_FILE = ".job.lock"
RESULT_FILE = "result.json"
_held: dict[Path, int] = {}  # folders this process holds: resolved path -> lock file descriptor


class JobLock:
    """Hold `<folder>/.job.lock` (an flock, released by the kernel however the job ends, SIGKILL
    too) while a job writes into `folder`. A second job in the same folder gets a ValueError naming
    the folder and the running job's pid; re-entering in the same process is a no-op."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).resolve()
        self.owner = False

    def __enter__(self) -> JobLock:
        import fcntl

        if self.folder in _held:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"out: another job ({holder}) is running in {self.folder}; every job needs its own "
                "folder: wait for it, or give this one another (hydra.run.dir=<new folder>)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {platform.node()}".encode())
        _held[self.folder], self.owner = fd, True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.owner:
            os.close(_held.pop(self.folder))  # closing the descriptor releases the flock
            self.owner = False


def lock_held(folder: str | os.PathLike) -> bool:
    """True while some process (this one included) holds `folder`'s job lock."""
    import fcntl

    folder = Path(folder).resolve()
    if folder in _held:
        return True
    path = folder / LOCK_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock, if it got one


def job_status(folder: str | os.PathLike) -> str:
    """A job folder's status: result.json's "status" ("complete", "interrupted", "failed", ...),
    except that "running" with no job holding the folder's lock is "stale" (the job was killed,
    SIGKILL or power loss, before it could say so); "missing" without a readable result.json."""
    try:
        status = json.loads((Path(folder) / RESULT_FILE).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return "missing"
    if status == "running" and not lock_held(folder):
        return "stale"
    return str(status)


@contextmanager
def failure_status(
    path: Path, result: Mapping[str, Any], write: Callable[[Path, Mapping[str, Any]], Any] = write_json
) -> Iterator[None]:
    """Run a job's work; if it raises, write `result` (as it is then) to `path` with "status"
    "interrupted" (Ctrl-C) or "failed" (and the error), and re-raise."""
    try:
        yield
    except KeyboardInterrupt:
        write(path, {**result, "status": "interrupted"})
        raise
    except BaseException as error:
        write(path, {**result, "status": "failed", "error": f"{type(error).__name__}: {error}"})
        raise
