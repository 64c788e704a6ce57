"""Error rates as the official T15 evaluation computes them, and speaking-mode accuracy.

Word and phoneme error rates are aggregate: the sum of edit distances over all
trials divided by the total number of reference tokens. The mean of
per-sentence rates weights a two-word sentence like a twenty-word one and is
not what the leaderboard reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import editdistance
import numpy as np

from mode_ssm.text import normalize_sentence

UNKNOWN_MODE = -1


def _check_pairs(references: Sequence[Any], hypotheses: Sequence[Any], what: str) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{what}: {len(references)} references but {len(hypotheses)} hypotheses")


def _aggregate(ref_tokens: Sequence[Sequence[Any]], hyp_tokens: Sequence[Sequence[Any]], what: str) -> tuple[float, int, int]:
    n_errors = sum(int(editdistance.eval(list(r), list(h))) for r, h in zip(ref_tokens, hyp_tokens))
    n_ref = sum(len(r) for r in ref_tokens)
    if n_ref == 0:
        raise ValueError(f"{what}: the references hold no tokens, the error rate is undefined")
    return n_errors / n_ref, n_errors, n_ref


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, int, int]:
    """Aggregate WER with the official normalisation.

    Returns:
        (wer, n_errors, n_ref_words): word edit distances summed over trials,
        over the total number of normalised reference words.
    """
    _check_pairs(references, hypotheses, "word_error_rate")
    refs = [normalize_sentence(r).split() for r in references]
    hyps = [normalize_sentence(h).split() for h in hypotheses]
    return _aggregate(refs, hyps, "word_error_rate")


def _id_list(ids: Any) -> list[int]:
    if hasattr(ids, "detach"):
        ids = ids.detach().cpu().numpy()
    return [int(i) for i in np.asarray(ids).reshape(-1)]


def phoneme_error_rate(ref_id_lists: Sequence[Any], hyp_id_lists: Sequence[Any]) -> tuple[float, int, int]:
    """Aggregate PER over phoneme class-id sequences (boundary class included, as in ``seq_class_ids``).

    Returns:
        (per, n_errors, n_ref_phonemes).
    """
    _check_pairs(ref_id_lists, hyp_id_lists, "phoneme_error_rate")
    refs = [_id_list(r) for r in ref_id_lists]
    hyps = [_id_list(h) for h in hyp_id_lists]
    return _aggregate(refs, hyps, "phoneme_error_rate")


def phoneme_accuracy(ref_id_lists: Sequence[Any], hyp_id_lists: Sequence[Any]) -> float:
    """Phoneme accuracy = 1 - aggregate PER = (N - S - D - I) / N.

    This is HTK's "Accuracy" (insertions count against it, so it can be
    negative), not the frame-wise fraction of argmax hits: CTC frames have no
    aligned truth.
    """
    return 1.0 - phoneme_error_rate(ref_id_lists, hyp_id_lists)[0]


def mode_accuracy(pred: Any, truth: Any) -> float | None:
    """Fraction of trials whose predicted speaking mode equals the true one.

    Trials whose truth is unknown (-1) are ignored; with no known truth at all
    the accuracy does not exist and None is returned. Never pass agreement
    with pseudo-labels off as accuracy: only give real (e.g. simulator) truth.

    Args:
        pred: (N,) predicted mode ids.
        truth: (N,) true mode ids, -1 where unknown.
    """
    p = np.asarray(_id_list(pred))
    t = np.asarray(_id_list(truth))
    if p.shape != t.shape:
        raise ValueError(f"mode_accuracy: {p.size} predictions but {t.size} truth labels")
    known = t != UNKNOWN_MODE
    if not known.any():
        return None
    return float((p[known] == t[known]).mean())


@dataclass(frozen=True)
class TrialErrors:
    """Word errors of one trial, on normalised text."""

    index: int
    reference: str
    hypothesis: str
    n_errors: int
    n_ref_words: int

    @property
    def wer(self) -> float:
        """This trial's own WER (inf for an empty reference with insertions)."""
        if self.n_ref_words == 0:
            return 0.0 if self.n_errors == 0 else float("inf")
        return self.n_errors / self.n_ref_words


def per_trial_errors(references: Sequence[str], hypotheses: Sequence[str]) -> list[TrialErrors]:
    """Per-trial word errors for reports; their sums give :func:`word_error_rate`."""
    _check_pairs(references, hypotheses, "per_trial_errors")
    out = []
    for i, (r, h) in enumerate(zip(references, hypotheses)):
        ref, hyp = normalize_sentence(r), normalize_sentence(h)
        rw, hw = ref.split(), hyp.split()
        out.append(TrialErrors(i, ref, hyp, int(editdistance.eval(rw, hw)), len(rw)))
    return out
