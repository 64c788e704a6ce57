"""RNN-T greedy and beam search on toy transducers whose answers are known or enumerable."""

from __future__ import annotations

import math

import pytest
import torch

from mode_ssm.decoding.rnnt_search import (
    NbestWordScorer, TransducerHypothesis, rnnt_beam_search, rnnt_greedy_search,
)
from mode_ssm.lexicon import Lexicon
from mode_ssm.models.heads import Joiner, Predictor
from mode_ssm.phonemes import BOUNDARY, PHONEME_TO_ID

V = 4  # blank + labels 1..3


class OneHotPredictor:
    """Predictor whose output is the one-hot of the last label (start = blank); state holds the same."""

    def step(self, labels, state=None):
        out = torch.nn.functional.one_hot(labels, V).float()
        return out, (out[None].clone(), out[None].clone())


class TableJoiner:
    """logits = scale[last label] * enc_frame + table[last label]: enc_frame carries per-frame label scores."""

    def __init__(self, table, scale=(1.0,) * V):
        self.table = torch.tensor(table, dtype=torch.float32)
        self.scale = torch.tensor(scale, dtype=torch.float32)

    def step(self, enc_frame, pred_out):
        return (pred_out @ self.scale)[:, None] * enc_frame + pred_out @ self.table


# frame 0 wants label 1, frame 1 label 2, frame 2 nothing; repeating the last label is penalised
ENC = torch.tensor([[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
NO_REPEAT = [[0.0, 0.0, 0.0, 0.0], [2.0, -5.0, 0, 0], [2.0, 0, -5.0, 0], [2.0, 0, 0, -5.0]]


def path_log_prob(enc, joiner, steps):
    """Log-probability of an alignment given as per-frame label lists (each frame ends with a blank)."""
    total, last = 0.0, 0
    for t, labels in enumerate(steps):
        for label in labels + [0]:
            logits = joiner.step(enc[t][None], torch.nn.functional.one_hot(torch.tensor([last]), V).float())
            total += float(torch.log_softmax(logits, -1)[0, label])
            last = label if label else last
    return total


def test_greedy_and_beam_find_the_known_best_path():
    joiner = TableJoiner(NO_REPEAT)
    greedy = rnnt_greedy_search(ENC[None], None, OneHotPredictor(), joiner, max_symbols_per_frame=2)[0]
    assert greedy.ids == (1, 2)
    assert greedy.log_prob == pytest.approx(path_log_prob(ENC, joiner, [[1], [2], []]), abs=1e-9)
    beam = rnnt_beam_search(ENC, OneHotPredictor(), joiner, beam=4, max_symbols_per_frame=2)
    assert beam[0].ids == (1, 2)
    # merged alignments: 1 on frame 0 and 2 on frame 1 or 2 (both on frame 0 fell out of the beam of 4)
    kept = torch.tensor([path_log_prob(ENC, joiner, [[1], [2], []]), path_log_prob(ENC, joiner, [[1], [], [2]])],
                        dtype=torch.float64)
    assert beam[0].log_prob == pytest.approx(float(torch.logsumexp(kept, 0)), abs=1e-9)
    assert beam[0].log_prob > greedy.log_prob + 5e-3
    assert [h.log_prob for h in beam] == sorted((h.log_prob for h in beam), reverse=True)


def test_beam_escapes_the_greedy_trap():
    # Frame 0 prefers label 1 by a little, but after 1 the model is lost (uniform outputs);
    # starting with a blank lets frames 1 and 2 emit 3, 2 confidently.
    enc = torch.tensor([[1.0, 1.2, -9.0, -9.0], [0.0, 0.0, 0.0, 4.0], [0.0, 0.0, 4.0, 0.0]])
    table = [[0.0] * 4, [0.0] * 4, [3.0, 0.0, -9.0, 0.0], [3.0, 0.0, 0.0, -9.0]]
    joiner = TableJoiner(table, scale=(1.0, 0.0, 1.0, 1.0))
    greedy = rnnt_greedy_search(enc[None], None, OneHotPredictor(), joiner, max_symbols_per_frame=1)[0]
    beam = rnnt_beam_search(enc, OneHotPredictor(), joiner, beam=3, max_symbols_per_frame=1)
    assert greedy.ids == (1,)
    frame0 = 1.2 - math.log(math.exp(1.0) + math.exp(1.2) + 2 * math.exp(-9.0))
    assert greedy.log_prob == pytest.approx(frame0 + 3 * math.log(0.25), abs=1e-6)  # then 3 uniform blanks
    assert beam[0].ids == (3, 2)
    assert beam[0].log_prob > greedy.log_prob + 3.0


def predictor_output(predictor, ids):
    """The predictor's output after the start symbol and ``ids``, stepped from scratch."""
    state, out = None, None
    for label in (0,) + ids:
        out, state = predictor.step(torch.tensor([label]), state)
    return out


def enumerate_sequences(enc, predictor, joiner, max_symbols):
    """Every alignment of a tiny transducer: label sequence -> log of the summed probability."""
    totals: dict[tuple[int, ...], float] = {}

    def walk(t, ids, score, emitted):
        if t == enc.shape[0]:
            totals[ids] = torch.logaddexp(torch.tensor(totals.get(ids, -math.inf)), torch.tensor(score)).item()
            return
        lp = torch.log_softmax(joiner.step(enc[t][None], predictor_output(predictor, ids)), -1)[0]
        walk(t + 1, ids, score + float(lp[0]), 0)
        if emitted < max_symbols:
            for label in range(1, lp.shape[0]):
                walk(t, ids + (label,), score + float(lp[label]), emitted + 1)

    walk(0, (), 0.0, 0)
    return totals


def reference_greedy(enc, predictor, joiner, max_symbols):
    """Greedy search written out step by step: (labels, log-probability of the path with its blanks)."""
    ids, total = (), 0.0
    for t in range(enc.shape[0]):
        for s in range(max_symbols + 1):
            lp = torch.log_softmax(joiner.step(enc[t][None], predictor_output(predictor, ids)), -1)[0]
            label = int(lp.argmax()) if s < max_symbols else 0
            total += float(lp[label])
            if label == 0:
                break
            ids += (label,)
    return ids, total


@torch.no_grad()
def test_wide_beam_equals_brute_force_with_the_real_heads():
    torch.manual_seed(0)
    predictor, joiner = Predictor(dim=6, n_classes=3).eval(), Joiner(enc_dim=5, pred_dim=6, dim=8, n_classes=3).eval()
    enc = torch.randn(3, 5) * 2
    exact = enumerate_sequences(enc, predictor, joiner, max_symbols=2)
    assert len(exact) == 1 + 2 + 4 + 8 + 16 + 32 + 64  # up to 6 labels over 3 frames
    hyps = rnnt_beam_search(enc, predictor, joiner, beam=len(exact), max_symbols_per_frame=2, nbest=10)
    best = sorted(exact.items(), key=lambda kv: kv[1], reverse=True)[:10]
    assert [h.ids for h in hyps] == [k for k, _ in best]
    assert [h.log_prob for h in hyps] == pytest.approx([v for _, v in best], abs=1e-6)

    greedy = rnnt_greedy_search(enc[None], None, predictor, joiner, max_symbols_per_frame=2)[0]
    ids, log_prob = reference_greedy(enc, predictor, joiner, max_symbols=2)
    assert greedy.ids == ids == (2, 2, 2, 2)  # two labels on a frame, then the forced blank
    assert greedy.log_prob == pytest.approx(log_prob, abs=1e-5)
    assert greedy.log_prob < exact[greedy.ids] - 1.0  # one path of that sequence, far from all of them
    narrow = rnnt_beam_search(enc, predictor, joiner, beam=2, max_symbols_per_frame=2)
    assert narrow[0].ids == best[0][0]
    assert narrow[0].log_prob == pytest.approx(best[0][1], abs=1e-5)


@torch.no_grad()
def test_batched_greedy_equals_one_trial_at_a_time():
    torch.manual_seed(1)
    predictor, joiner = Predictor(dim=6, n_classes=5).eval(), Joiner(enc_dim=4, pred_dim=6, dim=8, n_classes=5).eval()
    enc = torch.randn(3, 7, 4) * 3
    lengths = torch.tensor([7, 4, 1])
    batched = rnnt_greedy_search(enc, lengths, predictor, joiner, max_symbols_per_frame=3)
    for b in range(3):
        alone = rnnt_greedy_search(enc[b : b + 1, : lengths[b]], None, predictor, joiner, max_symbols_per_frame=3)[0]
        assert batched[b].ids == alone.ids
        assert batched[b].log_prob == pytest.approx(alone.log_prob, abs=1e-5)  # float32 matmul shapes differ
    assert any(len(h.ids) > 0 for h in batched)


def test_nbest_words_ranked_with_lm_and_mismatch():
    ids = {w: [PHONEME_TO_ID[p] for p in pron] for w, pron in
           {"hi": ["HH", "AY"], "high": ["HH", "AY"], "you": ["Y", "UW"]}.items()}
    lexicon = Lexicon.from_mapping({w: [p] for w, p in ids.items()})
    scorer = NbestWordScorer(lexicon, None, lm_weight=0.0, word_score=0.5, mismatch_penalty=2.0)
    exact = TransducerHypothesis(tuple(ids["you"] + [BOUNDARY]), -3.0)
    garbled = TransducerHypothesis((PHONEME_TO_ID["Y"], PHONEME_TO_ID["AA"], BOUNDARY), -2.5)  # 1 edit from "you"
    ranked = scorer.rank([garbled, exact])
    assert len(ranked) == 1 and ranked[0].words == ("you",)  # same words: the better score survives
    assert ranked[0].score == pytest.approx(-3.0 + 0.5)
    two_words = TransducerHypothesis(tuple(ids["you"] + [BOUNDARY] + ids["you"]), -3.2)
    assert scorer.best_sentence([exact, two_words]) == "you you"  # -3.2 + 1.0 beats -3.0 + 0.5
