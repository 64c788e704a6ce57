"""The scripts/train.py contract, run as a user runs it: command lines, W&B offline, torchrun, resume.

Every run here is a real subprocess on tiny simulated data, with no network, no
API key and no terminal (stdin closed), and is read back from its .wandb log.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mode_ssm.runtime.checkpoint import load_checkpoint
from mode_ssm.runtime.tracking import resolve_mode
from mode_ssm.training.wandb_records import find_run_logs, read_run

REPO = Path(__file__).resolve().parent.parent
TRAIN = str(REPO / "scripts" / "train.py")

# A model and decoder small enough that each run takes seconds.
TINY = [
    "model.d_model=32", "model.n_layers=1", "model.predictor_dim=32", "model.joiner_dim=32",
    "model.flow_hidden=32", "model.mode_hidden=16", "model.head_dim=16", "model.chunk_size=16",
    "decoding.extra_vocabulary=100", "decoding.beam=8", "data.train_wer_trials=8",
    "training.scheduler.warmup_steps=2",
]
CONTRACT = [
    "wandb.enabled=true", "wandb.entity=your-username", "wandb.run_name=rnnt-scaled-loss-test",
    "data.data_root=data/hdf5_data_final", "data.max_sessions=3", "preprocessor.num_channels=512",
    "training.batch_size=1", "training.gradient_accumulation_steps=4", "training.stages.0.epochs=2",
    "training.stages.1.epochs=2", "training.optimizer.lr=0.00005",
]
BATCH_METRICS = ("train/loss", "train/batch_time", "batch", "epoch")
EPOCH_METRICS = ("val/loss", "val/wer", "val/phoneme_accuracy", "learning_rate", "train/wer", "epoch")
# val/mode_accuracy too, when the train blocks support a two-mode split (the run says which)


def user_env(home: Path) -> dict[str, str]:
    """A user's environment with no W&B key, mode or settings: HOME is empty."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", WANDB_SILENT="true")
    return env


def run_train(args, cwd: Path, env: dict[str, str], timeout: float = 240, launcher=None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable, TRAIN]) + list(args)
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"train failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture()
def workdir(tmp_path, tiny_data_root):
    """Where the user types the command: the data linked in at a relative path, an empty HOME."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hdf5_data_final").symlink_to(tiny_data_root)
    (tmp_path / "home").mkdir()
    return tmp_path


def the_run(run_dir: Path):
    logs = find_run_logs(run_dir / "wandb")
    assert len(logs) == 1, f"expected one W&B run in {run_dir / 'wandb'}, found {logs}"
    return read_run(logs[0])


def test_contract_command_line_offline_without_key(workdir):
    proc = run_train(CONTRACT + TINY + ["hydra.run.dir=outputs/contract"], workdir, user_env(workdir / "home"))
    out = proc.stdout + proc.stderr
    assert out.count("no W&B API key found") == 1, out[-3000:]
    run_dir = workdir / "outputs" / "contract"
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    run = the_run(run_dir)
    assert run.name == "rnnt-scaled-loss-test"
    assert run.tags == ["brain-to-text", "ssm", "rnnt"]
    assert run.notes == "MODE-SSM training with curriculum learning"
    assert run.exit_code == 0
    cfg = run.config
    assert cfg["wandb"]["entity"] == "your-username"
    assert cfg["training"]["batch_size"] == 1 and cfg["training"]["gradient_accumulation_steps"] == 4
    assert cfg["training"]["optimizer"]["lr"] == pytest.approx(5e-5)
    assert [s["epochs"] for s in cfg["training"]["stages"]] == [2, 2, 1, 1]
    assert cfg["data"]["max_sessions"] == 3 and cfg["preprocessor"]["num_channels"] == 512
    assert cfg["model"]["d_model"] == 32 and cfg["model"]["name"] == "mode_ssm"
    # cadence: one row per batch with the batch metrics, one per epoch with the epoch metrics
    batch_rows = [r for r in run.history if "train/loss" in r]
    epoch_rows = [r for r in run.history if "val/wer" in r]
    assert all(all(k in r for k in BATCH_METRICS) for r in batch_rows)
    assert len(epoch_rows) == 6 and [r["epoch"] for r in epoch_rows] == list(range(6))
    assert all(all(k in r for k in EPOCH_METRICS) for r in epoch_rows)
    n_train = load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]["batch"]
    assert len(batch_rows) == n_train and [r["batch"] for r in batch_rows] == list(range(1, n_train + 1))
    assert n_train % 6 == 0  # batch_size 1: every epoch is every train trial once
    assert all(0.0 <= r["val/wer"] for r in epoch_rows)
    if "speaking-mode pseudo-labels: two modes supported" in out:
        assert all(0.0 <= r["val/mode_accuracy"] <= 100.0 for r in epoch_rows)
    else:  # no mode signal: no mode accuracy pretending to be one
        assert "NO supported two-mode split" in out and not any("val/mode_accuracy" in r for r in epoch_rows)
    assert run.step_metrics["train/loss"] == "batch" and run.step_metrics["val/*"] == "epoch"
    assert run.step_metrics["train/wer"] == "epoch" and run.step_metrics["learning_rate"] == "epoch"
    # the summary ends with val trials decoded by best.pt, saved with the position
    assert "val trials decoded by the best checkpoint" in proc.stdout
    examples = load_checkpoint(run_dir / "checkpoints" / "best.pt")["position"]["best_examples"]
    assert 1 <= len(examples) <= 8 and all(e["reference"] in proc.stdout for e in examples)
    best_mode = load_checkpoint(run_dir / "checkpoints" / "best.pt")["position"]["best_mode"]
    if "val/mode_accuracy" in epoch_rows[0]:  # the summary states the best epoch's mode accuracy and its chance level
        assert f"{100 * best_mode['mode_accuracy']:.1f}% of trials" in proc.stdout
        assert 0.5 <= best_mode["mode_majority"] <= 1.0
    else:
        assert best_mode == {} and "val speaking mode" not in proc.stdout


def test_wandb_offline_typed_in_project_dir_and_tags_override(workdir):
    env = user_env(workdir / "home")
    subprocess.run(["wandb", "offline"], cwd=workdir, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    assert (workdir / "wandb" / "settings").is_file()
    args = ["wandb.enabled=true", "wandb.tags=[rnnt-fix,scaled-loss,3-sessions]", "data.data_root=data/hdf5_data_final",
            "training.max_steps=3", "hydra.run.dir=outputs/tags"] + TINY
    proc = run_train(args, workdir, env)
    assert "no W&B API key found" not in proc.stdout + proc.stderr  # the settings file decided, not the fallback
    run = the_run(workdir / "outputs" / "tags")
    assert run.tags == ["rnnt-fix", "scaled-loss", "3-sessions"]


def test_plain_wandb_enabled_uses_default_data(workdir, tiny_data_root):
    env = user_env(workdir / "home") | {"MODE_SSM_DATA_DIR": str(tiny_data_root)}
    run_train(["wandb.enabled=true", "training.max_steps=2"] + TINY, workdir, env)
    run_dirs = list((workdir / "outputs").iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name[:4].isdigit()  # outputs/<date>_<time>/
    run = the_run(run_dirs[0])
    assert run.config["data"]["data_root"] is None and run.config["wandb"]["project"] == "mode-ssm"


def test_mistyped_key_gets_hydra_error(workdir):
    proc = subprocess.run([sys.executable, TRAIN, "training.batchsize=4"], cwd=workdir, env=user_env(workdir / "home"),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Could not override 'training.batchsize'" in proc.stderr and "Traceback" not in proc.stderr


def test_resolve_mode_honours_settings_before_probing(tmp_path, monkeypatch):
    import mode_ssm.runtime.tracking as tracking

    monkeypatch.setattr(tracking, "_reachable", lambda *a, **k: pytest.fail("must not touch the network"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "settings").write_text("[default]\nmode = offline\n")
    assert resolve_mode(tmp_path)[0] == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(tmp_path)[0] == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY")
    mode, reason = resolve_mode(tmp_path / "home")
    assert mode == "offline" and "no W&B API key" in reason


def _params(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())


NO_NOISE = ["augmentation.enabled=false", "model.dropout=0.0", "model.input_dropout=0.0"]


def _even_batch_size(root: Path, sessions: int) -> int:
    """A batch size that splits the train split into an even number of batches: one epoch is then the
    same optimizer steps on one process accumulating 2 micro-batches as on 2 ranks (no rank pads)."""
    from mode_ssm.data.batching import LengthBucketSampler
    from mode_ssm.data.t15 import T15Split

    lengths = T15Split(root, "train", max_sessions=sessions, validate="metadata").trial_lengths()
    for size in (2, 3, 4, 5, 6):
        if len(LengthBucketSampler(lengths, size, shuffle=True, seed=0)) % 2 == 0:
            return size
    raise AssertionError("no batch size gives an even number of batches")


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_through_the_whole_curriculum(workdir, tiny_data_root):
    """Every stage of the default curriculum (CTC, joint CTC + RNN-T + mode, mode, flow-bridge denoising)
    under DDP: the RNN-T joint and the denoising loss run inside the wrapped forward."""
    env = user_env(workdir / "home")
    batch = _even_batch_size(tiny_data_root, 2)
    common = ["data.data_root=data/hdf5_data_final", "data.max_sessions=2", f"training.batch_size={batch}",
              "training.stages.0.epochs=1", "training.stages.1.epochs=1", "training.stages.2.epochs=1",
              "training.stages.3.epochs=1", "wandb.enabled=true", "training.day_smoothness=0.5"] + TINY + NO_NOISE
    run_train(common + ["training.gradient_accumulation_steps=2", "hydra.run.dir=outputs/single"], workdir, env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", TRAIN]
    proc = run_train(common + ["training.gradient_accumulation_steps=1", "hydra.run.dir=outputs/ddp"], workdir, env,
                     timeout=400, launcher=torchrun)
    single, ddp = workdir / "outputs" / "single", workdir / "outputs" / "ddp"
    assert sorted(p.name for p in (workdir / "outputs").iterdir()) == ["ddp", "single"]  # no stray run dirs
    assert len(find_run_logs(ddp / "wandb")) == 1
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    state = load_checkpoint(ddp / "checkpoints" / "last.pt")
    assert state["position"]["stage"] == 4
    assert [h["stage"] for h in state["position"]["history"]] == ["ctc_warmup", "joint_train", "mode_train",
                                                                "denoise_train"]
    for name in ("joint_train", "mode_train", "denoise_train"):
        assert f"{name}: training" in proc.stdout
    a, b = _params(single / "checkpoints" / "last.pt"), _params(ddp / "checkpoints" / "last.pt")
    assert _max_diff(a, b) < 1e-5
    # the stages after CTC warm-up really ran their RNN-T, mode and denoising losses under DDP
    run = the_run(ddp)
    for loss in ("train/loss_rnnt", "train/loss_mode", "train/loss_denoise"):
        values = run.series(loss)
        assert values and all(math.isfinite(v) for v in values), (loss, values)
    # the day-layer smoothness penalty acted in the joint stage (the one that trains day layers), as
    # a gradient added after DDP's all-reduce, and the ranks still agree with one process (above)
    smooth = run.series("train/day_smoothness")
    assert smooth and smooth[0] == 0.0 and smooth[-1] > 0.0, smooth


RESUME_ARGS = ["data.data_root=data/hdf5_data_final", "training.batch_size=2", "training.checkpoint_every_steps=1",
               "training.stages.0.epochs=1", "training.stages.1.epochs=1", "training.stages.2.epochs=0",
               "training.stages.3.epochs=0", "wandb.enabled=true"] + TINY


def _kill_when(proc: subprocess.Popen, ckpt: Path, min_batch: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before it could be killed:\n{proc.stdout.read()[-3000:]}")
        try:
            if ckpt.is_file() and load_checkpoint(ckpt)["position"]["batch"] >= min_batch:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
        except Exception:
            pass  # caught mid-rename; look again
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("checkpoint never reached the kill point")


def test_sigkill_mid_epoch_then_rerun_resumes_exactly(workdir):
    env = user_env(workdir / "home")
    # the straight run keeps its freed heap memory (training.release_heap_mb=null) and reads its batches in
    # the training process; the resumed one hands memory back after every step (the default, 0) and reads
    # through a loader worker: neither may change a number
    run_train(RESUME_ARGS + ["hydra.run.dir=outputs/straight", "training.release_heap_mb=null"], workdir, env)
    straight = workdir / "outputs" / "straight"
    n_batches = load_checkpoint(straight / "checkpoints" / "last.pt")["position"]["batch"]
    for row in load_checkpoint(straight / "checkpoints" / "last.pt")["position"]["history"]:
        assert 0 < row["time/data_wait_seconds"] < row["time/epoch_seconds"] and row["time/eval_seconds"] > 0, row

    resumed = workdir / "outputs" / "resumed"
    cmd = [sys.executable, TRAIN] + RESUME_ARGS + ["hydra.run.dir=outputs/resumed", "data.num_workers=1"]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _kill_when(proc, resumed / "checkpoints" / "last.pt", min_batch=n_batches // 3 + 1)
    killed_at = load_checkpoint(resumed / "checkpoints" / "last.pt")["position"]
    assert 0 < killed_at["batch"] < n_batches
    first_id = load_checkpoint(resumed / "checkpoints" / "last.pt")["wandb_run_id"]
    assert first_id
    again = run_train(RESUME_ARGS + ["hydra.run.dir=outputs/resumed", "data.num_workers=1"], workdir, env)  # the same command again
    assert f"resuming {resumed / 'checkpoints' / 'last.pt'}: stage {killed_at['stage'] + 1}/4" in again.stdout
    assert f"(global batch {killed_at['batch']}, optimizer step " in again.stdout
    # Offline, wandb keeps each process's records in a folder of its own named after the run id;
    # the killed process may not have flushed its log, the resumed one continues the same id.
    logs = find_run_logs(resumed / "wandb")
    assert len(logs) == 2 and all(p.parent.name.endswith("-" + first_id) for p in logs)
    assert read_run(logs[-1]).run_id == first_id

    assert _max_diff(_params(straight / "checkpoints" / "last.pt"), _params(resumed / "checkpoints" / "last.pt")) < 1e-6
    # a finished run, rerun: it says so, exits 0 and trains nothing
    before = (resumed / "checkpoints" / "last.pt").read_bytes()
    finished = run_train(RESUME_ARGS + ["hydra.run.dir=outputs/resumed"], workdir, env)
    assert "the run is finished (all 4 curriculum stages" in finished.stdout and "nothing to train" in finished.stdout
    assert (resumed / "checkpoints" / "last.pt").read_bytes() == before
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["position"]
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")["position"]
    assert a["batch"] == b["batch"] and a["epoch"] == b["epoch"]
    assert [h["val/wer"] for h in a["history"]] == pytest.approx([h["val/wer"] for h in b["history"]])


CRASH_IN_SAVE = """
import os, signal, sys, runpy
import mode_ssm.runtime.checkpoint as ck
real_save, calls = ck.torch.save, [0]
def save(obj, f, *a, **k):
    real_save(obj, f, *a, **k)
    calls[0] += 1
    if calls[0] == int(os.environ["CRASH_AT_SAVE"]):  # written to the temporary file, not yet renamed
        f.flush(); os.kill(os.getpid(), signal.SIGKILL)
ck.torch.save = save
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_kill_during_checkpoint_write_keeps_previous_and_resumes(workdir):
    env = user_env(workdir / "home") | {"CRASH_AT_SAVE": "4"}
    crashed = workdir / "outputs" / "crash"
    proc = subprocess.run([sys.executable, "-c", CRASH_IN_SAVE, TRAIN] + RESUME_ARGS + ["hydra.run.dir=outputs/crash"],
                          cwd=workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    last = crashed / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["position"]["batch"] == 3  # the third save survived the fourth's crash
    env.pop("CRASH_AT_SAVE")
    run_train(RESUME_ARGS + ["hydra.run.dir=outputs/crash"], workdir, env)
    run_train(RESUME_ARGS + ["hydra.run.dir=outputs/straight2"], workdir, env)
    assert _max_diff(_params(last), _params(workdir / "outputs" / "straight2" / "checkpoints" / "last.pt")) < 1e-6
    assert not list((crashed / "checkpoints").glob(".*tmp*"))  # the torn file was cleaned up or never renamed


KILL_AT_STEP = """
import os, signal, sys, runpy
import torch
real_clip, calls = torch.nn.utils.clip_grad_norm_, [0]
def clip(*a, **k):  # called once per optimizer step, after backward, before the step
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_clip(*a, **k)
torch.nn.utils.clip_grad_norm_ = clip
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# 60 optimizer steps across the CTC and joint stages, checkpoints every 5 steps (a kill loses up to 4 steps,
# which the resume must redo identically)
SIXTY = ["data.data_root=data/hdf5_data_final", "data.max_sessions=3", "training.batch_size=2",
         "training.checkpoint_every_steps=5", "training.stages.0.epochs=1", "training.stages.1.epochs=20",
         "training.stages.2.epochs=1", "training.stages.3.epochs=1"] + TINY


def test_killed_at_five_points_and_resumed_ends_equal_to_one_uninterrupted_run(workdir):
    """max_steps is a run total and a cut epoch resumes at its next batch: a 60-step run killed (SIGKILL)
    at five points and resumed each time, and one stopped at 30 steps and rerun with 60, both end with
    the uninterrupted run's parameters; rerunning a finished run trains nothing."""
    env = user_env(workdir / "home")
    straight = workdir / "outputs" / "straight"
    run_train(SIXTY + ["training.max_steps=60", "hydra.run.dir=outputs/straight"], workdir, env)
    done = load_checkpoint(straight / "checkpoints" / "last.pt")["position"]
    assert done["optimizer_steps"] == 60 and done["stage"] == 1  # inside the joint stage: its epoch was cut
    assert "cut_at_batch" in done["history"][-1]
    reference = _params(straight / "checkpoints" / "last.pt")

    killed = workdir / "outputs" / "killed"
    cmd = [sys.executable, "-c", KILL_AT_STEP, TRAIN] + SIXTY + ["training.max_steps=60", "hydra.run.dir=outputs/killed"]
    progress = []
    for at in (7, 9, 13, 4, 11):  # per launch: the step whose gradients are in hand when the process dies
        proc = subprocess.run(cmd, cwd=workdir, env=env | {"KILL_AT_STEP": str(at)}, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-3000:]
        progress.append(load_checkpoint(killed / "checkpoints" / "last.pt")["position"]["optimizer_steps"])
    assert progress == [5, 10, 20, 20, 30], progress  # five different kill points, one a kill before any new save
    again = run_train(SIXTY + ["training.max_steps=60", "hydra.run.dir=outputs/killed"], workdir, env)
    assert "optimizer step 30)" in again.stdout  # the resume line says from where
    assert _max_diff(_params(killed / "checkpoints" / "last.pt"), reference) < 1e-6
    # best.pt is chosen at epoch ends only, so it is the same too, and so are the whole epochs' scores
    assert _max_diff(_params(killed / "checkpoints" / "best.pt"), _params(straight / "checkpoints" / "best.pt")) < 1e-6

    def whole_epochs(run_dir):
        history = load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]["history"]
        return [(h["epoch"], round(h["val/per"], 9)) for h in history if "cut_at_batch" not in h]

    assert whole_epochs(killed) == whole_epochs(straight) and len(whole_epochs(straight)) >= 1

    # a run cut by its step budget and rerun with a larger one continues the cut epoch at its next batch
    run_train(SIXTY + ["training.max_steps=30", "hydra.run.dir=outputs/thirty"], workdir, env)
    thirty = workdir / "outputs" / "thirty" / "checkpoints" / "last.pt"
    first = load_checkpoint(thirty)["position"]
    assert first["optimizer_steps"] == 30 and 0 < first["batch_in_epoch"]
    run_train(SIXTY + ["training.max_steps=60", "hydra.run.dir=outputs/thirty"], workdir, env)
    assert _max_diff(_params(thirty), reference) < 1e-6
    assert _max_diff(_params(thirty.parent / "best.pt"), _params(straight / "checkpoints" / "best.pt")) < 1e-6
    assert whole_epochs(thirty.parent.parent) == whole_epochs(straight)

    # the same command once more: nothing to train, exit 0, the checkpoint untouched
    before = thirty.read_bytes()
    proc = run_train(SIXTY + ["training.max_steps=60", "hydra.run.dir=outputs/thirty"], workdir, env)
    assert "the run has reached training.max_steps=60 (60 optimizer steps" in proc.stdout
    assert "nothing to train" in proc.stdout and thirty.read_bytes() == before


def test_train_script_learns(workdir):
    """scripts/train.py itself, a few hundred steps on tiny data: the fixed train sample's PER falls from
    chance to a small fraction of it, and val PER moves well below the empty hypothesis's 1.0."""
    env = user_env(workdir / "home")
    run_train(["data.data_root=data/hdf5_data_final", "curriculum=mode_ssm_ctc", "training.stages.0.epochs=16", "training.stages.1.epochs=0",
               "training.batch_size=4", "model.d_model=64", "model.n_layers=1", "model.head_dim=16",
               "model.chunk_size=16", "decoding.extra_vocabulary=100", "decoding.beam=8", "data.train_wer_trials=8",
               "hydra.run.dir=outputs/learn"], workdir, env, timeout=400)
    state = load_checkpoint(workdir / "outputs" / "learn" / "checkpoints" / "last.pt")
    history = state["position"]["history"]
    assert len(history) == 16 and state["position"]["nonfinite_batches"] == 0
    train_per = [h["train/per"] for h in history]
    val_per = [h["val/per"] for h in history]
    assert train_per[0] > 0.7, train_per  # an untrained model is near chance
    assert min(train_per[-3:]) < 0.25, train_per
    assert min(val_per) < 0.9, val_per


def test_a_nan_in_one_train_trial_never_reaches_the_weights(workdir, tiny_data_root):
    """One NaN value in one train trial, read without validation: its step is skipped, and the weights and
    checkpoint stay finite (the old skip ran backward through 0 x NaN and wrote NaN into 50 of 73 tensors)."""
    import numpy as np

    from mode_ssm.data.t15 import T15Split
    from mode_ssm.data.writer import TrialRecord, write_trials

    root = workdir / "nan_data"
    shutil.copytree(tiny_data_root, root)
    session = "t15.2023.08.13"
    split = T15Split(root, "train", sessions=[session], validate="none")
    records = [TrialRecord(np.asarray(ex.features).copy(), ex.session, ex.block_num, ex.trial_num, ex.sentence,
                           ex.phoneme_ids, {"speaking_mode": ex.speaking_mode or "vocalized"})
               for ex in (split[i] for i in range(len(split)))]
    split.close()
    records[0].features[5, 3] = np.nan
    write_trials(root / session / "data_train.hdf5", records)
    env = user_env(workdir / "home")
    proc = run_train([f"data.data_root={root}", "data.validate=none", "data.max_sessions=2", "curriculum=mode_ssm_ctc", "training.stages.1.epochs=0",
                      "training.stages.0.epochs=2", "training.batch_size=4", "hydra.run.dir=outputs/nan"] + TINY,
                     workdir, env)
    state = load_checkpoint(workdir / "outputs" / "nan" / "checkpoints" / "last.pt")
    assert all(bool(torch.isfinite(t).all()) for t in state["model"].values() if t.is_floating_point())
    assert state["position"]["nonfinite_batches"] == 2  # the trial's batch, once per epoch
    said = proc.stdout + proc.stderr  # Hydra's logging goes to the console
    assert f"{session} block {records[0].block_num} trial {records[0].trial_num}" in said
    assert "optimizer step skipped" in said and "non-finite input features" in said
    assert all(math.isfinite(h["val/per"]) for h in state["position"]["history"])


def test_a_run_folder_of_another_model_or_curriculum_says_so_and_stops(workdir, tiny_checkpoint):
    """Rerunning into a run folder with other options must not load mismatched weights or stages."""
    from helpers import TINY_TRAIN

    run = workdir / "outputs" / "theirs"
    shutil.copytree(tiny_checkpoint.parent.parent, run)
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    env = user_env(workdir / "home")
    base = ["data.data_root=data/hdf5_data_final", f"hydra.run.dir={run}"] + \
        [a for a in TINY_TRAIN if not a.startswith("training.max_steps")]
    for extra, said in ((["model.d_model=48"], "its weights belong to another model than model=mode_ssm"),
                        (["curriculum=mode_ssm_ctc"], "this run was trained with the curriculum stages")):
        proc = subprocess.run([sys.executable, TRAIN] + base + extra, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert f"error: {last}: " in proc.stderr and said in proc.stderr and "Traceback" not in proc.stderr
        assert "start a new hydra.run.dir" in proc.stderr
    assert last.read_bytes() == before


def test_training_never_reads_the_held_out_test_truth(workdir, tiny_data_root, tiny_checkpoint):
    """The simulator's test_truth.csv sits in the data root: training without it gives the same weights."""
    from helpers import TINY_TRAIN

    from mode_ssm.data.truth import TEST_TRUTH

    assert (tiny_data_root / TEST_TRUTH).is_file()
    bare = workdir / "bare"
    shutil.copytree(tiny_data_root, bare, ignore=shutil.ignore_patterns(TEST_TRUTH))
    run_train([f"data.data_root={bare}", *TINY_TRAIN, "hydra.run.dir=outputs/bare"], workdir, user_env(workdir / "home"))
    ours = _params(workdir / "outputs" / "bare" / "checkpoints" / "last.pt")
    assert _max_diff(ours, _params(tiny_checkpoint.parent / "last.pt")) == 0.0
