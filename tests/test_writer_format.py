"""The writer produces the published T15 field list, and the reader reads it back exactly."""

from __future__ import annotations

import datetime as dt

import h5py
import numpy as np
import pytest
import torch

from mode_ssm.data.blocks import Block, write_block_table
from mode_ssm.data.t15 import T15Split
from mode_ssm.data.writer import LABEL_PAD_LENGTH, TrialRecord, write_trials

torch.set_num_threads(1)

SESSION = "t15.2023.08.13"
SENTENCES = ["Hello world.", "I'd like some water", "it's a well-known fact"]


def _records(rng: np.random.Generator, n: int, labelled: bool) -> list[TrialRecord]:
    out = []
    for i in range(n):
        steps = 60 + 20 * i
        out.append(
            TrialRecord(
                features=rng.standard_normal((steps, 512)).astype(np.float32),
                session=SESSION,
                block_num=3 + i % 2,
                trial_num=i,
                sentence=SENTENCES[i % len(SENTENCES)] if labelled else None,
                phoneme_ids=rng.integers(1, 41, size=5 + i) if labelled else None,
                extra_attrs={"speaking_mode": ("vocalized", "silent")[i % 2]},
            )
        )
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("t15root")
    rng = np.random.default_rng(7)
    train = _records(rng, 3, labelled=True)
    test = _records(rng, 2, labelled=False)
    write_trials(root / SESSION / "data_train.hdf5", train)
    write_trials(root / SESSION / "data_test.hdf5", test, with_labels=False)
    day = dt.date(2023, 8, 13)
    write_block_table(
        root / "t15_copyTaskData_description.csv",
        [Block(day, 27, 3, 2, "Harvard", "Train"), Block(day, 27, 4, 1, "Switchboard", "Val/Test")],
    )
    return root, train, test


def test_train_file_has_the_published_fields(written):
    root, train, _ = written
    with h5py.File(root / SESSION / "data_train.hdf5", "r") as f:
        assert list(f.keys()) == ["trial_0000", "trial_0001", "trial_0002"]
        for i, key in enumerate(f):
            g = f[key]
            assert set(g.keys()) == {"input_features", "seq_class_ids", "transcription"}
            assert g["input_features"].dtype == np.float32
            assert g["input_features"].shape == (60 + 20 * i, 512)
            for name in ("seq_class_ids", "transcription"):
                assert g[name].dtype == np.int32
                assert g[name].shape == (LABEL_PAD_LENGTH,) == (500,)
            seq_len = g.attrs["seq_len"]
            ids = g["seq_class_ids"][()]
            np.testing.assert_array_equal(ids[:seq_len], train[i].phoneme_ids)
            assert not ids[seq_len:].any()
            codes = g["transcription"][()]
            text_len = len(train[i].sentence)
            assert "".join(map(chr, codes[:text_len])) == train[i].sentence
            assert codes[text_len] == 0 and not codes[text_len:].any()  # zero-terminated
            assert type(g.attrs["session"]) is str and g.attrs["session"] == SESSION
            assert type(g.attrs["sentence_label"]) is str
            for name in ("n_time_steps", "seq_len", "block_num", "trial_num"):
                value = g.attrs[name]
                assert isinstance(value, np.integer) and np.ndim(value) == 0, name
            assert g.attrs["n_time_steps"] == 60 + 20 * i
            assert g.attrs["seq_len"] == 5 + i


def test_test_file_has_no_label_fields(written):
    root, _, _ = written
    with h5py.File(root / SESSION / "data_test.hdf5", "r") as f:
        assert list(f.keys()) == ["trial_0000", "trial_0001"]
        for key in f:
            assert set(f[key].keys()) == {"input_features"}
            assert not {"seq_len", "sentence_label"} & set(f[key].attrs)
            assert {"n_time_steps", "session", "block_num", "trial_num"} <= set(f[key].attrs)


def test_reader_round_trip(written):
    root, train, test = written
    ds = T15Split(root, "train")
    assert len(ds) == 3 and ds.report.kept_trials == 3
    np.testing.assert_array_equal(ds.trial_lengths(), [60, 80, 100])
    np.testing.assert_array_equal(ds.phoneme_lengths(), [5, 6, 7])
    meta = ds.trial_metadata()
    assert [(m["block_num"], m["trial_num"], m["seq_len"], m["corpus"]) for m in meta] == [
        (3, 0, 5, "Harvard"), (4, 1, 6, "Switchboard"), (3, 2, 7, "Harvard")
    ]  # fmt: skip
    assert [m["speaking_mode"] for m in meta] == ["vocalized", "silent", "vocalized"]
    for i, ex in enumerate(ds):
        rec = train[i]
        assert ex.features.dtype == np.float32
        np.testing.assert_array_equal(ex.features, rec.features)
        assert ex.phoneme_ids.dtype == np.int64
        np.testing.assert_array_equal(ex.phoneme_ids, rec.phoneme_ids)
        assert ex.sentence == rec.sentence
        assert (ex.session, ex.block_num, ex.trial_num) == (SESSION, rec.block_num, i)
        assert (ex.day_index, ex.day_index_exact) == (0, True)
        assert ex.corpus == ("Harvard" if rec.block_num == 3 else "Switchboard")
        assert ex.speaking_mode == rec.extra_attrs["speaking_mode"]
        assert ex.split == "train" and ex.source.endswith(f"data_train.hdf5:trial_{i:04d}")
    ds.close()

    test_ds = T15Split(root, "test", num_channels=256)
    assert len(test_ds) == 2
    for i, ex in enumerate(test_ds):
        assert ex.phoneme_ids is None and ex.sentence is None
        assert ex.features.shape == (60 + 20 * i, 256) and ex.features.flags.c_contiguous
        np.testing.assert_array_equal(ex.features, test[i].features[:, :256])
