"""Atomic file writes: a file is either its old content or its whole new content, never half of it.

`atomic_write(path, write)` lets `write` fill a temp file in the target's own folder (so the final
`os.replace` stays on one file system and is atomic), flushes it to disk, gives it the usual
permissions (mkstemp creates 0600; the umask's default applies instead) and moves it over `path`.
A write that fails (or is interrupted) leaves `path` untouched and removes the temp file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

__all__ = ["atomic_write", "atomic_write_npz"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write `path` atomically: `write(temp)` fills a temp file in the same folder (parents are
    created), which then replaces `path` (os.replace). Returns `path` as a Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temp = Path(name)
    try:
        write(temp)
        _flush_to_disk(temp)
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """`arrays` as a compressed .npz at `path` (as named: no .npz appended), written atomically."""

    def write(temp: Path) -> None:
        with open(temp, "wb") as file:
            np.savez_compressed(file, **arrays)

    return atomic_write(path, write)


def _flush_to_disk(path: Path) -> None:
    """fsync `path`'s content, so the rename never exposes a file whose data is not on disk."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
