"""Mixed-frame-rate ensembles: n-best lists merged and rescored by every group's exact CTC likelihood."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mode_ssm.decoding.lexicon_decoder import WordDecoder, WordHypothesis, build_vocabulary, path_phonemes
from mode_ssm.decoding.nbest_merge import ctc_log_likelihoods, merge_nbests
from mode_ssm.phonemes import BLANK, BOUNDARY


def brute_force_ctc(log_probs: torch.Tensor, target: tuple[int, ...]) -> float:
    """ln of the sum over every frame labelling that collapses to ``target``."""
    total = []
    for path in itertools.product(range(log_probs.shape[1]), repeat=log_probs.shape[0]):
        collapsed = [p for i, p in enumerate(path) if p != BLANK and (i == 0 or p != path[i - 1])]
        if tuple(collapsed) == target:
            total.append(float(sum(log_probs[t, p] for t, p in enumerate(path))))
    return math.log(sum(math.exp(v) for v in total)) if total else -math.inf


def test_ctc_log_likelihood_is_the_sum_over_every_alignment():
    torch.manual_seed(0)
    lp = torch.randn(4, 3).log_softmax(-1)  # 4 frames, blank + 2 labels
    targets = [(1,), (1, 2), (2, 2), (), (1, 2, 1, 2, 1)]
    got = ctc_log_likelihoods(lp, targets)
    for target, value in zip(targets, got):
        assert value == pytest.approx(brute_force_ctc(lp, target), abs=1e-5), target
    assert got[-1] == -math.inf  # 5 labels cannot fit in 4 frames


def test_a_path_reads_as_the_training_target():
    # flashlight's path: leading silence, a repeated phoneme kept apart by a blank, silence runs
    assert path_phonemes([40, 0, 40, 16, 16, 0, 16, 21, 0, 40, 0, 40, 36, 12]) == (16, 16, 21, 40, 36, 12, 40)
    assert path_phonemes([0, 0, 40]) == ()


def hyp(words: str, lm: float, phonemes: tuple[int, ...], score: float = 0.0) -> WordHypothesis:
    return WordHypothesis(tuple(words.split()), score, 0.0, lm, phonemes)


def test_the_merged_ranking_is_the_mean_group_likelihood_plus_the_weighted_lm():
    torch.manual_seed(1)
    a = torch.randn(12, 41).log_softmax(-1)  # one group at 12 frames
    b = torch.randn(7, 41).log_softmax(-1)  # another at 7 frames
    p1, p2, p3 = (5, 7, BOUNDARY), (9, BOUNDARY), (5, 8, BOUNDARY)
    nbest_a = [hyp("one", -2.0, p1), hyp("two", -1.0, p2)]
    nbest_b = [hyp("two", -1.0, p2), hyp("three", -4.0, p3), hyp("one", -2.0, (5, 6, BOUNDARY))]  # another pron
    lm_weight, word_score = 0.7, 0.3
    merged = merge_nbests([nbest_a, nbest_b], [a, b], lm_weight, word_score)
    expected = {}
    for words, lm, prons in (("one", -2.0, [p1, (5, 6, BOUNDARY)]), ("two", -1.0, [p2]), ("three", -4.0, [p3])):
        acoustic = max((ctc_log_likelihoods(a, [p])[0] + ctc_log_likelihoods(b, [p])[0]) / 2 for p in prons)
        expected[words] = acoustic + lm_weight * lm + word_score
    assert [h.sentence for h in merged] == sorted(expected, key=expected.get, reverse=True)
    for h in merged:
        assert h.score == pytest.approx(expected[h.sentence], abs=1e-5)
    # a group that alone would prefer another sentence changes the merged answer only through its likelihood
    alone = merge_nbests([nbest_a], [a], lm_weight, word_score)
    assert {h.sentence for h in alone} == {"one", "two"}


def test_a_sentence_no_group_can_emit_falls_back_to_the_groups_own_scores():
    lp = torch.zeros(2, 41).log_softmax(-1)
    too_long = (1, 2, 3, 4, BOUNDARY)
    merged = merge_nbests([[hyp("a", 0.0, too_long, -5.0), hyp("b", 0.0, too_long, -1.0)]], [lp], 1.0, 0.0)
    assert [h.sentence for h in merged] == ["b", "a"] and merged[0].score == -math.inf


def test_the_decoder_reports_the_phonemes_it_aligned():
    vocab = build_vocabulary(["hello world", "yellow word"])
    lexicon = vocab.lexicon()
    decoder = WordDecoder(lexicon, nbest=3)
    target = list(lexicon.entries["yellow"][0]) + [BOUNDARY] + list(lexicon.entries["word"][0]) + [BOUNDARY]
    lp = torch.full((3 * len(target), 41), -8.0)
    for i, p in enumerate(target):  # each label for two frames, then a blank
        lp[3 * i : 3 * i + 2, p] = 0.0
        lp[3 * i + 2, BLANK] = 0.0
    best = decoder.decode(lp.log_softmax(-1))[0]
    assert best.words == ("yellow", "word") and best.phonemes == tuple(target)
