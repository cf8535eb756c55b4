"""One job's own folder, and everything that keeps it sound (docs/reproducibility.md#job-folders).

`JobFolder(out)` is what every job writes through: held by one job at a time (`JobLock`, an flock
released by the kernel however the job ends), `config.yaml` first, finished cells checkpointed
under `partial/` while the config stays the same (`Checkpoints`), every file written atomically
(temp file + os.replace), and `result.json` whose status says "interrupted" or "failed" (with the
error) when the work raised, whichever job it was (`JobFolder.__exit__`; `failing` keeps the
job's partial result with it); when even that write fails (a full disk), the old file stays and a
warning says so, and the job's own error is raised; a "running" status whose job no longer holds
the lock reads as "stale" (`job_status`). Provenance comes from `deconvnet.jobs.provenance`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from deconvnet.data.files import atomic_write

CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.json"
LOCK_FILE = ".job.lock"
PARTIAL_FOLDER = "partial"

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ files


def write_json(path: Path, data: Mapping[str, Any], default: Callable[[Any], Any] | None = None) -> Path:
    """Write `data` as indented JSON, atomically (parents created); `default` as in `json.dumps`."""
    text = json.dumps(data, indent=2, default=default) + "\n"
    return atomic_write(path, lambda temp: temp.write_text(text))


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    """Write a plain mapping as YAML (via OmegaConf, which Hydra already depends on), atomically."""
    from omegaconf import OmegaConf

    text = OmegaConf.to_yaml(OmegaConf.create(dict(data)))
    return atomic_write(path, lambda temp: temp.write_text(text))


def read_yaml(path: Path) -> Any:
    """A YAML file as plain Python containers."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))


def plain_config(config: Mapping[str, Any]) -> Any:
    """`config` as plain containers, exactly as `write_yaml` then `read_yaml` would give it back."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.create(dict(config)))


def jsonable(value: Any) -> Any:
    """Plain JSON values: tuples -> lists, tensors / numpy -> lists or numbers, nan / inf -> None,
    devices and other objects -> str."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (Tensor, np.ndarray)):
        return jsonable(value.tolist())
    if isinstance(value, (bool, type(None), str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return str(value)


# ----------------------------------------------------------------------------------- the job lock

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
    except BaseException as error:
        record_failure(path, result, error, write)
        raise


def failure_record(result: Mapping[str, Any], error: BaseException) -> dict[str, Any]:
    """`result` with "status" "interrupted" (Ctrl-C) or "failed" and, for a failure, the error."""
    if isinstance(error, KeyboardInterrupt):
        return {**result, "status": "interrupted"}
    return {**result, "status": "failed", "error": f"{type(error).__name__}: {error}"}


def record_failure(
    path: Path,
    result: Mapping[str, Any],
    error: BaseException,
    write: Callable[[Path, Mapping[str, Any]], Any] = write_json,
) -> None:
    """Write `failure_record(result, error)` to `path`. When that write fails too (the disk is
    still full), the old file stays as it was and a warning says so: the caller re-raises the
    error that stopped the job, not this one."""
    try:
        write(path, failure_record(result, error))
    except OSError as second:
        log.warning("could not record the failure in %s: %s", path, second)


@contextmanager
def failure_marked(out: str | os.PathLike) -> Iterator[None]:
    """Run a job into folder `out`; if it raises after writing its config.yaml (this run's work
    has begun there), result.json says "failed" (with the error) or "interrupted", keeping what
    the run wrote to it (status "running"), unless the job said so itself. A job stopped before
    (bad values, a folder holding another job's files) leaves the folder as it was."""
    began = time.time()
    try:
        yield
    except BaseException as error:
        config = Path(out) / CONFIG_FILE
        if config.is_file() and config.stat().st_mtime >= began:
            mark_failed(out, error)
        raise


def mark_failed(folder: str | os.PathLike, error: BaseException) -> None:
    """result.json of `folder` says "failed" (with `error`) or "interrupted", keeping what the
    running job wrote to it, unless the job said so itself (`failing`)."""
    if job_status(folder) not in ("failed", "interrupted"):
        record_failure(Path(folder) / RESULT_FILE, running_result(folder), error)


def running_result(folder: str | os.PathLike) -> dict[str, Any]:
    """What the running job wrote to `folder`'s result.json so far (status "running"), else {}:
    a finished result of an earlier run is not carried into this run's failure."""
    try:
        result = json.loads((Path(folder) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return result if isinstance(result, dict) and result.get("status") == "running" else {}


# ---------------------------------------------------------------------------------- checkpoints


class Checkpoints:
    """Finished cells of an interrupted job: `partial/<key>.npz` (arrays + cell record), written
    atomically as each cell finishes; kept only while config.yaml still holds the same config.

    `save(key, r, cell)` with one array stores it as "map" (`map(key)` gives it back); with a
    mapping of arrays stores each under its name (`arrays(key)`)."""

    def __init__(self, out: Path, config: Mapping[str, Any]) -> None:
        self.folder = Path(out) / PARTIAL_FOLDER
        previous = Path(out) / CONFIG_FILE
        Path(out).mkdir(parents=True, exist_ok=True)
        same = previous.is_file() and read_yaml(previous) == plain_config(config)
        if not same:
            self.clear()
        self.saved: dict[str, dict[str, np.ndarray]] = {}

    def load(self, key: str) -> dict[str, Any] | None:
        """The finished cell `key` (its record; its arrays kept for `map` / `arrays`), or None."""
        path = self.folder / f"{key}.npz"
        if not path.is_file():
            return None
        with np.load(path) as saved:
            self.saved[key] = {name: saved[name] for name in saved.files if name != "cell"}
            return json.loads(str(saved["cell"]))

    def save(self, key: str, r: np.ndarray | Mapping[str, np.ndarray], cell: Mapping[str, Any]) -> None:
        """Checkpoint cell `key`: its array(s) and its JSON-serialisable record."""
        arrays = {"map": r} if isinstance(r, np.ndarray) else dict(r)
        record = np.array(json.dumps(cell))

        def write(temp: Path) -> None:
            with open(temp, "wb") as file:
                np.savez(file, **arrays, cell=record)

        atomic_write(self.folder / f"{key}.npz", write)
        self.saved[key] = arrays

    def map(self, key: str) -> np.ndarray:
        """The single array of finished cell `key` (saved as "map")."""
        return self.saved[key]["map"]

    def arrays(self, key: str) -> dict[str, np.ndarray]:
        """Every array of finished cell `key`, by name."""
        return self.saved[key]

    def clear(self) -> None:
        """Drop every checkpoint (the folder `partial/` too)."""
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                path.unlink()
            self.folder.rmdir()


# ------------------------------------------------------------------------------------ the folder


class JobFolder:
    """The folder one job writes: `with JobFolder(out) as folder:` holds its lock for the job's
    whole run; `folder.start(config)` writes config.yaml and returns the checkpoints that a rerun
    with the same config resumes from; `write_json` / `write_yaml` / `write_result` write
    atomically; `failing(result)` marks result.json "interrupted" / "failed" if the work raises."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out)
        self.lock = JobLock(self.path)
        self.started = False  # set by `start`: from then on the folder's files are this job's

    def __enter__(self) -> JobFolder:
        self.lock.__enter__()
        return self

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        """Release the lock; when the job raised after `start`, result.json first says "failed"
        (with the error) or "interrupted", unless the job already said so (`failing`). A job that
        stopped before `start` (a folder holding another job's files) leaves the folder as it was."""
        try:
            if error is not None and self.started:
                mark_failed(self.path, error)
        finally:
            self.lock.__exit__(kind, error, trace)

    def file(self, name: str) -> Path:
        """The path of `name` inside the folder."""
        return self.path / name

    def start(self, config: Mapping[str, Any]) -> Checkpoints:
        """The checkpoints kept from an earlier run with this same config (none otherwise), then
        config.yaml written with `config`."""
        checkpoints = Checkpoints(self.path, config)
        self.started = True
        write_yaml(self.file(CONFIG_FILE), config)
        return checkpoints

    def write_json(
        self, name: str, data: Mapping[str, Any], default: Callable[[Any], Any] | None = None
    ) -> Path:
        """`data` as indented JSON in file `name`, atomically (`default` as in `json.dumps`)."""
        return write_json(self.file(name), data, default)

    def write_yaml(self, name: str, data: Mapping[str, Any]) -> Path:
        """`data` as YAML in file `name`, atomically."""
        return write_yaml(self.file(name), data)

    def write_result(self, result: Mapping[str, Any]) -> Path:
        """result.json, atomically."""
        return write_json(self.file(RESULT_FILE), result)

    def failing(self, result: Mapping[str, Any]) -> Any:
        """A context: if the work inside raises, result.json gets `result` with the status
        "interrupted" (Ctrl-C) or "failed" (and the error), and the error goes on."""
        return failure_status(self.file(RESULT_FILE), result)

    def status(self) -> str:
        """This folder's `job_status`."""
        return job_status(self.path)
