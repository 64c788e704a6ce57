"""Helpers shared by test modules: running the scripts as a user would, and a tiny trained checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY_TRAIN = [
    "model.d_model=32", "model.n_layers=1", "model.predictor_dim=32", "model.joiner_dim=32", "model.flow_hidden=32",
    "model.mode_hidden=16", "model.head_dim=16", "model.chunk_size=16", "decoding.extra_vocabulary=100",
    "decoding.beam=8", "data.train_wer_trials=8", "training.max_steps=3",
    "data.max_sessions=3",  # the fourth session stays unseen: evaluation must fall back to an earlier day layer
]
UNSEEN = "t15.2023.08.25"


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    e.update(OMP_NUM_THREADS="1", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    return e


def run_script(
    name: str, args: list[str], cwd: Path, expect_rc: int = 0, **extra_env: str
) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=cwd, env={**env(), **extra_env},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    assert proc.returncode == expect_rc, \
        f"{name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def trained_checkpoint(tmp_path_factory, data_root: Path) -> Path:
    """One tiny training run per test session, shared through the session's temp folder."""
    run_dir = tmp_path_factory.getbasetemp() / "tiny_trained_run"
    ckpt = run_dir / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        run_script("train.py", [f"data.data_root={data_root}", *TINY_TRAIN, f"hydra.run.dir={run_dir}"], REPO)
    return ckpt
