"""Tuning the word decoder on val: lm_weight x word_score x beam, with the model run once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.table import Table

from mode_ssm.atomic import write_text
from mode_ssm.evaluation.pipeline import prepare
from mode_ssm.evaluation.reports import write_csv
from mode_ssm.evaluation.schema import TuneSchema
from mode_ssm.evaluation.search import WordDecoding
from mode_ssm.metrics import summarize
from mode_ssm.runtime.decode import word_scores as score_words
from mode_ssm.runtime.schema import check_values


def tune(cfg: Any, launch_dir: str | Path, console: Any) -> list[dict]:
    """``scripts/tune_decoder.py``: the model runs once over val, then the word search per grid setting."""
    check_values(cfg, TuneSchema)  # split=test is refused there: it has no labels to tune on
    fixed = [k for k in ("lm_weight", "word_score", "beam") if cfg.decoding.get(k) is not None]
    if fixed:
        raise ValueError(f"decoding.{fixed[0]} is what the grid varies: set grid.{fixed[0]}=[...] instead")
    launch_dir = Path(launch_dir)
    out_dir = launch_dir / Path(str(cfg.output_dir))
    # CTC greedy phonemes; the word search is what the grid repeats, on the kept log-probabilities
    job = prepare(cfg, launch_dir, cfg.split, out_dir, decoder="ctc_greedy")
    loaded, data, words = job.loaded, job.data, job.words
    result = job.decode(keep_log_probs=True)
    console.print(f"model ran once over {len(data)} {cfg.split} trials in {result.seconds:.1f} s")
    g = cfg.grid
    grid = word_search_grid(result.rows, words, list(g.lm_weight), list(g.word_score), list(g.beam))
    best = min(grid, key=lambda r: (r["wer"], r["seconds"]))
    table = Table(title=f"word decoder grid on {cfg.split} ({grid[0]['words']} words)")
    for col in ("lm_weight", "word_score", "beam", "WER %", "s / trial"):
        table.add_column(col, justify="right")
    for r in grid:
        table.add_row(f"{r['lm_weight']:g}", f"{r['word_score']:g}", str(r["beam"]), f"{100 * r['wer']:.2f}",
                      f"{r['seconds'] / len(result.rows):.4f}", style="bold green" if r is best else None)
    console.print(table)
    trained = loaded.decoding()
    console.print(f"checkpoint's setting: lm_weight={trained['lm_weight']} word_score={trained['word_score']} "
                  f"beam={trained['beam']}")
    console.print(f"best: WER {100 * best['wer']:.2f}% with decoding.lm_weight={best['lm_weight']:g} "
                  f"decoding.word_score={best['word_score']:g} decoding.beam={best['beam']}")
    write_csv(grid, out_dir / "grid.csv")
    write_text(out_dir / "best.json", json.dumps(best, indent=2))
    return grid


def word_search_grid(
    rows: Sequence[Mapping[str, Any]],
    words: WordDecoding,
    lm_weights: Sequence[float],
    word_scores: Sequence[float],
    beams: Sequence[int],
) -> list[dict[str, Any]]:
    """WER of the lexicon + LM search for each (lm_weight, word_score, beam) on rows kept with log-probabilities.

    The model ran once (``decode_split(..., keep_log_probs=True)``); only the word search is repeated.
    Returns one record per setting, in grid order: the setting, wer (fraction), word errors, seconds.
    """
    labelled = [r for r in rows if r.get("true_sentence") is not None]
    row_keys = {"mode_truth": -1, "mode_pred": None}
    if not labelled:
        raise ValueError("no labelled trials to tune on (the test split has no sentences)")
    if any("log_probs" not in r for r in labelled):
        raise ValueError("rows carry no log_probs: decode with keep_log_probs=True")
    out = []
    for beam in beams:
        for lm_weight in lm_weights:
            for word_score in word_scores:
                decoder = words.decoder(lm_weight=lm_weight, word_score=word_score, beam=beam)
                started = time.perf_counter()
                hyps = [(decoder.decode(r["log_probs"]) or [None])[0] for r in labelled]
                seconds = time.perf_counter() - started
                # scored as decode_split scores its rows, aggregated by the one official summarize
                scored = [{**row_keys, **score_words(r["true_sentence"], h.sentence if h else "")}
                          for r, h in zip(labelled, hyps)]
                out.append({"lm_weight": float(lm_weight), "word_score": float(word_score), "beam": int(beam),
                            "wer": summarize(scored)["wer"], "word_errors": sum(s["word_errors"] for s in scored),
                            "words": sum(s["n_words"] for s in scored), "seconds": seconds})
    return out
