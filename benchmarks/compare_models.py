"""MODE-SSM vs the official GRU baseline on the same data and CPU budget.

Trains each model with scripts/train.py for the same wall-clock budget on one
thread, back to back, then prints: best val PER and WER, train trials/s, peak RSS,
and forward+backward time per 1000 bins at two sequence lengths.

    python benchmarks/compare_models.py --data-root data/simulated/bench_seed0 --minutes 30

On a 2-core machine two single-thread runs can also go side by side (one core each,
both under the same load), e.g. ``--models mode_ssm`` and ``--models gru_baseline``
with different ``--out``; that is how the README's table was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent

# MODE-SSM runs its curriculum: CTC warm-up 7, joint 4, mode 2, denoise 1 epochs. Measured on
# bench with batch 16 while another one-thread training ran beside it: ~115-130 s per CTC
# epoch, ~150 s per joint epoch, ~70-90 s per mode epoch, so 30 minutes end in the joint or mode
# stage (the budget is a total for the run: rerunning the same command says it is spent; a
# larger --minutes continues it). The GRU trains CTC for as long as the budget lasts. `mode_ssm_no_film` is MODE-SSM without mode conditioning (the head
# is still trained and reported, its posterior is not used), for the on/off effect.
CURRICULUM = ["training.stages.0.epochs=7", "training.stages.1.epochs=4", "training.stages.2.epochs=2",
              "training.stages.3.epochs=1"]
MODELS = {
    "mode_ssm": ["model=mode_ssm_small", *CURRICULUM],
    "mode_ssm_no_film": ["model=mode_ssm_small", "model.mode_conditioning=none", *CURRICULUM],
    # ~3.5 trials/s at most (454 ms fwd+bwd per 1000 bins, trials ~590 bins): 4 epochs of
    # bench in 30 minutes, so its cosine schedule ends near the budget
    "gru_baseline": ["model=gru_baseline", "training.optimizer.lr=0.005", "training.stages.0.epochs=4"],  # curriculum ctc
}


def train(name: str, overrides: list[str], args, out_dir: Path) -> dict:
    run_dir = out_dir / name
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), f"data.data_root={args.data_root}",
           f"training.time_budget_minutes={args.minutes}", "torch_threads=1", f"hydra.run.dir={run_dir}",
           f"training.batch_size={args.batch_size}", "wandb.enabled=true", f"wandb.run_name={name}",
           *overrides, *args.extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    (out_dir / f"{name}.log").write_text(proc.stdout + proc.stderr)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return summarize_run(name, run_dir, seconds)


def summarize_run(name: str, run_dir: Path, seconds: float | None = None) -> dict:
    """The figures of one trained run folder (also for a run trained earlier)."""
    from mode_ssm.runtime.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    history = ckpt["position"]["history"]
    trials = _train_trials_seen(run_dir)
    best = min(history, key=lambda h: (h.get("val/per", 9.0)))  # the epoch the budget cut counts too
    whole = [h for h in history if "cut_at_batch" not in h]
    return {
        "model": name, "seconds": None if seconds is None else round(seconds, 1), "epochs": len(whole),
        "cut_epoch_batches": history[-1].get("cut_at_batch"),
        "best_val_per": best.get("val/per"), "val_wer_at_best_per": best.get("val/wer"),
        "final_val_per": history[-1].get("val/per"), "final_val_wer": history[-1].get("val/wer"),
        "final_val_mode_accuracy_block": history[-1].get("val/mode_accuracy_block"),
        "stages_reached": sorted({h["stage"] for h in history}, key=[h["stage"] for h in history].index),
        "train_trials_per_second": trials, "peak_rss_mb": round(max(h.get("time/peak_rss_mb", 0) for h in history)),
    }


def _train_trials_seen(run_dir: Path) -> float | None:
    from mode_ssm.training.wandb_records import find_run_logs, read_run

    logs = find_run_logs(run_dir / "wandb")
    if not logs:
        return None
    rows = [r for r in read_run(logs[-1]).history if "train/trials_per_second" in r]
    rates = sorted(r["train/trials_per_second"] for r in rows)
    return round(rates[len(rates) // 2], 2) if rates else None  # median batch


def encoder_ms_per_1000_frames(name: str, lengths: list[int], batch: int = 16) -> dict[int, float]:
    """Forward+backward of the model's time-mixing core on random input, one thread."""
    from omegaconf import OmegaConf

    from mode_ssm.models.build import build_model

    torch.set_num_threads(1)
    cfg = OmegaConf.load(REPO / "configs" / "model" / f"{'gru_baseline' if name == 'gru_baseline' else 'mode_ssm_small'}.yaml")
    model = build_model(cfg, n_days=1, n_channels=512)
    out = {}
    for length in lengths:
        x = torch.randn(batch, length, 512)
        lens = torch.full((batch,), length)
        day = torch.zeros(batch, dtype=torch.long)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            res = model(x, lens, day)
            res["phoneme_logits"].sum().backward()
            times.append(time.perf_counter() - t0)
        out[length] = round(1000 * min(times) / (batch * length / 1000), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--models", nargs="+", default=["mode_ssm", "gru_baseline"], choices=list(MODELS))
    p.add_argument("--out", default="outputs/compare_models")
    p.add_argument("--lengths", type=int, nargs=2, default=[500, 1500], help="bins of 20 ms")
    p.add_argument("extra", nargs="*", help="more overrides for both runs")
    args = p.parse_args()
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        row = train(name, MODELS[name], args, out_dir)
        row["ms_per_1000_frames"] = encoder_ms_per_1000_frames(name, args.lengths)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| model | best val PER | val WER (%) at best PER | train trials/s | peak RSS (MB) | "
          + " | ".join(f"fwd+bwd ms / 1000 frames @ {n} bins" for n in args.lengths) + " |")
    print("|---" * (5 + len(args.lengths)) + "|")
    for r in rows:
        ms = " | ".join(str(r["ms_per_1000_frames"][n]) for n in args.lengths)
        print(f"| {r['model']} | {r['best_val_per']:.3f} | {r['val_wer_at_best_per']:.1f} | "
              f"{r['train_trials_per_second']} | {r['peak_rss_mb']} | {ms} |")


if __name__ == "__main__":
    main()
