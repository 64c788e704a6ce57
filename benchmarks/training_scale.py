"""Training at scale on CPU: memory per epoch, full vs pruned RNN-T, one process vs torchrun.

Every figure comes from a ``scripts/train.py`` run in its own process and run folder, one torch
thread per process, read back from the run's ``last.pt`` history (``time/peak_rss_mb`` and
``time/epoch_seconds`` per epoch; peak RSS is the process's high-water mark so far, so a value that
rises from epoch to epoch is growth). Nothing else should run on the machine meanwhile.

    python benchmarks/training_scale.py --data-root data/simulated/bench_seed0            # all sections
    python benchmarks/training_scale.py --data-root DIR --only memory rnnt
    python benchmarks/training_scale.py --data-root DIR --only memory --extra training.release_heap_mb=null   # without giving freed heap memory back

Sections:

- ``memory``: MODE-SSM small, CTC only, ``--memory-epochs`` epochs: peak RSS after every epoch.
  Target: flat after the first epoch.
- ``rnnt``: MODE-SSM small, CTC warm-up then the joint CTC + RNN-T stage, once with
  ``model.rnnt_loss=full`` and once with ``pruned``, same seed and batch: peak RSS and train
  trials/s of the joint epochs, val PER/WER after them. Target: pruned below 2.5 GB, trials/s no
  lower, val figures within noise of the full loss.
- ``ddp``: the CTC stage for ``--ddp-steps`` optimizer steps at one global batch: one process
  (one thread), one process with two threads, and ``torchrun --nproc_per_node=2`` (one thread
  each, half the batch each): trials/s and the ratio to one process. Target: 2 processes >= 1.6x.
  On a GPU machine the same command line runs NCCL instead of gloo.
- ``full`` (not in the default set; pass ``--only full`` and a ``preset=full`` root): MODE-SSM small,
  one epoch of each of the four stages, ``--workers`` loader processes: per stage the epoch's wall
  time, train trials/s, the time the model waited for data, the decoding time of val and the
  train sample, peak RSS of the first trainer, and the peak PSS of the whole process tree (trainers
  and workers, sampled every 2 s). ``--processes 2`` trains with torchrun. Target: peak RSS below 4 GB
  while the whole set streams from disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN = str(REPO / "scripts" / "train.py")
JOINT = "{name: joint_train, epochs: %d, components: [day_layers, preprocessor, encoder, mode_head, ctc_head, rnnt], " \
        "loss_weights: {ctc: 0.5, rnnt: 0.5, mode: 0.1}}"
CTC = "{name: ctc_warmup, epochs: %d, components: [preprocessor, encoder, ctc_head], loss_weights: {ctc: 1.0}}"
MODE = "{name: mode_train, epochs: %d, components: [mode_head, ctc_head, rnnt], loss_weights: {ctc: 0.5, rnnt: 0.5, mode: 1.0}}"
DENOISE = "{name: denoise_train, epochs: %d, components: [flow_bridge], loss_weights: {denoise: 1.0}}"


def run_training(cmd: list[str], run_dir: Path, threads: int = 1) -> dict:
    """Run one training command (fresh run folder); return its history and wall time."""
    if (run_dir / "checkpoints").exists():
        raise SystemExit(f"{run_dir} already holds a run; choose another --out or remove it")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "benchmark.log"  # written as the run goes: `tail -f` it to follow a long run
    start = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen([*cmd, f"hydra.run.dir={run_dir}", f"torch_threads={threads}"], stdout=handle,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO)
        tree_pss = _watch_memory(proc)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed after {seconds:.0f} s (log: {log}):\n"
                         f"{log.read_text()[-3000:]}")
    from mode_ssm.runtime.checkpoint import load_checkpoint

    return {"history": load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]["history"],
            "seconds": seconds, "peak_tree_pss_mb": tree_pss}


def _watch_memory(proc: subprocess.Popen, every_s: float = 2.0) -> float | None:
    """Wait for ``proc``; the largest sum of PSS over it and all its descendants, sampled every ``every_s``.

    PSS (proportional set size) shares a page between the processes mapping it, so the sum over
    trainers and loader workers is the memory the run really holds (RSS would count shared pages
    once per process). None where psutil cannot read it.
    """
    try:
        import psutil
    except ImportError:
        proc.wait()
        return None
    peak = None
    while proc.poll() is None:
        try:
            root = psutil.Process(proc.pid)
            total = 0
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
                    pass
            peak = max(peak or 0.0, total / 2**20)
        except psutil.NoSuchProcess:
            break
        time.sleep(every_s)
    proc.wait()
    return None if peak is None else round(peak)


def train_trials(data_root: str) -> int:
    from mode_ssm.data.t15 import T15Split

    return len(T15Split(data_root, "train", validate="metadata"))


def memory(args, out: Path) -> dict:
    run = run_training([sys.executable, TRAIN, f"data.data_root={args.data_root}", "model=mode_ssm_small",
                        f"training.stages=[{CTC % args.memory_epochs}]", f"training.batch_size={args.batch_size}",
                        *args.extra], out / "memory")
    peaks = [round(h["time/peak_rss_mb"]) for h in run["history"]]
    print(f"\n## memory: MODE-SSM small, CTC only, batch {args.batch_size}, {args.memory_epochs} epochs")
    print("peak RSS after each epoch (MB): " + ", ".join(map(str, peaks)))
    growth = peaks[-1] - peaks[0] if peaks else 0
    print(f"growth after the first epoch: {growth:+d} MB ({100 * growth / max(peaks[0], 1):+.0f}%)")
    return {"peak_rss_mb_per_epoch": peaks, "growth_after_first_epoch_mb": growth,
            "val_per": [h.get("val/per") for h in run["history"]]}


def rnnt(args, out: Path) -> dict:
    n_train = train_trials(args.data_root)
    stages = f"training.stages=[{CTC % args.warmup_epochs},{JOINT % args.joint_epochs}]"
    results = {}
    for loss in ("full", "pruned"):
        run = run_training([sys.executable, TRAIN, f"data.data_root={args.data_root}", "model=mode_ssm_small",
                            f"model.rnnt_loss={loss}", stages, f"training.batch_size={args.batch_size}",
                            *args.extra], out / f"rnnt_{loss}")
        joint = [h for h in run["history"] if h.get("stage") == "joint_train"]
        ctc = [h for h in run["history"] if h.get("stage") == "ctc_warmup"]
        results[loss] = {
            "ctc_peak_rss_mb": round(ctc[-1]["time/peak_rss_mb"]),
            "joint_peak_rss_mb": round(joint[-1]["time/peak_rss_mb"]),
            "joint_trials_per_s": round(n_train * len(joint) / sum(h["time/epoch_seconds"] for h in joint), 2),
            "val_per": joint[-1].get("val/per"), "val_wer": joint[-1].get("val/wer"),
            "val_per_after_warmup": ctc[-1].get("val/per"),
        }
    print(f"\n## rnnt: MODE-SSM small, {args.warmup_epochs} CTC epochs then {args.joint_epochs} joint epochs, "
          f"batch {args.batch_size}, {n_train} train trials")
    print("| RNN-T loss | peak RSS after CTC (MB) | peak RSS in joint (MB) | joint train trials/s | "
          "val PER after joint | val WER (%) |")
    print("|---|---|---|---|---|---|")
    for loss, r in results.items():
        print(f"| {loss} | {r['ctc_peak_rss_mb']} | {r['joint_peak_rss_mb']} | {r['joint_trials_per_s']} | "
              f"{r['val_per']:.3f} | {r['val_wer']:.1f} |")
    return results


def ddp(args, out: Path) -> dict:
    stages = f"training.stages=[{CTC % 1}]"
    common = [f"data.data_root={args.data_root}", "model=mode_ssm_small", stages,
              f"training.max_steps={args.ddp_steps}", "data.train_wer_trials=8", *args.extra]
    batch = args.batch_size
    setups = {
        "1 process, 1 thread": ([sys.executable, TRAIN, *common, f"training.batch_size={batch}"], 1),
        "1 process, 2 threads": ([sys.executable, TRAIN, *common, f"training.batch_size={batch}"], 2),
        "torchrun 2 processes, 1 thread each": (
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", TRAIN, *common,
             f"training.batch_size={batch // 2}"], 1),
    }
    results = {}
    for i, (name, (cmd, threads)) in enumerate(setups.items()):
        run = run_training(cmd, out / f"ddp_{i}", threads=threads)
        cut = run["history"][-1]
        results[name] = round(args.ddp_steps * batch / cut["time/epoch_seconds"], 2)
    base = results["1 process, 1 thread"]
    print(f"\n## ddp: CTC stage, {args.ddp_steps} optimizer steps at global batch {batch}")
    print("| setup | train trials/s | vs 1 process |")
    print("|---|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate} | {rate / base:.2f}x |")
    return results


def full(args, out: Path) -> dict:
    n_train = train_trials(args.data_root)
    stages = f"training.stages=[{CTC % 1},{JOINT % 1},{MODE % 1},{DENOISE % 1}]"
    launcher = [sys.executable] if args.processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.processes}"]
    run = run_training([*launcher, TRAIN, f"data.data_root={args.data_root}", "model=mode_ssm_small", stages,
                        f"training.batch_size={args.batch_size // args.processes}", f"data.num_workers={args.workers}",
                        *args.extra], out / "full")
    rows = {}
    for h in run["history"]:
        rows[h["stage"]] = {"epoch_s": round(h["time/epoch_seconds"]),
                            "trials_per_s": round(n_train / h["time/epoch_seconds"], 2),
                            "data_wait_s": round(h.get("time/data_wait_seconds", float("nan")), 1),
                            "eval_s": round(h.get("time/eval_seconds", float("nan"))),
                            "peak_rss_mb": round(h["time/peak_rss_mb"]),
                            "val_per": h.get("val/per"), "val_wer": h.get("val/wer")}
    print(f"\n## full: MODE-SSM small, one epoch of every stage, global batch {args.batch_size}, {n_train} train "
          f"trials, {args.processes} training process(es) of one torch thread, {args.workers} loader worker(s) each; "
          f"whole run {run['seconds'] / 60:.1f} min; peak PSS of all its processes together "
          f"{run['peak_tree_pss_mb']} MB")
    print("| stage | train epoch (s) | train trials/s | waiting for data (s) | val + train-sample decoding (s) | "
          "peak RSS of the first trainer so far (MB) | val PER | val WER (%) |")
    print("|---|---|---|---|---|---|---|---|")
    for stage, r in rows.items():
        print(f"| {stage} | {r['epoch_s']} | {r['trials_per_s']} | {r['data_wait_s']} | {r['eval_s']} | "
              f"{r['peak_rss_mb']} | {r['val_per']:.3f} | {r['val_wer']:.1f} |")
    return {"stages": rows, "run_seconds": round(run["seconds"]), "peak_tree_pss_mb": run["peak_tree_pss_mb"],
            "processes": args.processes, "workers": args.workers}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", default="outputs/training_scale")
    p.add_argument("--only", nargs="+", choices=("memory", "rnnt", "ddp", "full"), default=("memory", "rnnt", "ddp"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--memory-epochs", type=int, default=4)
    p.add_argument("--warmup-epochs", type=int, default=4)
    p.add_argument("--joint-epochs", type=int, default=2)
    p.add_argument("--ddp-steps", type=int, default=40)
    p.add_argument("--workers", type=int, default=1, help="data.num_workers of the full section")
    p.add_argument("--processes", type=int, default=1, help="training processes of the full section (torchrun when > 1)")
    p.add_argument("--extra", nargs="*", default=[], help="more scripts/train.py overrides for every run")
    args = p.parse_args()
    args.data_root = str(Path(args.data_root).resolve())
    if not Path(args.data_root).is_dir():
        raise SystemExit(f"--data-root {args.data_root}: no such folder (write one with scripts/simulate.py)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sections = {"memory": memory, "rnnt": rnnt, "ddp": ddp, "full": full}
    results = {name: sections[name](args, out) for name in args.only}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out / 'results.json'}")


if __name__ == "__main__":
    main()
