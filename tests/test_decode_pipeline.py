"""The one decode pipeline: every readable val trial is scored, flagged ones included; the LM cache is keyed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import UNSEEN
from mode_ssm.data.t15 import T15Split
from mode_ssm.data.writer import TrialRecord, write_trials
from mode_ssm.decoding.words import lm_cache_path, word_resources
from mode_ssm.metrics import flag_counts, summarize

SESSION = "t15.2023.08.18"  # a session the tiny checkpoint trained on


def _with_bad_val_trials(src: Path, dst: Path) -> dict[str, str]:
    """A copy of ``src`` whose SESSION val file gains a too-short, an almost all-dead and a NaN trial."""
    shutil.copytree(src, dst)
    path = dst / SESSION / "data_val.hdf5"
    split = T15Split(dst, "val", sessions=[SESSION], validate="none")
    records = [TrialRecord(np.asarray(ex.features), ex.session, ex.block_num, ex.trial_num, ex.sentence,
                           ex.phoneme_ids, {"speaking_mode": ex.speaking_mode or "vocalized"})
               for ex in (split[i] for i in range(len(split)))]
    split.close()
    base = records[0]
    short = TrialRecord(base.features[:2].copy(), SESSION, base.block_num, 901, base.sentence, base.phoneme_ids)
    dead = base.features.copy()
    dead[:, :500] = 0.0  # 500 of 512 features constant: 12 vary, below the floor
    nan = base.features.copy()
    nan[3, 7] = np.nan
    records += [short, TrialRecord(dead, SESSION, base.block_num, 902, base.sentence, base.phoneme_ids),
                TrialRecord(nan, SESSION, base.block_num, 903, base.sentence, base.phoneme_ids)]
    write_trials(path, records)
    return {"901": "too_short;too_few_frames_for_ctc", "902": "too_few_live_channels", "903": "non_finite"}


def test_val_scores_every_readable_trial_and_counts_the_flagged(tmp_path, tiny_data_root, tiny_checkpoint):
    from omegaconf import OmegaConf

    from mode_ssm.evaluation.evaluate import run_evaluation
    from hydra import compose, initialize_config_dir

    from helpers import REPO

    root = tmp_path / "data"
    expected = _with_bad_val_trials(tiny_data_root, root)
    training_rules = T15Split(root, "val", validate="full")  # what the training rules alone would keep
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"checkpoint={tiny_checkpoint}", f"data.data_root={root}",
                                                         f"output_dir={tmp_path / 'ev'}", "decoder=ctc_greedy"])
    OmegaConf.set_struct(cfg, False)
    result = run_evaluation(cfg, launch_dir=tmp_path)
    rows = result["rows"]
    everything = T15Split(root, "val", validate="none")
    assert len(rows) == len(everything) == len(training_rules) + 3
    flagged = {str(r["trial"]): r["flags"] for r in rows if r["flags"]}
    assert flagged == expected
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert metrics["flagged_by_reason"] == {"too_short": 1, "too_few_frames_for_ctc": 1, "too_few_live_channels": 1,
                                           "non_finite": 1}
    assert metrics["n_trials"] == len(rows) and metrics["n_flagged"] == 3
    # the 2-bin trial gives the model no frame: it counts every reference phoneme as an error
    short = next(r for r in rows if r["trial"] == 901)
    assert short["predicted_phonemes"] == "" and short["phoneme_errors"] == short["n_phonemes"] > 0
    assert metrics["n_unalignable"] == 1
    per = sum(r["phoneme_errors"] for r in rows) / sum(r["n_phonemes"] for r in rows)
    assert metrics["per"] == pytest.approx(per)
    summary = (tmp_path / "ev" / "summary.md").read_text()
    assert "3 of them break a training rule" in summary and "too_short 1" in summary
    assert UNSEEN in {r["session"] for r in rows}


def test_summarize_counts_unalignable_trials_as_errors_and_leaves_them_out_of_the_loss():
    rows = [
        {"n_phonemes": 10, "phoneme_errors": 2, "ctc_loss": 5.0, "mode_truth": -1, "mode_pred": None, "flags": ""},
        {"n_phonemes": 6, "phoneme_errors": 6, "ctc_loss": float("inf"), "mode_truth": -1, "mode_pred": None,
         "flags": "too_short;too_few_live_channels"},
    ]
    out = summarize(rows)
    assert out["per"] == pytest.approx(8 / 16)
    assert out["loss"] == pytest.approx(5.0 / 10)
    assert out["n_unalignable"] == 1 and out["n_flagged"] == 1
    assert flag_counts(rows) == {"too_short": 1, "too_few_live_channels": 1}


def test_lm_cache_is_keyed_on_what_built_it(tmp_path):
    decoding = {"lm_order": 2, "extra_vocabulary": 0, "lm_weight": 1.0, "word_score": 0.0, "beam": 8,
                "beam_size_token": 10, "beam_threshold": 20.0}
    a = ["the cat sat", "a dog ran"]
    _, path_a = word_resources(decoding, a, tmp_path)
    _, path_b = word_resources(decoding, a + ["the dog sat"], tmp_path)
    _, path_a3 = word_resources({**decoding, "lm_order": 3}, a, tmp_path)
    assert len({path_a, path_b, path_a3}) == 3 and all(p.is_file() for p in (path_a, path_b, path_a3))
    assert "dog sat" not in path_a.read_text() and path_b.read_text().count("\n") > path_a.read_text().count("\n")
    assert lm_cache_path(tmp_path, a, 2, ["extra"]) != lm_cache_path(tmp_path, a, 2, [])
    # the same inputs find the same file again
    assert word_resources(decoding, list(a), tmp_path, build=False)[1] == path_a
