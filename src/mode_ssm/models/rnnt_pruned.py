"""Pruned RNN-T loss: the transducer loss on a band of the lattice, in plain PyTorch.

The full RNN-T loss (``rnnt_loss.py``) needs the joiner's logits at every
lattice node (t, u): a (B, T, U+1, V) tensor, and before it the joiner's hidden
layer, (B, T, U+1, H). With B 8, T 200, U 60, H 128 that hidden layer alone is
50 MB in float32, and autograd keeps about three such tensors for backward.
Pruned RNN-T (Kuang, Guo, Kang, Lin, Luo, Yao, Povey: "Pruned RNN-T for fast,
memory-efficient ASR training", Interspeech 2022; the method of k2/fast_rnnt)
keeps only a band of S consecutive label positions per frame:

1. **Simple joint.** The encoder output and the predictor output are each
   projected linearly to the V classes, ``am`` (B, T, V) and ``lm`` (B, U+1, V),
   and the joint is their sum, ``z[t, u] = am[t] + lm[u]``. Its two lattice
   log-probabilities per node (blank, and the next label) need only the
   normaliser ``log sum_v exp(am[t, v] + lm[u, v])``, which is a matrix
   product of ``exp(am - max)`` and ``exp(lm - max)``: (B, T, U+1) memory, the
   (B, T, U+1, V) joint is never built. Its transducer loss is the *simple loss*.
2. **Pruning bounds.** The gradient of the simple log-likelihood with respect
   to each transition's log-probability is that transition's occupancy (the
   probability that a path takes it), so blank + label occupancy of a node is
   the probability that a path visits it. For each frame t the band start
   ``s_t`` is the start of the S consecutive positions with the largest summed
   occupancy, then adjusted so a path can run through the bands: ``s_0 = 0``,
   the last frame's band holds the final node (T_b - 1, U_b), ``s_t`` is
   non-decreasing and rises by at most S - 1 a frame (so neighbouring bands
   overlap), and ``0 <= s_t <= max(U_b + 1 - S, 0)``. Where U + 1 <= S the band
   is the whole label axis and the pruned loss is exactly the full loss.
3. **Pruned loss.** The real joiner (``heads.Joiner``: tanh of the projected
   encoder and predictor outputs, then a linear layer) is evaluated only at the
   band's nodes, (B, T, S, H) and (B, T, S, V), and the transducer loss is taken
   on the lattice in which every node outside the band has probability 0. The
   per-node log-probabilities are scattered into a (B, T, U+1) grid of -inf
   (scalars only, no V or H axis) and run through the same anti-diagonal
   alpha/beta recursions as the full loss.

The training loss is ``simple_scale * simple + pruned_scale * pruned``. The
simple loss trains the projections that place the bands (and, through them, the
encoder and predictor); the pruned loss trains the joiner.

Properties worth knowing:

- The pruned lattice holds a subset of the full lattice's paths, with the same
  transition probabilities on them, so for the same joiner
  ``pruned loss >= full loss``; they are equal when the bands cover every path
  with probability mass (S >= U + 1, or a simple joint that locates the
  alignment well). It is an upper bound, not an estimate.
- A band of S positions lets a frame emit at most S - 1 labels, so a sequence
  with U_b > T_b * (S - 1) has no path: its pruned loss is +inf (reported as
  non-finite, like an infeasible CTC alignment). With S = 5 and 80 ms frames that
  is more than 4 phonemes per frame, never the case for speech (and CTC's own
  feasibility, T >= U, already rules it out).
- Memory: O(B * T * S * (H + V)) for the joiner, O(B * T * (U+1)) scalars for the
  lattice and the simple normaliser, instead of O(B * T * (U+1) * (H + V)).
- Cost: the simple lattice needs alpha and beta in its forward (for the bounds),
  the pruned lattice alpha forward and beta in backward: four T + U step
  recursions in all, against two for the full loss; each step is over (B, U+1)
  scalars only.
- The normaliser trick underflows where, for some (t, u), every class v has
  ``am[t, v] + lm[u, v]`` far (~43 nats in float32) below ``max am[t] + max lm[u]``
  (huge, disagreeing logits); those nodes, and only those, get an exact
  logsumexp over V instead, so the loss stays exact and memory grows only by
  (number of such nodes) x V. Not the icefall
  recipe's extras: no "lm-only / am-only" smoothing of the simple loss, and no
  built-in warm-up of the scales (configure them per run).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mode_ssm.models.rnnt_loss import (
    _label_mask,
    _mask_outside_lattice,
    emitted_symbols,
    transducer_alpha,
    transducer_beta,
)

__all__ = [
    "band_width",
    "check_transducer_inputs",
    "infer_target_lengths",
    "lattice_log_likelihood",
    "simple_joint_log_probs",
    "simple_rnnt",
    "prune_starts",
    "band_positions",
    "pruned_rnnt",
]


def band_width(prune_range: int, max_labels: int) -> int:
    """S actually used: ``prune_range`` or, when that is wider, the whole label axis U + 1."""
    if prune_range < 2:
        raise ValueError(f"prune_range must be >= 2 (a band of 1 position admits no label), got {prune_range}")
    return min(int(prune_range), max_labels + 1)


def infer_target_lengths(targets: Tensor, blank: int = 0) -> Tensor:
    """(B, U) zero-padded targets -> (B,) index of the last non-blank label + 1 (0 if none).

    Targets from ``losses.trim_targets`` are blank past each length and never
    blank within it, so this is the target length; a blank inside a sequence
    is caught by ``check_transducer_inputs``.
    """
    if targets.shape[1] == 0:
        return torch.zeros(targets.shape[0], dtype=torch.long, device=targets.device)
    position = torch.arange(1, targets.shape[1] + 1, device=targets.device)
    return ((targets != blank).long() * position).amax(dim=1)


def check_transducer_inputs(
    targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor, max_frames: int, vocab: int, blank: int
) -> None:
    """The checks of ``rnnt_loss`` for a lattice given by its sizes: raises ValueError on bad lengths or labels."""
    batch, max_labels = targets.shape
    if logit_lengths.shape != (batch,) or target_lengths.shape != (batch,):
        raise ValueError("logit_lengths and target_lengths must both have shape (batch,)")
    if not 0 <= blank < vocab:
        raise ValueError(f"blank={blank} is not a class of a {vocab}-way joiner")
    if batch == 0:
        return
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > max_frames:
        raise ValueError(f"logit_lengths must lie in [1, {max_frames}], got {logit_lengths.tolist()}")
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > max_labels:
        raise ValueError(f"target_lengths must lie in [0, {max_labels}], got {target_lengths.tolist()}")
    labels = targets[_label_mask(target_lengths.to(targets.device), max_labels)]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= vocab):
        raise ValueError(f"target labels must lie in [0, {vocab}), got [{int(labels.min())}, {int(labels.max())}]")
    if bool((labels == blank).any()):
        raise ValueError(f"targets contain the blank index {blank} within their target_lengths")


# ---------------------------------------------------------------------------
# The lattice from per-node log-probabilities


class _LatticeLogLikelihood(torch.autograd.Function):
    """log P(y | x) of a transducer lattice given its transition log-probabilities.

    The gradient with respect to each transition's log-probability is its
    occupancy. With ``occupancy=True`` beta and the occupancies are computed in
    forward and returned (the pruning bounds need them; backward reuses them);
    otherwise beta waits for backward.
    """

    @staticmethod
    def forward(ctx, blank_lp, label_lp, logit_lengths, target_lengths, occupancy: bool):
        alpha = transducer_alpha(blank_lp, label_lp)
        rows = torch.arange(blank_lp.shape[0], device=blank_lp.device)
        last = logit_lengths - 1
        log_likelihood = alpha[rows, last, target_lengths] + blank_lp[rows, last, target_lengths]
        if occupancy:
            blank_occ, label_occ = _occupancy(blank_lp, label_lp, logit_lengths, target_lengths, alpha, log_likelihood)
            ctx.save_for_backward(blank_occ, label_occ)
            ctx.mark_non_differentiable(blank_occ, label_occ)
            ctx.have_occupancy = True
            return log_likelihood, blank_occ, label_occ
        ctx.save_for_backward(blank_lp, label_lp, logit_lengths, target_lengths, alpha, log_likelihood)
        ctx.have_occupancy = False
        return log_likelihood

    @staticmethod
    def backward(ctx, grad, *_unused):
        if ctx.have_occupancy:
            blank_occ, label_occ = ctx.saved_tensors
        else:
            blank_occ, label_occ = _occupancy(*ctx.saved_tensors)
        g = grad[:, None, None].to(blank_occ.dtype)
        return blank_occ * g, label_occ * g, None, None, None


def _occupancy(blank_lp, label_lp, logit_lengths, target_lengths, alpha, log_likelihood) -> tuple[Tensor, Tensor]:
    """Probability that a path takes each blank (B, T, U+1) and each label (B, T, U) transition."""
    beta = transducer_beta(blank_lp, label_lp, logit_lengths, target_lengths)
    path = alpha - log_likelihood[:, None, None]
    blank_occ = torch.exp(path + blank_lp + beta[:, 1:])
    label_occ = torch.exp(path[:, :, :-1] + label_lp + beta[:, :-1, 1:])
    return blank_occ, label_occ


def lattice_log_likelihood(
    blank_lp: Tensor, label_lp: Tensor, logit_lengths: Tensor, target_lengths: Tensor, occupancy: bool = False
):
    """blank_lp (B, T, U+1), label_lp (B, T, U), masked to each lattice -> log-likelihood (B,).

    With ``occupancy=True`` returns ``(log_likelihood, blank_occupancy, label_occupancy)``,
    the occupancies detached.
    """
    return _LatticeLogLikelihood.apply(blank_lp, label_lp, logit_lengths, target_lengths, occupancy)


# ---------------------------------------------------------------------------
# 1. The simple (additive) joint and its loss


def simple_joint_log_probs(am: Tensor, lm: Tensor, symbols: Tensor) -> tuple[Tensor, Tensor]:
    """Lattice log-probabilities of the additive joint ``z[t, u] = am[t] + lm[u]``, without building it.

    am (B, T, V), lm (B, U+1, V), symbols (B, U+1, 2) from ``emitted_symbols`` ->
    blank (B, T, U+1) and label (B, T, U) log-probabilities (unmasked). The
    normaliser ``logsumexp_v(am[t, v] + lm[u, v])`` is ``log(exp(am - a) @ exp(lm - l)^T) + a + l``
    with a, l the per-row maxima: a (B, T, V) x (B, V, U+1) product (exact logsumexp at the
    nodes where that product underflows).
    """
    am_max = am.detach().amax(dim=-1, keepdim=True)  # a shift of the normaliser: exact to treat as constant
    lm_max = lm.detach().amax(dim=-1, keepdim=True)
    product = torch.matmul((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2))  # (B, T, U+1)
    # Below sqrt(tiny) the sum may have lost its terms to underflow (far-apart maxima, huge
    # logits): those nodes get the exact logsumexp, over (nodes, V) for them alone.
    floor = torch.finfo(product.dtype).tiny ** 0.5
    normaliser = product.clamp(min=floor).log() + am_max + lm_max.transpose(1, 2)
    underflow = (product < floor).nonzero(as_tuple=True)
    if underflow[0].numel():
        b, t, u = underflow
        normaliser = normaliser.index_put(underflow, torch.logsumexp(am[b, t] + lm[b, u], dim=-1))
    batch, frames, _ = am.shape
    nodes = lm.shape[1]
    blank = symbols[:, :, 0]  # (B, U+1); the same class everywhere
    next_label = symbols[:, :, 1]
    am_blank = torch.gather(am, 2, blank[:, None, :].expand(batch, frames, nodes))
    am_label = torch.gather(am, 2, next_label[:, None, :].expand(batch, frames, nodes))
    lm_blank = torch.gather(lm, 2, blank[..., None]).transpose(1, 2)  # (B, 1, U+1)
    lm_label = torch.gather(lm, 2, next_label[..., None]).transpose(1, 2)
    blank_lp = am_blank + lm_blank - normaliser
    label_lp = (am_label + lm_label - normaliser)[:, :, :-1]
    return blank_lp, label_lp


def simple_rnnt(
    am: Tensor, lm: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor, blank: int = 0
) -> tuple[Tensor, Tensor]:
    """The simple loss and where its paths go.

    am (B, T, V) encoder projection, lm (B, U+1, V) predictor projection,
    targets (B, U), lengths (B,) -> (nll (B,), node_occupancy (B, T, U+1)):
    the transducer negative log-likelihood under the additive joint, and the
    probability that a path visits each node (detached; 0 outside the lattice).
    Computed in float32 (float64 if ``am`` is float64).
    """
    dtype = torch.float64 if am.dtype == torch.float64 else torch.float32
    am, lm = am.to(dtype), lm.to(dtype)
    logit_lengths = logit_lengths.to(device=am.device, dtype=torch.long)
    target_lengths = target_lengths.to(device=am.device, dtype=torch.long)
    check_transducer_inputs(targets, logit_lengths, target_lengths, am.shape[1], am.shape[2], blank)
    symbols = emitted_symbols(targets.to(am.device), target_lengths, blank)
    blank_lp, label_lp = simple_joint_log_probs(am, lm, symbols)
    blank_lp, label_lp = _mask_outside_lattice(blank_lp, label_lp, logit_lengths, target_lengths)
    log_likelihood, blank_occ, label_occ = lattice_log_likelihood(
        blank_lp, label_lp, logit_lengths, target_lengths, occupancy=True
    )
    node_occupancy = torch.nan_to_num(blank_occ + F.pad(label_occ, (0, 1)), nan=0.0, posinf=0.0)
    return -log_likelihood, node_occupancy


# ---------------------------------------------------------------------------
# 2. Pruning bounds


def prune_starts(node_occupancy: Tensor, logit_lengths: Tensor, target_lengths: Tensor, width: int) -> Tensor:
    """Band starts s_t (B, T) int64 from the simple lattice's node occupancy (B, T, U+1).

    ``width`` = S (at most U + 1, see ``band_width``). For each frame the
    raw start maximises the occupancy summed over positions s .. s+S-1, among
    ``0 <= s <= top = max(U_b + 1 - S, 0)``; then the starts are clamped to the
    envelope a path through the bands can follow (``s_t <= t (S-1)`` from the
    start node, ``s_t >= top - (T_b - 1 - t)(S-1)`` to still reach the final
    node), made non-decreasing (running maximum) and, going backwards, raised
    where they would jump by more than S - 1 from one frame to the next. The
    result has s_0 = 0, s_{T_b-1} = top, 0 <= s_{t+1} - s_t <= S - 1, and
    ``s_t = top`` on padding frames. (Where even the envelope is empty,
    U_b > T_b (S-1), no band can hold a path and the loss is +inf.)
    """
    batch, frames, nodes = node_occupancy.shape
    if not 1 <= width <= nodes:  # 1 only where U = 0 (band_width never goes below 2 otherwise)
        raise ValueError(f"width must lie in [1, U+1 = {nodes}], got {width} (use band_width)")
    device = node_occupancy.device
    step = width - 1
    logit_lengths = logit_lengths.to(device=device, dtype=torch.long)[:, None]
    top = (target_lengths.to(device=device, dtype=torch.long) + 1 - width).clamp(min=0)[:, None]  # (B, 1)
    cumulative = F.pad(node_occupancy.detach().cumsum(dim=-1), (1, 0))
    window = cumulative[..., width:] - cumulative[..., :-width]  # (B, T, U+2-S): occupancy of s .. s+S-1
    start = torch.arange(window.shape[-1], device=device)
    window = window.masked_fill(start > top[:, :, None], -math.inf)
    t = torch.arange(frames, device=device)[None, :]
    raw = torch.where(t < logit_lengths, window.argmax(dim=-1), top)
    lower = (top - (logit_lengths - 1 - t) * step).clamp(min=0)
    upper = torch.minimum(top, t * step)
    s = torch.minimum(torch.maximum(raw, lower), upper)
    s = torch.cummax(s, dim=1).values
    # s_t = max over t' >= t of (s_t' - (t' - t) * step): no rise of more than `step` a frame
    s = torch.flip(torch.cummax(torch.flip(s - t * step, [1]), dim=1).values, [1]) + t * step
    return s


def band_positions(starts: Tensor, width: int) -> Tensor:
    """(B, T) band starts -> (B, T, S) label positions s_t + k, k < S."""
    return starts[..., None] + torch.arange(width, device=starts.device)


# ---------------------------------------------------------------------------
# 3. The loss on the pruned lattice


def pruned_rnnt(
    band_logits: Tensor,
    targets: Tensor,
    starts: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
) -> Tensor:
    """Transducer negative log-likelihood (B,) on the lattice pruned to the bands.

    band_logits (B, T, S, V): joiner logits at nodes (t, starts[t] + k);
    targets (B, U); starts (B, T) from ``prune_starts`` (S <= U + 1). Nodes
    outside the band have probability 0: a blank into such a node leads to a
    dead end (it has no outgoing transition), and the label out of the band's top
    position is not allowed. Computed in float32 (float64 for float64 logits).
    """
    dtype = torch.float64 if band_logits.dtype == torch.float64 else torch.float32
    band_logits = band_logits.to(dtype)
    batch, frames, width, vocab = band_logits.shape
    nodes = targets.shape[1] + 1
    if not 1 <= width <= nodes or starts.shape != (batch, frames):
        raise ValueError(f"band_logits {tuple(band_logits.shape)} and starts {tuple(starts.shape)} do not fit "
                         f"targets {tuple(targets.shape)} (need 1 <= S <= U + 1 and starts (B, T))")
    device = band_logits.device
    logit_lengths = logit_lengths.to(device=device, dtype=torch.long)
    target_lengths = target_lengths.to(device=device, dtype=torch.long)
    check_transducer_inputs(targets, logit_lengths, target_lengths, frames, vocab, blank)
    starts = starts.to(device=device, dtype=torch.long)
    if int(starts.min()) < 0 or int(starts.max()) > nodes - width:
        raise ValueError(f"band starts must lie in [0, U + 1 - S = {nodes - width}]")
    positions = band_positions(starts, width)  # (B, T, S)
    next_label = emitted_symbols(targets.to(device), target_lengths, blank)[:, :, 1]  # (B, U+1)
    rows = torch.arange(batch, device=device)[:, None, None]
    index = torch.stack([torch.full_like(positions, blank), next_label[rows, positions]], dim=-1)  # (B, T, S, 2)
    log_probs = torch.gather(band_logits, -1, index) - torch.logsumexp(band_logits, dim=-1, keepdim=True)
    blank_lp = band_logits.new_full((batch, frames, nodes), -math.inf).scatter(2, positions, log_probs[..., 0])
    # the top position's label would leave the band: only k < S - 1 emit a label
    label_lp = band_logits.new_full((batch, frames, nodes - 1), -math.inf).scatter(
        2, positions[..., :-1], log_probs[..., :-1, 1]
    )
    blank_lp, label_lp = _mask_outside_lattice(blank_lp, label_lp, logit_lengths, target_lengths)
    return -lattice_log_likelihood(blank_lp, label_lp, logit_lengths, target_lengths)
