"""Atomic checkpoints that load without executing pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(..., weights_only=True)`` reads it. It is written to a temporary
file in the same folder, flushed to disk and renamed over the old one: a crash
while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mode_ssm.atomic import WriteError, atomic_open


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` atomically: a crash while saving leaves the previous file intact."""
    with atomic_open(path, "wb") as f:
        try:
            torch.save(state, f)
        except RuntimeError as e:  # torch's zip writer reports a failed write (e.g. disk full) this way
            if "write" not in str(e).lower():
                raise
            raise WriteError(path, e) from None
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found is None:  # not a pickle of objects at all: garbage or truncated
            raise CheckpointError(f"{path}: cannot be read as a MODE-SSM checkpoint, truncated or corrupt "
                                  "(not a torch zip archive or pickle)") from None
        # it holds Python objects a checkpoint of ours never holds
        raise CheckpointError(f"{path}: not a MODE-SSM checkpoint: it holds Python objects ({found.group(1)}) "
                              "that our checkpoints never hold; "
                              "it was not written by scripts/train.py and is not loaded") from None
    except OSError as e:  # permissions, I/O errors: the file may be fine
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    except Exception as e:  # truncated, corrupt or foreign files
        first = str(e).split(". ")[0].strip()
        raise CheckpointError(f"{path}: cannot be read as a MODE-SSM checkpoint, truncated or corrupt "
                              f"({type(e).__name__}: {first})") from None


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as weights_only-loadable values."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "python_version": py_version,
        "python_internal": list(py_internal),
        "python_gauss": py_gauss,
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_cached_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python_internal"]), state["python_gauss"]))
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_cached_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
