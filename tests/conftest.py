"""Shared fixtures: a tiny simulated data root and a checkpoint trained on it, made once per test session."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("WANDB_SILENT", "true")

# Simulator version 1: on so few blocks (21 train blocks) only its well-separated modes support a
# two-mode split, so the mode head and FiLM's mode signal are exercised; version 2's data support
# none there (tests/test_mode_pseudolabels.py covers that path).
TINY_SIM = {
    "name": "tiny",
    "version": 1,
    "sessions": ["t15.2023.08.13", "t15.2023.08.18", "t15.2023.08.20", "t15.2023.08.25"],
    "trial_fraction": 0.08,
    "max_words": 4,
    "silent_fraction": 0.4,
}


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """Four sessions, a few dozen short trials: enough for every command line to run in seconds."""
    from mode_ssm.sim.simulate import simulate

    root = tmp_path_factory.mktemp("sim") / "hdf5_data_final"
    simulate(TINY_SIM, output_dir=root, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_data_root):
    """scripts/train.py run for 3 steps on ``tiny_data_root`` with its fourth session held out."""
    from helpers import trained_checkpoint

    return trained_checkpoint(tmp_path_factory, tiny_data_root)


SLOW_FIXTURES = {"tiny_checkpoint", "workdir"}  # a training subprocess, or a user's command line
SLOW_MODULES = {"test_train_contract"}  # every test there runs scripts/train.py


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that trains or runs a script (fixtures and modules above, or an explicit
    ``@pytest.mark.slow``): ``pytest -m "not slow"`` is the quick loop."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
