"""What every job folder gets, whoever writes it: the device check, provenance, JSON / YAML files.

Library functions that write a job folder (e.g. `deconvnet.saliency.run_saliency`) use these;
`experiments.common` re-exports them for the Hydra entry points.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from deconvnet.versions import versions

REPO_ROOT = Path(__file__).resolve().parent.parent
# a provenance record (JSON) that `provenance()` returns instead of looking at the tree itself
PROVENANCE_ENV = "DECONVNET_PROVENANCE"


def check_device(device: object) -> torch.device:
    """'cpu', 'cuda' or 'cuda:<n>' as a torch.device; ValueError naming the key otherwise."""
    accepted = "'cpu', 'cuda' or 'cuda:<index>'"
    if not isinstance(device, str):
        raise ValueError(f"device: expected {accepted}, got {device!r}")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        target = None
    if target is None or target.type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected {accepted}, got {device!r}")
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available here; "
                             "use device=cpu")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} requested but only {torch.cuda.device_count()} "
                             "CUDA device(s) exist")
    return target


def _git(*args: str, cwd: Path = REPO_ROOT) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True)
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
