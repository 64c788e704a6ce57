"""Test-time adaptation against neural drift, on simulated data (one CPU thread).

    python benchmarks/tta_drift.py [--root DIR] [--train-minutes 20] [--checkpoint PATH] [--tta key=value ...]

1. Simulates the ``bench`` preset (11 sessions from 2023-08-11 to 2025-04-13)
   into ``ROOT/hdf5_data_final`` unless it is there.
2. Trains MODE-SSM small (CTC stage only, 14 epochs or ``--train-minutes``)
   on the first ``--train-sessions`` (8: up to 2024-03-17) sessions with
   scripts/train.py, unless ``ROOT/run/checkpoints/best.pt`` exists or
   ``--checkpoint`` is given.
3. Decodes the val trials of every session with the lexicon + 3-gram decoder,
   without TTA ("none") and with it: input whitening only ("whiten"), plain
   entropy minimisation ("entropy"), information maximisation = entropy
   minimisation + diversity, the configs/tta/default.yaml default ("im"), and
   self-training on the LM's transcripts ("self", slow: ~20 minutes), and,
   as a ceiling that uses labels, the unseen sessions' day layer fine-tuned with
   CTC on their train-split trials and true transcripts ("labelled", 60 steps).
   ``--conditions`` picks which. Prints PER/WER for:
   sessions seen in training (no drift relative to their own day layer), near
   unseen sessions (<= 2 months after the last training day) and late unseen
   sessions (3-13 months after), decoded with the nearest earlier day's layer.
   Unseen sessions adapt on their val trials and, unless ``--adapt-val-only``,
   on their train-split trials too (unlabelled data of that day the model never
   trained on; only val trials are scored). Self-training is cross-fitted
   (``tta.self_train_folds``): a trial is never decoded by a model fitted to its
   own pseudo-label.

TTA settings default to ``configs/tta/default.yaml``; ``--tta
steps=20 lr=0.003`` overrides them. Numbers depend on how far the small model
trained: with a few CPU minutes it is weak, so read the relative changes, and
the absolute WER, with that in mind.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
NEAR_DAYS = 62


def simulate(root: Path) -> Path:
    data = root / "hdf5_data_final"
    if (data / "simulation.json").is_file():
        return data
    cmd = [sys.executable, str(REPO / "scripts" / "simulate.py"), "preset=bench", f"output_dir={data}",
           f"hydra.run.dir={root / 'simulate_log'}"]
    print("simulating:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return data


def train(data: Path, run_dir: Path, sessions: int, minutes: float, epochs: int) -> Path:
    ckpt = run_dir / "checkpoints" / "best.pt"
    if ckpt.is_file():
        print(f"using the trained checkpoint {ckpt} (delete {run_dir} to retrain)")
        return ckpt
    cmd = [
        sys.executable, str(REPO / "scripts" / "train.py"), f"data.data_root={data}", f"data.max_sessions={sessions}",
        "data.validate=metadata", "model=mode_ssm_small", "training.batch_size=16",
        # CTC only (TTA adapts what CTC decoding reads), `epochs` in all (warm-up at the identity day
        # layers, then with them) or the time budget
        "curriculum=mode_ssm_ctc", f"training.stages.0.epochs={max(1, epochs // 2)}",
        f"training.stages.1.epochs={epochs - max(1, epochs // 2)}", f"training.time_budget_minutes={minutes}",
        "data.train_wer_trials=16", f"hydra.run.dir={run_dir}",
    ]
    print("training:", " ".join(cmd), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"})
    print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    return ckpt


def group_of(session: str, day, last_train: str) -> str:
    from mode_ssm.evaluation.reports import days_since

    if day.exact:
        return "seen"
    return "near unseen" if days_since(session, last_train) <= NEAR_DAYS else "late unseen"


def decode_with_labelled_recalibration(loaded, split, adapt_split, word_decoder, steps: int = 60, lr: float = 3e-3):
    """Rows for ``split``; unseen sessions first fit their borrowed day layer to ``adapt_split``'s labels."""
    from mode_ssm.runtime.decode import decode_split
    from mode_ssm.data.augment import smoothed
    from mode_ssm.evaluation.pipeline import raw_batches, session_days
    from mode_ssm.runtime.distributed import DistContext
    from mode_ssm.evaluation.tta import adaptable_parameters, ctc_steps, restored

    model, augmenter, ctx = loaded.model, loaded.eval_augmenter(), DistContext(device=loaded.device)
    days = session_days(loaded, split.sessions)
    meta, adapt_meta = split.trial_metadata(), adapt_split.trial_metadata() if adapt_split is not None else []
    rows = []
    for session in split.sessions:
        day = days[session].day
        batches = lambda data, idx: smoothed(raw_batches(data, idx, 16, day, loaded.device), augmenter)  # noqa: E731
        labelled = [i for i, m in enumerate(adapt_meta) if m["session"] == session]
        params = adaptable_parameters(model, ["day_layer"], day) if labelled else []
        with restored(params):
            if labelled:
                train = [{**b, "targets": b["phoneme_ids"], "target_lengths": b["phoneme_lengths"]}
                         for b in batches(adapt_split, labelled)]
                ctc_steps(model, train, params, torch.optim.Adam(params, lr=lr), steps)
            rows += decode_split(model, batches(split, [i for i, m in enumerate(meta) if m["session"] == session]),
                                 ctx, word_decoder)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("/tmp/mode_ssm_tta_drift"))
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--train-sessions", type=int, default=8)
    p.add_argument("--train-epochs", type=int, default=14)
    p.add_argument("--train-minutes", type=float, default=20.0, help="training stops here if the epochs take longer")
    p.add_argument("--tta", nargs="*", default=[], help="overrides of configs/tta/default.yaml, e.g. steps=20")
    p.add_argument("--conditions", nargs="*", default=["none", "whiten", "entropy", "im"],
                   help="any of none whiten entropy im self labelled")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default ROOT/tta_drift.json)")
    p.add_argument("--adapt-val-only", action="store_true",
                   help="unseen sessions adapt on their val trials only, not also on their train-split trials")
    args = p.parse_args()
    torch.set_num_threads(1)

    from mode_ssm.data.t15 import T15Split
    from mode_ssm.metrics import summarize
    from mode_ssm.evaluation.pipeline import decode_trials, open_split, session_days
    from mode_ssm.evaluation.search import WordDecoding, make_search
    from mode_ssm.runtime.loading import load_model
    from mode_ssm.evaluation.tta import TTAConfig, tta_settings

    data = simulate(args.root)
    ckpt = args.checkpoint or train(data, args.root / "run", args.train_sessions, args.train_minutes,
                                    args.train_epochs)
    base = tta_settings(REPO / "configs" / "tta" / "default.yaml", args.tta)
    tta_cfgs = {
        "none": TTAConfig.from_mapping({**base, "enabled": False}),
        "whiten": TTAConfig.from_mapping({**base, "enabled": True, "whiten": True, "steps": 0,
                                          "self_train_rounds": 0}),
        "entropy": TTAConfig.from_mapping({**base, "enabled": True, "diversity": 0.0, "self_train_rounds": 0}),
        "im": TTAConfig.from_mapping({**base, "enabled": True, "self_train_rounds": 0}),
        # self-training on the LM's transcripts alone (no entropy steps)
        "self": TTAConfig.from_mapping({**base, "enabled": True, "steps": 0,
                                        "self_train_rounds": base.get("self_train_rounds") or 3}),
    }
    loaded = load_model(ckpt)
    split = open_split(loaded, data, "val", validate="metadata")
    words = WordDecoding(loaded, data, args.root / "lm")
    _, word_decoder = make_search("ctc_lm", loaded, words)
    last_train = loaded.day_index.sessions[-1]
    unseen = [s for s in split.sessions if not loaded.day_index.lookup(s).exact]
    adapt_also = None if args.adapt_val_only or not unseen else T15Split(
        data, "train", day_index=loaded.day_index, validate="metadata", num_channels=loaded.num_channels,
        sessions=unseen)
    print(f"model trained on {list(loaded.day_index.sessions)}; "
          f"val: {len(split)} trials in {len(split.sessions)} sessions")
    for name in args.conditions:
        print(f"TTA {name}: {tta_cfgs[name].to_dict() if name in tta_cfgs else 'labelled recalibration'}")

    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.conditions:
        started = time.perf_counter()
        if name == "labelled":
            rows = decode_with_labelled_recalibration(loaded, split, adapt_also, word_decoder)
            res = SimpleNamespace(rows=rows, days=session_days(loaded, split.sessions), real_time_factor=float("nan"),
                                  neural_seconds=float("nan"))
        else:
            res = decode_trials(loaded, split, word_decoder=word_decoder, tta=tta_cfgs.get(name), batch_size=16,
                                adapt_also=adapt_also)
        groups: dict[str, list] = {}
        for r in res.rows:
            groups.setdefault(group_of(r["session"], res.days[r["session"]], last_train), []).append(r)
        groups["all"] = res.rows
        results[name] = {g: {k: summarize(rows)[k] for k in ("per", "wer")} | {"trials": len(rows)}
                         for g, rows in groups.items()}
        results[name]["_seconds"] = {"decode": time.perf_counter() - started, "neural": res.neural_seconds}
        print(f"{name}: {time.perf_counter() - started:.0f} s "
              f"(real-time factor {res.real_time_factor:.3f})", flush=True)

    order = ["seen", "near unseen", "late unseen", "all"]
    print("\nPER / WER (%) by session group; change relative to no TTA")
    header = f"{'condition':10s}" + "".join(f"{g + ' (' + str(results['none'][g]['trials']) + ')':>34s}"
                                           for g in order if g in results["none"])
    print(header)
    for name in args.conditions:
        cells = []
        for g in order:
            if g not in results[name]:
                continue
            r, b = results[name][g], results["none"][g]
            rel = lambda k: 100 * (r[k] - b[k]) / b[k] if b[k] else 0.0  # noqa: E731
            cells.append(f"{100 * r['per']:6.1f} ({rel('per'):+5.1f}%) {100 * r['wer']:6.1f} ({rel('wer'):+5.1f}%)")
        print(f"{name:10s}" + "".join(f"{c:>34s}" for c in cells))
    out = args.out or args.root / "tta_drift.json"
    summary = {"checkpoint": str(ckpt), "tta": {k: tta_cfgs[k].to_dict() for k in args.conditions if k in tta_cfgs},
               "adapt_also_train_trials": 0 if adapt_also is None else len(adapt_also), "results": results}
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
