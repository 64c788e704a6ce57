"""Decode a split and score it: the one function training (val/*, train/wer) and evaluation share.

Per-trial rows are gathered across data-parallel ranks before anything is
aggregated, so metrics cover the whole split, and aggregates follow the official
scoring: total edit distance over total reference length.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable

import editdistance
import numpy as np
import torch
import torch.nn.functional as F

from mode_ssm.decoding.ctc import ctc_greedy
from mode_ssm.phonemes import ids_to_string
from mode_ssm.text import normalize_sentence
from mode_ssm.training.distributed import DistContext, gather_objects

MODE_NAMES = ("vocalized", "silent")


def autocast_for(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# (model output dict, log_probs (B, T', 41), out_lengths (B,)) -> (phoneme ids per trial, sentences or None)
Search = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], tuple[list[list[int]], list[str] | None]]


@torch.no_grad()
def decode_split(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    ctx: DistContext,
    word_decoder: Any | None = None,
    amp: bool = False,
    *,
    search: Search | None = None,
    keep_log_probs: bool = False,
) -> list[dict[str, Any]]:
    """Run the model over ``batches`` and return one row per trial (all ranks' rows).

    By default phonemes are CTC greedy and sentences come from ``word_decoder``;
    ``search`` replaces both (e.g. RNN-T search, see scripts/evaluate.py), so
    every decoder is scored by the same rows and :func:`summarize`.
    ``keep_log_probs`` adds each trial's CTC log-probabilities (T', 41) as
    ``row["log_probs"]`` so word search can be re-run without the model.
    """
    model.eval()
    rows: list[dict[str, Any]] = []
    for batch in batches:
        batch = move_batch(batch, ctx.device)
        with autocast_for(ctx.device, amp):
            out = model(batch["features"], batch["feature_lengths"], batch["day_index"])
        log_probs = out["phoneme_logits"].float().log_softmax(-1)
        out_lengths = out["out_lengths"]
        labelled = batch["phoneme_ids"].numel() > 0
        if labelled:
            ctc = F.ctc_loss(
                log_probs.transpose(0, 1), batch["phoneme_ids"], out_lengths, batch["phoneme_lengths"],
                blank=0, reduction="none", zero_infinity=False,
            )
        if search is None:
            greedy = ctc_greedy(log_probs, out_lengths)
            words = word_decoder.decode_batch(log_probs, out_lengths) if word_decoder is not None else None
        else:
            greedy, words = search(out, log_probs, out_lengths)
        mode_logits = out.get("mode_logits")
        mode_pred = mode_logits.argmax(-1).tolist() if mode_logits is not None else None
        for i in range(len(greedy)):
            row: dict[str, Any] = {
                "session": batch["sessions"][i],
                "block": int(batch["block_nums"][i]),
                "trial": int(batch["trial_nums"][i]),
                "corpus": batch["corpora"][i],
                "predicted_phonemes": ids_to_string(greedy[i]),
                "predicted_sentence": words[i] if words is not None else None,
                "mode_pred": mode_pred[i] if mode_pred is not None else None,
                "mode_truth": int(batch["speaking_mode"][i]),
                "source": batch["sources"][i],  # file:trial key, to put rows back in file order
            }
            if keep_log_probs:
                row["log_probs"] = log_probs[i, : int(out_lengths[i])].cpu().numpy()
            if labelled:
                ref_ids = batch["phoneme_ids"][i, : batch["phoneme_lengths"][i]].tolist()
                row.update(
                    true_phonemes=ids_to_string(ref_ids),
                    phoneme_errors=editdistance.eval(ref_ids, greedy[i]),
                    n_phonemes=len(ref_ids),
                    ctc_loss=float(ctc[i]),
                    true_sentence=batch["sentences"][i],
                )
                if words is not None:
                    ref_words = normalize_sentence(batch["sentences"][i]).split()
                    hyp_words = normalize_sentence(words[i]).split()
                    row.update(word_errors=editdistance.eval(ref_words, hyp_words), n_words=len(ref_words))
            rows.append(row)
    return gather_objects(ctx, rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Aggregate metrics of labelled rows: loss per token, PER, WER, accuracies (fractions)."""
    out: dict[str, float | None] = {"n_trials": float(len(rows))}
    n_ph = sum(r.get("n_phonemes", 0) for r in rows)
    if n_ph:
        out["loss"] = sum(r["ctc_loss"] for r in rows) / n_ph
        out["per"] = sum(r["phoneme_errors"] for r in rows) / n_ph
        out["phoneme_accuracy"] = max(0.0, 1.0 - out["per"])
    n_w = sum(r.get("n_words", 0) for r in rows if "word_errors" in r)
    if n_w:
        out["wer"] = sum(r["word_errors"] for r in rows if "word_errors" in r) / n_w
    known = [r for r in rows if r["mode_truth"] >= 0 and r["mode_pred"] is not None]
    out["mode_accuracy"] = float(np.mean([r["mode_pred"] == r["mode_truth"] for r in known])) if known else None
    out["mode_accuracy_block"] = block_mode_accuracy(known)
    return out


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
