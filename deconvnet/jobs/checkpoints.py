"""Finished cells of a job, kept so that an interrupted job resumes where it stopped.

Shared by every experiment that writes a job folder cell by cell (`deconvnet.jobs.saliency`,
`deconvnet.jobs`): each finished cell is `<job>/partial/<key>.npz` (its arrays and its JSON
record), written atomically; the folder is kept only while `<job>/config.yaml` holds the same
config, so a rerun with the same config computes only the missing cells and a different config
starts afresh.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_FILE = "config.yaml"
PARTIAL_FOLDER = "partial"


def _yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))


def _plain(config: Mapping[str, Any]) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.create(dict(config)))


class Checkpoints:
    """Finished cells of an interrupted job: `partial/<key>.npz` (arrays + cell record), written
    atomically as each cell finishes; kept only while config.yaml still holds the same config.

    `save(key, r, cell)` with one array stores it as "map" (`map(key)` gives it back); with a
    mapping of arrays stores each under its name (`arrays(key)`)."""

    def __init__(self, out: Path, config: Mapping[str, Any]) -> None:
        self.folder = Path(out) / PARTIAL_FOLDER
        previous = Path(out) / CONFIG_FILE
        Path(out).mkdir(parents=True, exist_ok=True)
        same = previous.is_file() and _yaml(previous) == _plain(config)
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
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f"{key}.tmp.npz"
        np.savez(tmp, **arrays, cell=np.array(json.dumps(cell)))
        tmp.replace(self.folder / f"{key}.npz")
        self.saved[key] = arrays

    def map(self, key: str) -> np.ndarray:
        return self.saved[key]["map"]

    def arrays(self, key: str) -> dict[str, np.ndarray]:
        return self.saved[key]

    def clear(self) -> None:
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                path.unlink()
            self.folder.rmdir()
