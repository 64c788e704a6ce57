"""Competition submissions: the official CSV format, written and checked against the test files.

Format (shared/T15_FORMAT.md): header ``id,text``; one row per test trial;
``id`` counts from 0 over sessions in chronological order and, within a
session, the order of trials in its ``data_test.hdf5`` (trial_0000, trial_0001, ...).

Beside ``submission.csv`` :func:`write_submission` writes ``submission.trials.csv``
(id, session, block, trial, key) so anyone can see which trial each row
answers; :func:`validate_submission` checks it too when it is there.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py

from mode_ssm.atomic import atomic_open
from mode_ssm.data.t15 import HDF5_ERRORS, find_sessions, session_and_key
from mode_ssm.decoding.lexicon_decoder import greedy_words
from mode_ssm.decoding.rescoring import RescoringDecoder
from mode_ssm.evaluation.pipeline import prepare
from mode_ssm.evaluation.reports import phoneme_ids
from mode_ssm.evaluation.schema import SubmissionSchema
from mode_ssm.runtime.schema import check_values
from mode_ssm.text import normalize_sentence

HEADER = ("id", "text")
MANIFEST_HEADER = ("id", "session", "block", "trial", "key")
MAX_LISTED = 10

log = logging.getLogger(__name__)


class SubmissionError(ValueError):
    """A submission that would be rejected or mis-scored; the message names the file, row and problem."""


@dataclass(frozen=True)
class SubmissionTrial:
    id: int
    session: str
    block: int | None
    trial: int | None
    key: str  # trial group in data_test.hdf5


def read_test_trials(data_root: str | Path) -> list[SubmissionTrial]:
    """Every trial of every ``data_test.hdf5`` under ``data_root``, in submission order (read from the files)."""
    root = Path(data_root)
    sessions = [s for s in find_sessions(root) if "test" in s.files]
    if not sessions:
        raise SubmissionError(f"{root}: no session folder holds data_test.hdf5, so there is nothing to submit")
    out: list[SubmissionTrial] = []
    for s in sessions:
        path = s.files["test"]
        try:
            with h5py.File(path, "r") as f:
                keys = sorted(f.keys(), key=_trial_number(path))
                for key in keys:
                    attrs = f[key].attrs
                    out.append(SubmissionTrial(len(out), s.name, _maybe_int(attrs.get("block_num")),
                                         _maybe_int(attrs.get("trial_num")), key))
        except SubmissionError:
            raise
        except HDF5_ERRORS as e:
            raise SubmissionError(f"{path}: not a readable HDF5 file, corrupt or truncated ({e}); "
                                  "its trials cannot be listed, so no complete submission can be written") from None
    return out


def _trial_number(path: Path):
    def number(key: str) -> int:
        if not key.startswith("trial_") or not key[len("trial_") :].isdigit():
            raise SubmissionError(f"{path}: top-level key {key!r} is not a trial group named trial_NNNN")
        return int(key[len("trial_") :])

    return number


def _maybe_int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def manifest_path(csv_path: str | Path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.stem + ".trials.csv")


def clean_text(sentence: str) -> str:
    """One CSV-safe ASCII line: non-ASCII characters dropped, whitespace collapsed."""
    return " ".join(sentence.encode("ascii", "ignore").decode("ascii").split())


def write_submission(
    texts: Sequence[str],
    trials: Sequence[SubmissionTrial],
    csv_path: str | Path,
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``texts[i]`` as the answer to ``trials[i]``, plus the trial manifest beside it.

    ``rows`` (decoded rows in the same order, with ``session`` and ``source``)
    are checked against ``trials`` so a decode in the wrong order cannot be written.
    """
    if len(texts) != len(trials):
        raise SubmissionError(f"{csv_path}: {len(texts)} predictions for {len(trials)} test trials")
    if rows is not None:
        for t, r in zip(trials, rows):
            key = str(r.get("source", "")).rsplit(":", 1)[-1]
            if (r["session"], key) != (t.session, t.key):
                raise SubmissionError(f"{csv_path}: prediction {t.id} is for {r['session']}:{key}, "
                                      f"expected {t.session}:{t.key}; rows are out of order")
    bad = [i for i, t in enumerate(texts) if not normalize_sentence(clean_text(t))]
    if bad:
        raise SubmissionError(f"{csv_path}: predictions {bad[:MAX_LISTED]} are empty once normalised; "
                              "give every trial some text")
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", newline="", encoding="ascii") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows((t.id, clean_text(text)) for t, text in zip(trials, texts))
    with atomic_open(manifest_path(path), "w", newline="", encoding="ascii") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MANIFEST_HEADER)
        writer.writerows((t.id, t.session, "" if t.block is None else t.block, "" if t.trial is None else t.trial,
                          t.key) for t in trials)
    return path


def validate_submission(csv_path: str | Path, data_root: str | Path) -> int:
    """Check a submission against the test files of ``data_root``; returns the row count.

    Checks: header ``id,text``; exactly two fields per row; ids 0..N-1 in order;
    N equals the number of test trials; text non-empty (also after the official
    normalisation) and ASCII; and, if ``<name>.trials.csv`` is beside it, that
    its rows name the test trials in submission order. Raises
    :class:`SubmissionError` listing the first problems found.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise SubmissionError(f"{path}: submission file not found")
    raw = path.read_bytes()
    problems: list[str] = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        for col, byte in enumerate(line, start=1):
            if byte > 127:
                problems.append(f"line {lineno} column {col}: non-ASCII byte 0x{byte:02x}")
                break
        if len(problems) >= MAX_LISTED:
            break
    if problems:
        raise SubmissionError(f"{path}: text must be ASCII: " + "; ".join(problems))
    records = list(csv.reader(io.StringIO(raw.decode("ascii"), newline="")))
    if not records:
        raise SubmissionError(f"{path}: empty file, expected the header 'id,text'")
    if tuple(records[0]) != HEADER:
        raise SubmissionError(f"{path}: header is {','.join(records[0])!r}, expected 'id,text'")
    body = records[1:]
    trials = read_test_trials(data_root)
    if len(body) != len(trials):
        raise SubmissionError(f"{path}: {len(body)} rows but the test files of {data_root} hold {len(trials)} trials "
                              "(one row per test trial is required)")
    for i, rec in enumerate(body):
        line = i + 2
        if len(rec) != 2:
            problems.append(f"line {line}: {len(rec)} fields, expected 2 (id,text; quote text holding commas)")
            continue
        id_text, text = rec
        if not id_text.strip().lstrip("-").isdigit():
            problems.append(f"line {line}: id {id_text!r} is not an integer")
        elif int(id_text) != i:
            problems.append(f"line {line}: id {int(id_text)}, expected {i} (ids run 0..{len(trials) - 1} in order)")
        if not text.strip():
            problems.append(f"line {line} (id {id_text}): empty text")
        elif not normalize_sentence(text):
            problems.append(f"line {line} (id {id_text}): text {text!r} is empty after the official normalisation")
        elif "\n" in text or "\r" in text:
            problems.append(f"line {line} (id {id_text}): text spans several lines")
        if len(problems) >= MAX_LISTED:
            break
    if problems:
        raise SubmissionError(f"{path}: " + "; ".join(problems))
    manifest = manifest_path(path)
    if manifest.is_file():
        _check_manifest(manifest, trials, data_root)
    return len(body)


def _check_manifest(manifest: Path, trials: Sequence[SubmissionTrial], data_root: str | Path) -> None:
    with open(manifest, newline="", encoding="ascii") as f:
        records = list(csv.reader(f))
    if not records or tuple(records[0]) != MANIFEST_HEADER:
        raise SubmissionError(f"{manifest}: header must be {','.join(MANIFEST_HEADER)}")
    body = records[1:]
    if len(body) != len(trials):
        raise SubmissionError(f"{manifest}: {len(body)} rows but {data_root} holds {len(trials)} test trials")
    for i, (rec, t) in enumerate(zip(body, trials)):
        if len(rec) != len(MANIFEST_HEADER) or (rec[0], rec[1], rec[4]) != (str(t.id), t.session, t.key):
            raise SubmissionError(f"{manifest}: row {i} names {rec}, but test trial {i} is {t.session}:{t.key}; "
                                  "the submission's rows do not match the test files' order")


def fill_empty(
    rows: Sequence[Mapping[str, Any]], pronunciation_index: Any, fallback_text: str
) -> tuple[list[str], int, int]:
    """Submission text per row: the decoded sentence; where it is empty, the no-LM greedy words of the
    predicted phonemes; where those are empty too, ``fallback_text``.

    An empty answer costs every reference word as a deletion, one guessed word
    costs no more, and some scorers reject empty fields. Returns
    (texts, rows given greedy words, rows given the fallback).
    """
    if not normalize_sentence(fallback_text):
        raise ValueError(f"fallback_text {fallback_text!r} is empty after normalisation")
    texts, n_greedy, n_fallback = [], 0, 0
    for r in rows:
        text = clean_text(r.get("predicted_sentence") or "")
        if not normalize_sentence(text) and r.get("predicted_phonemes"):
            text = clean_text(" ".join(greedy_words(phoneme_ids(r["predicted_phonemes"]), pronunciation_index)))
            n_greedy += bool(normalize_sentence(text))
        if not normalize_sentence(text):
            text = fallback_text
            n_fallback += 1
        texts.append(text)
    return texts, n_greedy, n_fallback


def make_submission(cfg: Any, launch_dir: str | Path, console: Any | None = None) -> dict[str, Any]:
    """``scripts/make_submission.py``: decode every test trial and write a validated submission CSV."""
    check_values(cfg, SubmissionSchema)
    launch_dir = Path(launch_dir)

    def say(line: str) -> None:  # to the console and to the run's log file (work_dir)
        log.info("%s", line)
        if console is not None:
            console.print(line, markup=False, highlight=False)

    output = launch_dir / Path(str(cfg.output)).expanduser()
    if cfg.validate_only:
        if not cfg.data.data_root:
            raise SubmissionError("validate_only=true needs data.data_root=DIR (the folder with the test files)")
        n = validate_submission(output, launch_dir / Path(str(cfg.data.data_root)).expanduser())
        say(f"{output}: valid submission, {n} rows")
        return {"rows": n, "output": output}
    # every readable test trial is kept and decoded; full validation flags NaN/Inf, dead channels, lengths
    job = prepare(cfg, launch_dir, "test", launch_dir / Path(str(cfg.work_dir)), validate="full")
    data_root, data = job.data_root, job.data
    trials = read_test_trials(data_root)
    readable = {session_and_key(data.source(i)) for i in range(len(data))}
    missing = [t for t in trials if (t.session, t.key) not in readable]
    skip = cfg.data.get("on_bad_session", "error") == "skip"
    if missing and not skip:
        raise SubmissionError(f"{data_root}: only {len(data)} of {len(trials)} test trials can be read, and every "
                              f"one needs a row (data.on_bad_session=skip answers the unreadable ones with "
                              f"fallback_text):\n{data.report.summary()}")
    say(f"decoding {len(data)} test trials of {data_root} with {cfg.decoder}"
        + (f" and test-time adaptation {job.tta.to_dict()}" if job.tta.enabled else ""))
    if isinstance(job.word_decoder, RescoringDecoder):
        say(f"word decoder: {job.word_decoder.description}")
    result = job.decode(log=say)
    texts, n_greedy, n_fallback = fill_empty(result.rows, job.words.pronunciation_index, str(cfg.fallback_text))
    rows: list[Mapping[str, Any]] = list(result.rows)
    if missing:  # on_bad_session=skip: the unreadable trials still need a row
        decoded = dict(zip((session_and_key(str(r["source"])) for r in rows), zip(texts, rows)))
        pairs = [decoded.get((t.session, t.key), (str(cfg.fallback_text), {"session": t.session, "source": f":{t.key}"}))
                 for t in trials]
        texts, rows = [p[0] for p in pairs], [p[1] for p in pairs]
    write_submission(texts, trials, output, rows)
    n = validate_submission(output, data_root)
    unseen = [s for s, d in result.days.items() if not d.exact]
    flagged = data.report.flagged_by_reason
    say(f"{output}: {n} rows, validated ({manifest_path(output).name} beside it names each row's trial)")
    if missing:
        by_session = Counter(t.session for t in missing)
        say(f"{len(missing)} unreadable test trials answered with fallback_text {cfg.fallback_text!r} "
            f"(data.on_bad_session=skip): " + ", ".join(f"{s} {k}" for s, k in by_session.items()))
        for s in data.report.skipped_sessions:
            say(f"session {s.session} skipped: {s.error}")
    if flagged:
        say(f"{data.report.flagged_trials} test trials decoded despite breaking a training rule"
            + (" (non-finite values decoded as 0)" if "non_finite" in flagged else "") + ": "
            + ", ".join(f"{n} {r}" for r, n in flagged.most_common()))
    if n_greedy or n_fallback:
        say(f"{n_greedy + n_fallback} empty decodes filled: {n_greedy} with no-LM greedy words, "
            f"{n_fallback} with fallback_text {cfg.fallback_text!r}")
    for s in unseen:
        say(f"session {s} was not in training: decoded with the {result.days[s].note}")
    return {"rows": n, "output": output, "filled_greedy": n_greedy, "filled_fallback": n_fallback,
            "unreadable": len(missing), "flagged_by_reason": dict(flagged),
            "unseen_sessions": unseen, "seconds": result.seconds}
