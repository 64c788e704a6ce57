"""Atomic file writes: a file is either its previous version or complete, never half-written.

Every output a crash could truncate (checkpoints, HDF5 files, LM files, reports,
submissions) is written to a temporary file beside its destination, flushed to
disk and renamed over it; an error or a kill leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

TMP_GLOB = ".*.tmp-*"


class WriteError(OSError):
    """An output could not be written (disk full, no permission, ...); the message names the file and says
    the previous version, if there was one, is intact."""

    def __init__(self, path: str | os.PathLike, cause: BaseException):
        why = getattr(cause, "strerror", None) or str(cause).split("\n")[0]
        super().__init__(f"{path}: cannot be written ({why}); its previous version, if any, is intact")


def temporary_path(path: str | os.PathLike) -> Path:
    """The hidden temporary beside ``path`` that :func:`atomic_path` renames over it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to (by any library); renamed over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as e:  # disk full, read-only, permissions: the destination is untouched
        raise WriteError(path, e) from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """``open(path, mode)`` for writing, atomically (see :func:`atomic_path`)."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files; mode must start with 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporaries left by a process killed while writing (the files themselves are intact)."""
    folder = Path(folder)
    stale = list(folder.glob(TMP_GLOB)) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
