"""Causal (streaming) vs bidirectional MODE-SSM small on the same data, recipe and CPU budget.

Trains ``mode_ssm_causal_small`` and ``mode_ssm_small`` back to back with scripts/train.py for the
same wall-clock budget on one thread, scores both with scripts/evaluate.py (lexicon + 3-gram) on
``--split`` (test: the simulator's held-out labels), then streams the causal checkpoint with
scripts/stream.py (``speed=0``, 4-bin = 80 ms chunks, one thread, LM search included) and prints:
PER and WER of both, the causal/bidirectional WER ratio, compute per 80 ms step (p50 / p99), time
from the last bin to the final text (p50 / p99), real-time factor. Targets (issue: streaming):
p99 compute < 8 ms per 80 ms step, final text within 100 ms of the last bin, causal WER at most
1.25x the bidirectional WER.

    python benchmarks/streaming.py --data-root data/simulated/bench_seed0 --minutes 20

``--skip-train`` reuses the run folders already under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = {"causal": "mode_ssm_causal_small", "bidirectional": "mode_ssm_small"}
# the same shortened curriculum for both (the causal one has no flow-bridge stage; nor does this one run it)
CURRICULUM = ["training.stages.0.epochs=7", "training.stages.1.epochs=4", "training.stages.2.epochs=2"]


def run(cmd: list[str], log: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, cwd=log.parent)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({time.perf_counter() - start:.0f} s), see {log}:\n"
                         f"{proc.stderr[-3000:]}")
    return proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--out", default="outputs/streaming_benchmark")
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_root = str(Path(args.data_root).resolve())
    py = sys.executable
    results = {}
    for name, model in MODELS.items():
        run_dir = out / name
        if not args.skip_train:
            run([py, str(REPO / "scripts" / "train.py"), f"model={model}", f"data.data_root={data_root}",
                 f"training.time_budget_minutes={args.minutes}", "torch_threads=1", f"hydra.run.dir={run_dir}",
                 "curriculum=causal", *CURRICULUM], out / f"train_{name}.log")
        ckpt = run_dir / "checkpoints" / "best.pt"
        run([py, str(REPO / "scripts" / "evaluate.py"), f"checkpoint={ckpt}", f"split={args.split}",
             f"data.data_root={data_root}", f"output_dir={out / ('eval_' + name)}"], out / f"eval_{name}.log")
        metrics = json.loads((out / f"eval_{name}" / "metrics.json").read_text())["metrics"]
        results[name] = {"per": metrics.get("per"), "wer": metrics.get("wer"),
                         "offline_rtf": metrics.get("real_time_factor")}
    stdout = run([py, str(REPO / "scripts" / "stream.py"), f"checkpoint={out / 'causal' / 'checkpoints' / 'best.pt'}",
                  f"split={args.split}", f"data.data_root={data_root}", "source=replay", "speed=0", "chunk_bins=4",
                  "live=off", f"output={out / 'stream.csv'}"], out / "stream.log")
    figures = {}
    for key, pattern in {"compute": r"compute per 80 ms of signal \(ms\): (.*)",
                         "final": r"final text after the last bin \(ms\): (.*)",
                         "rtf": r"real-time factor \(compute / signal\): ([\d.]+)",
                         "wer": r"WER ([\d.]+)%"}.items():
        m = re.search(pattern, stdout)
        figures[key] = m.group(1) if m else "n/a"
    c, b = results["causal"], results["bidirectional"]
    ratio = c["wer"] / b["wer"] if c["wer"] and b["wer"] else float("nan")
    print(json.dumps({"results": results, "stream": figures}, indent=2))
    print(f"\nbench {args.split}, {args.minutes:g} CPU minutes per model, one thread\n")
    print("| model | PER | WER (%) |")
    print("|---|---|---|")
    for name in MODELS:
        print(f"| {MODELS[name]} | {results[name]['per']:.3f} | {100 * results[name]['wer']:.1f} |")
    print(f"\ncausal / bidirectional WER: {ratio:.2f} (target <= 1.25)")
    print(f"stream WER {figures['wer']}% (equals the causal offline WER above)")
    print(f"compute per 80 ms step, ms: {figures['compute']} (target p99 < 8)")
    print(f"last bin -> final text, ms: {figures['final']} (target < 100)")
    print(f"real-time factor: {figures['rtf']}")


if __name__ == "__main__":
    main()
