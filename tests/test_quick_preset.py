"""The quick start's data (preset quick: every block's sentences from the 50-word corpus) and the
decoded val sample the training summary prints."""

from __future__ import annotations

import collections

import pytest

from mode_ssm.sim.config import load_config
from mode_ssm.sim.corpus import FIFTY_WORDS
from mode_ssm.sim.plan import make_plan
from mode_ssm.text import normalize_sentence
from mode_ssm.training.trainer import decoded_examples


def test_quick_preset_is_fifty_words_with_the_tables_splits():
    plan = make_plan("quick", seed=0)
    trials = plan.trials()
    assert {t.corpus for t in trials} == {"50-Word"}
    words = {w for t in trials for w in normalize_sentence(t.sentence).split()}
    assert words <= set(FIFTY_WORDS) and len(words) >= 40
    # the table's splits are kept: 2023-08-11 is train only, the others have Val/Test blocks
    counts = plan.counts()
    assert counts["train"] > 5 * counts["val"] > 0 and counts["test"] > 0
    by_session = collections.Counter((t.session, t.split) for t in trials)
    assert by_session[("t15.2023.08.11", "val")] == 0 and by_session[("t15.2023.08.13", "val")] > 0
    # val/test sentences never occur in train, after normalisation
    train = {normalize_sentence(s) for s in plan.train_sentences()}
    assert not train & {normalize_sentence(s) for s in plan.val_test_sentences()}
    # the preset's modes: silent blocks faster on average than vocalized ones, as set (60 vs 32 wpm)
    rate = collections.defaultdict(list)
    for b in plan.blocks:
        rate[b.speaking_mode].append(b.words_per_minute)
    mean = {m: sum(v) / len(v) for m, v in rate.items()}
    assert mean["silent"] > 1.5 * mean["vocalized"]


def test_the_tables_corpus_is_kept_without_the_override():
    plan = make_plan({**load_config("quick").to_dict(), "corpus": None}, seed=0)
    assert collections.Counter(t.corpus for t in plan.trials()).keys() == {"50-Word", "Switchboard"}


def test_an_unknown_corpus_is_refused_by_name():
    with pytest.raises(ValueError, match=r"corpus must be one of .*'50-Word'.* got 'Klingon'"):
        load_config("quick", corpus="Klingon")


def _row(session, block, trial, ref, hyp, mode_pred=None, mode_truth=-1):
    return {"session": session, "block": block, "trial": trial, "true_sentence": ref, "predicted_sentence": hyp,
            "predicted_phonemes": "AH", "mode_pred": mode_pred, "mode_truth": mode_truth}


def test_decoded_examples_are_a_fixed_spread_of_the_split_in_file_order():
    rows = [_row("s2", 1, k, f"ref {k}", f"hyp {k}", mode_pred=k % 2, mode_truth=1) for k in range(20)]
    rows += [_row("s1", 3, 0, "first", None)]
    rows += [{"session": "s0", "block": 0, "trial": 0, "true_sentence": None, "predicted_sentence": "x",
              "predicted_phonemes": "", "mode_pred": None, "mode_truth": -1}]  # unlabelled: never shown
    shuffled = rows[::-1]
    out = decoded_examples(shuffled, n=5)
    assert [e["reference"] for e in out] == ["first", "ref 4", "ref 9", "ref 14", "ref 19"]
    # no word decoder: the greedy phonemes stand in; modes by name, None when not predicted
    assert out[0] == {"reference": "first", "decoded": "AH", "mode": None, "true_mode": None}
    assert out[1] == {"reference": "ref 4", "decoded": "hyp 4", "mode": "vocalized", "true_mode": "silent"}
    assert out[2]["mode"] == "silent"
    assert decoded_examples(rows[:3], n=8) == decoded_examples(rows[2::-1], n=8) and len(decoded_examples(rows[:3])) == 3
    assert decoded_examples([]) == []
