"""PER and WER as electrodes die after training: val trials decoded with 0-50% of the 256 electrodes dead.

    python benchmarks/dead_electrodes.py CKPT [--data-root DIR] [--fractions 0 0.1 0.2 0.3 0.4 0.5]
                                              [--kinds constant noise] [--seed 0] [--no-words]

A dead electrode loses both of its features (threshold crossings at column e, spike-band power at
256 + e). Per session one random set of electrodes dies, nested across fractions (the 20% set holds
the 10% set), the same for every trial of the session, as when electrodes fail between sessions.
Two kinds of death: ``constant`` (the features read 0, which the model masks as a constant channel)
and ``noise`` (the features become white noise of unit variance, a broken electrode that still
shows activity; nothing masks it). The model was trained on intact data and is not adapted.
Prints a Markdown table (PER from CTC greedy phonemes, WER from the checkpoint's lexicon + n-gram
search) and writes it as JSON next to the checkpoint's run (``--out`` to choose).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

N_ELECTRODES = 256


class WithDeadElectrodes:
    """A view of a T15 split whose trials have the given electrodes dead (see the module docstring)."""

    def __init__(self, data, dead: dict[str, np.ndarray], kind: str, seed: int):
        self.data, self.dead, self.kind, self.seed = data, dead, kind, seed

    def __getattr__(self, name):
        return getattr(self.data, name)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        ex = self.data[index]
        electrodes = self.dead.get(ex.session, np.zeros(0, dtype=int))
        if not len(electrodes):
            return ex
        x = np.array(ex.features, copy=True)
        cols = np.concatenate([electrodes, electrodes + N_ELECTRODES])
        cols = cols[cols < x.shape[1]]
        if self.kind == "constant":
            x[:, cols] = 0.0
        else:
            rng = np.random.default_rng([self.seed, index])
            x[:, cols] = rng.standard_normal((x.shape[0], len(cols))).astype(np.float32)
        return dataclasses.replace(ex, features=x)


def dead_sets(sessions: list[str], fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Per session, the first ``fraction`` of one fixed random order of the electrodes (nested across fractions)."""
    out = {}
    for i, s in enumerate(sessions):
        order = np.random.default_rng([seed, i]).permutation(N_ELECTRODES)
        out[s] = np.sort(order[: int(round(fraction * N_ELECTRODES))])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data-root", type=Path, default=None, help="default: the data the checkpoint trained on")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    p.add_argument("--kinds", nargs="+", default=["constant", "noise"], choices=["constant", "noise"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-words", action="store_true", help="PER only (skip the n-gram search)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)

    from mode_ssm.evaluation.pipeline import decode_trials, open_split
    from mode_ssm.evaluation.search import WordDecoding, make_search
    from mode_ssm.metrics import summarize
    from mode_ssm.runtime.loading import load_model

    loaded = load_model(args.checkpoint)
    root = args.data_root or loaded.trained_data_root
    data = open_split(loaded, root, "val", validate="metadata")
    words = None if args.no_words else WordDecoding(loaded, root, args.checkpoint.parent.parent / "lm")
    search, word_decoder = make_search("ctc_greedy" if args.no_words else "ctc_lm", loaded, words)
    rows = []
    for kind in args.kinds:
        for fraction in args.fractions:
            if fraction == 0 and kind != args.kinds[0]:
                continue  # intact data is the same for every kind
            view = WithDeadElectrodes(data, dead_sets(data.sessions, fraction, args.seed), kind, args.seed)
            result = decode_trials(loaded, view, search=search, word_decoder=word_decoder, batch_size=16)
            s = summarize(result.rows)
            rows.append({"kind": "intact" if fraction == 0 else kind, "fraction": fraction,
                         "dead_electrodes": int(round(fraction * N_ELECTRODES)), "per": s["per"],
                         "wer": s.get("wer") if not args.no_words else None, "trials": len(result.rows)})
            print(json.dumps(rows[-1]), flush=True)
    out = args.out or args.checkpoint.parent.parent / "dead_electrodes.json"
    out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "data_root": str(root), "rows": rows}, indent=2))
    print(f"\nval split of {root}, {rows[0]['trials']} trials; {args.checkpoint}\n")
    print("| electrodes dead | kind | PER | WER |\n|---|---|---|---|")
    for r in rows:
        wer = "-" if r["wer"] is None else f"{100 * r['wer']:.1f}%"
        print(f"| {r['dead_electrodes']} ({100 * r['fraction']:.0f}%) | {r['kind']} | {r['per']:.3f} | {wer} |")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
