"""The train sentences a language model is built from, read the same way by training and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mode_ssm.data.t15 import DayIndex, T15DataError, T15Split


def train_sentences(data_root: str | Path, sessions: Sequence[str] | None = None,
                    day_index: DayIndex | None = None) -> list[str]:
    """Sentence labels of every readable train trial of ``sessions`` (all sessions if None).

    Neural-data checks do not apply: a trial too short to train on still says
    something about the language, and training and evaluation must see the same text.
    """
    split = T15Split(data_root, "train", day_index=day_index, validate="none", sessions=list(sessions) if sessions else None)
    try:
        sentences = [m["sentence"] for m in split.trial_metadata() if m["sentence"]]
    finally:
        split.close()
    if not sentences:
        raise T15DataError(f"{data_root}: no labelled train sentences to build the language model from")
    return sentences
