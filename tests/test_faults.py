"""Faults from outside the code: a full disk while writing, a process killed while evaluating.

Each case checks what the user is told, the exit code, and that nothing else was lost:
the previous file intact and loadable, no half-written output, a rerun finishing the work.
(Bad data, bad configs, bad checkpoints, kills while training and non-finite values have
their tests beside the code they exercise; README "Reliability" lists them all.)
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys

import pytest
import torch
from helpers import REPO, TINY_TRAIN, env

from mode_ssm.atomic import WriteError, write_text
from mode_ssm.runtime.checkpoint import load_checkpoint, save_checkpoint

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


def _no_temporaries(folder) -> bool:
    return not list(folder.glob(".*.tmp-*"))


@pytest.mark.parametrize("failure", ["torch_writer", "os_write"])
def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, failure):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": torch.tensor(1)}, path)
    import mode_ssm.runtime.checkpoint as checkpoint

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")  # some bytes reach the temporary file first
        if failure == "torch_writer":  # what torch's zip writer raises when a write fails
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
        raise NO_SPACE

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(WriteError, match=r"last\.pt: cannot be written \(.+\); its previous version, if any, is intact"):
        save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(load_checkpoint(path)["step"]) == 1 and _no_temporaries(tmp_path)


def test_disk_full_while_writing_a_report_keeps_the_previous_one(tmp_path, monkeypatch):
    report = tmp_path / "summary.md"
    write_text(report, "previous report\n")
    import mode_ssm.atomic as atomic

    def fsync(fd):
        raise NO_SPACE

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(WriteError, match=r"summary\.md: cannot be written \(No space left on device\)"):
        write_text(report, "new report that does not fit\n")
    assert report.read_text() == "previous report\n" and _no_temporaries(tmp_path)


FULL_DISK_AT_SAVE = """
import os, sys, errno, runpy
import mode_ssm.runtime.checkpoint as ck
real_save, calls = ck.torch.save, [0]
def save(obj, f, *a, **k):
    calls[0] += 1
    if calls[0] == int(os.environ["FULL_AT_SAVE"]):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    return real_save(obj, f, *a, **k)
ck.torch.save = save
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

KILL_IN_DECODE = """
import os, signal, sys, runpy
import mode_ssm.evaluation.pipeline as pipeline
def decode_split(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
pipeline.decode_split = decode_split
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run_wrapped(wrapper: str, script: str, args: list[str], cwd, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", wrapper, str(REPO / "scripts" / script), *args], cwd=cwd,
                          env={**env(), **extra_env}, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=240)


@pytest.mark.slow
def test_train_with_a_full_disk_stops_with_one_line_and_resumes_from_the_last_good_checkpoint(tmp_path, tiny_data_root):
    args = [f"data.data_root={tiny_data_root}", *[a for a in TINY_TRAIN if not a.startswith("training.max_steps")],
            "training.max_steps=6", "training.checkpoint_every_steps=1", "training.batch_size=2",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = _run_wrapped(FULL_DISK_AT_SAVE, "train.py", args, tmp_path, FULL_AT_SAVE="4")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"error: {last}: cannot be written (PytorchStreamWriter failed writing file data/0: file write " \
           "failed); its previous version, if any, is intact" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert load_checkpoint(last)["position"]["optimizer_steps"] == 3  # the third save, intact and loadable
    assert _no_temporaries(last.parent)
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=tmp_path, env=env(),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0 and "optimizer step 3)" in again.stdout
    assert load_checkpoint(last)["position"]["optimizer_steps"] == 6


def test_evaluation_killed_while_decoding_leaves_no_report_and_a_rerun_writes_it(tmp_path, tiny_data_root,
                                                                               tiny_checkpoint):
    out = tmp_path / "ev"
    args = [f"checkpoint={tiny_checkpoint}", f"data.data_root={tiny_data_root}", f"output_dir={out}",
            "decoder=ctc_greedy"]
    proc = _run_wrapped(KILL_IN_DECODE, "evaluate.py", args, tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    written = {p.name for p in out.iterdir()} if out.exists() else set()
    assert not written & {"predictions.csv", "metrics.json", "summary.md"}  # absent, not half-written
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), *args], cwd=tmp_path, env=env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "metrics.json").is_file() and (out / "predictions.csv").read_text().count("\n") == 12 + 1
