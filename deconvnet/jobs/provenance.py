"""Where a result comes from: the software's versions and the code's state, recorded in every job's
result.json (docs/reproducibility.md#provenance)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from deconvnet.data.paths import REPO_ROOT

PACKAGES = ("torchvision", "numpy", "pillow", "matplotlib", "hydra-core", "deconvnet")
# a provenance record (JSON) that `provenance()` returns instead of looking at the tree itself
PROVENANCE_ENV = "DECONVNET_PROVENANCE"
# /proc/cpuinfo flags that choose float kernels (oneDNN, MKL, PyTorch's vectorised loops), so the
# rounding of a job's sums: a run record names those its CPU has
ISA_FLAGS = (
    "fma",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def package_version(package: str) -> str | None:
    """Installed version of `package`, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | int | None]:
    """{python, torch, torchvision, numpy, pillow, matplotlib, hydra-core, deconvnet, threads}."""
    found: dict[str, str | int | None] = {"python": platform.python_version(), "torch": torch.__version__}
    found.update({p: package_version(p) for p in PACKAGES})
    found["threads"] = torch.get_num_threads()
    return found


def cpuinfo_fields(text: str) -> dict[str, str]:
    """The first 'model name', 'vendor_id' and 'flags' of /proc/cpuinfo's text ({} where absent)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "vendor_id", "flags") and key not in fields:
            fields[key] = value.strip()
    return fields


def cpu() -> dict[str, Any]:
    """The CPU a run used: {'model', 'vendor', 'machine', 'cores', 'torch_capability', 'isa_flags'}.

    torch_capability: the vector kernels PyTorch chooses in this process
    (`torch.backends.cpu.get_cpu_capability()`; scripts/regenerate.py's jobs are pinned to AVX2 by
    their environment); isa_flags: which of `ISA_FLAGS` the CPU has (None without /proc/cpuinfo).
    Volatile: runs on other CPUs round differently (scripts/compare_results.py compares them).
    """
    try:
        fields = cpuinfo_fields(Path("/proc/cpuinfo").read_text())
    except OSError:
        fields = {}
    flags = set(fields["flags"].split()) if "flags" in fields else None
    return {
        "model": fields.get("model name") or platform.processor() or None,
        "vendor": fields.get("vendor_id"),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_flags": None if flags is None else [f for f in ISA_FLAGS if f in flags],
    }


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
    """Versions, the code's commit and state (`code_state`), HEAD, host, CPU (`cpu`), command line
    and time.

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
        "cpu": cpu(),
        "command": sys.argv,
        "timestamp": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
