"""Models with different frame rates decoded as one: their n-best lists merged and rescored.

Averaging log-probabilities frame by frame (``runtime/ensemble.py``) needs members that emit the
same frames. MODE-SSM (80 ms frames from its conv stem) and the GRU baseline (14-bin patches every
4 bins) do not, so they are combined after the search instead:

1. each group of models (one frame rate; a group may itself be a frame-averaged ensemble) is
   searched by the lexicon + n-gram decoder, giving its n-best sentences and the phonemes each
   was aligned as (:attr:`WordHypothesis.phonemes`);
2. every distinct sentence of the union is scored by every group with the exact CTC
   log-likelihood of its phonemes, ``ln P_g(phonemes | x)`` (the sum over all alignments,
   ``torch.nn.functional.ctc_loss``); a sentence found with several pronunciations keeps the best;
3. merged score = mean over groups of that log-likelihood + ``lm_weight * ln P_ngram(sentence)``
   + ``word_score * n_words``: the decoder's own weights, the acoustic term now shared by all groups.

The best merged sentence is the answer; the merged list can be rescored by a neural LM like any
n-best (:func:`mode_ssm.decoding.rescoring.rescore_nbests`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from mode_ssm.decoding.lexicon_decoder import WordHypothesis
from mode_ssm.phonemes import BLANK


def ctc_log_likelihoods(log_probs: torch.Tensor, targets: Sequence[Sequence[int]]) -> list[float]:
    """ln P(target | x) under CTC for each target, summed over every alignment.

    ``log_probs``: (T, C) one trial's log-probabilities. An empty target is the all-blank path; a
    target that cannot fit in T frames gets -inf.
    """
    if not targets:
        return []
    lp = log_probs.detach().float().cpu()
    n = len(targets)
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    flat = torch.tensor([p for t in targets for p in t], dtype=torch.long)
    loss = F.ctc_loss(lp[:, None].expand(-1, n, -1), flat, torch.full((n,), lp.shape[0], dtype=torch.long), lengths,
                      blank=BLANK, reduction="none", zero_infinity=False)
    return [-float(v) if math.isfinite(float(v)) else -math.inf for v in loss]


def merge_nbests(nbests: Sequence[Sequence[WordHypothesis]], log_probs: Sequence[torch.Tensor],
                 lm_weight: float, word_score: float) -> list[WordHypothesis]:
    """One trial: the union of the groups' n-best lists, rescored by every group (module docstring).

    ``nbests[g]`` is group g's n-best (best first) and ``log_probs[g]`` its (T_g, C)
    log-probabilities. Returns one hypothesis per distinct sentence, best merged score first;
    ``acoustic_score`` is the mean CTC log-likelihood over groups and ``score`` the merged score.
    Where no sentence is possible under every group (all -inf), the groups' own scores decide.
    """
    if len(nbests) != len(log_probs) or not nbests:
        raise ValueError(f"need one n-best list per group of log-probabilities, got {len(nbests)} and {len(log_probs)}")
    candidates: dict[tuple[str, ...], list[WordHypothesis]] = {}
    for nbest in nbests:
        for h in nbest:
            candidates.setdefault(h.words, []).append(h)
    prons = sorted({h.phonemes for hs in candidates.values() for h in hs})
    per_group = [dict(zip(prons, ctc_log_likelihoods(lp, prons))) for lp in log_probs]
    merged: list[tuple[float, float, WordHypothesis]] = []
    for words, hs in candidates.items():
        best_pron, best_acoustic = hs[0].phonemes, -math.inf
        for pron in dict.fromkeys(h.phonemes for h in hs):
            acoustic = sum(g[pron] for g in per_group) / len(per_group)
            if acoustic > best_acoustic:
                best_pron, best_acoustic = pron, acoustic
        lm = hs[0].lm_log_prob  # the n-gram's score depends on the words only
        score = best_acoustic + lm_weight * lm + word_score * len(words)
        own = max(h.score for h in hs)  # the tie-breaker where every merged score is -inf
        merged.append((score, own, WordHypothesis(words, score, best_acoustic, lm, best_pron)))
    merged.sort(key=lambda m: (m[0], m[1]), reverse=True)
    return [m[2] for m in merged]
