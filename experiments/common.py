"""Small helpers shared by the experiment entry points: devices, provenance, files, user errors."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from deconvnet.jobfiles import (  # noqa: F401  (re-exported for the entry points)
    PROVENANCE_ENV, check_device, code_state, provenance, write_json, write_yaml,
)
from deconvnet.models import WeightsUnavailableError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"

# Errors caused by what the user asked for: reported as one short line, not a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, WeightsUnavailableError)


def hydra_output_dir() -> Path:
    """This Hydra job's own output folder (cwd is not changed: hydra.job.chdir is false)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


@contextmanager
def user_errors(logger: logging.Logger) -> Iterator[None]:
    """Turn USER_ERRORS into `SystemExit("error: ...")`: one line, non-zero exit, no traceback."""
    try:
        yield
    except USER_ERRORS as error:
        logger.error("%s", error)
        raise SystemExit(f"error: {error}") from None
