"""T15 reader: session discovery, day index, trial and file validation, lazy reading."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from rich.console import Console

from mode_ssm.data.batching import LengthBucketSampler, collate_trials
from mode_ssm.data.t15 import (
    DayIndex,
    T15DataError,
    T15DataWarning,
    T15Split,
    ctc_min_time_steps,
    ctc_output_frames,
    dataset_summary,
    find_sessions,
)
from mode_ssm.data.writer import TrialRecord, write_trials

torch.set_num_threads(1)

S1, S2, S3 = "t15.2023.08.11", "t15.2023.08.13", "t15.2023.09.01"


def _trial(rng, session, trial_num, steps=80, labels=None, block=2) -> TrialRecord:
    labels = list(range(1, 11)) if labels is None else labels
    return TrialRecord(
        features=rng.standard_normal((steps, 512)).astype(np.float32),
        session=session,
        block_num=block,
        trial_num=trial_num,
        sentence="hello world",
        phoneme_ids=labels,
    )


def _write_session(root: Path, session: str, n_train=3, n_val=0, n_test=0, seed=0):
    rng = np.random.default_rng(seed)
    write_trials(root / session / "data_train.hdf5", [_trial(rng, session, i, 60 + 10 * i) for i in range(n_train)])
    if n_val:
        write_trials(root / session / "data_val.hdf5", [_trial(rng, session, i) for i in range(n_val)])
    if n_test:
        trials = [_trial(rng, session, i) for i in range(n_test)]
        write_trials(root / session / "data_test.hdf5", trials, with_labels=False)


@pytest.fixture
def root(tmp_path):
    # written out of date order on purpose: the reader must sort chronologically
    _write_session(tmp_path, S3, n_train=2, n_val=1, seed=3)
    _write_session(tmp_path, S1, n_train=3, seed=1)
    _write_session(tmp_path, S2, n_train=4, n_val=2, n_test=2, seed=2)
    return tmp_path


# -- sessions and the day index ----------------------------------------------


def test_find_sessions_is_chronological_and_reports_bad_names(root):
    (root / "t15.2023.13.40").mkdir()  # not a date
    (root / "t15.2023.8.12").mkdir()  # not zero-padded
    (root / "notes").mkdir()  # not a session folder at all: silently ignored
    with pytest.warns(T15DataWarning) as caught:
        sessions = find_sessions(root)
    assert [s.name for s in sessions] == [S1, S2, S3]
    assert sorted(sessions[1].files) == ["test", "train", "val"] and sorted(sessions[0].files) == ["train"]
    messages = " ".join(str(w.message) for w in caught)
    assert "t15.2023.13.40" in messages and "t15.2023.8.12" in messages and "notes" not in messages
    with pytest.warns(T15DataWarning):
        assert [s.name for s in find_sessions(root, max_sessions=2)] == [S1, S2]


def test_find_sessions_errors(tmp_path):
    with pytest.raises(T15DataError, match="does not exist"):
        find_sessions(tmp_path / "nowhere")
    with pytest.raises(T15DataError, match="no session folders"):
        find_sessions(tmp_path)
    _write_session(tmp_path, S1, n_train=1)
    with pytest.raises(T15DataError, match="pass its parent"):
        find_sessions(tmp_path / S1)


def test_day_index_chronological_persisted_and_nearest_earlier(root):
    train = T15Split(root, "train")
    assert train.day_index.sessions == (S1, S2, S3)
    assert [ex.day_index for ex in train] == [0] * 3 + [1] * 4 + [2] * 2
    saved = json.loads(json.dumps(train.day_index.to_dict()))
    index = DayIndex.from_dict(saved)
    assert index == train.day_index
    assert index.lookup(S2) == (1, True)
    assert index.lookup("t15.2023.08.20") == (1, False)  # between S2 and S3 -> S2
    assert index.lookup("t15.2025.01.01") == (2, False)
    assert index.lookup("t15.2022.01.01") == (0, False)  # earlier than all -> first
    with pytest.raises(ValueError, match="chronological"):
        DayIndex((S2, S1))


def test_split_with_saved_day_index_for_unseen_sessions(root):
    index = DayIndex.from_sessions([S1, S3])  # as if the model never saw S2
    val = T15Split(root, "val", day_index=index)
    assert [(ex.session, ex.day_index, ex.day_index_exact) for ex in val] == [
        (S2, 0, False), (S2, 0, False), (S3, 1, True)
    ]  # fmt: skip
    only_test = root / "only_test"
    _write_session(only_test, S2, n_train=1, n_test=1)
    (only_test / S2 / "data_train.hdf5").unlink()
    with pytest.raises(T15DataError, match="pass the day_index saved with the model"):
        T15Split(only_test, "test")
    assert len(T15Split(only_test, "test", day_index=index)) == 1


def test_max_sessions_and_session_filter(root):
    assert T15Split(root, "train", max_sessions=2, validate="metadata").sessions == [S1, S2]
    ds = T15Split(root, "train", sessions=[S3, S1], validate="metadata")
    assert ds.sessions == [S1, S3] and len(ds) == 5
    assert ds.day_index.sessions == (S1, S3)
    with pytest.raises(T15DataError, match="t15.2024.01.01"):
        T15Split(root, "train", sessions=["t15.2024.01.01"])


def test_val_and_test_splits_and_corpus_from_packaged_table(root):
    val = T15Split(root, "val")
    assert len(val) == 3 and val.sessions == [S2, S3]
    test = T15Split(root, "test")
    assert len(test) == 2 and all(ex.phoneme_ids is None for ex in test)
    # no table in the root: the real release's table says 2023-08-11 block 2 is 50-Word
    assert T15Split(root, "train", max_sessions=1)[0].corpus == "50-Word"


# -- trial checks -----------------------------------------------------------

# (steps, labels, how to damage it with h5py, expected skip reason or None if kept)
OFFICIAL_FRAMES = ctc_output_frames  # the official GRU's 14/4 patching: (n - 14) // 4 + 1
REPEATS = [1, 1, 2, 3, 3, 4, 5, 6, 7, 8]  # 10 labels with 2 adjacent repeats -> 12 CTC frames


def _damage(g: h5py.Group, how: str) -> None:
    x = g["input_features"]
    if how == "nan":
        x[5, 7] = np.nan
    elif how == "inf":
        x[0, 300] = np.inf
    elif how.startswith("constant_"):
        n = int(how.split("_")[1])
        x[:, :n] = 0.25  # a constant channel other than zero catches std-based checks too
    elif how == "no_labels":
        del g["seq_class_ids"]
    elif how == "no_n_time_steps":
        del g.attrs["n_time_steps"]
    elif how == "float64":
        data = x[()].astype(np.float64)
        del g["input_features"]
        g["input_features"] = data
    elif how == "width_256":
        data = x[:, :256]
        del g["input_features"]
        g["input_features"] = data
    elif how == "steps_attr":
        g.attrs["n_time_steps"] = int(g.attrs["n_time_steps"]) + 1
    elif how == "seq_len_600":
        g.attrs["seq_len"] = 600
    elif how == "other_session":
        g.attrs["session"] = S2
    elif how == "label_41":
        g["seq_class_ids"][2] = 41
    elif how == "block_as_text":
        g.attrs["block_num"] = "two"
    elif how != "":
        raise AssertionError(how)


CASES = [
    (80, None, "", None),
    (80, None, "nan", "non_finite"),
    (80, None, "inf", "non_finite"),
    (80, None, "constant_52", None),  # dead electrodes are kept (the model masks them)
    (80, None, "constant_487", "too_few_live_channels"),  # 25 vary < 25.6 = 5% of 512
    (80, None, "constant_486", None),  # 26 vary
    (2, [5], "", "too_short"),
    (1501, None, "", "too_long"),
    (1500, None, "", None),
    (57, REPEATS, "", "too_few_frames_for_ctc"),  # (57-14)//4+1 = 11 < 12
    (58, REPEATS, "", None),  # 12 frames
    (50, list(range(1, 11)), "", None),  # no repeats: 10 frames suffice
    (49, list(range(1, 11)), "", "too_few_frames_for_ctc"),
    (80, None, "no_labels", "missing_field"),
    (80, None, "no_n_time_steps", "missing_field"),
    (80, None, "float64", "bad_features"),
    (80, None, "width_256", "bad_features"),
    (80, None, "steps_attr", "length_mismatch"),
    (80, None, "seq_len_600", "seq_len_exceeds_padding"),
    (80, None, "other_session", "wrong_session"),
    (80, None, "label_41", "bad_labels"),
    (80, None, "block_as_text", "bad_attribute"),
]
METADATA_ONLY_REASONS = {"non_finite", "too_few_live_channels"}


@pytest.fixture(scope="module")
def damaged_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    rng = np.random.default_rng(11)
    path = root / S1 / "data_train.hdf5"
    write_trials(path, [_trial(rng, S1, i, steps, labels) for i, (steps, labels, _, _) in enumerate(CASES)])
    with h5py.File(path, "r+") as f:
        for i, (_, _, how, _) in enumerate(CASES):
            _damage(f[f"trial_{i:04d}"], how)
    _write_session(root, S2, n_train=2, seed=5)
    return root


def test_each_bad_trial_is_skipped_with_its_reason(damaged_root):
    ds = T15Split(damaged_root, "train", validate="full", output_frames=OFFICIAL_FRAMES)
    got = {s.key: s.reason for s in ds.report.skipped}
    want = {f"trial_{i:04d}": reason for i, (_, _, _, reason) in enumerate(CASES) if reason}
    assert got == want
    kept = [i for i, case in enumerate(CASES) if case[3] is None]
    assert len(ds) == len(kept) + 2
    assert [ex.source.rsplit(":", 1)[1] for ex in ds][: len(kept)] == [f"trial_{i:04d}" for i in kept]
    r = ds.report
    assert (r.total_trials, r.kept_trials, r.skipped_trials) == (len(CASES) + 2, len(kept) + 2, len(want))
    assert r.skipped_by_reason["non_finite"] == 2 and r.skipped_by_reason["too_few_frames_for_ctc"] == 2
    assert (r.per_session[S1].total, r.per_session[S1].kept, r.per_session[S2].skipped) == (len(CASES), len(kept), 0)
    assert all(s.file.endswith(f"{S1}/data_train.hdf5") for s in r.skipped)
    # every kept trial was streamed once; skipped-by-metadata trials were not
    assert r.bytes_read > 0
    assert "too_few_live_channels" in r.summary() and "too_long" in r.summary()
    console = Console(record=True, width=200)
    console.print(r)
    rendered = console.export_text()
    assert S1 in rendered and "skipped: non_finite" in rendered and "│ all" in rendered


def test_dead_electrodes_are_kept_and_counted_per_session(tmp_path):
    """Electrodes die over the years of an implant: their trials train and decode, the report counts them."""
    rng = np.random.default_rng(23)
    trials = [_trial(rng, S1, i) for i in range(3)]
    for t in trials:
        t.features[:, 100:170] = 0.5  # 35 electrodes dead in every trial: 70 of 512 features constant
    trials[1].features[:, 300:310] = -1.0  # 10 more constant in one trial only
    write_trials(tmp_path / S1 / "data_train.hdf5", trials)
    _write_session(tmp_path, S2, n_train=2, seed=6)
    ds = T15Split(tmp_path, "train", validate="full")
    assert len(ds) == 5 and ds.report.skipped == []
    assert ds.report.per_session[S1].dead_channels == 70 and ds.report.per_session[S2].dead_channels == 0
    assert ds.report.dead_channels == {S1: 70}
    assert f"dead channels (constant in every trial, masked): {S1} 70" in ds.report.summary()
    console = Console(record=True, width=200)
    console.print(ds.report)
    assert "dead channels" in console.export_text()
    assert T15Split(tmp_path, "train", validate="metadata").report.per_session[S1].dead_channels is None


def test_metadata_validation_skips_content_checks(damaged_root):
    ds = T15Split(damaged_root, "train", validate="metadata", output_frames=OFFICIAL_FRAMES)
    reasons = set(ds.report.skipped_by_reason)
    assert reasons == {c[3] for c in CASES if c[3]} - METADATA_ONLY_REASONS
    assert ds.report.bytes_read == 0
    assert len(ds) == sum(1 for c in CASES if c[3] is None or c[3] in METADATA_ONLY_REASONS) + 2


def test_ctc_rule_uses_the_models_own_output_frames(tmp_path):
    assert ctc_min_time_steps(REPEATS) == 58 and ctc_min_time_steps(list(range(1, 11))) == 50
    rng = np.random.default_rng(21)
    # REPEATS needs 12 frames; kernel 8 stride 4 gives (n - 8) // 4 + 1
    steps = [55, 51, 80]  # 14/4: 11, 10, 17 frames; 8/4: 12, 11, 19 frames
    write_trials(tmp_path / S1 / "data_train.hdf5", [_trial(rng, S1, i, n, REPEATS) for i, n in enumerate(steps)])

    def kernel8_stride4(n: int) -> int:
        return (n - 8) // 4 + 1

    official = T15Split(tmp_path, "train", validate="metadata", output_frames=OFFICIAL_FRAMES)
    assert {s.key: s.reason for s in official.report.skipped} == {
        "trial_0000": "too_few_frames_for_ctc", "trial_0001": "too_few_frames_for_ctc"
    }  # fmt: skip
    own = T15Split(tmp_path, "train", validate="metadata", output_frames=kernel8_stride4)
    assert [ex.n_time_steps for ex in own] == [55, 80]  # the 14/4 rule rejected 55, this model can align it
    assert [(s.key, s.reason) for s in own.report.skipped] == [("trial_0001", "too_few_frames_for_ctc")]
    assert "51 bins give 11 frames, 12 needed" in own.report.skipped[0].detail
    assert own.checks_ctc and own.report.skipped_by_reason == {"too_few_frames_for_ctc": 1}
    # a model's lambda must not stay on the dataset: it has to pickle for spawned workers
    assert len(pickle.loads(pickle.dumps(T15Split(tmp_path, "train", output_frames=lambda n: n // 4)))) == 3
    unchecked = T15Split(tmp_path, "train", validate="full")  # output_frames=None: CTC not judged
    assert len(unchecked) == 3 and not unchecked.checks_ctc
    assert "too_few_frames_for_ctc" not in unchecked.report.skipped_by_reason


def test_eval_rules_keep_and_flag_trials_that_break_only_training_rules(tmp_path):
    rng = np.random.default_rng(22)
    _write_session(tmp_path, S1, n_train=2, seed=1)
    cases = [  # (steps, labels, damage)
        (80, None, ""),
        (2, [5], ""),  # too_short
        (80, None, "constant_500"),  # too_few_live_channels: 12 of 512 vary
        (80, None, "nan"),  # non_finite
        (80, None, "label_41"),  # bad_labels: cannot be read as a trial, skipped under both rules
        (80, None, "float64"),  # bad_features: likewise
    ]
    path = tmp_path / S1 / "data_val.hdf5"
    write_trials(path, [_trial(rng, S1, 10 + i, n, labels, block=3) for i, (n, labels, _) in enumerate(cases)])
    with h5py.File(path, "r+") as f:
        for i, (_, _, how) in enumerate(cases):
            _damage(f[f"trial_{i:04d}"], how)
    unreadable = {"trial_0004": "bad_labels", "trial_0005": "bad_features"}

    train_rules = T15Split(tmp_path, "val", validate="full")
    assert len(train_rules) == 1 and train_rules.flags(0) == () and train_rules.report.flagged == []
    assert {s.key: s.reason for s in train_rules.report.skipped} == {
        "trial_0001": "too_short", "trial_0002": "too_few_live_channels", "trial_0003": "non_finite", **unreadable
    }  # fmt: skip

    ds = T15Split(tmp_path, "val", validate="full", rules="eval")
    assert len(ds) == 4 and len(ds.trial_lengths()) == 4
    assert {s.key: s.reason for s in ds.report.skipped} == unreadable
    r = ds.report
    assert r.flagged_by_reason == {"too_short": 1, "too_few_live_channels": 1, "non_finite": 1}
    assert (r.total_trials, r.kept_trials, r.skipped_trials, r.flagged_trials) == (6, 4, 2, 3)
    assert r.per_session[S1].flagged == 3
    assert [ds.flags(i) for i in range(len(ds))] == [(), ("too_short",), ("too_few_live_channels",), ("non_finite",)]
    assert [ex.flags for ex in ds] == [ds.flags(i) for i in range(len(ds))]
    assert [m["flags"] for m in ds.trial_metadata()] == [ds.flags(i) for i in range(len(ds))]
    assert ds.flagged_indices() == [1, 2, 3]
    assert [(f.session, f.block_num, f.trial_num, f.key, f.reason) for f in r.flagged] == [
        (S1, 3, 11, "trial_0001", "too_short"),
        (S1, 3, 12, "trial_0002", "too_few_live_channels"),
        (S1, 3, 13, "trial_0003", "non_finite"),
    ]
    assert r.flagged[1].detail == "12 of 512 channels vary" and r.flagged[2].detail == "1 NaN/Inf values"
    assert np.isnan(ds[3].features).sum() == 1 and ds[1].n_time_steps == 2  # values and lengths as in the file
    summary = r.summary()
    assert "kept but flagged: 3 (too_short 1, too_few_live_channels 1, non_finite 1)" in summary
    assert "flagged t15.2023.08.11 block 3 trial 12 (trial_0002) too_few_live_channels" in summary
    console = Console(record=True, width=200)
    console.print(r)
    rendered = console.export_text()
    assert "kept but flagged: 3 (too_short 1, too_few_live_channels 1, non_finite 1)" in rendered
    assert "flagged" in rendered.splitlines()[2]  # a column of its own

    # one trial may break two rules: it is flagged once, counted under each reason
    both = T15Split(tmp_path, "val", validate="full", rules="eval", output_frames=lambda n: (n - 8) // 4 + 1)
    assert both.flags(1) == ("too_short", "too_few_frames_for_ctc")
    assert both.report.flagged_trials == 3 and both.report.flagged_by_reason["too_few_frames_for_ctc"] == 1
    # train data under the training rules is untouched by any of this
    assert len(T15Split(tmp_path, "train", rules="eval")) == 2
    with pytest.raises(ValueError, match="rules must be"):
        T15Split(tmp_path, "val", rules="score")  # type: ignore[arg-type]


# -- file checks ------------------------------------------------------------


def _corrupt(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"this is not hdf5" * 100)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "gap":
        with h5py.File(path, "r+") as f:
            f.move("trial_0001", "trial_0005")
    elif how == "stray_key":
        with h5py.File(path, "r+") as f:
            f.create_group("metadata")
    elif how == "missing":
        path.unlink()  # the folder still holds data_val/test.hdf5
    elif how == "broken_link":
        path.unlink()
        path.symlink_to(path.parent / "gone.hdf5")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how, message",
    [
        ("garbage", "not a readable HDF5 file"),
        ("truncated", "truncated"),
        ("empty", "empty file"),
        ("gap", "expected trial_0001, found trial_0002"),
        ("stray_key", r"\['metadata'\] are not trial groups"),
        ("missing", "missing file"),
        ("broken_link", "missing file"),
    ],
)
def test_bad_file_raises_naming_file_or_skips_session(root, how, message):
    bad = root / S2 / "data_train.hdf5"
    _corrupt(bad, how)
    with pytest.raises(T15DataError, match=message) as err:
        T15Split(root, "train")
    assert str(bad) in str(err.value)
    with pytest.warns(T15DataWarning, match=f"skipping session {S2}"):
        ds = T15Split(root, "train", on_bad_session="skip")
    assert ds.sessions == [S1, S3] and len(ds) == 5
    assert [s.session for s in ds.report.skipped_sessions] == [S2]
    assert ds.day_index.sessions == ((S1, S3) if how == "missing" else (S1, S2, S3))


def test_corrupt_data_inside_a_readable_file(root):
    rng = np.random.default_rng(4)
    trials = [_trial(rng, S2, i) for i in range(4)]
    trials[0].features[:, 0] = np.nan  # a skipped trial before the damage must not stay in the report
    bad = root / S2 / "data_train.hdf5"
    write_trials(bad, trials, compression="gzip")
    with h5py.File(bad, "r") as f:
        chunk = f["trial_0002/input_features"].id.get_chunk_info(0)
    with open(bad, "r+b") as fh:
        fh.seek(chunk.byte_offset + 100)
        fh.write(b"\xff" * 2000)
    with pytest.raises(T15DataError, match=f"{S2}/data_train.hdf5:trial_0002: unreadable"):
        T15Split(root, "train")
    with pytest.warns(T15DataWarning):
        ds = T15Split(root, "train", on_bad_session="skip")
    assert ds.sessions == [S1, S3] and ds.report.skipped == [] and ds.report.skipped_trials == 0
    lazy = T15Split(root, "train", validate="metadata")  # content unchecked: the damage shows on reading
    assert len(lazy) == 3 + 4 + 2  # the NaN trial is kept too: metadata checks do not read features
    with pytest.raises(T15DataError, match="trial_0002: cannot read input_features"):
        lazy[3 + 2]  # S2's trial_0002


@pytest.mark.parametrize("signature", [b"SNOD", b"HEAP", b"TREE"])
def test_corrupt_hdf5_metadata_names_the_file_or_skips_the_session(root, signature):
    """Bytes overwritten inside the file's own structures (symbol table, heap, B-tree), size unchanged:
    h5py raises RuntimeError/KeyError naming no file; the reader names it, or skips the session."""
    bad = root / S2 / "data_train.hdf5"
    data = bytearray(bad.read_bytes())
    at = data.find(signature)
    assert at >= 0
    data[at : at + 64] = b"\xa5" * 64
    bad.write_bytes(bytes(data))
    with pytest.raises(T15DataError, match="corrupt") as err:
        T15Split(root, "train")
    assert str(bad) in str(err.value)
    with pytest.warns(T15DataWarning, match=f"skipping session {S2}"):
        ds = T15Split(root, "train", on_bad_session="skip")
    assert ds.sessions == [S1, S3] and len(ds) == 5


def test_session_with_features_of_the_wrong_width_is_a_file_error(root, tmp_path):
    """A whole file 256 wide (e.g. threshold crossings only) is one error, not every trial dropped in silence."""
    rng = np.random.default_rng(5)
    bad = root / S2 / "data_train.hdf5"
    with h5py.File(bad, "r+") as f:
        for key in list(f.keys()):
            x = f[key]["input_features"][()]
            del f[key]["input_features"]
            f[key].create_dataset("input_features", data=x[:, :256])
    with pytest.raises(T15DataError, match=r"none of its 4 trials can be read \(4 bad_features\).*\(T, 512\)") as err:
        T15Split(root, "train")
    assert str(bad) in str(err.value)
    with pytest.warns(T15DataWarning, match=f"skipping session {S2}"):
        ds = T15Split(root, "train", on_bad_session="skip")
    assert ds.sessions == [S1, S3]
    # one bad trial among good ones stays a skipped trial of a kept session
    write_trials(bad, [_trial(rng, S2, i) for i in range(3)])
    with h5py.File(bad, "r+") as f:
        x = f["trial_0001/input_features"][()]
        del f["trial_0001/input_features"]
        f["trial_0001"].create_dataset("input_features", data=x[:, :256])
    ds = T15Split(root, "train")
    assert ds.sessions == [S1, S2, S3] and ds.report.skipped_by_reason == {"bad_features": 1}


def test_file_gone_after_indexing_names_the_file(root):
    ds = T15Split(root, "train", validate="none")
    (root / S1 / "data_train.hdf5").unlink()
    with pytest.raises(T15DataError, match=f"{S1}/data_train.hdf5: cannot open"):
        ds[0]


# -- workers and overview ---------------------------------------------------


def test_dataloader_with_workers_matches_single_process(root):
    ds = T15Split(root, "train")
    ds[0]  # a handle opened in the parent must not leak into forked workers
    sampler = LengthBucketSampler(ds.trial_lengths(), batch_size=4, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_trials, num_workers=2)
    in_workers = list(loader)
    in_process = [collate_trials([ds[i] for i in batch]) for batch in sampler]
    assert len(in_workers) == len(in_process) == 3
    for a, b in zip(in_workers, in_process):
        assert torch.equal(a["features"], b["features"]) and a["sources"] == b["sources"]


def test_dataset_summary(root):
    text = dataset_summary(root)
    assert "sessions: 3 (2023-08-11 .. 2023-09-01)" in text
    assert "train:      9 trials" in text and "val:      3 trials" in text and "test:      2 trials" in text
