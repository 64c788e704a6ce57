"""Evaluation reports from per-trial rows (:func:`mode_ssm.runtime.decode.decode_split`): CSV, tables, plots.

This module only writes what it is given; decoding happens in :mod:`mode_ssm.evaluation.pipeline`.

Every aggregate goes through :func:`mode_ssm.metrics.summarize`, so a WER
here is the official aggregate (total word errors over total reference words)
and equals what training logs as val/wer for the same rows.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

from mode_ssm.atomic import atomic_open, write_text
from mode_ssm.data.blocks import session_date
from mode_ssm.metrics import MODE_NAMES, flag_counts, summarize
from mode_ssm.phonemes import BOUNDARY, CLASS_NAMES, NUM_CLASSES

PREDICTION_COLUMNS = (
    "session", "block", "trial", "corpus", "day_layer", "speaking_mode", "predicted_mode",
    "true_sentence", "predicted_sentence", "word_errors", "words", "phoneme_errors", "phonemes",
    "true_phonemes", "predicted_phonemes", "flags", "source",
)  # fmt: skip
GROUPINGS = ("session", "corpus", "speaking_mode")
MODE_UNMEASURABLE = ("speaking-mode accuracy cannot be measured: this data records no speaking mode "
                     "(the real T15 release never does; only the simulator writes the truth)")
MODE_NOT_PREDICTED = ("speaking-mode accuracy: this model predicts no mode (no mode head, or its training data did "
                      "not support a two-mode split, so its FiLM got no mode signal)")
_SYMBOL_TO_ID = {"_": 0, "|": BOUNDARY, **{name: i for i, name in enumerate(CLASS_NAMES) if 0 < i < BOUNDARY}}


def mode_name(mode: int | None) -> str:
    return MODE_NAMES[mode] if mode is not None and 0 <= mode < len(MODE_NAMES) else ""


# --------------------------------------------------------------------------- per trial


def prediction_records(
    rows: Sequence[Mapping[str, Any]], day_notes: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One flat record per trial with :data:`PREDICTION_COLUMNS` (empty where unknown, e.g. test labels)."""
    out = []
    for r in rows:
        out.append({
            "session": r["session"], "block": r["block"], "trial": r["trial"], "corpus": r.get("corpus") or "",
            "day_layer": (day_notes or {}).get(r["session"], ""),
            "speaking_mode": mode_name(r.get("mode_truth")), "predicted_mode": mode_name(r.get("mode_pred")),
            "true_sentence": r.get("true_sentence") or "", "predicted_sentence": r.get("predicted_sentence") or "",
            "word_errors": r.get("word_errors", ""), "words": r.get("n_words", ""),
            "phoneme_errors": r.get("phoneme_errors", ""), "phonemes": r.get("n_phonemes", ""),
            "true_phonemes": r.get("true_phonemes", ""), "predicted_phonemes": r.get("predicted_phonemes", ""),
            "flags": r.get("flags", ""), "source": r.get("source", ""),
        })
    return out


def write_csv(records: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    path = Path(path)
    columns = list(columns or (records[0].keys() if records else []))
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return path


# --------------------------------------------------------------------------- summaries


def days_since(session: str, first_session: str) -> int:
    return (session_date(session) - session_date(first_session)).days


def _group_key(row: Mapping[str, Any], by: str) -> str:
    if by == "speaking_mode":
        return mode_name(row.get("mode_truth")) or "unknown"
    return str(row.get(by) or "unknown")


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def group_summary(rows: Sequence[Mapping[str, Any]], by: str) -> list[dict[str, Any]]:
    """Per group: trials, words, WER %, phonemes, PER %, trial and block mode accuracy % (None = not measurable)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_group_key(r, by), []).append(r)
    keys = list(groups) if by == "session" else sorted(groups)  # sessions stay chronological
    out = []
    for key in keys + ["all"]:
        part = rows if key == "all" else groups[key]
        m = summarize(list(part))
        out.append({
            by: key, "trials": len(part),
            "words": sum(r.get("n_words", 0) for r in part if "word_errors" in r),
            "wer_pct": _pct(m.get("wer")),
            "phonemes": sum(r.get("n_phonemes", 0) for r in part),
            "per_pct": _pct(m.get("per")),
            "mode_accuracy_pct": _pct(m.get("mode_accuracy")),
            "mode_accuracy_block_pct": _pct(m.get("mode_accuracy_block")),
        })
    return out


def summary_tables(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {by: group_summary(rows, by) for by in GROUPINGS}


def mode_truth_known(rows: Iterable[Mapping[str, Any]]) -> bool:
    return any((r.get("mode_truth") if r.get("mode_truth") is not None else -1) >= 0 for r in rows)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def markdown_table(table: Sequence[Mapping[str, Any]]) -> str:
    if not table:
        return ""
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in table]
    return "\n".join(lines)


_SHORT_HEADERS = {"wer_pct": "WER %", "per_pct": "PER %", "phonemes": "phon.", "mode_accuracy_pct": "mode %",
                  "mode_accuracy_block_pct": "block mode %", "day_layer": "layer", "speaking_mode": "mode"}


def rich_table(table: Sequence[Mapping[str, Any]], title: str):
    from rich.table import Table

    t = Table(title=title)
    cols = list(table[0]) if table else []
    for i, c in enumerate(cols):
        t.add_column(_SHORT_HEADERS.get(c, c), justify="left" if i == 0 else "right", no_wrap=i == 0)
    for r in table:
        t.add_row(*[_fmt(r[c]) for c in cols], style="bold" if r[cols[0]] == "all" else None)
    return t


def write_markdown(path: str | Path, title: str, tables: Mapping[str, Sequence[Mapping[str, Any]]],
                   notes: Sequence[str] = ()) -> Path:
    path = Path(path)
    parts = [f"# {title}", ""]
    parts += [f"- {n}" for n in notes]
    for name, table in tables.items():
        parts += ["", f"## By {name.replace('_', ' ')}", "", markdown_table(table)]
    return write_text(path, "\n".join(parts) + "\n")


# --------------------------------------------------------------------------- phoneme confusions


def phoneme_ids(text: str) -> list[int]:
    """Inverse of :func:`mode_ssm.phonemes.ids_to_string` ("HH AE V | ..." -> ids)."""
    try:
        return [_SYMBOL_TO_ID[s] for s in text.split()]
    except KeyError as e:
        raise ValueError(f"unknown phoneme symbol {e.args[0]!r} in {text!r:.80}") from None


def phoneme_confusions(rows: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Counts (42, 42) from aligning each trial's predicted phonemes to its reference.

    Rows/columns 1..40 are the classes (39 phonemes and the boundary); row 41 counts
    insertions (predicted with no reference), column 41 deletions (reference with no
    prediction); index 0 (blank) stays empty. The alignment is a minimum edit-distance
    one (``rapidfuzz.distance.Levenshtein.opcodes``), so its errors add up to the PER's.
    """
    gap = NUM_CLASSES  # 41
    counts = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), dtype=np.int64)
    for r in rows:
        if not r.get("true_phonemes"):
            continue
        ref, hyp = phoneme_ids(r["true_phonemes"]), phoneme_ids(r.get("predicted_phonemes") or "")
        for op in Levenshtein.opcodes(ref, hyp):
            a, b = ref[op.src_start : op.src_end], hyp[op.dest_start : op.dest_end]
            n = min(len(a), len(b))
            for x, y in zip(a[:n], b[:n]):
                counts[x, y] += 1
            for x in a[n:]:
                counts[x, gap] += 1
            for y in b[n:]:
                counts[gap, y] += 1
    return counts


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def plot_wer_by_session(table: Sequence[Mapping[str, Any]], first_session: str, unseen: Iterable[str],
                        path: str | Path, metric: str = "wer_pct") -> Path:
    """WER (or PER) per session against days since ``first_session``: the drift picture."""
    plt = _pyplot()
    unseen = set(unseen)
    rows = [r for r in table if r["session"] != "all" and r.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    for seen, marker, label in ((True, "o", "session in training"), (False, "x", "unseen session")):
        pts = [r for r in rows if (r["session"] not in unseen) == seen]
        if pts:
            ax.plot([days_since(r["session"], first_session) for r in pts], [r[metric] for r in pts],
                    marker, label=label, markersize=7)
    ax.set_xlabel(f"days since {first_session}")
    ax.set_ylabel(metric.replace("_pct", " (%)").upper())
    ax.set_title(f"{metric.replace('_pct', '').upper()} by session")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_by_group(table: Sequence[Mapping[str, Any]], key: str, path: str | Path, metric: str = "wer_pct") -> Path:
    plt = _pyplot()
    rows = [r for r in table if r[key] != "all" and r.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([str(r[key]) for r in rows], [r[metric] for r in rows], color="tab:blue")
    ax.set_ylabel(metric.replace("_pct", " (%)").upper())
    ax.set_title(f"{metric.replace('_pct', '').upper()} by {key.replace('_', ' ')}")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_confusions(counts: np.ndarray, path: str | Path, title: str = "phoneme confusions") -> Path:
    """Row-normalised confusion matrix (reference rows, predicted columns), log colour scale."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    labels = list(CLASS_NAMES[1:BOUNDARY]) + ["|", "(ins)"]
    sub = counts[1:, 1:].astype(float)  # drop blank
    rates = sub / np.maximum(sub.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8))
    image = ax.imshow(np.where(rates > 0, rates, np.nan), norm=LogNorm(vmin=1e-3, vmax=1.0), cmap="viridis")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels[:-1] + ["(del)"], rotation=90, fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the reference row")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------- the evaluation command


def scoring_notes(rows: Sequence[Mapping[str, Any]], overall: Mapping[str, Any]) -> list[str]:
    """What the report's figures cover: every trial, including those kept although flagged."""
    out = [f"{len(rows)} trials decoded and scored: every readable trial of the split"]
    flags = flag_counts(list(rows))
    if flags:
        out.append(f"{int(overall.get('n_flagged') or 0)} of them break a training rule and were kept "
                   f"(see the flags column of predictions.csv): "
                   + ", ".join(f"{k} {v}" for k, v in flags.items())
                   + "; non-finite values were decoded as 0")
    if overall.get("n_unalignable"):
        out.append(f"{int(overall['n_unalignable'])} trial(s) have too few frames for CTC to align their labels: "
                   "their errors count in PER and WER, and they are left out of the CTC loss only")
    return out


def write_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    title: str,
    first_session: str,
    day_notes: Mapping[str, str],
    unseen: Iterable[str],
    notes: Sequence[str] = (),
    labelled: bool = True,
    phoneme_source: str = "CTC greedy",
    console: Any | None = None,
) -> dict[str, Any]:
    """Write predictions.csv, summary_by_*.csv, summary.md and the plots; print the tables with rich.

    Returns the overall metrics (fractions, as :func:`summarize`) and the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {
        "predictions": write_csv(prediction_records(rows, day_notes), out_dir / "predictions.csv", PREDICTION_COLUMNS)
    }
    notes = list(notes)
    overall = summarize(list(rows))
    if not labelled:
        notes.append("no labels in this split (test): predictions only, no error rates")
        paths["summary_md"] = write_markdown(out_dir / "summary.md", title, {}, notes)
        if console is not None:
            for n in notes:
                console.print(f"- {n}")
        return {"metrics": overall, "paths": paths, "tables": {}}
    notes += scoring_notes(rows, overall)
    if not mode_truth_known(rows):
        notes.append(MODE_UNMEASURABLE)
    elif all(r.get("mode_pred") is None for r in rows):
        notes.append(MODE_NOT_PREDICTED)
    tables = summary_tables(rows)
    unseen = list(unseen)
    for r in tables["session"]:
        known = r["session"] != "all"
        r["days"] = days_since(r["session"], first_session) if known else None
        r["day_layer"] = ("unseen" if r["session"] in unseen else "own") if known else ""
    for by, table in tables.items():
        paths[f"summary_by_{by}"] = write_csv(table, out_dir / f"summary_by_{by}.csv")
        if console is not None:
            console.print(rich_table(table, f"{title}: by {by.replace('_', ' ')}"))
    paths["summary_md"] = write_markdown(out_dir / "summary.md", title, tables, notes)
    metric = "wer_pct" if overall.get("wer") is not None else "per_pct"
    paths["plot_by_session"] = plot_wer_by_session(tables["session"], first_session, unseen,
                                                   out_dir / f"{metric[:3]}_by_session.png", metric)
    paths["plot_by_corpus"] = plot_by_group(tables["corpus"], "corpus", out_dir / f"{metric[:3]}_by_corpus.png", metric)
    paths["plot_confusions"] = plot_confusions(phoneme_confusions(rows), out_dir / "phoneme_confusions.png",
                                               f"phoneme confusions ({phoneme_source} vs reference)")
    if console is not None:
        for n in notes:
            console.print(f"- {n}")
    return {"metrics": overall, "paths": paths, "tables": tables}
