"""The competition recipe on simulated data: ensembles and neural-LM rescoring against one model.

    python benchmarks/recipe.py --data-root data/simulated/bench_seed0 --minutes 20 --gru-minutes 20

Every step is a script a user runs, in its own process, one thread:

1. ``scripts/train.py -m seed=0,1,2 model=mode_ssm_small`` (one Hydra multirun, ``--minutes`` of
   training each) and ``model=gru_small`` (``--gru-minutes``);
2. ``scripts/train_text_lm.py`` on the same train sentences the n-gram is built from (``--lm-steps``);
3. on **val**: the single best MODE-SSM seed (by val WER) is chosen, and ``rescore.weight`` is
   tuned over ``--weights`` for every combination;
4. on **test** (the simulator's held-out truth; val where the root has none, and the table says so):
   WER and PER of the single best MODE-SSM, the ensemble of the seeds (log-probabilities averaged
   per frame), the best MODE-SSM + GRU and the seeds + GRU (n-best lists merged across frame
   rates), each with the 3-gram alone and with the rescoring weight val chose.

Target (issue: recipe): ensemble + rescoring at least 25% fewer word errors than the single model
with the 3-gram. ``--skip-train`` reuses the runs already under ``--out``.
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
SCRIPTS = REPO / "scripts"
# the curriculum of benchmarks/compare_models.py, so the budget ends in the joint or mode stage
CURRICULUM = ["training.stages.0.epochs=7", "training.stages.1.epochs=4", "training.stages.2.epochs=2",
              "training.stages.3.epochs=1"]
GRU = ["model=gru_small", "training.optimizer.lr=0.005", "training.stages.0.epochs=4"]


def run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                              cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed after {time.perf_counter() - start:.0f} s "
                         f"(log {log}):\n{log.read_text()[-3000:]}")


def evaluate(checkpoints: list[Path], split: str, data_root: str, out_dir: Path, rescore: Path | None,
             weight: float | None) -> dict:
    """scripts/evaluate.py on ``checkpoints`` (one, or an ensemble): its metrics.json figures."""
    if (out_dir / "metrics.json").is_file():  # measured by an earlier call of this run
        return json.loads((out_dir / "metrics.json").read_text())["metrics"]
    ckpt = str(checkpoints[0]) if len(checkpoints) == 1 else "[" + ",".join(map(str, checkpoints)) + "]"
    extra = [f"rescore.model={rescore}", f"rescore.weight={weight}"] if rescore is not None else []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    run([sys.executable, str(SCRIPTS / "evaluate.py"), f"checkpoint={ckpt}", f"split={split}",
         f"data.data_root={data_root}", f"output_dir={out_dir}", *extra], out_dir.parent / f"{out_dir.name}.log")
    return json.loads((out_dir / "metrics.json").read_text())["metrics"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--minutes", type=float, default=20.0, help="training budget of each MODE-SSM seed")
    p.add_argument("--gru-minutes", type=float, default=20.0, help="training budget of the GRU baseline")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lm-steps", type=int, default=1000, help="scripts/train_text_lm.py steps")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0],
                   help="rescore.weight values tried on val (0: the LM re-ranks with no weight, i.e. off)")
    p.add_argument("--out", default="outputs/recipe_benchmark")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--extra", nargs="*", default=[], help="more scripts/train.py overrides for every training run")
    args = p.parse_args()
    data_root = str(Path(args.data_root).resolve())
    if not Path(data_root).is_dir():
        raise SystemExit(f"--data-root {data_root}: no such folder (write one with scripts/simulate.py)")
    if len(args.seeds) < 2:
        raise SystemExit("--seeds: an ensemble needs at least 2 seeds")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    seeds_dir, gru_dir, lm_dir = out / "mode_ssm_seeds", out / "gru", out / "text_lm"
    if not args.skip_train:
        run([py, str(SCRIPTS / "train.py"), "-m", "seed=" + ",".join(map(str, args.seeds)), "model=mode_ssm_small",
             f"data.data_root={data_root}", f"training.time_budget_minutes={args.minutes}", *CURRICULUM,
             f"hydra.sweep.dir={seeds_dir}", "hydra.sweep.subdir=seed_${seed}", *args.extra], out / "train_seeds.log")
        run([py, str(SCRIPTS / "train.py"), *GRU, f"data.data_root={data_root}",
             f"training.time_budget_minutes={args.gru_minutes}", f"hydra.run.dir={gru_dir}", *args.extra],
            out / "train_gru.log")
        run([py, str(SCRIPTS / "train_text_lm.py"), f"data.data_root={data_root}", f"output={lm_dir}",
             f"steps={args.lm_steps}"], out / "train_text_lm.log")
    seeds = [seeds_dir / f"seed_{s}" / "checkpoints" / "best.pt" for s in args.seeds]
    gru = gru_dir / "checkpoints" / "best.pt"
    missing = [str(c) for c in [*seeds, gru] if not c.is_file()] + ([] if lm_dir.is_dir() else [str(lm_dir)])
    if missing:
        raise SystemExit(f"not trained yet: {missing} (run without --skip-train)")

    # ---- val: choose the single model, tune the rescoring weight of every combination --------------
    val = {i: evaluate([c], "val", data_root, out / "val" / f"seed_{s}", None, None)
           for i, (s, c) in enumerate(zip(args.seeds, seeds))}
    best = min(val, key=lambda i: val[i]["wer"])
    systems = {
        f"MODE-SSM small, best of seeds (seed {args.seeds[best]})": [seeds[best]],
        f"ensemble of {len(seeds)} MODE-SSM seeds": seeds,
        "best MODE-SSM + GRU (n-best merge)": [seeds[best], gru],
        f"{len(seeds)} MODE-SSM seeds + GRU (n-best merge)": [*seeds, gru],
    }
    weights = {}
    for k, (name, members) in enumerate(systems.items()):
        tried = {w: evaluate(members, "val", data_root, out / "val" / f"system{k}_w{w:g}", lm_dir, w)["wer"]
                 for w in args.weights}
        weights[name] = min(tried, key=tried.get)

    # ---- held-out figures ---------------------------------------------------------------------------
    from mode_ssm.data.truth import TEST_TRUTH

    has_truth = (Path(data_root) / TEST_TRUTH).is_file()
    split = "test" if has_truth else "val"
    rows = {}
    for k, (name, members) in enumerate(systems.items()):
        plain = evaluate(members, split, data_root, out / split / f"system{k}_3gram", None, None)
        rescored = evaluate(members, split, data_root, out / split / f"system{k}_rescored", lm_dir, weights[name])
        rows[name] = {"3gram": plain, "rescored": rescored, "weight": weights[name]}
    base = rows[next(iter(systems))]["3gram"]["wer"]
    (out / "results.json").write_text(json.dumps({"split": split, "rows": rows, "val_single": val}, indent=2,
                                                 default=str))
    where = "held-out test (the simulator's truth)" if has_truth else "val (this root has no test truth)"
    print(f"\n## recipe: {Path(data_root).name}, figures on {where}; MODE-SSM small {args.minutes:g} min per seed, "
          f"GRU small {args.gru_minutes:g} min, text LM {args.lm_steps} steps; rescore.weight chosen on val")
    print("| system | PER | WER 3-gram (%) | WER + neural LM (%) | weight | vs single 3-gram |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        change = 100 * (r["rescored"]["wer"] - base) / base if base else float("nan")
        print(f"| {name} | {r['3gram']['per']:.3f} | {100 * r['3gram']['wer']:.1f} | "
              f"{100 * r['rescored']['wer']:.1f} | {r['weight']:g} | {change:+.0f}% |")
    print(f"\ntarget: an ensemble + rescoring at least 25% fewer word errors than the single model with the 3-gram; "
          f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
