"""What a streaming run writes and prints: the per-trial CSV and the summary (WER, PER, latencies)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from mode_ssm.atomic import atomic_open
from mode_ssm.metrics import phoneme_error_rate, word_error_rate

CSV_COLUMNS = ("session", "block", "trial", "text", "reference", "wer", "first_word_ms", "final_latency_ms")


def trial_wer(reference: str | None, text: str) -> float | None:
    if not reference:
        return None
    wer, _, n = word_error_rate([reference], [text])
    return wer if n else None


def percentiles(values: list[float], qs: tuple[int, ...] = (50, 90, 99)) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in qs} if values else {}


def ms_text(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def running_wer(rows: list[dict[str, Any]]) -> str:
    labelled = [r for r in rows if r["reference"]]
    if not labelled:
        return "-"
    return f"{100 * word_error_rate([r['reference'] for r in labelled], [r['text'] for r in labelled])[0]:.1f}%"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def summarize(rows, phonemes, step_ms, first_ms, final_ms, compute_seconds, data_seconds) -> dict[str, Any]:
    labelled = [r for r in rows if r["reference"]]
    out: dict[str, Any] = {"trials": len(rows), "labelled": len(labelled)}
    if labelled:
        out["wer"] = word_error_rate([r["reference"] for r in labelled], [r["text"] for r in labelled])[0]
    if phonemes:
        out["per"] = phoneme_error_rate([p[0] for p in phonemes], [p[1] for p in phonemes])[0]
    out["compute_ms_per_80ms"] = percentiles(step_ms)
    out["first_word_ms"] = percentiles(first_ms)
    out["final_latency_ms"] = percentiles(final_ms)
    out["compute_seconds"] = compute_seconds
    out["real_time_factor"] = compute_seconds / data_seconds if data_seconds else None
    return out


def summary_lines(s: dict[str, Any], out_path: Path) -> list[str]:
    def fmt(p: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in p.items()) if p else "n/a"

    lines = [f"{s['trials']} trials streamed; rows in {out_path}"]
    if "wer" in s:
        lines.append(f"WER {100 * s['wer']:.1f}% over {s['labelled']} labelled trials"
                     + (f", PER {s['per']:.3f}" if "per" in s else "") + " (official scoring)")
    else:
        lines.append("no labels: WER and PER cannot be scored")
    lines.append(f"compute per 80 ms of signal (ms): {fmt(s['compute_ms_per_80ms'])}")
    lines.append(f"first word after trial start (ms): {fmt(s['first_word_ms'])}")
    lines.append(f"final text after the last bin (ms): {fmt(s['final_latency_ms'])}")
    if s.get("real_time_factor") is not None:
        lines.append(f"real-time factor (compute / signal): {s['real_time_factor']:.4f}")
    return lines
