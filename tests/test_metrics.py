from __future__ import annotations

import numpy as np
import pytest
import torch

from mode_ssm.metrics import (
    mode_accuracy,
    per_trial_errors,
    phoneme_accuracy,
    phoneme_error_rate,
    word_error_rate,
)

torch.set_num_threads(1)


def test_wer_uses_official_normalisation():
    refs = [
        "Hello, World!",  # -> hello world
        "The cat's here - now.",  # hyphen + space dropped -> the cat's here now
        "I don 't KNOW",  # space before apostrophe removed -> i don't know
        "A well-known fact",  # inner hyphen kept: well-known is one word
    ]
    hyps = [
        "hello world",
        "the cats here now",  # cat's != cats: 1 substitution
        "i don't know",
        "a well known fact",  # well-known -> well known: 1 substitution + 1 insertion
    ]
    wer, n_errors, n_ref = word_error_rate(refs, hyps)
    assert (n_errors, n_ref) == (3, 2 + 4 + 3 + 3)
    assert wer == pytest.approx(3 / 12)


def test_wer_is_aggregate_not_mean_of_sentences():
    refs = ["a b c d e f g h i j", "k l"]
    hyps = ["a b c d e f g h i j", "x l"]
    wer, n_errors, n_ref = word_error_rate(refs, hyps)
    assert (n_errors, n_ref) == (1, 12)
    assert wer == pytest.approx(1 / 12)
    per_trial = per_trial_errors(refs, hyps)
    mean_of_sentences = float(np.mean([t.wer for t in per_trial]))
    assert mean_of_sentences == pytest.approx(0.25)  # what the official scoring does NOT report
    assert sum(t.n_errors for t in per_trial) == n_errors
    assert [t.n_ref_words for t in per_trial] == [10, 2]


def test_wer_matches_jiwer_on_random_sentences():
    jiwer = pytest.importorskip("jiwer")
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
    refs, hyps = [], []
    for _ in range(30):
        ref = list(rng.choice(words, size=int(rng.integers(1, 9))))
        hyp = [w if rng.random() > 0.3 else str(rng.choice(words)) for w in ref if rng.random() > 0.1]
        if rng.random() < 0.3:
            hyp.insert(int(rng.integers(0, len(hyp) + 1)), "extra")
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    wer, _, _ = word_error_rate(refs, hyps)
    assert wer == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)


def test_edge_cases_and_errors():
    assert word_error_rate(["hello"], [""]) == (1.0, 1, 1)
    assert word_error_rate(["a b"], ["a b c d"])[0] == pytest.approx(1.0)  # two insertions over two words
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no tokens"):
        word_error_rate(["?!"], ["a"])
    trial = per_trial_errors(["..."], ["a"])[0]
    assert trial.n_ref_words == 0 and trial.wer == float("inf")


def test_phoneme_error_rate_and_accuracy():
    refs = [[1, 2, 3, 40], np.array([5, 6, 40])]
    hyps = [torch.tensor([1, 3, 40]), [5, 7, 6, 40]]  # one deletion; one insertion
    per, n_errors, n_ref = phoneme_error_rate(refs, hyps)
    assert (n_errors, n_ref) == (2, 7)
    assert per == pytest.approx(2 / 7)
    assert phoneme_accuracy(refs, hyps) == pytest.approx(5 / 7)
    # insertions count against accuracy, so it goes below zero
    assert phoneme_accuracy([[1]], [[2, 3, 4]]) == pytest.approx(-2.0)


def test_mode_accuracy_ignores_unknown_truth():
    assert mode_accuracy([0, 1, 1, 0], [0, -1, 0, -1]) == pytest.approx(0.5)
    assert mode_accuracy(torch.tensor([1, 1, 0]), np.array([1, 1, 0])) == pytest.approx(1.0)
    assert mode_accuracy([0, 1], [-1, -1]) is None
    with pytest.raises(ValueError, match="3 predictions but 2"):
        mode_accuracy([0, 1, 1], [0, 1])
