from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from mode_ssm.decoding.ctc import collapse_ctc, ctc_greedy, ctc_prefix_beam_search

torch.set_num_threads(1)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _one_hot_frames(frames: list[int], n_classes: int = 41, peak: float = 8.0) -> np.ndarray:
    logits = np.zeros((len(frames), n_classes))
    logits[np.arange(len(frames)), frames] = peak
    return _log_softmax(logits)


def test_collapse_merges_repeats_only_without_blank_between():
    assert collapse_ctc([0, 5, 5, 0, 5, 40, 40, 0, 0, 7, 0]) == [5, 5, 40, 7]
    assert collapse_ctc([]) == []


def test_greedy_single_and_batch_numpy_and_torch():
    a = [0, 3, 3, 0, 3, 40, 0]
    b = [12, 0, 0, 40, 40, 0, 0]
    batch = np.stack([_one_hot_frames(a), _one_hot_frames(b)])
    assert ctc_greedy(batch[0]) == [3, 3, 40]
    assert ctc_greedy(torch.from_numpy(batch)) == [[3, 3, 40], [12, 40]]
    # lengths cut the second trial before its boundary
    assert ctc_greedy(batch, lengths=torch.tensor([7, 3])) == [[3, 3, 40], [12]]
    with pytest.raises(ValueError, match="2 lengths for a batch of 2|lengths must lie"):
        ctc_greedy(batch, lengths=[7, 9])
    with pytest.raises(ValueError, match="shape"):
        ctc_greedy(np.zeros(5))


def _brute_force(log_probs: np.ndarray, blank: int = 0) -> dict[tuple[int, ...], float]:
    """Exact CTC probability of every label sequence: sum over all V**T alignments."""
    n_frames, n_labels = log_probs.shape
    totals: dict[tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(n_labels), repeat=n_frames):
        lp = sum(log_probs[t, v] for t, v in enumerate(path))
        totals[tuple(collapse_ctc(path, blank))] += math.exp(lp)
    return {k: math.log(v) for k, v in totals.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_prefix_beam_search_equals_exhaustive_sum(seed):
    rng = np.random.default_rng(seed)
    log_probs = _log_softmax(rng.normal(0, 1.5, size=(6, 3)))
    exact = _brute_force(log_probs)
    ranked = sorted(exact.items(), key=lambda kv: kv[1], reverse=True)
    # a beam wider than the number of label sequences keeps every prefix: exact scores
    hyps = ctc_prefix_beam_search(log_probs, beam=200)
    assert len(hyps) == len(exact)
    for hyp in hyps:
        assert hyp.log_prob == pytest.approx(exact[hyp.ids], abs=1e-9)
    assert [h.ids for h in hyps[:5]] == [k for k, _ in ranked[:5]]
    assert math.fsum(math.exp(h.log_prob) for h in hyps) == pytest.approx(1.0, abs=1e-9)


def test_prefix_beam_search_finds_sequence_greedy_misses():
    # Each frame prefers blank, but label 1 summed over its three alignments beats the empty sequence.
    log_probs = np.log(np.array([[0.5, 0.45, 0.05], [0.5, 0.45, 0.05]]))
    assert ctc_greedy(log_probs) == []
    best = ctc_prefix_beam_search(log_probs, beam=4)[0]
    # P([1]) = .45*.45 + .45*.5 + .5*.45 = 0.6525 > P([]) = 0.25
    assert best.ids == (1,)
    assert math.exp(best.log_prob) == pytest.approx(0.6525, abs=1e-9)


def test_token_pruning_keeps_the_answer_on_peaky_posteriors():
    rng = np.random.default_rng(3)
    labels = [5, 40, 7, 7, 40]  # repeated 7 needs a blank between copies
    frames = [0, 5, 5, 0, 40, 0, 7, 0, 7, 7, 40, 0]
    log_probs = _log_softmax(_one_hot_frames(frames, peak=4.0) + rng.normal(0, 0.5, (len(frames), 41)))
    full = ctc_prefix_beam_search(torch.from_numpy(log_probs), beam=8, nbest=3)
    pruned = ctc_prefix_beam_search(log_probs, beam=8, nbest=3, beam_size_token=4)
    assert list(full[0].ids) == labels
    assert list(pruned[0].ids) == labels
    assert len(full) == 3 and full[0].log_prob > full[1].log_prob
    with pytest.raises(ValueError, match=r"\(T, V\)"):
        ctc_prefix_beam_search(log_probs[None])


def _brute_force_top_k(log_probs: np.ndarray, k: int, blank: int = 0) -> dict[tuple[int, ...], float]:
    """Exact sums over the alignments token pruning allows: at frame t a path may emit blank, one of
    the frame's top-k classes, or stay on the label it emitted at t-1 (staying starts no new label)."""
    n_frames, n_labels = log_probs.shape
    top = [set(np.argsort(-log_probs[t])[:k].tolist()) for t in range(n_frames)]
    totals: dict[tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(n_labels), repeat=n_frames):
        if any(v != blank and v not in top[t] and not (t > 0 and path[t - 1] == v) for t, v in enumerate(path)):
            continue
        totals[tuple(collapse_ctc(path, blank))] += math.exp(sum(log_probs[t, v] for t, v in enumerate(path)))
    return {key: math.log(v) for key, v in totals.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_pruning_keeps_the_path_that_stays_on_a_label_outside_the_top_k(seed):
    rng = np.random.default_rng(seed)
    log_probs = _log_softmax(rng.normal(0, 2.0, size=(6, 4)))
    exact = _brute_force_top_k(log_probs, k=2)
    hyps = ctc_prefix_beam_search(log_probs, beam=500, beam_size_token=2)
    assert {h.ids for h in hyps} == set(exact)
    for hyp in hyps:
        assert hyp.log_prob == pytest.approx(exact[hyp.ids], abs=1e-9)
    # the stay paths carry probability that pruning new labels alone would lose
    frame_top = [set(np.argsort(-log_probs[t])[:2].tolist()) for t in range(6)]
    stays = any(v not in frame_top[t] for t in range(1, 6) for v in range(1, 4) if v in frame_top[t - 1])
    assert stays
