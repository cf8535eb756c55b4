"""What the experiment entry points share: the job's own folder (claimed), user errors as one line,
and `run_registered`, the body of every entry point."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from deconvnet.data.models import WeightsUnavailableError
from deconvnet.jobs.folder import JobLock, failure_marked

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


def run_registered(name: str, cfg: DictConfig) -> None:
    """The body of every entry point: the registered job `name` (`check_job`) run with the
    resolved config in this Hydra job's own folder, logging kept clear of tqdm bars, a failure
    after the job began recorded in its result.json (`failure_marked`), user errors as one line."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from deconvnet.jobs.registry import check_job

    kind = check_job(name)
    config = OmegaConf.to_container(cfg, resolve=True)
    with user_errors(logging.getLogger(f"experiments.{name}")):
        out = hydra_output_dir()
        with logging_redirect_tqdm(), failure_marked(out):
            kind.run(out, config)
