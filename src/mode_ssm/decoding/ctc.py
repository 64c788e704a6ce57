"""Phoneme decoding from CTC posteriors: greedy (best path) and prefix beam search.

Both work on the 41 T15 classes (blank = 0, see :mod:`mode_ssm.phonemes`) but
take the blank index as an argument so they work for any CTC vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mode_ssm.phonemes import BLANK


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def collapse_ctc(ids: Sequence[int] | np.ndarray, blank: int = BLANK) -> list[int]:
    """Frame labels (T,) -> label sequence: merge repeats, then drop blanks."""
    out: list[int] = []
    prev = None
    for i in np.asarray(ids).tolist():
        if i != prev and i != blank:
            out.append(i)
        prev = i
    return out


def ctc_greedy(log_probs: Any, lengths: Any = None, blank: int = BLANK) -> list[list[int]] | list[int]:
    """Best-path CTC decoding.

    Args:
        log_probs: (B, T, V) or (T, V) scores (log-probabilities or logits: only
            the argmax matters), numpy or torch.
        lengths: (B,) valid frames per trial for a batch; None means all T.
    Returns:
        One label list per trial for a batch input, one label list for (T, V).
    """
    x = _as_numpy(log_probs)
    if x.ndim == 2:
        if lengths is not None:
            raise ValueError("lengths are only for a batch (B, T, V) input")
        return collapse_ctc(x.argmax(axis=-1), blank)
    if x.ndim != 3:
        raise ValueError(f"log_probs must be (T, V) or (B, T, V), got shape {x.shape}")
    batch, frames = x.shape[:2]
    lens = np.full(batch, frames) if lengths is None else _as_numpy(lengths).astype(int).reshape(-1)
    if len(lens) != batch:
        raise ValueError(f"{len(lens)} lengths for a batch of {batch}")
    if (lens < 0).any() or (lens > frames).any():
        raise ValueError(f"lengths must lie in 0..{frames}, got {lens.tolist()}")
    best = x.argmax(axis=-1)
    return [collapse_ctc(best[b, : lens[b]], blank) for b in range(batch)]


_NEG_INF = -math.inf


def _logaddexp(a: float, b: float) -> float:
    # math on Python floats: numpy's ufunc costs ~1 us per scalar call, this inner loop runs T*beam*V times.
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


@dataclass(frozen=True)
class PhonemeHypothesis:
    """A CTC label sequence and its log-probability summed over all its alignments (natural log)."""

    ids: tuple[int, ...]
    log_prob: float


def ctc_prefix_beam_search(
    log_probs: Any,
    beam: int = 16,
    nbest: int | None = None,
    beam_size_token: int | None = None,
    blank: int = BLANK,
) -> list[PhonemeHypothesis]:
    """CTC prefix beam search in log space.

    Each prefix keeps two log-probabilities, ending in blank and ending in a
    label, so that repeats separated by a blank are new labels and repeats
    without one are merged. With a beam at least as large as the number of
    prefixes alive, the scores are the exact CTC probabilities of the label
    sequences (the sum over all their alignments).

    Args:
        log_probs: (T, V) per-frame log-probabilities (log-softmax output), numpy or torch.
        beam: prefixes kept after each frame.
        nbest: hypotheses returned (default: ``beam``).
        beam_size_token: if set, only the top-k labels of each frame extend prefixes with a new
            label (speed); a prefix may always stay on its own last label.
    Returns:
        Hypotheses, best first.
    """
    x = _as_numpy(log_probs).astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"log_probs must be (T, V), got shape {x.shape}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    n_frames, n_labels = x.shape
    neg_inf = _NEG_INF
    logaddexp = _logaddexp
    # prefix -> [log P(prefix, ends in blank), log P(prefix, ends in a label)]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, neg_inf]}
    labels_all = [v for v in range(n_labels) if v != blank]
    for t in range(n_frames):
        if beam_size_token is not None and beam_size_token < n_labels:
            top = np.argpartition(-x[t], beam_size_token - 1)[:beam_size_token]
            labels = [int(v) for v in top if v != blank]
        else:
            labels = labels_all
        frame = x[t].tolist()
        p_blank = frame[blank]
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix: tuple[int, ...], which: int, value: float) -> None:
            if value == neg_inf:  # unreachable, e.g. a repeat with no blank-ending path yet
                return
            entry = nxt.get(prefix)
            if entry is None:
                entry = nxt[prefix] = [neg_inf, neg_inf]
            entry[which] = logaddexp(entry[which], value)

        in_top = set(labels)
        for prefix, (lp_b, lp_nb) in beams.items():
            lp_total = logaddexp(lp_b, lp_nb)
            add(prefix, 0, lp_total + p_blank)
            last = prefix[-1] if prefix else None
            if last is not None and last not in in_top:
                # Staying on the prefix's own last label changes no prefix: it must survive even when
                # that label is outside this frame's top-k (only new labels are pruned by the top-k).
                add(prefix, 1, lp_nb + frame[last])
            for v in labels:
                p = frame[v]
                if v == last:
                    # Staying on the same label continues it; a new copy needs a blank first.
                    add(prefix, 1, lp_nb + p)
                    add(prefix + (v,), 1, lp_b + p)
                else:
                    add(prefix + (v,), 1, lp_total + p)
        ranked = sorted(nxt.items(), key=lambda kv: logaddexp(*kv[1]), reverse=True)
        beams = dict(ranked[:beam])
    hyps = [PhonemeHypothesis(prefix, float(logaddexp(*lp))) for prefix, lp in beams.items()]
    hyps.sort(key=lambda h: h.log_prob, reverse=True)
    return hyps[: (beam if nbest is None else nbest)]
