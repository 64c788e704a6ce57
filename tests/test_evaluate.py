"""scripts/evaluate.py and scripts/tune_decoder.py on a checkpoint the real trainer wrote, plus report arithmetic."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import editdistance
import pytest
import torch
from helpers import REPO, UNSEEN, run_script

from mode_ssm.data.t15 import T15DataError
from mode_ssm.metrics import block_mode_accuracy, per_trial_errors, summarize
from mode_ssm.phonemes import ids_to_string
from mode_ssm.evaluation.reports import phoneme_confusions, phoneme_ids
from mode_ssm.runtime.checkpoint import CheckpointError


@pytest.fixture()
def workdir(tmp_path, tiny_data_root, tiny_checkpoint):
    """Where a user types the command: data and checkpoint at relative paths."""
    (tmp_path / "data").symlink_to(tiny_data_root)
    (tmp_path / "ckpt.pt").symlink_to(tiny_checkpoint)
    return tmp_path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_val_command_line(workdir, tiny_checkpoint):
    proc = run_script("evaluate.py", ["checkpoint=ckpt.pt", "split=val", "data.data_root=data", "output_dir=ev",
                                      "wandb.enabled=true"], workdir, WANDB_MODE="offline")
    out = workdir / "ev"
    for name in ("predictions.csv", "summary_by_session.csv", "summary_by_corpus.csv", "summary_by_speaking_mode.csv",
                 "summary.md", "metrics.json", "wer_by_session.png", "wer_by_corpus.png", "phoneme_confusions.png"):
        assert (out / name).is_file(), f"{name} missing; output:\n{proc.stdout[-2000:]}"
    preds = read_csv(out / "predictions.csv")
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert len(preds) == metrics["n_trials"] == 12
    # aggregate WER/PER: total errors over total reference tokens, recomputed from the CSV
    wer = sum(int(p["word_errors"]) for p in preds) / sum(int(p["words"]) for p in preds)
    per = sum(int(p["phoneme_errors"]) for p in preds) / sum(int(p["phonemes"]) for p in preds)
    assert metrics["wer"] == pytest.approx(wer) and metrics["per"] == pytest.approx(per)
    overall = [r for r in read_csv(out / "summary_by_session.csv") if r["session"] == "all"][0]
    assert float(overall["wer_pct"]) == pytest.approx(100 * wer)
    # the simulator records the speaking mode, so mode accuracy is measured, per trial and per block
    truth = [p["speaking_mode"] for p in preds]
    assert set(truth) <= {"vocalized", "silent"}
    if bool(torch.load(tiny_checkpoint, weights_only=True)["model"]["mode_head.mode_signal"]):
        assert metrics["mode_accuracy"] == pytest.approx(sum(p["speaking_mode"] == p["predicted_mode"] for p in preds) / 12)
        assert "mode_accuracy_block" in metrics
    else:  # its train blocks did not support a two-mode split: no mode is predicted, and the report says so
        assert metrics.get("mode_accuracy") is None and all(not p["predicted_mode"] for p in preds)
        assert "this model predicts no mode" in (out / "summary.md").read_text()
    # the unseen session is decoded with the nearest earlier day layer, and the report says so
    assert metrics["unseen_sessions"] == [UNSEEN]
    assert all("nearest earlier day layer t15.2023.08.20" in p["day_layer"] for p in preds if p["session"] == UNSEEN)
    assert f"session {UNSEEN} was not in training" in (out / "summary.md").read_text()
    # the same report in W&B (offline here): tables and plots
    from mode_ssm.training.wandb_records import find_run_logs, read_run

    run = read_run(find_run_logs(out / "wandb")[0])
    logged = {k.split(".")[0] for step in run.history for k in step}
    assert {"eval/by_session", "eval/by_corpus", "eval/plot_by_session", "eval/plot_confusions"} <= logged
    assert run.exit_code == 0

    # the same functions as training: on the sessions training validated on, val/per and val/wer match
    history = torch.load(tiny_checkpoint, weights_only=True)["position"]["history"][-1]
    seen = [p for p in preds if p["session"] != UNSEEN]
    seen_per = sum(int(p["phoneme_errors"]) for p in seen) / sum(int(p["phonemes"]) for p in seen)
    seen_wer = sum(int(p["word_errors"]) for p in seen) / sum(int(p["words"]) for p in seen)
    assert seen_per == pytest.approx(history["val/per"], abs=1e-9)
    assert 100 * seen_wer == pytest.approx(history["val/wer"], abs=1e-9)


def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def test_evaluate_test_split_gives_predictions_only_without_the_truth_file(tmp_path, tiny_data_root, tiny_checkpoint):
    from mode_ssm.data.truth import TEST_TRUTH
    from mode_ssm.evaluation.evaluate import run_evaluation

    root = tmp_path / "real_like"  # as real data: no test labels anywhere
    shutil.copytree(tiny_data_root, root, ignore=shutil.ignore_patterns(TEST_TRUTH))
    cfg = _compose("evaluate", [f"checkpoint={tiny_checkpoint}", "split=test", f"data.data_root={root}",
                                f"output_dir={tmp_path / 'ev'}", "decoder=ctc_greedy"])
    result = run_evaluation(cfg, tmp_path)
    preds = read_csv(tmp_path / "ev" / "predictions.csv")
    assert len(preds) == 13 and all(p["true_sentence"] == "" and p["word_errors"] == "" for p in preds)
    assert not (tmp_path / "ev" / "summary_by_session.csv").exists()
    summary = (tmp_path / "ev" / "summary.md").read_text()
    assert "no labels in this split" in summary and f"no {TEST_TRUTH} in {root}" in summary
    assert "wer" not in result["metrics"] and result["metrics"]["n_trials"] == 13


def test_evaluate_scores_the_held_out_test_against_the_truth_file_and_nothing_else_reads_it(
    tmp_path, tiny_data_root, tiny_checkpoint
):
    from mode_ssm.data.truth import TEST_TRUTH, read_test_truth
    from mode_ssm.evaluation.evaluate import run_evaluation
    from mode_ssm.evaluation.submission import read_test_trials

    truth = read_test_truth(tiny_data_root)
    trials = read_test_trials(tiny_data_root)  # the simulator wrote it in submission order
    assert [(t.id, t.session, t.key, t.block, t.trial) for t in trials] == \
        [(r.id, r.session, r.key, r.block, r.trial) for r in truth.values()]
    args = [f"checkpoint={tiny_checkpoint}", "split=test", "decoder=ctc_lm"]
    result = run_evaluation(_compose("evaluate", args + [f"data.data_root={tiny_data_root}",
                                                          f"output_dir={tmp_path / 'ev'}"]), tmp_path)
    preds = read_csv(tmp_path / "ev" / "predictions.csv")
    assert len(preds) == 13
    by_trial = {(r.session, r.block, r.trial): r for r in truth.values()}
    words = errors = 0
    for p in preds:  # exactly the truth's sentences, scored with the official normalisation
        t = by_trial[(p["session"], int(p["block"]), int(p["trial"]))]
        assert p["true_sentence"] == t.sentence
        e = per_trial_errors([t.sentence], [p["predicted_sentence"]])[0]
        assert int(p["word_errors"]) == e.n_errors and int(p["words"]) == e.n_ref_words
        words, errors = words + e.n_ref_words, errors + e.n_errors
        assert int(p["phoneme_errors"]) == editdistance.eval(list(t.phoneme_ids), phoneme_ids(p["predicted_phonemes"]))
    assert result["metrics"]["wer"] == pytest.approx(errors / words)
    assert all(r["mode_truth"] in (0, 1) for r in result["rows"])  # the truth's modes were read
    mode_signal = bool(torch.load(tiny_checkpoint, weights_only=True)["model"]["mode_head.mode_signal"])
    assert ("mode_accuracy" in result["metrics"]) == mode_signal
    assert f"test scored against {tiny_data_root / TEST_TRUTH}" in (tmp_path / "ev" / "summary.md").read_text()
    # decoding never reads it: without the file every decoded output is the same
    bare = tmp_path / "bare"
    shutil.copytree(tiny_data_root, bare, ignore=shutil.ignore_patterns(TEST_TRUTH))
    run_evaluation(_compose("evaluate", args + [f"data.data_root={bare}", f"output_dir={tmp_path / 'ev2'}"]), tmp_path)
    bare_preds = read_csv(tmp_path / "ev2" / "predictions.csv")
    assert [(p["predicted_sentence"], p["predicted_phonemes"], p["predicted_mode"]) for p in preds] == \
        [(p["predicted_sentence"], p["predicted_phonemes"], p["predicted_mode"]) for p in bare_preds]


def test_evaluate_names_what_it_could_not_read_in_metrics_and_summary(tmp_path, tiny_data_root, tiny_checkpoint):
    import h5py

    from mode_ssm.evaluation.evaluate import run_evaluation

    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    sessions = sorted(p.name for p in root.iterdir() if (p / "data_val.hdf5").exists())
    corrupt, damaged = root / sessions[0] / "data_val.hdf5", root / sessions[1] / "data_val.hdf5"
    data = bytearray(corrupt.read_bytes())
    at = data.find(b"SNOD")  # the file's symbol table: h5py raises RuntimeError, naming no file
    data[at : at + 64] = b"\xa5" * 64
    corrupt.write_bytes(bytes(data))
    with h5py.File(damaged, "r+") as f:
        del f["trial_0000"]["seq_class_ids"]  # one unreadable trial in an otherwise good session
    args = [f"checkpoint={tiny_checkpoint}", "split=val", f"data.data_root={root}", "decoder=ctc_greedy"]
    with pytest.raises(T15DataError, match=f"{corrupt}: unreadable trial list, file corrupt"):
        run_evaluation(_compose("evaluate", args + [f"output_dir={tmp_path / 'ev0'}"]), tmp_path)
    assert not (tmp_path / "ev0").exists()
    with pytest.warns(UserWarning, match=f"skipping session {sessions[0]}"):
        result = run_evaluation(_compose("evaluate", args + [f"output_dir={tmp_path / 'ev'}",
                                                              "data.on_bad_session=skip"]), tmp_path)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert list(metrics["skipped_sessions"]) == [sessions[0]] and "corrupt" in metrics["skipped_sessions"][sessions[0]]
    assert metrics["skipped_unreadable"] == 1 and metrics["skipped_unreadable_by_reason"] == {"missing_field": 1}
    assert {p["session"] for p in read_csv(tmp_path / "ev" / "predictions.csv")} == set(sessions[1:])
    summary = (tmp_path / "ev" / "summary.md").read_text()
    assert f"session {sessions[0]} skipped (data.on_bad_session=skip)" in summary
    assert f"1 unreadable trials were not decoded (1 missing_field): {damaged}:trial_0000" in summary
    assert result["metrics"]["n_trials"] == metrics["n_trials"]


def test_rnnt_decoders_and_tuning_share_the_evaluation_rows(tiny_data_root, tiny_checkpoint, tmp_path):
    from mode_ssm.evaluation.pipeline import decode_trials, open_split
    from mode_ssm.evaluation.search import RNNTSettings, WordDecoding, make_search
    from mode_ssm.evaluation.tuning import word_search_grid
    from mode_ssm.runtime.loading import load_model

    loaded = load_model(tiny_checkpoint)
    data = open_split(loaded, tiny_data_root, "val")
    words = WordDecoding(loaded, tiny_data_root, tmp_path / "lm")
    assert words.lm_dir == tiny_checkpoint.parent.parent / "lm"  # the training run's own LM is reused
    _, word_decoder = make_search("ctc_lm", loaded, words)
    ctc_lm = decode_trials(loaded, data, word_decoder=word_decoder, keep_log_probs=True)
    settings = loaded.decoding()
    grid = word_search_grid(ctc_lm.rows, words, [settings["lm_weight"], 3.0], [settings["word_score"]],
                            [settings["beam"]])
    assert grid[0]["wer"] == pytest.approx(summarize(ctc_lm.rows)["wer"])  # re-running the search alone agrees
    assert grid[0]["words"] == grid[1]["words"] == sum(r["n_words"] for r in ctc_lm.rows)
    for name in ("rnnt_greedy", "rnnt_beam"):
        search, _ = make_search(name, loaded, words, RNNTSettings(beam=2, max_symbols_per_frame=2, nbest=2))
        rows = decode_trials(loaded, data, search=search).rows
        assert len(rows) == 12 and all("word_errors" in r and "phoneme_errors" in r for r in rows)
        assert [r["ctc_loss"] for r in rows] == [r["ctc_loss"] for r in ctc_lm.rows]  # same model pass


def test_tune_decoder_command_line(workdir):
    grid_args = ["grid.lm_weight=[0.5,2.0]", "grid.word_score=[0.0]", "grid.beam=[8]"]
    proc = run_script("tune_decoder.py", ["checkpoint=ckpt.pt", "data.data_root=data", "output_dir=tune", *grid_args],
                      workdir)
    grid = read_csv(workdir / "tune" / "grid.csv")
    assert [(float(g["lm_weight"]), int(g["beam"])) for g in grid] == [(0.5, 8), (2.0, 8)]
    best = json.loads((workdir / "tune" / "best.json").read_text())
    assert best["wer"] == min(float(g["wer"]) for g in grid)
    assert "best: WER" in proc.stdout


def test_bad_inputs_are_named(tmp_path, tiny_data_root, tiny_checkpoint):
    from mode_ssm.evaluation.pipeline import open_split
    from mode_ssm.runtime.loading import load_model

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.pt: not a MODE-SSM training checkpoint: missing \['model'"):
        load_model(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": CheckpointError("a Python object")}, pickled)
    with pytest.raises(CheckpointError, match=r"pickled\.pt: not a MODE-SSM checkpoint: it holds Python objects "
                                              r"\(mode_ssm.runtime.checkpoint.CheckpointError\)") as err:
        load_model(pickled)
    assert "weights_only" not in str(err.value)  # never the advice to load it unsafely
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: cannot be read") as err:
        load_model(garbage)
    assert "weights_only" not in str(err.value)
    # a data root whose sessions hold no test file
    root = tmp_path / "no_test"
    (root / "t15.2023.08.13").mkdir(parents=True)
    shutil.copy(tiny_data_root / "t15.2023.08.13" / "data_train.hdf5", root / "t15.2023.08.13")
    with pytest.raises(T15DataError, match=r"no_test: no test trials to decode; no session folder holds data_test"):
        open_split(load_model(tiny_checkpoint), root, "test")
    proc = run_script("evaluate.py", [f"checkpoint={foreign}", f"output_dir={tmp_path / 'ev'}"], tmp_path, expect_rc=1)
    assert "foreign.pt: not a MODE-SSM training checkpoint" in proc.stderr


def test_block_mode_accuracy_is_a_majority_vote():
    rows = [{"session": "s", "block": b, "mode_truth": t, "mode_pred": p} for b, t, p in [
        (1, 0, 0), (1, 0, 0), (1, 0, 1),  # majority right
        (2, 1, 0), (2, 1, 0), (2, 1, 1),  # majority wrong
        (3, 1, 1), (3, 1, 0),  # tie counts as wrong
        (4, -1, 1),  # truth unknown: ignored
    ]]
    assert block_mode_accuracy(rows) == pytest.approx(1 / 3)
    assert summarize(rows)["mode_accuracy"] == pytest.approx(4 / 8)
    assert summarize(rows)["mode_majority"] == pytest.approx(5 / 8)  # chance: always "silent" (5 of 8 known)
    assert block_mode_accuracy([{"session": "s", "block": 1, "mode_truth": -1, "mode_pred": 0}]) is None


def test_phoneme_confusions_add_up_to_the_edit_distance():
    pairs = [([1, 2, 3, 40, 4], [1, 5, 3, 40]), ([7, 40], [7, 40, 9, 9]), ([3], [])]  # one alignment each
    rows = [{"true_phonemes": ids_to_string(r), "predicted_phonemes": ids_to_string(h)} for r, h in pairs]
    assert phoneme_ids(rows[0]["true_phonemes"]) == [1, 2, 3, 40, 4]
    counts = phoneme_confusions(rows)
    errors = counts.sum() - counts.diagonal().sum()
    assert errors == sum(editdistance.eval(r, h) for r, h in pairs) == 5
    assert counts[2, 5] == 1 and counts[4, 41] == 1 and counts[3, 41] == 1  # substitution and deletions
    assert counts[41, 9] == 2 and counts[7, 7] == 1  # insertions
    assert counts.sum() == sum(len(r) for r, _ in pairs) + 2  # every reference phoneme once, plus insertions


def test_evaluate_switches_the_flow_bridge_on_and_off(tmp_path, tiny_data_root, tiny_checkpoint):
    from mode_ssm.evaluation.evaluate import run_evaluation

    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    weights = [k for k in state["model"] if k.startswith("flow_bridge.") and k.endswith("weight")]
    assert weights
    gen = torch.Generator().manual_seed(0)
    for k in weights:  # a bridge that moves features (the trained-for-3-steps one is still the identity)
        state["model"][k] = torch.randn(state["model"][k].shape, generator=gen) * 0.5
    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save(state, ckpt)

    def loss(flag: str) -> float:
        cfg = _compose("evaluate", [f"checkpoint={ckpt}", f"data.data_root={tiny_data_root}", f"flow_bridge={flag}",
                                    f"output_dir={tmp_path / flag}", "decoder=ctc_greedy"])
        return run_evaluation(cfg, tmp_path)["metrics"]["loss"]

    off, on, default = loss("false"), loss("true"), loss("null")
    assert off == default  # the checkpoint's config has it off
    assert abs(on - off) > 1e-3
