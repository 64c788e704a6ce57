"""Error rates as the official T15 evaluation computes them, and speaking-mode accuracy.

Word and phoneme error rates are aggregate: the sum of edit distances over all
trials divided by the total number of reference tokens. The mean of
per-sentence rates weights a two-word sentence like a twenty-word one and is
not what the leaderboard reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import editdistance
import numpy as np

from mode_ssm.text import normalize_sentence

UNKNOWN_MODE = -1
MODE_NAMES = ("vocalized", "silent")  # class ids 0 and 1, as in mode_ssm.data.t15.SPEAKING_MODES


def _check_pairs(references: Sequence[Any], hypotheses: Sequence[Any], what: str) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{what}: {len(references)} references but {len(hypotheses)} hypotheses")


def error_rate(n_errors: int, n_ref: int, what: str = "error rate") -> float:
    """The official aggregate: edit distances summed over trials / reference tokens summed over trials."""
    if n_ref <= 0:
        raise ValueError(f"{what}: the references hold no tokens, the error rate is undefined")
    return n_errors / n_ref


def _aggregate(ref_tokens: Sequence[Sequence[Any]], hyp_tokens: Sequence[Sequence[Any]], what: str) -> tuple[float, int, int]:
    n_errors = sum(int(editdistance.eval(list(r), list(h))) for r, h in zip(ref_tokens, hyp_tokens))
    n_ref = sum(len(r) for r in ref_tokens)
    return error_rate(n_errors, n_ref, what), n_errors, n_ref


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


# --------------------------------------------------------------------------- decoded rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Aggregate metrics of decoded rows (:func:`mode_ssm.runtime.decode.decode_split`), as fractions.

    PER and WER are the official aggregates (errors summed over trials / reference
    tokens summed over trials) over every labelled row: a trial the model could
    not align (too few frames for its labels, an infinite CTC loss) still counts
    with all the errors its hypothesis makes. ``loss`` (CTC per token) covers the
    alignable trials; ``n_unalignable`` counts the others, ``n_flagged`` the trials
    the reader kept although they break a training rule (:func:`flag_counts`).
    """
    out: dict[str, float | None] = {"n_trials": float(len(rows)),
                                    "n_flagged": float(sum(bool(r.get("flags")) for r in rows))}
    labelled = [r for r in rows if "n_phonemes" in r]
    n_ph = sum(r["n_phonemes"] for r in labelled)
    if n_ph:
        alignable = [r for r in labelled if math.isfinite(r["ctc_loss"])]
        n_ph_alignable = sum(r["n_phonemes"] for r in alignable)
        out["loss"] = sum(r["ctc_loss"] for r in alignable) / n_ph_alignable if n_ph_alignable else None
        out["n_unalignable"] = float(len(labelled) - len(alignable))
        out["per"] = error_rate(sum(r["phoneme_errors"] for r in labelled), n_ph)
        out["phoneme_accuracy"] = max(0.0, 1.0 - out["per"])
    worded = [r for r in rows if "word_errors" in r]
    n_w = sum(r["n_words"] for r in worded)
    if n_w:
        out["wer"] = error_rate(sum(r["word_errors"] for r in worded), n_w)
    known = [r for r in rows if r["mode_truth"] >= 0 and r["mode_pred"] is not None]
    out["mode_accuracy"] = float(np.mean([r["mode_pred"] == r["mode_truth"] for r in known])) if known else None
    out["mode_accuracy_block"] = block_mode_accuracy(known)
    # what always answering the commoner mode would score: the chance level of mode_accuracy
    out["mode_majority"] = (max(np.mean([r["mode_truth"] == m for r in known]) for m in (0, 1))
                            if known else None)
    return out


def flag_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Trials per training rule broken (``row["flags"]``, ";"-joined), for reports; a trial may count twice."""
    counts: dict[str, int] = {}
    for r in rows:
        for reason in filter(None, str(r.get("flags") or "").split(";")):
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def block_mode_accuracy(rows: list[dict[str, Any]]) -> float | None:
    """Fraction of blocks whose majority-vote trial prediction equals the block's true mode.

    The mode is constant within a block, so a block is the unit a user would
    label; a tie counts as wrong. Rows with unknown truth (-1) are ignored.
    """
    votes: dict[tuple[str, int], list[int]] = {}
    truth: dict[tuple[str, int], int] = {}
    for r in rows:
        if r["mode_truth"] < 0 or r["mode_pred"] is None:
            continue
        key = (r["session"], r["block"])
        votes.setdefault(key, []).append(int(r["mode_pred"]))
        truth[key] = int(r["mode_truth"])
    if not votes:
        return None
    correct = 0
    for key, preds in votes.items():
        counts = np.bincount(preds, minlength=len(MODE_NAMES))
        winner = int(counts.argmax())
        correct += int(counts[winner] * 2 > len(preds) and winner == truth[key])
    return correct / len(votes)
