"""``scripts/stream.py``: decode trials live, bin by bin, from a replayed split or a Redis stream.

``source=replay`` plays a split's trials at ``speed`` times real time (0: as fast as
possible) in chunks of ``chunk_bins`` 20 ms bins; ``source=redis`` reads bins from a Redis
stream (the contract is in :mod:`mode_ssm.streaming.redis_source`). Either way one CSV row
per trial: ``session,block,trial,text,reference,wer,first_word_ms,final_latency_ms``
(``reference`` and ``wer`` empty when unlabelled; times in ms of wall clock), and at the
end the aggregate WER / PER (official scoring) and latency percentiles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mode_ssm.data.t15 import BIN_SECONDS, session_and_key
from mode_ssm.data.truth import read_test_truth
from mode_ssm.decoding.lexicon_decoder import WordDecoder
from mode_ssm.evaluation.pipeline import prepare, session_days
from mode_ssm.runtime.schema import check_values
from mode_ssm.streaming.redis_source import serve_redis
from mode_ssm.streaming.report import ms_text, running_wer, summarize, summary_lines, trial_wer, write_csv
from mode_ssm.streaming.schema import StreamSchema
from mode_ssm.streaming.stream import StreamingDecoder, require_causal

@dataclass
class TrialClock:
    """Wall-clock times of one streamed trial, in seconds from ``time.perf_counter``."""

    start: float
    first_word: float | None = None
    last_bin: float | None = None
    step_seconds: list[float] = field(default_factory=list)  # compute per push
    step_bins: list[int] = field(default_factory=list)

    def ms_since_start(self, t: float | None) -> float | None:
        return None if t is None else 1000.0 * (t - self.start)


def load_streaming_decoder(cfg: Any, launch_dir: Path, work_dir: Path, split: str) -> tuple[Any, StreamingDecoder]:
    """The prepared job (checkpoint, data, word decoder) and a streaming decoder on its causal model."""
    job = prepare(cfg, launch_dir, split, work_dir, decoder="ctc_lm", validate=None if split == "val" else "full")
    model = job.loaded.model
    if job.loaded.members:
        raise ValueError("streaming decodes one causal checkpoint, not an ensemble")
    require_causal(model, job.loaded.path)
    if job.tta.enabled:
        raise ValueError("test-time adaptation is not available while streaming (it adapts on a whole session first); "
                         "leave tta at its default (off)")
    if not isinstance(job.word_decoder, WordDecoder):
        raise ValueError("rescore.model is not available while streaming (the n-best exists only at the end); "
                         "rescore offline with scripts/evaluate.py")
    torch.set_num_threads(int(cfg.torch_threads))
    decoder = StreamingDecoder(model, job.word_decoder, augmenter=job.loaded.eval_augmenter(),
                               blank_threshold=float(cfg.blank_threshold))
    return job, decoder


def stream_trial(decoder: StreamingDecoder, features: np.ndarray, day: int, chunk_bins: int, speed: float,
                 end_silence_ms: float | None, on_partial: Callable[[Any], None] | None = None) -> tuple[Any, TrialClock]:
    """Play one trial into ``decoder`` as it would arrive live; the final result and its clock."""
    decoder.start(day)
    clock = TrialClock(start=time.perf_counter())
    for begin in range(0, len(features), chunk_bins):
        chunk = features[begin : begin + chunk_bins]
        if speed > 0:  # a chunk exists once its last bin has been recorded
            due = clock.start + (begin + len(chunk)) * BIN_SECONDS / speed
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        clock.last_bin = time.perf_counter()
        partial = decoder.push(chunk)
        clock.step_seconds.append(time.perf_counter() - clock.last_bin)
        clock.step_bins.append(len(chunk))
        if partial.words and clock.first_word is None:
            clock.first_word = time.perf_counter()
        if on_partial is not None:
            on_partial(partial)
        if end_silence_ms is not None and partial.words and partial.silent_ms >= end_silence_ms:
            break  # the trailing-silence detector ended the sentence
    if clock.last_bin is None:
        clock.last_bin = time.perf_counter()
    final = decoder.finish()
    return final, clock


class LiveView:
    """The rich terminal view: the current trial's partial text beside its reference."""

    def __init__(self, enabled: bool):
        self.live = None
        if enabled:
            from rich.live import Live

            self.live = Live(refresh_per_second=12, transient=False)
            self.live.start()

    def show(self, title: str, text: str, reference: str | None, done: int, wer: str) -> None:
        if self.live is None:
            return
        from rich.table import Table

        table = Table(title=title, show_header=False, expand=True)
        table.add_row("[bold]decoding[/bold]", text or "…")
        table.add_row("reference", reference or "(unlabelled)")
        table.add_row("trials done", f"{done}   running WER {wer}")
        self.live.update(table)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()


def run_stream(cfg: Any, launch_dir: str | Path, console: Any | None = None) -> dict[str, Any]:
    """``scripts/stream.py`` (see configs/stream.yaml)."""
    check_values(cfg, StreamSchema)
    launch_dir = Path(launch_dir)
    out_path = launch_dir / Path(str(cfg.output))
    say = console.print if console is not None else (lambda *_: None)
    if cfg.source == "redis":
        return serve_redis(cfg, launch_dir, out_path, say)
    job, decoder = load_streaming_decoder(cfg, launch_dir, out_path.parent / "stream_lm", str(cfg.split))
    data, loaded = job.data, job.loaded
    meta = data.trial_metadata()
    truth = read_test_truth(job.data_root) if cfg.split == "test" else None
    days = session_days(loaded, data.sessions, str(cfg.unseen_sessions))
    n_trials = len(meta) if cfg.max_trials is None else min(len(meta), int(cfg.max_trials))
    say(f"streaming {n_trials} {cfg.split} trials of {job.data_root} in chunks of {cfg.chunk_bins} bins at "
        + (f"{float(cfg.speed):g}x real time" if cfg.speed else "full speed") + f" with {loaded.path}")
    live_on = cfg.live == "on" or (cfg.live == "auto" and console is not None and console.is_terminal)
    view = LiveView(live_on)
    rows, step_ms, first_ms, final_ms, phonemes, compute = [], [], [], [], [], 0.0
    try:
        for i in range(n_trials):
            m = meta[i]
            trial = data[i]
            features = np.nan_to_num(trial.features, nan=0.0, posinf=0.0, neginf=0.0)  # as evaluate does
            reference, ref_ids = trial.sentence, trial.phoneme_ids
            if truth is not None:
                t = truth.get(session_and_key(m["source"]))
                reference, ref_ids = (t.sentence, list(t.phoneme_ids)) if t is not None else (None, None)
            title = f"{m['session']} block {m['block_num']} trial {m['trial_num']} ({i + 1}/{n_trials})"
            done_wer = running_wer(rows)
            final, clock = stream_trial(
                decoder, features, days[m["session"]].day, int(cfg.chunk_bins), float(cfg.speed),
                cfg.end_silence_ms, lambda p: view.show(title, p.text, reference, len(rows), done_wer))
            done = time.perf_counter()
            text = final.text
            wer = trial_wer(reference, text)
            rows.append({"session": m["session"], "block": m["block_num"], "trial": m["trial_num"], "text": text,
                         "reference": reference or "", "wer": "" if wer is None else f"{wer:.4f}",
                         "first_word_ms": ms_text(clock.ms_since_start(clock.first_word)),
                         "final_latency_ms": f"{1000.0 * (done - clock.last_bin):.2f}"})
            if ref_ids is not None:
                phonemes.append((list(ref_ids), final.phonemes))
            # compute per push, scaled to 80 ms (4 bins) of signal
            step_ms += [1000.0 * s * (4 / b) for s, b in zip(clock.step_seconds, clock.step_bins)]
            compute += (done - clock.last_bin) + sum(clock.step_seconds[:-1])  # every push, and finish()
            if clock.first_word is not None:
                first_ms.append(1000.0 * (clock.first_word - clock.start))
            final_ms.append(1000.0 * (done - clock.last_bin))
    finally:
        view.stop()
        write_csv(out_path, rows)
    summary = summarize(rows, phonemes, step_ms, first_ms, final_ms, compute, data_seconds=sum(
        meta[i]["n_time_steps"] for i in range(n_trials)) * BIN_SECONDS)
    for line in summary_lines(summary, out_path):
        say(line)
    return {"rows": rows, "summary": summary, "output": out_path}














