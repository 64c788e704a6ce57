"""How hard is the simulated task? A linear per-frame phoneme classifier.

Multinomial logistic regression (L2, L-BFGS) on each 20 ms bin's features
stacked with a few neighbouring bins, trained on train frames and scored on
val frames against the simulator's known frame alignment (40 classes: 39
phonemes + silence/pause). Prints frame accuracy next to chance (the majority
class and 1/40), on all frames and on phoneme frames only, by speaking mode,
and, with --drift, for a probe trained on the earliest sessions and scored on
the latest ones.

A second number approximates what a sequence decoder could reach: the same
classifier on whole phoneme segments (mean features of each half of every
aligned phoneme, i.e. with oracle boundaries). One minus its accuracy is a
rough floor for a decoder's phoneme error rate without a language model.

The alignment is never in the default files: the probe regenerates the
simulation in memory from its preset and seed (deterministic), and with
--data checks that the regenerated features equal the files' first trial.

    python benchmarks/linear_probe.py                      # bench preset, seed 0
    python benchmarks/linear_probe.py --data DIR           # a simulated root (uses its simulation.json)
    python benchmarks/linear_probe.py --preset mini --train-frames 40000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: threads only contend on shared cores

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mode_ssm.phonemes import BOUNDARY  # noqa: E402
from mode_ssm.sim import SIMULATION_JSON, SimulatedTrial, iter_simulated_sessions, make_plan  # noqa: E402


def context_frames(x: np.ndarray, offsets: tuple[int, ...], bins: np.ndarray | None = None) -> np.ndarray:
    """Stack bins (default all) with their neighbours (edges repeated): (T, F) -> (len(bins), len(offsets) * F)."""
    bins = np.arange(x.shape[0]) if bins is None else bins
    idx = np.clip(bins[:, None] + np.asarray(offsets)[None, :], 0, x.shape[0] - 1)
    return x[idx].reshape(len(bins), -1)


def frame_set(trials: list[SimulatedTrial], offsets: tuple[int, ...], max_frames: int, rng: np.random.Generator):
    """Sampled frames: (features (N, len(offsets)*512) float32, labels (N,) int64 in 0..39, silent (N,) bool)."""
    total = sum(t.features.shape[0] for t in trials)
    keep_p = min(1.0, max_frames / max(total, 1))
    xs, ys, modes = [], [], []
    for t in trials:
        pick = np.flatnonzero(rng.random(t.features.shape[0]) < keep_p)
        if pick.size:
            xs.append(context_frames(t.features, offsets, pick))
            ys.append(t.frame_labels[pick].astype(np.int64) - 1)  # classes 1..40 -> 0..39
            modes.append(np.full(pick.size, t.trial.speaking_mode == "silent"))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(modes)


def segment_set(trials: list[SimulatedTrial]):
    """Aligned phoneme segments: (half-means (N, 1024) float32, labels (N,) int64 in 0..38, silent (N,) bool)."""
    xs, ys, modes = [], [], []
    for t in trials:
        lab = t.frame_labels.astype(np.int64)
        cuts = np.flatnonzero(np.diff(lab) != 0) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, lab.size]):
            if lab[a] == BOUNDARY:
                continue
            h = max((a + b) // 2, a + 1)
            second = t.features[h:b] if b > h else t.features[a:b]
            xs.append(np.concatenate([t.features[a:h].mean(0), second.mean(0)]))
            ys.append(lab[a] - 1)
            modes.append(t.trial.speaking_mode == "silent")
    return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.int64), np.asarray(modes)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int) -> torch.nn.Linear:
    """Full-batch L-BFGS multinomial logistic regression; x (N, D) float32, y (N,) int64 in 0..39."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model = torch.nn.Linear(x.shape[1], 40)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt) + l2 * model.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def accuracy(model: torch.nn.Linear, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((pred == y).mean()) if y.size else float("nan")


def report(name: str, model, x, y, silent) -> dict:
    phon = y != BOUNDARY - 1
    out = {
        "frames": int(y.size),
        "acc_all": accuracy(model, x, y),
        "acc_phoneme_frames": accuracy(model, x[phon], y[phon]),
        "acc_vocalized": accuracy(model, x[~silent], y[~silent]),
        "acc_silent": accuracy(model, x[silent], y[silent]),
        "chance_majority_all": float(np.bincount(y, minlength=40).max() / y.size),
        "chance_majority_phoneme_frames": float(np.bincount(y[phon], minlength=40).max() / max(phon.sum(), 1)),
        "silence_share": float(1 - phon.mean()),
    }
    print(
        f"{name:>26}: frame acc {out['acc_all']:.3f} (chance {out['chance_majority_all']:.3f} majority, 0.025 uniform) | "
        f"phoneme frames {out['acc_phoneme_frames']:.3f} (chance {out['chance_majority_phoneme_frames']:.3f}) | "
        f"vocalized {out['acc_vocalized']:.3f} silent {out['acc_silent']:.3f} | {out['frames']} frames"
    )
    return out


def check_against_files(root: Path, sessions: dict[str, list[SimulatedTrial]]) -> None:
    """The regenerated first train trial must equal the file's (same simulator, preset and seed)."""
    session = next(iter(sessions))
    path = root / session / "data_train.hdf5"
    first = next(t for t in sessions[session] if t.trial.split == "train")
    with h5py.File(path, "r") as f:
        stored = f["trial_0000/input_features"][()]
    if stored.shape != first.features.shape or not np.array_equal(stored, first.features):
        raise SystemExit(f"{path}: trial_0000 differs from the regenerated simulation; was it written by another simulator version?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="simulated data root (its simulation.json gives preset, config and seed)")
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--offsets", default="-4,-2,0,2,4", help="neighbouring bins stacked per frame")
    ap.add_argument("--train-frames", type=int, default=120_000)
    ap.add_argument("--val-frames", type=int, default=80_000)
    ap.add_argument("--l2", type=float, default=1e-2, help="L2 penalty (1e-2 was best of 1e-4..3e-2 on bench)")
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--drift", action="store_true", help="also train on the 3 earliest sessions, score on the 3 latest")
    ap.add_argument("--json", type=Path, help="write the numbers here too")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    if args.data is not None:
        meta = json.loads((args.data / SIMULATION_JSON).read_text())
        plan = make_plan(meta["config"], meta["seed"])
    else:
        plan = make_plan(args.preset, args.seed)
    offsets = tuple(int(o) for o in args.offsets.split(","))
    t0 = time.perf_counter()
    sessions = dict(iter_simulated_sessions(plan))
    print(f"simulated {plan.config.name} seed {plan.seed} in memory: {plan.counts()} ({time.perf_counter() - t0:.1f} s)")
    if args.data is not None:
        check_against_files(args.data, sessions)

    rng = np.random.default_rng(0)
    train = [t for ts in sessions.values() for t in ts if t.trial.split == "train"]
    val = [t for ts in sessions.values() for t in ts if t.trial.split == "val"]
    xtr, ytr, str_ = frame_set(train, offsets, args.train_frames, rng)
    xva, yva, sva = frame_set(val, offsets, args.val_frames, rng)
    t0 = time.perf_counter()
    model = fit_logistic(xtr, ytr, args.l2, args.iterations)
    print(f"fit on {len(ytr)} train frames x {xtr.shape[1]} features in {time.perf_counter() - t0:.1f} s")
    results = {"preset": plan.config.name, "seed": plan.seed, "offsets": offsets}
    results["train"] = report("train (same frames)", model, xtr, ytr, str_)
    results["val"] = report("val", model, xva, yva, sva)

    xs, ys, _ = segment_set(train)
    xsv, ysv, ssv = segment_set(val)
    seg_model = fit_logistic(xs, ys, args.l2 / 3, args.iterations)
    results["segments_val"] = {
        "segments": int(ysv.size),
        "acc": accuracy(seg_model, xsv, ysv),
        "acc_vocalized": accuracy(seg_model, xsv[~ssv], ysv[~ssv]),
        "acc_silent": accuracy(seg_model, xsv[ssv], ysv[ssv]),
        "chance_majority": float(np.bincount(ysv, minlength=40).max() / max(ysv.size, 1)),
    }
    r = results["segments_val"]
    print(
        f"{'val phoneme segments':>26}: acc {r['acc']:.3f} (chance {r['chance_majority']:.3f}) | "
        f"vocalized {r['acc_vocalized']:.3f} silent {r['acc_silent']:.3f} | {r['segments']} segments, oracle boundaries"
    )

    if args.drift:
        names = list(sessions)
        early, late = names[:3], names[-3:]
        tr = [t for s in early for t in sessions[s] if t.trial.split == "train"]
        x1, y1, _ = frame_set(tr, offsets, args.train_frames, rng)
        m1 = fit_logistic(x1, y1, args.l2, args.iterations)
        for label, group in (("early val", early), ("late val", late)):
            vt = [t for s in group for t in sessions[s] if t.trial.split == "val"]
            if vt:
                xv, yv, sv = frame_set(vt, offsets, args.val_frames, rng)
                results[f"drift_{label.replace(' ', '_')}"] = report(f"trained early -> {label}", m1, xv, yv, sv)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
