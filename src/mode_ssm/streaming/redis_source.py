"""``scripts/stream.py source=redis``: decode bins read from a Redis stream, the transport of the
real-time framework speech BCIs such as the T15 system run on.

Contract (stream and field names; the stream names are ``redis.input_stream`` / ``redis.output_stream``):

- input ``neural_features``: one entry per 20 ms bin with fields ``trial`` (an id, any string) and
  ``features`` (512 little-endian float32, 2048 bytes, T15's feature order). An entry with fields
  ``trial`` and ``end`` = ``1`` ends that trial. A first bin with a new ``trial`` while another trial
  is open ends the open one first (its final text says so in the log).
- output ``decoded_text``: fields ``trial``, ``text``, ``final`` (``0`` partial, sent when the text
  changes; ``1`` final) and ``latency_ms`` (wall clock from reading the entry to writing this one).
  A malformed input entry (no ``trial``, wrong byte length, NaN or infinite values, an ``end`` for a
  trial that is not open) is skipped and reported as an entry with fields ``trial``, ``error`` and
  ``entry`` (its id), and in the log; the decoder keeps running.

The loop ends after ``max_trials`` final transcripts, after ``redis.idle_timeout_s`` without an
entry, or on SIGINT / SIGTERM (checked at least every ``redis.block_ms``); a trial still open then
gets its final text from the bins received, and the CSV is written.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mode_ssm.evaluation.pipeline import config_dict, resolve_data_root
from mode_ssm.evaluation.search import WordDecoding
from mode_ssm.runtime.loading import load_model, pick_device
from mode_ssm.streaming.report import summarize, summary_lines, write_csv
from mode_ssm.streaming.stream import StreamingDecoder, require_causal

N_FEATURES = 512
FEATURE_BYTES = 4 * N_FEATURES


class _Stop:
    """Set by SIGINT / SIGTERM: the loop finishes its current read and returns."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: the caller stops us by max_trials or the idle timeout
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def parse_entry(fields: dict[bytes, bytes], open_trial: str | None) -> tuple[str, str, Any]:
    """An input entry -> ("bin", trial, features (512,)) | ("end", trial, None); ValueError says what is wrong."""
    trial = fields.get(b"trial")
    if trial is None:
        raise ValueError("entry has no 'trial' field")
    trial = trial.decode("utf-8", "replace")
    if b"end" in fields:
        if fields[b"end"] != b"1":
            raise ValueError(f"'end' must be 1, got {fields[b'end']!r}")
        if trial != open_trial:
            raise ValueError(f"'end' for trial {trial!r}, which is not open"
                             + (f" (open: {open_trial!r})" if open_trial is not None else " (no trial is open)"))
        return "end", trial, None
    raw = fields.get(b"features")
    if raw is None:
        raise ValueError("entry has neither 'features' nor 'end'")
    if len(raw) != FEATURE_BYTES:
        raise ValueError(f"'features' holds {len(raw)} bytes, expected {FEATURE_BYTES} ({N_FEATURES} float32)")
    x = np.frombuffer(raw, dtype="<f4")
    if not np.isfinite(x).all():
        raise ValueError(f"'features' holds {int((~np.isfinite(x)).sum())} NaN or infinite values")
    return "bin", trial, x


def serve_redis(cfg: Any, launch_dir: Path, out_path: Path, say: Callable[[str], None]) -> dict[str, Any]:
    import redis

    rc = cfg.redis
    client = redis.Redis.from_url(str(rc.url), socket_connect_timeout=5, socket_timeout=max(5.0, rc.block_ms / 250))
    try:
        client.ping()
    except redis.exceptions.RedisError as e:
        raise ConnectionError(f"redis.url={rc.url}: cannot reach the Redis server ({e})") from None
    loaded = load_model(launch_dir / Path(str(cfg.checkpoint)).expanduser(), pick_device(str(cfg.device)))
    require_causal(loaded.model, loaded.path)
    import torch

    torch.set_num_threads(int(cfg.torch_threads))
    data_root = resolve_data_root(cfg.data.get("data_root"), loaded, launch_dir)
    words = WordDecoding(loaded, data_root, out_path.parent / "stream_lm", config_dict(cfg.decoding))
    session = rc.session or loaded.day_index.sessions[-1]
    found = loaded.day_index.lookup(session)
    decoder = StreamingDecoder(loaded.model, words.decoder(), day_index=found.index,
                               augmenter=loaded.eval_augmenter(), blank_threshold=float(cfg.blank_threshold))
    say(f"reading {rc.input_stream} at {rc.url}, writing {rc.output_stream}; day layer of {session}"
        + ("" if found.exact else f" (not a training session: nearest, {loaded.day_index.sessions[found.index]})"))

    def send(fields: dict[str, Any]) -> None:
        client.xadd(str(rc.output_stream), {k: str(v) for k, v in fields.items()},
                    maxlen=int(rc.output_maxlen), approximate=True)

    rows: list[dict[str, Any]] = []
    final_ms: list[float] = []
    step_ms: list[float] = []
    compute = 0.0
    bins_total = 0
    errors = 0
    open_trial: str | None = None
    last_text = ""
    last_id = str(rc.start_id)
    last_entry = time.monotonic()

    def finish(trial: str, read_at: float, why: str = "") -> None:
        nonlocal open_trial, last_text, compute
        started = time.perf_counter()
        final = decoder.finish()
        compute += time.perf_counter() - started
        latency = 1000.0 * (time.perf_counter() - read_at)
        send({"trial": trial, "text": final.text, "final": 1, "latency_ms": f"{latency:.2f}"})
        say(f"trial {trial}: {final.text!r}" + (f" ({why})" if why else ""))
        rows.append({"session": session, "block": "", "trial": trial, "text": final.text, "reference": "", "wer": "",
                     "first_word_ms": "", "final_latency_ms": f"{latency:.2f}"})
        final_ms.append(latency)
        open_trial, last_text = None, ""

    with _Stop() as stop:
        while not stop.requested and (cfg.max_trials is None or len(rows) < int(cfg.max_trials)):
            if rc.idle_timeout_s is not None and time.monotonic() - last_entry > float(rc.idle_timeout_s):
                say(f"no entry for {rc.idle_timeout_s:g} s (redis.idle_timeout_s): stopping")
                break
            reply = client.xread({str(rc.input_stream): last_id}, count=int(cfg.chunk_bins), block=int(rc.block_ms))
            if not reply:
                continue
            last_entry = time.monotonic()
            read_at = time.perf_counter()
            chunk: list[np.ndarray] = []
            for entry_id, fields in reply[0][1]:
                last_id = entry_id
                try:
                    kind, trial, x = parse_entry(fields, open_trial)
                except ValueError as e:
                    errors += 1
                    bad_trial = fields.get(b"trial", b"").decode("utf-8", "replace")
                    send({"trial": bad_trial, "error": str(e), "entry": entry_id.decode()})
                    say(f"skipped entry {entry_id.decode()} of {rc.input_stream}: {e}")
                    continue
                if kind == "bin" and open_trial is not None and trial != open_trial:
                    compute += _push(decoder, chunk, step_ms)
                    chunk = []
                    finish(open_trial, read_at, f"ended by the first bin of trial {trial!r}")
                if kind == "bin":
                    if open_trial is None:
                        decoder.start()
                        open_trial = trial
                    chunk.append(x)
                    bins_total += 1
                else:
                    compute += _push(decoder, chunk, step_ms)
                    chunk = []
                    finish(trial, read_at)
                    if cfg.max_trials is not None and len(rows) >= int(cfg.max_trials):
                        break
            if chunk:
                compute += _push(decoder, chunk, step_ms)
                partial_text = " ".join(decoder.current_words)
                if partial_text != last_text:
                    last_text = partial_text
                    send({"trial": open_trial, "text": partial_text, "final": 0,
                          "latency_ms": f"{1000.0 * (time.perf_counter() - read_at):.2f}"})
        if open_trial is not None:  # stopped mid-trial: its words so far are its final text
            finish(open_trial, time.perf_counter(), "ended by the stop")
    write_csv(out_path, rows)
    summary = summarize(rows, [], step_ms, [], final_ms, compute, bins_total * 0.02)
    summary["malformed_entries"] = errors
    for line in summary_lines(summary, out_path):
        say(line)
    say(f"{errors} malformed entries skipped")
    return {"rows": rows, "summary": summary, "output": out_path}


def _push(decoder: StreamingDecoder, chunk: list[np.ndarray], step_ms: list[float]) -> float:
    """Push the bins gathered from one read; the compute seconds it took."""
    if not chunk:
        return 0.0
    started = time.perf_counter()
    decoder.push(np.stack(chunk))
    seconds = time.perf_counter() - started
    step_ms.append(1000.0 * seconds * 4 / len(chunk))
    return seconds
