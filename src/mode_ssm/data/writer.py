"""Write trials in the official T15 HDF5 layout (see shared/T15_FORMAT.md).

Used by the simulator, and by users who subset or rewrite real data. What
existing readers rely on is enforced here: groups ``trial_0000``.. with no gaps,
float32 features, int32 labels zero-padded to one common length, zero-terminated
transcriptions, str attributes for text and plain integers for the rest.
Files are written to a temporary name and renamed, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np

from mode_ssm.atomic import atomic_path

# The release pads seq_class_ids and transcription to this length.
LABEL_PAD_LENGTH = 500
NUM_FEATURES = 512


@dataclass
class TrialRecord:
    """One trial to write. Labels are None for test trials."""

    features: np.ndarray  # (T, n_features) float32
    session: str
    block_num: int
    trial_num: int
    sentence: str | None = None
    phoneme_ids: np.ndarray | list[int] | None = None  # (seq_len,), no padding
    extra_attrs: Mapping[str, object] = field(default_factory=dict)  # e.g. speaking_mode


def _padded(values: np.ndarray, length: int, what: str, where: str) -> np.ndarray:
    if len(values) > length:
        raise ValueError(f"{where}: {what} has {len(values)} entries, more than the padded length {length}")
    out = np.zeros(length, dtype=np.int32)
    out[: len(values)] = values
    return out


def transcription_codes(sentence: str, length: int = LABEL_PAD_LENGTH, where: str = "") -> np.ndarray:
    """Sentence -> int32 ASCII codes, zero-padded (and so zero-terminated)."""
    try:
        codes = np.frombuffer(sentence.encode("ascii"), dtype=np.uint8).astype(np.int32)
    except UnicodeEncodeError:
        raise ValueError(f"{where}: sentence {sentence!r} is not ASCII") from None
    return _padded(codes, length, "transcription", where)


def write_trials(
    path: str | Path,
    trials: Iterable[TrialRecord],
    with_labels: bool = True,
    pad_length: int = LABEL_PAD_LENGTH,
    num_features: int | None = NUM_FEATURES,
    compression: str | None = None,
) -> int:
    """Write ``trials`` to ``path`` (e.g. ``.../t15.2023.08.13/data_train.hdf5``); returns the count.

    ``with_labels=False`` writes a test file: no seq_class_ids, transcription,
    seq_len or sentence_label, as in the release.
    """
    path = Path(path)
    n = 0
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for trial in trials:
                key = f"trial_{n:04d}"
                where = f"{path}:{key}"
                x = np.asarray(trial.features)
                if x.ndim != 2 or (num_features is not None and x.shape[1] != num_features):
                    raise ValueError(f"{where}: features have shape {x.shape}, expected (T, {num_features})")
                g = f.create_group(key)
                g.create_dataset("input_features", data=x.astype(np.float32, copy=False), compression=compression)
                g.attrs["n_time_steps"] = int(x.shape[0])
                g.attrs["session"] = str(trial.session)
                g.attrs["block_num"] = int(trial.block_num)
                g.attrs["trial_num"] = int(trial.trial_num)
                if with_labels:
                    if trial.sentence is None or trial.phoneme_ids is None:
                        raise ValueError(f"{where}: a labelled file needs sentence and phoneme_ids")
                    ids = np.asarray(trial.phoneme_ids, dtype=np.int64)
                    if len(ids) >= pad_length:  # keep at least one zero after the labels
                        raise ValueError(f"{where}: {len(ids)} phoneme labels do not fit the padded length {pad_length}")
                    g.create_dataset("seq_class_ids", data=_padded(ids, pad_length, "seq_class_ids", where))
                    codes = transcription_codes(trial.sentence, pad_length, where)
                    if codes[-1] != 0:
                        raise ValueError(f"{where}: sentence is too long to be zero-terminated in {pad_length} codes")
                    g.create_dataset("transcription", data=codes)
                    g.attrs["seq_len"] = int(len(ids))
                    g.attrs["sentence_label"] = str(trial.sentence)
                for name, value in trial.extra_attrs.items():
                    g.attrs[name] = value
                n += 1
    return n
