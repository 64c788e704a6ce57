"""benchmarks/mode_transfer.py fits in memory exactly what the trainer fits on the written files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import TINY_SIM

from mode_ssm.data.t15 import T15Split
from mode_ssm.sim import load_config
from mode_ssm.training.data import block_mode_targets, block_truth

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "mode_transfer.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("mode_transfer", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_in_memory_fit_equals_the_trainers_fit_on_files(bench, tiny_data_root):
    row = bench.mode_transfer(load_config(TINY_SIM), seed=0)
    split = T15Split(tiny_data_root, "train")
    targets = block_mode_targets(split)
    truth = block_truth(split)
    assert row["train_trials"] == len(split)
    assert row["blocks"] == len(targets.labels) == len(truth)
    assert row["silent_blocks"] == sum(v == 1 for v in truth.values())
    assert row["supported"] == targets.fit.supported
    assert row["bic_gain"] == pytest.approx(targets.fit.bic_gain, rel=1e-9)
    assert row["separation"] == pytest.approx(targets.fit.separation, rel=1e-9)
    assert row["agreement"] == targets.agreement_with_truth(truth)
    # version 1's modes are well apart: the split is supported, and without the gate it labels the same
    assert row["supported"] and row["forced_agreement"] == row["agreement"] > row["baseline"]
    assert row["d_prime"] > 1.0
