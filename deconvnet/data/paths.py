"""Where the repository's own files are: its root and the Hydra configs (`conf/`, which also holds
data such as the correspondence experiment's face boxes)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
