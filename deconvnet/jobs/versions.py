"""Versions of the software a result was made with, for provenance records."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

PACKAGES = ("torchvision", "numpy", "pillow", "matplotlib", "hydra-core", "deconvnet")


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
