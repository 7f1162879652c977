"""Atomic file writes: a reader sees the old file or the new one, never a half-written one, and after a crash
the new one is either wholly on disk or absent.

The data goes to a temporary file in the destination's folder (``.<name>.<random>.tmp``), which is flushed and
fsynced, made readable by all (``0o644``; results are meant to be shared) and renamed over the destination
with ``os.replace``; then the folder itself is fsynced so that the rename survives a power cut. On any error
the temporary file is removed and the destination is left as it was. The destination's folder is created
when missing.

Standard library only: ``data/fetch.py``, a standalone script, loads this module too.

    with atomic_open(path) as f:  # a binary file; atomic_open(path, "w") for text (UTF-8)
        torch.save(obj, f)
    atomic_write_bytes(path, data)
    atomic_write_text(path, text)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "fsync_dir"]

FILE_MODE = 0o644


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file to write ``path``'s new contents into; they replace ``path`` when the block ends without an
    exception (``mode`` ``"wb"`` or ``"w"``, the latter UTF-8 text)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see the module)."""
    with atomic_open(path, "w") as f:
        f.write(text)
