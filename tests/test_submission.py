"""Submission CSVs: the validator's verdicts, the trial order, and scripts/make_submission.py end to end."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from mode_ssm.data.t15 import T15Split
from mode_ssm.evaluation.submission import (
    SubmissionError,
    fill_empty,
    manifest_path,
    read_test_trials,
    validate_submission,
    write_submission,
)

N_TEST = 13  # test trials in tests/conftest.py's tiny data root


def write_rows(path: Path, rows, header=("id", "text")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def good_rows(n: int = N_TEST):
    return [(i, f"hello there number {i}") for i in range(n)]


def test_trial_order_is_chronological_then_file_order(tiny_data_root):
    trials = read_test_trials(tiny_data_root)
    assert [t.id for t in trials] == list(range(N_TEST))
    reader = T15Split(tiny_data_root, "test", validate="none")
    assert [(t.session, t.key) for t in trials] == [
        (m["session"], m["source"].rsplit(":", 1)[1]) for m in reader.trial_metadata()
    ]
    sessions = [t.session for t in trials]
    assert sessions == sorted(sessions) and sessions[0] == "t15.2023.08.13"
    first = [t.key for t in trials if t.session == sessions[0]]
    assert first == [f"trial_{i:04d}" for i in range(len(first))]


def test_validator_accepts_a_correct_file(tmp_path, tiny_data_root):
    assert validate_submission(write_rows(tmp_path / "s.csv", good_rows()), tiny_data_root) == N_TEST


@pytest.mark.parametrize("rows, message", [
    (good_rows(N_TEST - 1), f"{N_TEST - 1} rows but the test files of .* hold {N_TEST} trials"),
    (good_rows(N_TEST + 1), f"{N_TEST + 1} rows but"),
    ([(3 if i == 4 else 4 if i == 3 else i, t) for i, t in good_rows()], "line 5: id 4, expected 3"),
    ([(i, "" if i == 7 else t) for i, t in good_rows()], r"line 9 \(id 7\): empty text"),
    ([(i, "   " if i == 0 else t) for i, t in good_rows()], r"line 2 \(id 0\): empty text"),
    ([(i, "..." if i == 2 else t) for i, t in good_rows()], "empty after the official normalisation"),
    ([(i, "caf\u00e9 au lait" if i == 5 else t) for i, t in good_rows()], "line 7 column 6: non-ASCII byte 0xc3"),
    ([("x" if i == 1 else i, t) for i, t in good_rows()], "id 'x' is not an integer"),
])
def test_validator_rejects(tmp_path, tiny_data_root, rows, message):
    path = write_rows(tmp_path / "bad.csv", rows)
    with pytest.raises(SubmissionError, match=message) as err:
        validate_submission(path, tiny_data_root)
    assert str(path) in str(err.value)  # the message names the file


def test_validator_rejects_header_and_missing_file(tmp_path, tiny_data_root):
    with pytest.raises(SubmissionError, match="header is 'id,sentence'"):
        validate_submission(write_rows(tmp_path / "h.csv", good_rows(), header=("id", "sentence")), tiny_data_root)
    with pytest.raises(SubmissionError, match="not found"):
        validate_submission(tmp_path / "nope.csv", tiny_data_root)
    with pytest.raises(SubmissionError, match="3 fields"):
        validate_submission(write_rows(tmp_path / "f.csv", [(i, t, "x") for i, t in good_rows()]), tiny_data_root)


def test_data_root_without_test_files(tmp_path, tiny_data_root):
    root = tmp_path / "root"
    (root / "t15.2023.08.13").mkdir(parents=True)
    shutil.copy(tiny_data_root / "t15.2023.08.13" / "data_train.hdf5", root / "t15.2023.08.13")
    with pytest.raises(SubmissionError, match=r"root: no session folder holds data_test.hdf5"):
        validate_submission(write_rows(tmp_path / "s.csv", good_rows()), root)


def test_writer_and_manifest_catch_misordered_rows(tmp_path, tiny_data_root):
    trials = read_test_trials(tiny_data_root)
    rows = [{"session": t.session, "source": f"x/{t.session}/data_test.hdf5:{t.key}"} for t in trials]
    path = write_submission([f"word {i}" for i in range(N_TEST)], trials, tmp_path / "sub.csv", rows)
    assert validate_submission(path, tiny_data_root) == N_TEST
    assert path.read_text().splitlines()[:2] == ["id,text", "0,word 0"]
    with pytest.raises(SubmissionError, match="rows are out of order"):
        write_submission(["w"] * N_TEST, trials, tmp_path / "o.csv", rows[1:2] + rows[:1] + rows[2:])
    with pytest.raises(SubmissionError, match=r"predictions \[4\] are empty"):
        write_submission(["w"] * 4 + ["?"] + ["w"] * (N_TEST - 5), trials, tmp_path / "e.csv")
    # a manifest whose rows name other trials than the test files' order
    lines = manifest_path(path).read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    manifest_path(path).write_text("\n".join(lines) + "\n")
    with pytest.raises(SubmissionError, match="do not match the test files' order"):
        validate_submission(path, tiny_data_root)


def test_fill_empty_uses_greedy_words_then_the_fallback():
    from mode_ssm.decoding.lexicon_decoder import PronunciationIndex
    from mode_ssm.lexicon import Lexicon

    index = PronunciationIndex(Lexicon.from_cmudict(["hi", "you"]), word_frequency={})
    rows = [{"predicted_sentence": "kept as is", "predicted_phonemes": "Y UW |"},
            {"predicted_sentence": "", "predicted_phonemes": "HH AY | Y UW |"},
            {"predicted_sentence": None, "predicted_phonemes": ""}]
    texts, n_greedy, n_fallback = fill_empty(rows, index, "the")
    assert texts == ["kept as is", "hi you", "the"] and (n_greedy, n_fallback) == (1, 1)


def test_make_submission_command_line(tmp_path, tiny_data_root, tiny_checkpoint):
    from helpers import run_script

    ckpt = tiny_checkpoint
    (tmp_path / "data").symlink_to(tiny_data_root)
    proc = run_script("make_submission.py", [f"checkpoint={ckpt}", "data.data_root=data", "output=sub/submission.csv",
                                             "work_dir=work", "tta.enabled=true", "tta.steps=1"], tmp_path)
    path = tmp_path / "sub" / "submission.csv"
    assert validate_submission(path, tiny_data_root) == N_TEST
    assert "t15.2023.08.25 was not in training" in proc.stdout  # the fourth session was held out of training
    lines = path.read_text().splitlines()
    assert lines[0] == "id,text" and [line.split(",", 1)[0] for line in lines[1:]] == [str(i) for i in range(N_TEST)]
    # the checker on its own, on a file with a row missing
    path.write_text("\n".join(lines[:-1]) + "\n")
    proc = run_script("make_submission.py", ["validate_only=true", "output=sub/submission.csv", "data.data_root=data",
                                             "work_dir=work"], tmp_path, expect_rc=1)
    assert f"{N_TEST - 1} rows but the test files" in proc.stderr


def test_make_submission_counts_flagged_trials_and_answers_an_unreadable_session_only_when_asked(
    tmp_path, tiny_data_root, tiny_checkpoint
):
    import h5py
    import numpy as np
    from helpers import run_script

    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    trials = read_test_trials(root)
    first, last = trials[0], trials[-1]
    assert first.session != last.session
    with h5py.File(root / first.session / "data_test.hdf5", "r+") as f:
        f[first.key]["input_features"][0, :5] = np.nan  # decoded as 0, and counted
        f[trials[1].key]["input_features"][...] = 0.0  # all channels constant
    broken = root / last.session / "data_test.hdf5"
    with h5py.File(broken, "r+") as f:  # every trial of the last session unreadable, the file itself listable
        for key in f:
            del f[key]["input_features"]
    n_broken = sum(t.session == last.session for t in trials)
    args = [f"checkpoint={tiny_checkpoint}", "data.data_root=data", "output=sub/submission.csv", "work_dir=work"]
    proc = run_script("make_submission.py", args, tmp_path, expect_rc=1)
    assert f"{broken}: none of its {n_broken} trials can be read ({n_broken} missing_field)" in proc.stderr
    assert not (tmp_path / "sub" / "submission.csv").exists()  # nothing half-written
    proc = run_script("make_submission.py", args + ["data.on_bad_session=skip"], tmp_path)
    path = tmp_path / "sub" / "submission.csv"
    assert validate_submission(path, root) == N_TEST
    lines = path.read_text().splitlines()[1:]
    answered = [line.split(",", 1)[1] for line, t in zip(lines, trials) if t.session == last.session]
    assert answered == ["the"] * n_broken  # fallback_text
    log = (tmp_path / "work" / "make_submission.log").read_text()
    for text in (proc.stdout, log):
        assert f"{n_broken} unreadable test trials answered with fallback_text 'the'" in text
        assert f"session {last.session} skipped" in text
        assert "2 test trials decoded despite breaking a training rule" in text
        assert "non_finite" in text and "too_few_live_channels" in text
