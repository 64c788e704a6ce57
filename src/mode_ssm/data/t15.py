"""Read T15 copy-task HDF5 data lazily, and reject bad input with a clear reason.

A data root holds session folders ``t15.YYYY.MM.DD/``, each with
``data_train.hdf5`` and optionally ``data_val.hdf5`` / ``data_test.hdf5``
(layout in shared/T15_FORMAT.md; :mod:`mode_ssm.data.writer` writes it).

:class:`T15Split` indexes every trial of one split from attributes and label
arrays only, checks it, and reads features only when an item is asked for, so
memory stays far below the 13 GB of the full release. HDF5 handles are opened
per process on first use, never shared across a fork, so the dataset works
with ``torch.utils.data.DataLoader(num_workers=N)``.

Two kinds of problems, two outcomes:

- a bad *trial* (NaN, dead channels, too short for CTC, missing fields, ...) is
  skipped and counted by reason in :class:`ValidationReport`. With
  ``rules="eval"`` (val / test scoring) a trial that breaks only the training
  rules (:data:`TRAINING_RULES`) is kept and counted as *flagged* instead, so a
  score covers every trial the files hold; only unreadable trials are skipped;
- a bad *file* (unreadable, truncated, missing, keys with gaps) raises
  :class:`T15DataError`, or with ``on_bad_session="skip"`` drops that session
  with a warning and lets the rest load.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import os
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, NamedTuple, Sequence

import h5py
import numpy as np

from mode_ssm.data.blocks import TABLE_FILENAME, corpus_lookup, read_block_table, session_date
from mode_ssm.phonemes import NUM_CLASSES

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
FILE_NUM_FEATURES = 512  # every T15 file holds 512 features per bin
THRESHOLD_CROSSING_FEATURES = 256  # the first 256 are threshold crossings, then spike band power
BIN_SECONDS = 0.02
MIN_TIME_STEPS = 3  # 60 ms: shorter than the 50 ms floor of a spoken trial
MAX_TIME_STEPS = 1500  # 30 s
# Dead or constant channels are kept (the model zeroes them, augmentation keeps them dead) and
# counted per session; only a trial with almost nothing left that varies is refused.
MIN_LIVE_CHANNEL_FRACTION = 0.05
SPEAKING_MODES: tuple[str, ...] = ("vocalized", "silent")  # index = class id used in batches
_SPEAKING_MODE_ALIASES = {"vocalized": 0, "vocalised": 0, "silent": 1}

# Why a trial was skipped; the keys are what reports count by.
SKIP_REASONS: dict[str, str] = {
    "missing_field": "a required dataset or attribute is missing",
    "bad_attribute": "an attribute has the wrong type or value",
    "bad_features": "input_features is not float32 (T, 512)",
    "length_mismatch": "n_time_steps disagrees with input_features",
    "wrong_session": "session attribute differs from the session folder",
    "seq_len_exceeds_padding": "seq_len is larger than the padded label length",
    "bad_labels": "a phoneme id within seq_len is outside 1..40",
    "too_short": f"fewer than {MIN_TIME_STEPS} bins (60 ms)",
    "too_long": f"more than {MAX_TIME_STEPS} bins (30 s)",
    "too_few_frames_for_ctc": "the model emits too few frames for CTC to align the labels",
    "non_finite": "NaN or Inf in the features",
    "too_few_live_channels": f"fewer than {MIN_LIVE_CHANNEL_FRACTION:.0%} of feature channels vary over the trial",
}

# Rules that only keep training clean: with rules="eval" a trial breaking them is kept and flagged.
# Every other reason means the trial cannot be read as a trial and is skipped under both rule sets.
TRAINING_RULES: frozenset[str] = frozenset(
    {"too_short", "too_long", "too_few_frames_for_ctc", "non_finite", "too_few_live_channels"}
)

_TRIAL_KEY = re.compile(r"trial_(\d{4,})")

Split = Literal["train", "val", "test"]
Validate = Literal["full", "metadata", "none"]
OnBadSession = Literal["error", "skip"]
Rules = Literal["train", "eval"]


class T15DataError(ValueError):
    """Bad T15 input. The message names the file (and trial key) and the problem."""


# What h5py raises when the bytes of a file are damaged: OSError for unreadable chunks and
# headers, RuntimeError for a broken symbol table or heap, KeyError for an object header it cannot
# open (h5py reports that as a missing name), ValueError for a malformed message.
HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError)


class T15DataWarning(UserWarning):
    """Something in a data root was ignored or dropped; loading went on."""


# ---------------------------------------------------------------------------
# Sessions and the day index


@dataclass(frozen=True)
class SessionInfo:
    """One session folder: its name, date and the split files it holds."""

    name: str
    date: dt.date
    files: dict[str, Path]  # split ("train" | "val" | "test") -> path


def _scan_sessions(data_root: str | Path) -> tuple[list[SessionInfo], list[str]]:
    """All well-formed session folders (chronological) and a message per ignored folder."""
    root = Path(data_root)
    if not root.exists():
        raise T15DataError(f"{root}: data root does not exist")
    if not root.is_dir():
        raise T15DataError(f"{root}: data root is not a folder")
    sessions: list[SessionInfo] = []
    problems: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("t15.")):
        try:
            date = session_date(folder.name)
            if f"t15.{date:%Y.%m.%d}" != folder.name:  # e.g. t15.2023.8.11 would sort wrongly as text
                raise ValueError(f"{folder.name!r} is not zero-padded as t15.YYYY.MM.DD")
        except ValueError as e:
            problems.append(f"{folder}: ignored, {e}")
            continue
        # A broken symlink is kept so that opening it reports the missing file.
        files = {
            s: folder / f"data_{s}.hdf5"
            for s in SPLITS
            if (folder / f"data_{s}.hdf5").exists() or (folder / f"data_{s}.hdf5").is_symlink()
        }
        if not files:
            problems.append(f"{folder}: ignored, holds no data_train/val/test.hdf5")
            continue
        sessions.append(SessionInfo(folder.name, date, files))
    if not sessions:
        hint = ""
        if root.name.startswith("t15.") and any(root.glob("data_*.hdf5")):
            hint = "; this looks like a session folder, pass its parent folder"
        elif problems:
            hint = "; ignored: " + "; ".join(problems)
        raise T15DataError(f"{root}: no session folders named t15.YYYY.MM.DD with data files{hint}")
    sessions.sort(key=lambda s: s.date)
    return sessions, problems


def find_sessions(data_root: str | Path, max_sessions: int | None = None) -> list[SessionInfo]:
    """Session folders under ``data_root`` in chronological order (the first ``max_sessions``).

    Folders whose name starts with ``t15.`` but is not a valid date, or that hold no
    data file, are reported with a :class:`T15DataWarning` and left out.
    """
    if max_sessions is not None and max_sessions < 1:
        raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
    sessions, problems = _scan_sessions(data_root)
    for p in problems:
        warnings.warn(p, T15DataWarning, stacklevel=2)
    return sessions[:max_sessions] if max_sessions is not None else sessions


class DayLookup(NamedTuple):
    index: int
    exact: bool  # False: the session was never seen, ``index`` is its nearest earlier known session


@dataclass(frozen=True)
class DayIndex:
    """Session name -> day index, chronological over the training sessions.

    Saved with checkpoints (:meth:`to_dict`) so a model meets the same index
    again; a session the model never saw maps to its nearest earlier session,
    whose day-specific layer is the best guess for drift that only grows.
    """

    sessions: tuple[str, ...]

    def __post_init__(self) -> None:
        dates = [session_date(s) for s in self.sessions]
        if len(set(self.sessions)) != len(self.sessions):
            raise ValueError(f"day index has repeated sessions: {list(self.sessions)}")
        if dates != sorted(dates):
            raise ValueError(f"day index sessions are not in chronological order: {list(self.sessions)}")
        object.__setattr__(self, "_dates", dates)
        object.__setattr__(self, "_position", {s: i for i, s in enumerate(self.sessions)})

    @classmethod
    def from_sessions(cls, sessions: Iterable[str | SessionInfo]) -> "DayIndex":
        names = {s.name if isinstance(s, SessionInfo) else str(s) for s in sessions}
        return cls(tuple(sorted(names, key=session_date)))

    def __len__(self) -> int:
        return len(self.sessions)

    def __contains__(self, session: object) -> bool:
        return session in self._position  # type: ignore[attr-defined]

    def lookup(self, session: str) -> DayLookup:
        """Exact index, or for an unseen session the nearest earlier one (the first if none is earlier)."""
        if not self.sessions:
            raise ValueError("day index is empty: it was built from no training session")
        exact = self._position.get(session)  # type: ignore[attr-defined]
        if exact is not None:
            return DayLookup(exact, True)
        earlier = bisect.bisect_right(self._dates, session_date(session)) - 1  # type: ignore[attr-defined]
        return DayLookup(max(earlier, 0), False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "t15_day_index", "sessions": list(self.sessions)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DayIndex":
        if d.get("kind") != "t15_day_index" or not isinstance(d.get("sessions"), (list, tuple)):
            raise ValueError(f"not a saved day index: {dict(d)!r:.200}")
        return cls(tuple(str(s) for s in d["sessions"]))


# ---------------------------------------------------------------------------
# Validation report


@dataclass(frozen=True)
class SkippedTrial:
    file: str
    key: str
    reason: str  # a key of SKIP_REASONS
    detail: str


@dataclass(frozen=True)
class FlaggedTrial:
    """A kept trial that breaks a training rule (``rules="eval"``); one entry per rule broken."""

    file: str
    key: str
    session: str
    block_num: int
    trial_num: int
    reason: str  # a key of TRAINING_RULES
    detail: str


@dataclass(frozen=True)
class SkippedSession:
    session: str
    file: str
    error: str


@dataclass
class SessionCounts:
    total: int = 0
    kept: int = 0
    flagged: int = 0  # kept trials that break a training rule (rules="eval")
    dead_channels: int | None = None  # channels constant in every trial (validate="full"; None: not read)

    @property
    def skipped(self) -> int:
        return self.total - self.kept


@dataclass
class ValidationReport:
    """What indexing found: kept, flagged and skipped trials, by reason and by session.

    ``flagged`` lists the kept trials that break a training rule (only with
    ``rules="eval"``), one entry per rule broken, so a trial breaking two rules
    counts once in :attr:`flagged_trials` and once under each reason in
    :attr:`flagged_by_reason`.
    """

    split: str
    validate: str
    per_session: dict[str, SessionCounts] = field(default_factory=dict)
    skipped: list[SkippedTrial] = field(default_factory=list)
    flagged: list[FlaggedTrial] = field(default_factory=list)
    skipped_sessions: list[SkippedSession] = field(default_factory=list)
    ignored_folders: list[str] = field(default_factory=list)
    bytes_read: int = 0  # feature bytes streamed by validate="full"
    seconds: float = 0.0
    rules: str = "train"

    @property
    def total_trials(self) -> int:
        return sum(c.total for c in self.per_session.values())

    @property
    def kept_trials(self) -> int:
        return sum(c.kept for c in self.per_session.values())

    @property
    def skipped_trials(self) -> int:
        return self.total_trials - self.kept_trials

    @property
    def skipped_by_reason(self) -> Counter[str]:
        return Counter(s.reason for s in self.skipped)

    @property
    def flagged_trials(self) -> int:
        """Kept trials that break at least one training rule."""
        return sum(c.flagged for c in self.per_session.values())

    @property
    def flagged_by_reason(self) -> Counter[str]:
        return Counter(f.reason for f in self.flagged)

    @property
    def dead_channels(self) -> dict[str, int]:
        """Per session with any: channels constant in every one of its trials (validate="full")."""
        return {s: c.dead_channels for s, c in self.per_session.items() if c.dead_channels}

    def flagged_line(self) -> str:
        """e.g. ``kept but flagged: 3 (too_short 1, non_finite 2)``."""
        by_reason = ", ".join(f"{r} {n}" for r, n in self.flagged_by_reason.most_common())
        return f"kept but flagged: {self.flagged_trials}" + (f" ({by_reason})" if by_reason else "")

    def summary(self, max_listed: int = 10) -> str:
        """Counts by reason, dropped sessions, and the first ``max_listed`` skipped / flagged trials by name."""
        rules = "" if self.rules == "train" else f", rules={self.rules}"
        lines = [
            f"{self.split}: {self.kept_trials} of {self.total_trials} trials kept "
            f"from {len(self.per_session)} session(s) (validate={self.validate}{rules}, {self.seconds:.1f} s)"
        ]
        if self.flagged:
            lines.append(f"  {self.flagged_line()}")
        if self.dead_channels:
            lines.append("  dead channels (constant in every trial, masked): "
                         + ", ".join(f"{s} {n}" for s, n in self.dead_channels.items()))
        for reason, n in sorted(self.skipped_by_reason.items(), key=lambda kv: -kv[1]):
            lines.append(f"  skipped {n:5d} {reason}: {SKIP_REASONS.get(reason, '')}")
        for s in self.skipped_sessions:
            lines.append(f"  skipped session {s.session}: {s.error}")
        for msg in self.ignored_folders:
            lines.append(f"  {msg}")
        for t in self.skipped[:max_listed]:
            lines.append(f"  {t.file}:{t.key} {t.reason} ({t.detail})")
        if len(self.skipped) > max_listed:
            lines.append(f"  ... and {len(self.skipped) - max_listed} more skipped trials in report.skipped")
        for t in self.flagged[:max_listed]:
            lines.append(
                f"  flagged {t.session} block {t.block_num} trial {t.trial_num} ({t.key}) {t.reason} ({t.detail})"
            )
        if len(self.flagged) > max_listed:
            lines.append(f"  ... and {len(self.flagged) - max_listed} more flags in report.flagged")
        return "\n".join(lines)

    def rich_table(self):
        """A ``rich`` table: one row per session, then one per flag / skip reason and dropped session.

        A "flagged" column (kept trials breaking a training rule) appears when any trial is flagged,
        a "dead channels" column when a session has channels constant in all its trials.
        """
        from rich.table import Table

        rules = "" if self.rules == "train" else f", rules={self.rules}"
        table = Table(title=f"T15 {self.split} (validate={self.validate}{rules})")
        table.add_column("session / reason")
        with_flags, with_dead = bool(self.flagged), bool(self.dead_channels)
        columns = ("trials", "kept") + (("flagged",) if with_flags else ()) + ("skipped",) \
            + (("dead channels",) if with_dead else ())
        for name in columns:
            table.add_column(name, justify="right")

        def row(label: str, total: str, kept: str, flagged: str, skipped: str, dead: str = "") -> None:
            table.add_row(label, total, kept, *((flagged,) if with_flags else ()), skipped,
                          *((dead,) if with_dead else ()))

        for session, c in self.per_session.items():
            row(session, str(c.total), str(c.kept), str(c.flagged) if c.flagged else "",
                str(c.skipped) if c.skipped else "", str(c.dead_channels) if c.dead_channels else "")
        row("[b]all[/b]", str(self.total_trials), str(self.kept_trials), str(self.flagged_trials), str(self.skipped_trials))
        if self.skipped or self.skipped_sessions or self.flagged:
            table.add_section()
        if with_flags:
            row(self.flagged_line(), "", "", str(self.flagged_trials), "")
        for reason, n in self.skipped_by_reason.most_common():
            row(f"skipped: {reason}", "", "", "", str(n))
        for s in self.skipped_sessions:
            row(f"[red]{s.session} dropped[/red]: {s.error}", "", "", "", "all")
        return table

    def __rich__(self):
        return self.rich_table()


# ---------------------------------------------------------------------------
# Trial checks


def ctc_output_frames(n_time_steps: int, patch_size: int = 14, patch_stride: int = 4) -> int:
    """Encoder frames left after the official model's patching: ``(T - patch_size) // stride + 1``."""
    return (n_time_steps - patch_size) // patch_stride + 1


def count_adjacent_repeats(labels: Sequence[int] | np.ndarray) -> int:
    """How many labels equal the one before; CTC needs a blank frame between each such pair."""
    labels = np.asarray(labels)
    return int(np.count_nonzero(labels[1:] == labels[:-1])) if len(labels) > 1 else 0


def ctc_min_time_steps(labels: Sequence[int] | np.ndarray, patch_size: int = 14, patch_stride: int = 4) -> int:
    """Fewest bins from which CTC can still align ``labels`` after patching."""
    needed_frames = len(labels) + count_adjacent_repeats(labels)
    return max((needed_frames - 1) * patch_stride + patch_size, patch_size)


def speaking_mode_id(mode: str | None) -> int:
    """'vocalized' -> 0, 'silent' -> 1, None -> -1 (unknown, as in the real data)."""
    if mode is None:
        return -1
    try:
        return _SPEAKING_MODE_ALIASES[mode]
    except KeyError:
        raise ValueError(f"speaking_mode {mode!r} is not one of {SPEAKING_MODES}") from None


class _TrialProblem(Exception):
    def __init__(self, reason: str, detail: str):
        assert reason in SKIP_REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _int_attr(attrs: Mapping[str, Any], name: str) -> int:
    if name not in attrs:
        raise _TrialProblem("missing_field", f"attribute {name!r} is missing")
    v = attrs[name]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise _TrialProblem("bad_attribute", f"attribute {name!r} is {v!r}, expected a plain integer")
    return int(v)


def _str_attr(attrs: Mapping[str, Any], name: str) -> str:
    if name not in attrs:
        raise _TrialProblem("missing_field", f"attribute {name!r} is missing")
    v = attrs[name]
    if isinstance(v, bytes):  # the release writes str; accept bytes from other writers
        v = v.decode("utf-8", errors="replace")
    if not isinstance(v, str):
        raise _TrialProblem("bad_attribute", f"attribute {name!r} is {v!r}, expected a string")
    return v


def _dataset(group: h5py.Group, name: str) -> h5py.Dataset:
    obj = group.get(name)
    if obj is None:
        raise _TrialProblem("missing_field", f"dataset {name!r} is missing")
    if not isinstance(obj, h5py.Dataset):
        raise _TrialProblem("missing_field", f"{name!r} is not a dataset")
    return obj


def _speaking_mode(attrs: Mapping[str, Any]) -> str | None:
    if "speaking_mode" not in attrs:
        return None
    v = attrs["speaking_mode"]
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and 0 <= int(v) < len(SPEAKING_MODES):
        return SPEAKING_MODES[int(v)]
    if isinstance(v, str) and v.strip().lower() in _SPEAKING_MODE_ALIASES:
        return SPEAKING_MODES[_SPEAKING_MODE_ALIASES[v.strip().lower()]]
    raise _TrialProblem("bad_attribute", f"speaking_mode is {v!r}, expected one of {SPEAKING_MODES} or 0/1")


# ---------------------------------------------------------------------------
# Items


@dataclass
class TrialExample:
    """One trial as the model sees it."""

    features: np.ndarray  # (T, C) float32, C = num_channels
    phoneme_ids: np.ndarray | None  # (seq_len,) int64, None in test files
    sentence: str | None
    session: str
    day_index: int
    day_index_exact: bool
    block_num: int
    trial_num: int
    corpus: str | None
    speaking_mode: str | None  # "vocalized" | "silent" | None (unknown)
    split: str
    source: str  # "<file>:<trial key>"
    flags: tuple[str, ...] = ()  # training rules this kept trial breaks (rules="eval"); () when clean

    @property
    def n_time_steps(self) -> int:
        return int(self.features.shape[0])


@dataclass(slots=True)
class _TrialRef:
    file_id: int
    key: str
    n_time_steps: int
    session: str
    day_index: int
    day_index_exact: bool
    block_num: int
    trial_num: int
    sentence: str | None
    phoneme_ids: np.ndarray | None
    corpus: str | None
    speaking_mode: str | None
    flags: tuple[str, ...] = ()


# ---------------------------------------------------------------------------
# The dataset


class T15Split:
    """One split (train / val / test) of a T15 data root as a map-style dataset of :class:`TrialExample`.

    Args:
        data_root: folder holding the ``t15.YYYY.MM.DD`` session folders.
        split: "train", "val" or "test" (test trials carry no labels).
        max_sessions: keep only the first N sessions (chronological).
        sessions: keep only these session names (applied before ``max_sessions``).
        day_index: the index a model was trained with; by default built from the
            selected sessions that have a train file, so train/val/test splits
            built separately from the same root agree.
        on_bad_session: "error" raises :class:`T15DataError` on a bad file;
            "skip" drops that session with a warning and records it in ``report``.
        validate: "full" also streams all features once (NaN/Inf, dead channels);
            "metadata" checks attributes, shapes and labels only; "none" skips only
            trials that cannot be read at all.
        output_frames: the model's output length, ``n_bins -> frames emitted`` (e.g.
            ``lambda n: int(model.output_lengths(torch.tensor([n]))[0])``), for the
            "too_few_frames_for_ctc" rule: a labelled trial whose frames are fewer than
            its labels plus adjacent repeats cannot be aligned by CTC. None (default):
            CTC feasibility is not checked at read time. Used only while indexing;
            the dataset keeps no reference to it (so it pickles, and holds no model).
        rules: "train" skips every trial that breaks a rule. "eval" (for scoring
            val / test on every trial the files hold) keeps a trial that breaks only
            the training rules (:data:`TRAINING_RULES`: too_short, too_long,
            too_few_frames_for_ctc, non_finite, too_few_live_channels), records it in
            ``report.flagged`` and in :meth:`flags`; unreadable trials are still
            skipped. Feature values are never changed (NaN/Inf stay for the caller).
        num_channels: 512 (all features) or 256 (threshold crossings only).
        block_table_path: corpus table; default ``data_root/t15_copyTaskData_description.csv``
            if present, else the real release's table shipped with the package.
    """

    def __init__(
        self,
        data_root: str | Path,
        split: Split = "train",
        max_sessions: int | None = None,
        sessions: Sequence[str] | None = None,
        day_index: DayIndex | None = None,
        on_bad_session: OnBadSession = "error",
        validate: Validate = "full",
        output_frames: Callable[[int], int] | None = None,
        rules: Rules = "train",
        num_channels: int = FILE_NUM_FEATURES,
        block_table_path: str | Path | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if on_bad_session not in ("error", "skip"):
            raise ValueError(f"on_bad_session must be 'error' or 'skip', got {on_bad_session!r}")
        if validate not in ("full", "metadata", "none"):
            raise ValueError(f"validate must be 'full', 'metadata' or 'none', got {validate!r}")
        if num_channels not in (FILE_NUM_FEATURES, THRESHOLD_CROSSING_FEATURES):
            raise ValueError(f"num_channels must be 512 or 256, got {num_channels}")
        if output_frames is not None and not callable(output_frames):
            raise TypeError(f"output_frames must be a function n_bins -> frames or None, got {output_frames!r}")
        if rules not in ("train", "eval"):
            raise ValueError(f"rules must be 'train' or 'eval', got {rules!r}")
        if max_sessions is not None and max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        started = time.perf_counter()
        self.data_root = Path(data_root)
        self.split = split
        self.num_channels = num_channels
        self.validate = validate
        self.rules = rules
        self.checks_ctc = output_frames is not None  # whether too_few_frames_for_ctc was judged
        self._output_frames = output_frames  # dropped after indexing

        found, problems = _scan_sessions(self.data_root)
        for p in problems:
            warnings.warn(p, T15DataWarning, stacklevel=2)
        if sessions is not None:
            by_name = {s.name: s for s in found}
            unknown = [s for s in sessions if s not in by_name]
            if unknown:
                raise T15DataError(f"{self.data_root}: no session folder for {unknown}")
            wanted = set(sessions)
            found = [s for s in found if s.name in wanted]
        selected = found[:max_sessions] if max_sessions is not None else found
        self.session_infos: list[SessionInfo] = selected

        if day_index is None:
            with_train = [s for s in selected if "train" in s.files]
            if not with_train:
                raise T15DataError(
                    f"{self.data_root}: no selected session has data_train.hdf5 to build a day index from; "
                    "pass the day_index saved with the model"
                )
            day_index = DayIndex.from_sessions(with_train)
        self.day_index = day_index
        self._corpus = _load_corpus_lookup(self.data_root, block_table_path)

        self.report = ValidationReport(split=split, validate=validate, ignored_folders=list(problems), rules=rules)
        self._files: list[Path] = []
        self._refs: list[_TrialRef] = []
        for info in selected:
            path = info.files.get(split)
            try:
                if path is None:
                    if split != "train":
                        continue  # a session without val/test data simply has no such file
                    path = self.data_root / info.name / "data_train.hdf5"
                    raise T15DataError(f"{path}: missing file; every session needs training data")
                refs, counts, skipped, flagged = self._index_file(info, path, file_id=len(self._files))
            except T15DataError as e:
                if on_bad_session == "error":
                    raise
                warnings.warn(f"skipping session {info.name} ({split}): {e}", T15DataWarning, stacklevel=2)
                self.report.skipped_sessions.append(SkippedSession(info.name, str(path), str(e)))
                continue
            self._files.append(path)
            self._refs.extend(refs)
            self.report.per_session[info.name] = counts
            self.report.skipped.extend(skipped)
            self.report.flagged.extend(flagged)
        self._output_frames = None  # may hold a model; not needed past indexing
        self.report.seconds = time.perf_counter() - started
        if self.report.skipped_trials or self.report.skipped_sessions or self.report.flagged:
            log.warning("%s", self.report.summary())
        self._pid = os.getpid()
        self._handles: dict[int, h5py.File] = {}

    # -- indexing ---------------------------------------------------------

    def _index_file(
        self, info: SessionInfo, path: Path, file_id: int
    ) -> tuple[list[_TrialRef], SessionCounts, list[SkippedTrial], list[FlaggedTrial]]:
        """Index one file; its results are committed by the caller only if the whole file reads."""
        if not path.exists():
            raise T15DataError(f"{path}: missing file (broken link?)")
        if path.stat().st_size == 0:
            raise T15DataError(f"{path}: empty file")
        try:
            f = h5py.File(path, "r")
        except HDF5_ERRORS as e:
            raise T15DataError(f"{path}: not a readable HDF5 file, corrupt or truncated ({e})") from None
        refs: list[_TrialRef] = []
        skipped: list[SkippedTrial] = []
        flagged: list[FlaggedTrial] = []
        counts = SessionCounts()
        dead_in_all: np.ndarray | None = None
        with f:
            try:
                keys = _check_trial_keys(path, list(f.keys()))
            except T15DataError:
                raise
            except HDF5_ERRORS as e:
                raise T15DataError(f"{path}: unreadable trial list, file corrupt ({e})") from None
            if not keys and self.split == "train":
                raise T15DataError(f"{path}: holds no trials; every session needs training data")
            for key in keys:
                try:
                    group = f[key]
                    if not isinstance(group, h5py.Group):
                        raise T15DataError(f"{path}:{key}: is a dataset, expected a trial group")
                    ref, broken, dead = self._index_trial(info, path, key, group, file_id)
                except _TrialProblem as p:
                    skipped.append(SkippedTrial(str(path), key, p.reason, p.detail))
                    counts.total += 1
                    continue
                except T15DataError:
                    raise
                except HDF5_ERRORS as e:  # HDF5 refuses to read something inside an openable file
                    raise T15DataError(f"{path}:{key}: unreadable, file corrupt or truncated ({e})") from None
                counts.total += 1
                counts.kept += 1
                if dead is not None:
                    dead_in_all = dead if dead_in_all is None else dead_in_all & dead
                if broken:
                    counts.flagged += 1
                    flagged.extend(
                        FlaggedTrial(str(path), key, ref.session, ref.block_num, ref.trial_num, p.reason, p.detail)
                        for p in broken
                    )
                refs.append(ref)
        if counts.total and not counts.kept and not any(t.reason in TRAINING_RULES for t in skipped):
            reasons = Counter(t.reason for t in skipped)
            raise T15DataError(
                f"{path}: none of its {counts.total} trials can be read ("
                + ", ".join(f"{n} {r}" for r, n in reasons.most_common())
                + f"); first: {skipped[0].key}: {skipped[0].detail}"
            )
        if dead_in_all is not None:
            counts.dead_channels = int(dead_in_all.sum())
        return refs, counts, skipped, flagged

    def _index_trial(
        self, info: SessionInfo, path: Path, key: str, group: h5py.Group, file_id: int
    ) -> tuple[_TrialRef, list[_TrialProblem], np.ndarray | None]:
        """The trial's reference, the training rules it breaks (always empty with rules="train") and
        which of its channels are constant (with validate="full"; else None).

        Raises :class:`_TrialProblem` for a trial to skip.
        """
        attrs = dict(group.attrs)
        broken: list[_TrialProblem] = []
        dead: np.ndarray | None = None

        def training_rule(reason: str, detail: str) -> None:
            problem = _TrialProblem(reason, detail)
            if self.rules == "train":
                raise problem
            broken.append(problem)

        labelled = self.split != "test"
        features = _dataset(group, "input_features")
        n_time_steps = _int_attr(attrs, "n_time_steps")
        session = _str_attr(attrs, "session")
        block_num = _int_attr(attrs, "block_num")
        trial_num = _int_attr(attrs, "trial_num")
        speaking_mode = _speaking_mode(attrs)
        if features.dtype != np.float32 or features.ndim != 2 or features.shape[1] != FILE_NUM_FEATURES:
            raise _TrialProblem(
                "bad_features",
                f"input_features is {features.dtype} {features.shape}, expected float32 (T, {FILE_NUM_FEATURES})",
            )
        if features.shape[0] != n_time_steps:
            raise _TrialProblem(
                "length_mismatch", f"n_time_steps={n_time_steps} but input_features has {features.shape[0]} rows"
            )

        sentence: str | None = None
        phoneme_ids: np.ndarray | None = None
        if labelled:
            seq_len = _int_attr(attrs, "seq_len")
            sentence = _str_attr(attrs, "sentence_label")
            labels = _dataset(group, "seq_class_ids")
            _dataset(group, "transcription")
            if labels.ndim != 1 or labels.dtype.kind not in "iu":
                raise _TrialProblem(
                    "bad_attribute", f"seq_class_ids is {labels.dtype} {labels.shape}, expected 1-D int"
                )
            if not 0 < seq_len <= labels.shape[0]:
                raise _TrialProblem(
                    "seq_len_exceeds_padding" if seq_len > 0 else "bad_attribute",
                    f"seq_len={seq_len} but seq_class_ids is padded to {labels.shape[0]}",
                )
            phoneme_ids = labels[:seq_len].astype(np.int64)

        if self.validate != "none":
            if session != info.name:
                raise _TrialProblem("wrong_session", f"session attribute {session!r} in folder {info.name}")
            if phoneme_ids is not None and (phoneme_ids.min() < 1 or phoneme_ids.max() >= NUM_CLASSES):
                raise _TrialProblem("bad_labels", f"phoneme ids range {phoneme_ids.min()}..{phoneme_ids.max()}")
            if n_time_steps < MIN_TIME_STEPS:
                training_rule("too_short", f"{n_time_steps} bins")
            if n_time_steps > MAX_TIME_STEPS:
                training_rule("too_long", f"{n_time_steps} bins")
            if phoneme_ids is not None and self._output_frames is not None:
                frames = int(self._output_frames(n_time_steps))
                needed = len(phoneme_ids) + count_adjacent_repeats(phoneme_ids)
                if frames < needed:
                    training_rule(
                        "too_few_frames_for_ctc",
                        f"{n_time_steps} bins give {frames} frames, {needed} needed for {len(phoneme_ids)} labels",
                    )
        if self.validate == "full":
            x = features[()][:, : self.num_channels]  # one trial in memory at a time
            self.report.bytes_read += features.size * features.dtype.itemsize
            finite = np.isfinite(x)
            if not finite.all():
                training_rule("non_finite", f"{int((~finite).sum())} NaN/Inf values")
            # A trial already too short (kept only under rules="eval") is trivially constant: not judged.
            if x.shape[0] >= MIN_TIME_STEPS:
                # max == min is exact where a std on float32 can come out a hair above zero
                dead = x.max(axis=0) == x.min(axis=0)
                live = int(np.count_nonzero(~dead))
                if live < MIN_LIVE_CHANNEL_FRACTION * x.shape[1]:
                    training_rule("too_few_live_channels", f"{live} of {x.shape[1]} channels vary")

        day = self.day_index.lookup(info.name)
        return _TrialRef(
            file_id=file_id,
            key=key,
            n_time_steps=n_time_steps,
            session=info.name,
            day_index=day.index,
            day_index_exact=day.exact,
            block_num=block_num,
            trial_num=trial_num,
            sentence=sentence,
            phoneme_ids=phoneme_ids,
            corpus=self._corpus.get((info.name, block_num)),
            speaking_mode=speaking_mode,
            flags=tuple(dict.fromkeys(p.reason for p in broken)),
        ), broken, dead

    # -- reading ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._refs)

    def _file(self, file_id: int) -> h5py.File:
        if os.getpid() != self._pid:
            # After a fork the parent's handles must not be used (or closed) here.
            self._handles = {}
            self._pid = os.getpid()
        handle = self._handles.get(file_id)
        if handle is None:
            path = self._files[file_id]
            try:
                handle = h5py.File(path, "r")
            except HDF5_ERRORS as e:
                raise T15DataError(f"{path}: cannot open ({e})") from None
            self._handles[file_id] = handle
        return handle

    def source(self, index: int) -> str:
        """``ROOT/SESSION/data_SPLIT.hdf5:trial_NNNN`` (see :func:`session_and_key`)."""
        ref = self._refs[index]
        return f"{self._files[ref.file_id]}:{ref.key}"

    def __getitem__(self, index: int) -> TrialExample:
        """Read one trial: features (T, C) float32 with C = ``num_channels``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"trial {index} out of range for {len(self)} trials")
        ref = self._refs[index]
        source = f"{self._files[ref.file_id]}:{ref.key}"
        try:
            x = self._file(ref.file_id)[ref.key]["input_features"][()]
        except T15DataError:
            raise
        except HDF5_ERRORS as e:
            raise T15DataError(f"{source}: cannot read input_features ({e})") from None
        if x.shape != (ref.n_time_steps, FILE_NUM_FEATURES):
            raise T15DataError(
                f"{source}: input_features is {x.shape}, was {(ref.n_time_steps, FILE_NUM_FEATURES)} when indexed"
            )
        if self.num_channels < FILE_NUM_FEATURES:
            x = np.ascontiguousarray(x[:, : self.num_channels])
        return TrialExample(
            features=x,
            phoneme_ids=None if ref.phoneme_ids is None else ref.phoneme_ids.copy(),
            sentence=ref.sentence,
            session=ref.session,
            day_index=ref.day_index,
            day_index_exact=ref.day_index_exact,
            block_num=ref.block_num,
            trial_num=ref.trial_num,
            corpus=ref.corpus,
            speaking_mode=ref.speaking_mode,
            split=self.split,
            source=source,
            flags=ref.flags,
        )

    def flags(self, index: int) -> tuple[str, ...]:
        """Training rules kept trial ``index`` breaks (only with ``rules="eval"``); () for a clean trial.

        No feature read; the same as ``self[index].flags``. Details are in ``report.flagged``.
        """
        return self._refs[index].flags

    def flagged_indices(self) -> list[int]:
        """Indices of the kept trials that carry a flag (empty with ``rules="train"``)."""
        return [i for i, r in enumerate(self._refs) if r.flags]

    def trial_lengths(self) -> np.ndarray:
        """n_time_steps per kept trial, (N,) int64, from attributes (no feature read)."""
        return np.array([r.n_time_steps for r in self._refs], dtype=np.int64)

    def phoneme_lengths(self) -> np.ndarray:
        """seq_len per kept trial, (N,) int64; zeros for test."""
        return np.array([0 if r.phoneme_ids is None else len(r.phoneme_ids) for r in self._refs], dtype=np.int64)

    def trial_metadata(self) -> list[dict[str, Any]]:
        """Per kept trial, in dataset order, everything but the features (no feature read).

        Keys: session, block_num, trial_num, sentence, speaking_mode, corpus, day_index,
        day_index_exact, n_time_steps, seq_len, source, flags (see :meth:`flags`).
        """
        return [
            {
                "session": r.session,
                "block_num": r.block_num,
                "trial_num": r.trial_num,
                "sentence": r.sentence,
                "speaking_mode": r.speaking_mode,
                "corpus": r.corpus,
                "day_index": r.day_index,
                "day_index_exact": r.day_index_exact,
                "n_time_steps": r.n_time_steps,
                "seq_len": 0 if r.phoneme_ids is None else len(r.phoneme_ids),
                "source": f"{self._files[r.file_id]}:{r.key}",
                "flags": r.flags,
            }
            for r in self._refs
        ]

    @property
    def sessions(self) -> list[str]:
        """Sessions that contributed trials, chronological."""
        return list(dict.fromkeys(r.session for r in self._refs))

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # h5py handles do not pickle; each process opens its own
        return state

    def __repr__(self) -> str:
        return (
            f"T15Split({str(self.data_root)!r}, split={self.split!r}, trials={len(self)}, "
            f"sessions={len(self.report.per_session)}, num_channels={self.num_channels}"
            + (f", rules={self.rules!r}" if self.rules != "train" else "")
            + ")"
        )


def session_and_key(source: str) -> tuple[str, str]:
    """(session folder, trial key) of a trial's ``source`` (:meth:`T15Split.source`, ``row["source"]``)."""
    path, key = str(source).rsplit(":", 1)
    return Path(path).parent.name, key


def _check_trial_keys(path: Path, keys: list[str]) -> list[str]:
    """Top level must be exactly trial_0000, trial_0001, ... with no gaps (existing readers index by count).

    Returns the keys in trial order (HDF5 lists them alphabetically, which differs past trial_9999).
    """
    bad = [k for k in keys if not _TRIAL_KEY.fullmatch(k)]
    if bad:
        raise T15DataError(f"{path}: top-level key(s) {bad[:5]} are not trial groups named trial_NNNN")
    ordered = sorted(keys, key=lambda k: int(k[len("trial_") :]))
    for expected, key in enumerate(ordered):
        if key != f"trial_{expected:04d}":
            raise T15DataError(
                f"{path}: trial keys must run trial_0000.. without gaps; expected trial_{expected:04d}, found {key}"
            )
    return ordered


def _load_corpus_lookup(data_root: Path, block_table_path: str | Path | None) -> dict[tuple[str, int], str]:
    if block_table_path is None:
        beside = data_root / TABLE_FILENAME
        block_table_path = beside if beside.exists() else None
    try:
        return corpus_lookup(read_block_table(block_table_path))
    except (OSError, ValueError, KeyError) as e:
        raise T15DataError(f"{block_table_path or 'packaged block table'}: cannot read block table ({e})") from None


# ---------------------------------------------------------------------------
# Overview


def dataset_summary(data_root: str | Path, validate: Validate = "metadata") -> str:
    """Sessions, date range, trials and hours per split, corpora and the validation outcome.

    ``validate="metadata"`` reads no features (seconds on the full release);
    pass ``"full"`` to also check every feature value (one pass over the data).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", T15DataWarning)  # the reports below say the same
        sessions = find_sessions(data_root)
        with_train = [s for s in sessions if "train" in s.files]
        day_index = DayIndex.from_sessions(with_train or sessions)
        lines = [
            f"T15 data at {Path(data_root)}",
            f"sessions: {len(sessions)} ({sessions[0].date} .. {sessions[-1].date}); "
            + ", ".join(f"{sum(sp in s.files for s in sessions)} with {sp}" for sp in SPLITS),
        ]
        corpora: Counter[str] = Counter()
        reports = []
        for split in SPLITS:
            ds = T15Split(data_root, split, day_index=day_index, on_bad_session="skip", validate=validate)
            hours = float(ds.trial_lengths().sum()) * BIN_SECONDS / 3600
            lines.append(f"{split:>5}: {len(ds):6d} trials, {hours:6.2f} h of neural data")
            corpora.update(m["corpus"] or "unknown" for m in ds.trial_metadata())
            reports.append(ds.report)
    lines.append("corpora (trials, all splits): " + ", ".join(f"{c} {n}" for c, n in corpora.most_common()))
    lines.append("validation:")
    lines.extend("  " + line for r in reports for line in r.summary().splitlines())
    return "\n".join(lines)
