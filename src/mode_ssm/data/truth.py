"""The held-out test truth of simulated data: ``DATA_ROOT/test_truth.csv``.

The real release publishes no test labels; the simulator knows them. It writes
them here, outside every ``t15.*`` folder, one row per test trial in submission
order (``id`` as in the competition CSV: sessions chronologically, then the
trials of each ``data_test.hdf5`` in file order), with the sentence, the
phoneme ids and the speaking mode. Training, tuning and decoding never read
it (T15Split reads only the session folders); only scoring does:
``evaluate.py split=test`` scores against it when it is present and says so
when it is not (real data).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from mode_ssm.atomic import atomic_open

TEST_TRUTH = "test_truth.csv"
COLUMNS = ("id", "session", "block", "trial", "key", "sentence", "phoneme_ids", "speaking_mode")


class TruthError(ValueError):
    """A truth file that cannot be read or does not match the test files; names the file and row."""


@dataclass(frozen=True)
class TruthRow:
    id: int
    session: str
    block: int
    trial: int
    key: str  # trial group in the session's data_test.hdf5
    sentence: str
    phoneme_ids: tuple[int, ...]
    speaking_mode: str


def write_test_truth(path: str | Path, rows: Iterable[TruthRow]) -> Path:
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow((r.id, r.session, r.block, r.trial, r.key, r.sentence, " ".join(map(str, r.phoneme_ids)),
                        r.speaking_mode))
    return Path(path)


def read_test_truth(data_root: str | Path) -> dict[tuple[str, str], TruthRow] | None:
    """(session, trial key) -> truth, or None when ``data_root`` has no truth file (real data)."""
    path = Path(data_root) / TEST_TRUTH
    if not path.is_file():
        return None
    out: dict[tuple[str, str], TruthRow] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise TruthError(f"{path}: header must be {','.join(COLUMNS)}, got {header}")
        for line, rec in enumerate(reader, start=2):
            try:
                row = TruthRow(int(rec[0]), rec[1], int(rec[2]), int(rec[3]), rec[4], rec[5],
                               tuple(int(p) for p in rec[6].split()), rec[7])
            except (ValueError, IndexError) as e:
                raise TruthError(f"{path}: line {line}: {e}") from None
            if row.id != len(out):
                raise TruthError(f"{path}: line {line}: id {row.id}, expected {len(out)} (submission order)")
            out[(row.session, row.key)] = row
    return out
