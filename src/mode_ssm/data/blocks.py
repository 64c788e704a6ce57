"""The T15 block table (``t15_copyTaskData_description.csv``): corpus and split per block.

The real dataset's table ships with the package; the simulator writes one of the
same shape beside the data it simulates.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

COLUMNS = ("Date", "Post-implant day", "Block number", "Number of sentences", "Corpus", "Split")
TABLE_FILENAME = "t15_copyTaskData_description.csv"
SPLITS = ("Train", "Val/Test")


@dataclass(frozen=True)
class Block:
    date: dt.date
    post_implant_day: int
    block_num: int
    n_sentences: int
    corpus: str
    split: str  # "Train" or "Val/Test"

    @property
    def session(self) -> str:
        return session_name(self.date)


def session_name(date: dt.date) -> str:
    """2023-08-11 -> 't15.2023.08.11'."""
    return f"t15.{date:%Y.%m.%d}"


def session_date(session: str) -> dt.date:
    """'t15.2023.08.11' -> date; raises ValueError naming the folder otherwise."""
    try:
        prefix, y, m, d = session.split(".")
        if prefix != "t15":
            raise ValueError
        return dt.date(int(y), int(m), int(d))
    except ValueError:
        raise ValueError(f"{session!r} is not a T15 session name (expected t15.YYYY.MM.DD)") from None


def packaged_table_path() -> Path:
    return Path(str(resources.files("mode_ssm") / "resources" / TABLE_FILENAME))


def read_block_table(path: str | Path | None = None) -> list[Block]:
    """Read a description CSV (default: the real dataset's, shipped with the package)."""
    path = Path(path) if path is not None else packaged_table_path()
    blocks = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        for line, row in enumerate(reader, start=2):
            try:
                block = Block(
                    date=dt.date.fromisoformat(row["Date"].strip()),
                    post_implant_day=int(row["Post-implant day"]),
                    block_num=int(row["Block number"]),
                    n_sentences=int(row["Number of sentences"]),
                    corpus=row["Corpus"].strip(),
                    split=row["Split"].strip(),
                )
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}, line {line}: {e}") from None
            if block.split not in SPLITS:
                raise ValueError(f"{path}, line {line}: split {block.split!r} is not one of {SPLITS}")
            blocks.append(block)
    return blocks


def write_block_table(path: str | Path, blocks: list[Block]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for b in blocks:
            w.writerow([b.date.isoformat(), b.post_implant_day, b.block_num, b.n_sentences, b.corpus, b.split])


def corpus_lookup(blocks: list[Block]) -> dict[tuple[str, int], str]:
    """(session, block number) -> corpus, as the official evaluation looks it up."""
    return {(b.session, b.block_num): b.corpus for b in blocks}
