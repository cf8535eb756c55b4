"""Small helpers shared by the experiment entry points: devices, provenance, files, user errors."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from deconvnet.core.validation import check_device
from deconvnet.data.models import WeightsUnavailableError
from deconvnet.jobs.folder import JobLock

# Errors caused by what the user asked for: reported as one short line, not a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, WeightsUnavailableError)


# ${pid:} in conf/*.yaml's hydra.run.dir / hydra.sweep.dir: two jobs started in the same second
# get different folders (registered on import, before any entry point composes its config)
OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True, replace=True)

_claimed: list[JobLock] = []  # the folder this process's current Hydra job holds


def hydra_output_dir() -> Path:
    """This Hydra job's own output folder (cwd is not changed: hydra.job.chdir is false), claimed
    for this job (`deconvnet.jobs.folder.JobLock` until the process ends or its next job starts): a
    second job in the same folder stops with a ValueError naming it, and a killed job's
    "running" status reads as stale (`deconvnet.jobs.folder.job_status`)."""
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    if _claimed and _claimed[0].folder != out.resolve():
        _claimed.pop().__exit__(None, None, None)
    if not _claimed:
        lock = JobLock(out)
        lock.__enter__()
        _claimed.append(lock)
    return out


@contextmanager
def user_errors(logger: logging.Logger) -> Iterator[None]:
    """Turn USER_ERRORS into `SystemExit("error: ...")`: one line, non-zero exit, no traceback."""
    try:
        yield
    except USER_ERRORS as error:
        logger.error("%s", error)
        raise SystemExit(f"error: {error}") from None


def run_job(logger: logging.Logger, device: str | None, work: Callable[[Path], object]) -> None:
    """The body of an entry point: user errors as one line, this job's own folder, the device
    checked (when given), logging kept clear of tqdm bars; then `work(folder)`."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with user_errors(logger):
        out = hydra_output_dir()
        if device is not None:
            check_device(device)
        with logging_redirect_tqdm():
            work(out)


def run_registered(name: str, cfg: DictConfig) -> None:
    """The body of every entry point: `JOBS[name].run(folder, config)` with the resolved config,
    in this Hydra job's own folder, user errors as one line."""
    from deconvnet.jobs.registry import JOBS

    config = OmegaConf.to_container(cfg, resolve=True)
    run_job(logging.getLogger(f"experiments.{name}"), None, lambda out: JOBS[name].run(out, config))
