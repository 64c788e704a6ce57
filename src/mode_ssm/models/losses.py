"""Training losses: CTC, RNN-T, speaking mode, flow-bridge denoising; weighted per curriculum stage.

CTC and RNN-T are normalised per target token (sum over the batch / total
phoneme labels), so long and short sentences weigh by how much they say and
the two losses are on the same scale. Infeasible alignments (too few frames
for the labels) come out as inf, not zero, and are reported in ``nonfinite``
so the training loop can skip the batch and count it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mode_ssm.models.rnnt_loss import rnnt_loss
from mode_ssm.phonemes import BLANK

LOSS_NAMES = ("ctc", "rnnt", "mode", "denoise")  # the losses a curriculum stage weights


def ctc_loss_per_token(
    phoneme_logits: torch.Tensor, out_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
) -> torch.Tensor:
    """CTC negative log-likelihood summed over the batch / total target tokens (scalar).

    phoneme_logits (B, T, V), out_lengths (B,), targets (B, U) zero-padded,
    target_lengths (B,). zero_infinity is off: an infeasible trial gives inf.
    """
    log_probs = rearrange(F.log_softmax(phoneme_logits.float(), dim=-1), "b t v -> t b v")
    total = F.ctc_loss(
        log_probs, targets, out_lengths, target_lengths, blank=BLANK, reduction="sum", zero_infinity=False
    )
    return total / target_lengths.sum().clamp(min=1)


def trim_targets(phoneme_ids: torch.Tensor, phoneme_lengths: torch.Tensor) -> torch.Tensor:
    """phoneme_ids (B, U_pad) -> (B, max(phoneme_lengths)) with every position past a trial's length set to 0.

    The RNN-T joint is built over U + 1 predictor steps, so padding columns cost
    memory; and labels past the length must never be read as targets.
    """
    u_max = int(phoneme_lengths.max()) if phoneme_lengths.numel() else 0
    ids = phoneme_ids[:, :u_max]
    keep = torch.arange(u_max, device=ids.device)[None, :] < phoneme_lengths[:, None]
    return ids * keep.to(ids.dtype)


def _pruned_rnnt_per_token(
    head: nn.Module, outputs: Mapping[str, torch.Tensor], target_lengths: torch.Tensor
) -> torch.Tensor:
    """Pruned RNN-T (``rnnt_loss: pruned``): (simple_scale * simple + pruned_scale * pruned) summed over
    the batch / total target tokens, from the per-sequence losses forward computed."""
    used = outputs["rnnt_target_lengths"]
    if not torch.equal(used.cpu(), target_lengths.cpu()):
        raise ValueError(f"the pruned RNN-T loss was computed for target lengths {used.tolist()}, not the batch's "
                         f"phoneme_lengths {target_lengths.tolist()}: call the model with "
                         "rnnt_targets=trim_targets(phoneme_ids, phoneme_lengths) (no blank within a length)")
    total = head.simple_loss_scale * outputs["rnnt_simple_nll"].float().sum() \
        + head.pruned_loss_scale * outputs["rnnt_pruned_nll"].float().sum()
    return total / target_lengths.sum().clamp(min=1)


def compute_losses(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    outputs: Mapping[str, torch.Tensor | None],
    weights: Mapping[str, float],
    mode_targets: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | list[str] | None]:
    """Weighted losses of one batch.

    batch: ``phoneme_ids`` (B, U) zero-padded, ``phoneme_lengths`` (B,) (``speaking_mode``
    is never read: it is simulator ground truth for evaluation only).
    outputs: ``model(...)``'s dict, called with ``rnnt_targets`` for the RNN-T loss (the full joint,
    or with ``rnnt_loss: pruned`` the simple and pruned losses per sequence, weighted by the model's
    ``rnnt_simple_loss_scale`` and ``rnnt_pruned_loss_scale``) and
    ``denoise=True`` for the denoising loss (both are computed inside forward, where
    DistributedDataParallel sees their parameters). weights: ``ctc``, ``rnnt``, ``mode``, ``denoise``
    (missing = 0; a component with weight 0 is not computed and returned as None).
    mode_targets (B,): pseudo-labels 0 vocalized / 1 silent, -1 ignored.

    Returns ``total`` (scalar, sum of weight * loss), each loss (scalar or None) and
    ``nonfinite``: names of computed losses that are NaN or inf.
    A batch with no usable mode target gives mode loss 0 (nothing to learn, not an error).
    Asking for a loss the model has no part for (RNN-T, mode or denoise on the
    GRU baseline, denoise without a flow bridge) raises ValueError.
    """
    unknown = set(weights) - set(LOSS_NAMES)
    if unknown:
        raise ValueError(f"unknown loss weight(s) {sorted(unknown)}; known: {LOSS_NAMES}")
    w = {name: float(weights.get(name, 0.0)) for name in LOSS_NAMES}
    targets, target_lengths = batch["phoneme_ids"], batch["phoneme_lengths"]
    out_lengths = outputs["out_lengths"]
    losses: dict[str, torch.Tensor | None] = dict.fromkeys(LOSS_NAMES)

    if w["ctc"]:
        losses["ctc"] = ctc_loss_per_token(outputs["phoneme_logits"], out_lengths, targets, target_lengths)

    if w["rnnt"]:
        if getattr(model, "rnnt", None) is None:
            raise ValueError(f"rnnt weight {w['rnnt']} but {type(model).__name__} has no RNN-T head")
        if outputs.get("rnnt_pruned_nll") is not None:
            losses["rnnt"] = _pruned_rnnt_per_token(model.rnnt, outputs, target_lengths)
        else:
            trimmed = trim_targets(targets, target_lengths)
            joint = outputs.get("rnnt_joint")
            if joint is None:  # computed here, its parameters would be used outside the (DDP) forward
                raise ValueError("rnnt weight > 0 but the outputs hold no rnnt_joint: call the model with "
                                 "rnnt_targets=trim_targets(phoneme_ids, phoneme_lengths) (with rnnt_loss: pruned "
                                 "its forward returns rnnt_simple_nll and rnnt_pruned_nll instead)")
            losses["rnnt"] = rnnt_loss(
                joint.float(), trimmed, out_lengths, target_lengths, blank=BLANK, reduction="mean_per_token"
            )

    if w["mode"]:
        if outputs.get("mode_logits") is None:
            raise ValueError(f"mode weight {w['mode']} but {type(model).__name__} has no mode head")
        logits = outputs["mode_logits"]
        if mode_targets is None or not bool((mode_targets >= 0).any()):
            losses["mode"] = logits.sum() * 0.0  # keeps the graph connected for DDP
        else:
            losses["mode"] = F.cross_entropy(logits.float(), mode_targets.to(logits.device), ignore_index=-1)

    if w["denoise"]:
        if getattr(model, "flow_bridge", None) is None:
            raise ValueError(f"denoise weight {w['denoise']} but {type(model).__name__} has no flow bridge")
        if outputs.get("denoise_loss") is None:
            raise ValueError("denoise weight > 0 but the outputs hold no denoise_loss: call the model with denoise=True")
        losses["denoise"] = outputs["denoise_loss"]

    computed = {k: v for k, v in losses.items() if v is not None}
    nonfinite = [k for k, v in computed.items() if not math.isfinite(float(v.detach()))]
    total = sum(w[k] * v for k, v in computed.items()) if computed else torch.zeros(())
    return {"total": total, **losses, "nonfinite": nonfinite}
