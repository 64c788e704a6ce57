"""Model outputs -> search -> per-trial rows: the one decode function training and evaluation share.

Training's val/* and train/wer, ``scripts/evaluate.py``, ``make_submission.py``
and ``tune_decoder.py`` all decode through :func:`decode_split`; the rows are
aggregated by :func:`mode_ssm.metrics.summarize` (the official scoring: total
edit distance over total reference length). Rows are gathered across
data-parallel ranks before anything is aggregated, so metrics cover the whole split.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable

import editdistance
import torch
import torch.nn.functional as F

from mode_ssm.decoding.ctc import ctc_greedy
from mode_ssm.metrics import per_trial_errors
from mode_ssm.phonemes import ids_to_string
from mode_ssm.runtime.distributed import DistContext, gather_objects
from mode_ssm.runtime.memory import HeapReleaser


def autocast_for(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# (model output dict, log_probs (B, T', 41), out_lengths (B,)) -> (phoneme ids per trial, sentences or None)
Search = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], tuple[list[list[int]], list[str] | None]]


def word_scores(reference: str, hypothesis: str) -> dict[str, int]:
    """A row's word errors on official normalised text, for :func:`mode_ssm.metrics.summarize`."""
    t = per_trial_errors([reference], [hypothesis])[0]
    return {"word_errors": t.n_errors, "n_words": t.n_ref_words}


def scores(ref_ids: list[int], predicted_ids: list[int], sentence: str, hypothesis: str | None,
           ctc_loss: float) -> dict[str, Any]:
    """A labelled row's reference and errors (what :func:`mode_ssm.metrics.summarize` reads); word
    errors only when there is a ``hypothesis``."""
    out: dict[str, Any] = {"true_phonemes": ids_to_string(ref_ids), "n_phonemes": len(ref_ids),
                           "phoneme_errors": editdistance.eval(ref_ids, predicted_ids), "ctc_loss": ctc_loss,
                           "true_sentence": sentence}
    if hypothesis is not None:
        out.update(word_scores(sentence, hypothesis))
    return out


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
    release_heap: HeapReleaser | None = None,
) -> list[dict[str, Any]]:
    """Run the model over ``batches`` and return one row per trial (all ranks' rows).

    By default phonemes are CTC greedy and sentences come from ``word_decoder``;
    ``search`` replaces both (e.g. RNN-T search, see scripts/evaluate.py), so
    every decoder is scored by the same rows and :func:`mode_ssm.metrics.summarize`.
    ``keep_log_probs`` adds each trial's CTC log-probabilities (T', 41) as
    ``row["log_probs"]`` so word search can be re-run without the model.
    ``release_heap`` is called after every batch to hand freed heap memory back to the OS
    (:mod:`mode_ssm.runtime.memory`: batches grow along a length-sorted split); None: one
    with the default threshold for this call.
    """
    model.eval()
    head = getattr(getattr(model, "module", model), "mode_head", None)
    # a model trained where the data supported no two-mode split predicts no mode (its head learnt none)
    predicts_mode = head is None or bool(head.mode_signal)
    rows: list[dict[str, Any]] = []
    release_heap = HeapReleaser() if release_heap is None else release_heap
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
        mode_pred = mode_logits.argmax(-1).tolist() if mode_logits is not None and predicts_mode else None
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
                "flags": ";".join(batch["flags"][i]) if "flags" in batch else "",
            }
            if keep_log_probs:
                row["log_probs"] = log_probs[i, : int(out_lengths[i])].cpu().numpy()
            if labelled:
                ref_ids = batch["phoneme_ids"][i, : batch["phoneme_lengths"][i]].tolist()
                row.update(scores(ref_ids, greedy[i], batch["sentences"][i],
                                  words[i] if words is not None else None, float(ctc[i])))
            rows.append(row)
        del out, log_probs
        release_heap()
    return gather_objects(ctx, rows)
