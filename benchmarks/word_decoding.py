"""Words on bench val for trained checkpoints: PER, WER by decoder, TTA on the late sessions, speed.

    python benchmarks/word_decoding.py CKPT [CKPT ...] [--names A B] [--data-root DIR] [--late 3]

Per checkpoint (one CPU thread), on the val split:
  - PER (CTC greedy phonemes);
  - WER of greedy phonemes + lexicon (each boundary-separated chunk -> nearest word, no LM);
  - WER of the lexicon + n-gram beam search (the checkpoint's training LM: 3-gram by default);
  - on the ``--late`` last sessions: WER of the n-gram search without and with test-time
    adaptation (configs/tta/default.yaml's settings: information maximisation on the day layer,
    here with ``sessions=all`` since these models trained on the late sessions; ``--tta``
    overrides, e.g. ``self_train_rounds=3 steps=0`` for self-training instead);
  - ms per sentence of the n-gram beam search alone (re-run over stored log-probabilities);
  - for models with a flow bridge, PER and WER with the bridge switched on;
  - for models with a mode head, mode accuracy against the simulator's truth, per trial and per
    block (majority vote of its trials), on val and on every train block.
Writes a JSON file next to the first checkpoint's run (``--out`` to choose) and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def evaluate(ckpt: Path, data_root: Path | None, n_late: int, tta_overrides: list[str]) -> dict:
    from mode_ssm.data.t15 import T15Split
    from mode_ssm.metrics import summarize
    from mode_ssm.evaluation.pipeline import decode_trials, open_split
    from mode_ssm.evaluation.search import WordDecoding, make_search
    from mode_ssm.runtime.loading import load_model
    from mode_ssm.evaluation.tta import TTAConfig, tta_settings

    loaded = load_model(ckpt)
    root = data_root or loaded.trained_data_root
    data = open_split(loaded, root, "val", validate="metadata")
    words = WordDecoding(loaded, root, ckpt.parent.parent / "lm")
    out: dict = {"checkpoint": str(ckpt), "val_trials": len(data)}

    def run(decoder: str, split=data, tta=None, keep=False):
        search, word_decoder = make_search(decoder, loaded, words)
        return decode_trials(loaded, split, search=search, word_decoder=word_decoder, tta=tta, batch_size=16,
                             keep_log_probs=keep)

    lm = run("ctc_lm", keep=True)
    s = summarize(lm.rows)
    out.update(per=s["per"], wer_lm=s["wer"], mode_accuracy_block=s.get("mode_accuracy_block"),
               mode_accuracy=s.get("mode_accuracy"))
    out["wer_greedy_lexicon"] = summarize(run("ctc_greedy").rows)["wer"]

    decoder = words.decoder()
    started = time.perf_counter()
    for r in lm.rows:
        decoder.decode(r["log_probs"])
    out["lm_search_ms_per_sentence"] = 1000 * (time.perf_counter() - started) / len(lm.rows)

    late = list(data.sessions)[-n_late:]
    late_rows = [r for r in lm.rows if r["session"] in late]
    out["late_sessions"] = late
    sl = summarize(late_rows)
    out.update(late_wer_lm=sl["wer"], late_per=sl["per"])
    tta = TTAConfig.from_mapping(tta_settings(REPO / "configs" / "tta" / "default.yaml", tta_overrides,
                                              {"enabled": True, "sessions": "all"}))
    late_split = open_split(loaded, root, "val", validate="metadata", sessions=late)  # the same trials as above
    started = time.perf_counter()
    adapted = run("ctc_lm", late_split, tta)
    out["late_tta_seconds"] = time.perf_counter() - started
    sa = summarize(adapted.rows)
    out.update(late_wer_lm_tta=sa["wer"], late_per_tta=sa["per"], tta=tta.to_dict(), tta_reports=adapted.tta)

    if getattr(loaded.model, "mode_head", None) is not None:
        # every train block too (the mode is per block; val holds a few trials of some blocks)
        search, _ = make_search("ctc_greedy", loaded, None)
        train = T15Split(root, "train", day_index=loaded.day_index, validate="metadata",
                         num_channels=loaded.num_channels)
        st = summarize(decode_trials(loaded, train, search=search, batch_size=16).rows)
        out.update(train_mode_accuracy_block=st.get("mode_accuracy_block"), train_mode_accuracy=st.get("mode_accuracy"))

    bridge = getattr(loaded.model, "flow_bridge", None)
    if bridge is not None:
        bridge.enabled = True
        sb = summarize(run("ctc_lm").rows)
        bridge.enabled = False
        out.update(per_flow_bridge=sb["per"], wer_lm_flow_bridge=sb["wer"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument("--data-root", type=Path, default=None, help="default: the data the checkpoint trained on")
    p.add_argument("--late", type=int, default=3, help="how many of the last val sessions count as late")
    p.add_argument("--tta", nargs="*", default=[], help="TTA overrides, e.g. diversity=0")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    names = args.names or [c.parent.parent.name for c in args.checkpoints]
    results = {}
    for name, ckpt in zip(names, args.checkpoints, strict=True):
        started = time.perf_counter()
        results[name] = evaluate(ckpt, args.data_root, args.late, args.tta)
        print(f"{name}: {time.perf_counter() - started:.0f} s", json.dumps(
            {k: v for k, v in results[name].items() if k not in ("tta", "tta_reports")}, default=str), flush=True)
    out = args.out or args.checkpoints[0].parent.parent.parent / "word_decoding.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print("\n| model | val PER | WER greedy + lexicon (%) | WER 3-gram (%) | late sessions WER 3-gram (%) "
          "| late sessions WER 3-gram + TTA (%) | block mode accuracy (%) | LM search ms / sentence |")
    print("|---" * 8 + "|")
    for name, r in results.items():
        print(f"| {name} | {r['per']:.3f} | {pct(r['wer_greedy_lexicon'])} | {pct(r['wer_lm'])} | "
              f"{pct(r['late_wer_lm'])} | {pct(r['late_wer_lm_tta'])} | {pct(r['mode_accuracy_block'])} | "
              f"{r['lm_search_ms_per_sentence']:.1f} |")
    for name, r in results.items():
        if r.get("train_mode_accuracy_block") is not None:
            print(f"{name} mode accuracy: val trials {pct(r['mode_accuracy'])}%, val blocks "
                  f"{pct(r['mode_accuracy_block'])}%, train trials {pct(r['train_mode_accuracy'])}%, "
                  f"train blocks {pct(r['train_mode_accuracy_block'])}%")
        if "per_flow_bridge" in r:
            print(f"{name} with the flow bridge on: PER {r['per_flow_bridge']:.3f} (off {r['per']:.3f}), "
                  f"WER {pct(r['wer_lm_flow_bridge'])} (off {pct(r['wer_lm'])})")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
