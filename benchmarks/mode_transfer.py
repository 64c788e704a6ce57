"""Does the unsupervised speaking-mode split transfer? Block pseudo-labels against the simulated truth.

    python benchmarks/mode_transfer.py [--preset bench] [--versions 1 2] [--seeds 0 1 2]
                                       [--sweep 32 37 42 48 56 64] [--sweep-seed 0]
                                       [--max-sessions N] [--json PATH]

For every (simulator version, seed) the preset's train trials are simulated in memory (nothing is
written to disk) and given to ``fit_block_modes`` exactly as the trainer gives it a train split
(``mode_ssm.training.data.block_mode_targets``: keys (session, block_num), features and phoneme
counts in dataset order, default seed and BIC threshold). Whole sessions are simulated, since
features are normalised over the preceding trials of every split, but only train trials reach the
fit. (The trainer's reader would also drop trials breaking its training rules, e.g. > 30 s; these
are not dropped here.) Printed per row:

- ``supported``, ``BIC gain``, ``sep``: the fit's verdict and numbers (``BlockModes``);
- ``agree``: share of train blocks whose pseudo-label equals the true mode (the trainer's
  ``ModeTargets.agreement_with_truth``; '-' when the split is not supported, as the trainer then
  has no labels). Cluster ids are not arbitrary: ``split_modes`` calls the cluster with fewer frames
  per phoneme silent, so agreement is direct, and a value below 0.5 means the rule picked the
  wrong cluster. ``base``: the agreement of calling every block by the more common true mode;
- ``forced``: the same agreement for the split the fit would have made without its BIC gate
  (``split_modes`` with ``min_bic_gain=-inf`` on the same block statistics), i.e. whether the
  gate or the signal fails;
- ``d'``: how far apart the true modes are on the leading cue (log frames per phoneme): the
  difference of the modes' block means over their pooled within-mode SD.

``--sweep``: the same on version 2 (seed ``--sweep-seed``) with the silent speaking rate set to
each value (words/min; the vocalized rate stays at its default, 32), from equal rates (no rate
cue at all) to twice the vocalized rate; ``--sweep`` with no values skips it.

Cost: ~16-20 ms of simulation per trial on one core; the bench preset (11 sessions, 1,412 train
of 1,993 trials) takes ~40-50 s per row, the default 6 rows + 6 sweep rows ~9 min (537 s, 1.5 GB).
``--max-sessions N`` keeps the preset's first N sessions (default: all).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from mode_ssm.data.mode_labels import block_mode_statistics, fit_block_modes, split_modes  # noqa: E402
from mode_ssm.data.t15 import speaking_mode_id  # noqa: E402
from mode_ssm.sim import SimConfig, iter_simulated_sessions, load_config, make_plan  # noqa: E402
from mode_ssm.training.data import ModeTargets  # noqa: E402


def mode_transfer(config: SimConfig, seed: int) -> dict:
    """Fit block modes to the train trials of ``config`` simulated with ``seed``; compare with the truth."""
    start = time.perf_counter()
    plan = make_plan(config, seed)
    train = [t for t in plan.trials() if t.split == "train"]  # sessions by date, recording order: the reader's order
    keys = [(t.session, t.block_num) for t in train]
    truth = {k: speaking_mode_id(t.speaking_mode) for k, t in zip(keys, train)}
    stats: dict = {}  # block -> block_mode_statistics, for the forced split and d'

    def features():
        for _, trials in iter_simulated_sessions(plan):
            chosen = [s for s in trials if s.trial.split == "train"]
            for key, block in itertools.groupby(chosen, key=lambda s: (s.trial.session, s.trial.block_num)):
                block = list(block)
                stats[key] = block_mode_statistics([s.features for s in block], [len(s.trial.phoneme_ids) for s in block])
                yield from (s.features for s in block)

    fit = fit_block_modes(keys, features(), [len(t.phoneme_ids) for t in train])
    forced = split_modes(list(stats), np.stack(list(stats.values())), min_bic_gain=-np.inf)
    rate = np.array([v[0] for v in stats.values()])
    silent = np.array([truth[k] == 1 for k in stats])
    pooled_sd = np.sqrt(((rate[silent] - rate[silent].mean()) ** 2).sum() + ((rate[~silent] - rate[~silent].mean()) ** 2).sum())
    pooled_sd /= np.sqrt(max(len(rate) - 2, 1))
    return {
        "version": config.version,
        "seed": int(seed),
        "sessions": len(plan.sessions),
        "vocalized_wpm": config.neural.vocalized_wpm,
        "silent_wpm": config.neural.silent_wpm,
        "train_trials": len(train),
        "blocks": len(stats),
        "silent_blocks": int(silent.sum()),
        "baseline": float(max(silent.mean(), 1 - silent.mean())),  # agreement of one label for every block
        "d_prime": float((rate[~silent].mean() - rate[silent].mean()) / pooled_sd),
        "supported": fit.supported,
        "bic_gain": fit.bic_gain,
        "separation": fit.separation,
        "minor_share": fit.minor_share,
        "statistics": list(fit.statistics),
        "agreement": ModeTargets(fit).agreement_with_truth(truth),
        "forced_agreement": ModeTargets(forced).agreement_with_truth(truth),
        "seconds": round(time.perf_counter() - start, 1),
    }


HEADER = (f"{'ver':>3} {'seed':>4} {'voc/sil wpm':>11} {'blocks':>8} {'d_prime':>7} {'supported':>9} {'BIC gain':>8} "
          f"{'sep':>5} {'minor':>5} {'base':>4} {'agree':>5} {'forced':>6}  statistics")


def format_row(r: dict) -> str:
    agree = "-" if r["agreement"] is None else f"{r['agreement']:.2f}"
    forced = "-" if r["forced_agreement"] is None else f"{r['forced_agreement']:.2f}"
    stats = ",".join(s.removeprefix("log_") for s in r["statistics"])
    return (f"{r['version']:>3} {r['seed']:>4} {r['vocalized_wpm']:>5.0f}/{r['silent_wpm']:<5.0f} "
            f"{r['silent_blocks']:>3}/{r['blocks']:<4} {r['d_prime']:>7.2f} {'yes' if r['supported'] else 'no':>9} "
            f"{r['bic_gain']:>8.1f} {r['separation']:>5.2f} {r['minor_share']:>5.2f} {r['baseline']:>4.2f} {agree:>5} {forced:>6}  {stats}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--versions", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sweep", type=float, nargs="*", default=[32, 37, 42, 48, 56, 64],
                    help="silent words/min on version 2 (no values: no sweep)")
    ap.add_argument("--sweep-seed", type=int, default=0)
    ap.add_argument("--max-sessions", type=int, help="the preset's first N sessions only")
    ap.add_argument("--json", type=Path, help="write the rows here too")
    args = ap.parse_args()

    def config(**overrides) -> SimConfig:
        cfg = load_config(args.preset, **overrides)
        if args.max_sessions is not None:
            sessions = cfg.sessions if cfg.sessions is not None else sorted({t.session for t in make_plan(cfg, 0).trials()})
            cfg = load_config(cfg, sessions=list(sessions)[: args.max_sessions])
        return cfg

    start = time.perf_counter()
    rows: dict[str, list[dict]] = {"transfer": [], "sweep": []}
    runs = [("transfer", config(version=v), s) for v in args.versions for s in args.seeds]
    runs += [("sweep", config(version=2, neural={"silent_wpm": w}), args.sweep_seed) for w in args.sweep]
    for i, (part, cfg, seed) in enumerate(runs):
        if i == 0 or part != runs[i - 1][0]:
            title = "by simulator version and seed" if part == "transfer" else f"version 2, seed {args.sweep_seed}, silent rate swept"
            print(f"\n{args.preset}: {title}\n{HEADER}", flush=True)
        rows[part].append(mode_transfer(cfg, seed))
        print(format_row(rows[part][-1]), flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s; blocks = silent/all train blocks; agree/forced: share of blocks labelled "
          "with their true mode (gated fit / without the BIC gate), base: one label for all; d_prime: true modes' distance on log frames per phoneme")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"preset": args.preset, "max_sessions": args.max_sessions, **rows}, indent=1))


if __name__ == "__main__":
    main()
