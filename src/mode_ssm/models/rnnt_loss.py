"""RNN-T (transducer) loss in plain PyTorch.

For one sequence with T encoder frames and U target labels, the joiner gives a
distribution over V symbols (blank included) at every lattice node (t, u):
t frames consumed, u labels emitted. From (t, u) a path either emits blank and
moves to (t+1, u), or emits label y_{u+1} and moves to (t, u+1). Every
complete path ends with a blank from (T-1, U); the loss is -log of the summed
probability of all paths (Graves, "Sequence transduction with recurrent
neural networks", 2012).

The forward variable alpha and backward variable beta are computed one
anti-diagonal (t + u = const) at a time, every node of a diagonal at once, so
the Python loop runs T + U times whatever the batch size. The gradient with
respect to the logits is written out in a ``torch.autograd.Function`` from
alpha and beta (the occupancy of each transition), not left to autograd.
On one CPU thread, batch 16, T 150, U 40, V 41, forward and backward took
32-42 ms (best of 10-20 runs on a busy shared machine;
``python benchmarks/encoder_scaling.py --parts rnnt`` measures it again).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("none", "sum", "mean", "mean_per_token")


def rnnt_loss(
    logits: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: str = "mean_per_token",
) -> Tensor:
    """Negative log-likelihood of the targets under the transducer lattice.

    logits: (batch, T, U+1, V) unnormalised joiner outputs
    targets: (batch, U) int64; entries at u >= target_lengths[b] are never read
    logit_lengths: (batch,) frames per sequence, 1 <= T_b <= T
    target_lengths: (batch,) labels per sequence, 0 <= U_b <= U
    reduction: "none" -> (batch,); "sum" -> (); "mean" -> () mean over sequences;
        "mean_per_token" -> () summed loss / total target labels (at least 1), on
        the same per-token scale as a CTC loss.

    Computed in float32 (float64 if the logits are float64). Raises ValueError
    on lengths or labels no lattice can hold, rather than returning 0 or NaN.
    A non-finite logit inside a lattice gives that sequence a non-finite loss
    (like CTC's infeasible alignments): the trainer counts it and skips the step.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    _check_inputs(logits, targets, logit_lengths, target_lengths, blank)
    logit_lengths = logit_lengths.to(device=logits.device, dtype=torch.long)
    target_lengths = target_lengths.to(device=logits.device, dtype=torch.long)

    symbols = emitted_symbols(targets.to(logits.device), target_lengths, blank)
    log_likelihood = _TransducerLogLikelihood.apply(logits, symbols, logit_lengths, target_lengths)
    losses = -log_likelihood  # NaN/inf where a lattice holds a non-finite logit, as CTC: the caller skips it
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    return losses.sum() / target_lengths.sum().clamp(min=1)


def _check_inputs(
    logits: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor, blank: int
) -> None:
    if logits.dim() != 4:
        raise ValueError(f"logits must be (batch, T, U+1, V), got shape {tuple(logits.shape)}")
    batch, max_frames, max_nodes, vocab = logits.shape
    max_labels = max_nodes - 1
    if targets.shape != (batch, max_labels):
        raise ValueError(
            f"targets must be (batch, U) = {(batch, max_labels)} for logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    if logit_lengths.shape != (batch,) or target_lengths.shape != (batch,):
        raise ValueError("logit_lengths and target_lengths must both have shape (batch,)")
    if not 0 <= blank < vocab:
        raise ValueError(f"blank={blank} is not a class of a {vocab}-way joiner")
    if batch == 0:
        return
    if int(logit_lengths.min()) < 1:
        raise ValueError(f"every logit_length must be >= 1 (no lattice has 0 frames), got {logit_lengths.tolist()}")
    if int(logit_lengths.max()) > max_frames:
        raise ValueError(f"logit_lengths {logit_lengths.tolist()} exceed the {max_frames} frames of logits")
    if int(target_lengths.min()) < 0:
        raise ValueError(f"target_lengths must be >= 0, got {target_lengths.tolist()}")
    if int(target_lengths.max()) > max_labels:
        raise ValueError(
            f"target_lengths {target_lengths.tolist()} exceed U = {max_labels}, the label axis of logits minus one"
        )
    in_target = _label_mask(target_lengths.to(targets.device), max_labels)
    labels = targets[in_target]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= vocab):
        raise ValueError(
            f"target labels must lie in [0, {vocab}), got range [{int(labels.min())}, {int(labels.max())}]"
        )
    if bool((labels == blank).any()):
        raise ValueError(f"targets contain the blank index {blank} within their target_lengths")


def _label_mask(target_lengths: Tensor, max_labels: int) -> Tensor:
    """(batch,) -> (batch, max_labels) bool, True where u < target_length."""
    return torch.arange(max_labels, device=target_lengths.device)[None, :] < target_lengths[:, None]


def emitted_symbols(targets: Tensor, target_lengths: Tensor, blank: int = 0) -> Tensor:
    """The two symbols each lattice node can emit: blank, and the next label.

    targets: (batch, U); target_lengths: (batch,). Returns (batch, U+1, 2) int64:
    ``[..., u, 0] = blank``, ``[..., u, 1] = targets[u]`` for u < U_b. Where there
    is no next label (u >= U_b) the second entry is blank too; the lattice gives
    that transition no probability, so it never counts.
    """
    next_label = targets.long().masked_fill(~_label_mask(target_lengths, targets.shape[1]), blank)
    next_label = F.pad(next_label, (0, 1), value=blank)
    return torch.stack([torch.full_like(next_label, blank), next_label], dim=-1)


def _to_diagonals(grid: Tensor, n_diagonals: int) -> Tensor:
    """Skew a lattice so each row is one anti-diagonal.

    grid: (batch, T, W) -> (batch, n_diagonals, W) with
    ``out[b, d, u] = grid[b, d - u, u]`` where 0 <= d - u < T, else -inf.
    """
    batch, frames, width = grid.shape
    d = torch.arange(n_diagonals, device=grid.device)[:, None]
    u = torch.arange(width, device=grid.device)[None, :]
    t = d - u  # (n_diagonals, W)
    inside = (t >= 0) & (t < frames)
    index = t.clamp(0, frames - 1).expand(batch, n_diagonals, width)
    return torch.gather(grid, 1, index).masked_fill(~inside, -math.inf)


def _from_diagonals(diagonals: Tensor, frames: int) -> Tensor:
    """Inverse of ``_to_diagonals``: (batch, D, W) -> (batch, frames, W),
    ``out[b, t, u] = diagonals[b, t + u, u]`` (needs D >= frames + W - 1)."""
    batch, _, width = diagonals.shape
    t = torch.arange(frames, device=diagonals.device)[:, None]
    u = torch.arange(width, device=diagonals.device)[None, :]
    index = (t + u).expand(batch, frames, width)
    return torch.gather(diagonals, 1, index)


def _mask_outside_lattice(
    blank_log_probs: Tensor, label_log_probs: Tensor, logit_lengths: Tensor, target_lengths: Tensor
) -> tuple[Tensor, Tensor]:
    """Set transitions outside each sequence's own lattice to -inf.

    blank_log_probs: (batch, T, U+1), label_log_probs: (batch, T, U). A blank
    is allowed at t < T_b, u <= U_b; a label at t < T_b, u < U_b. Afterwards
    no path through padding has any probability, and nothing in padding can
    reach the gradient.
    """
    _, frames, nodes = blank_log_probs.shape
    t = torch.arange(frames, device=blank_log_probs.device)[None, :, None]
    u = torch.arange(nodes, device=blank_log_probs.device)[None, None, :]
    in_frames = t < logit_lengths[:, None, None]
    blank_ok = in_frames & (u <= target_lengths[:, None, None])
    label_ok = in_frames & (u[..., :-1] < target_lengths[:, None, None])
    return blank_log_probs.masked_fill(~blank_ok, -math.inf), label_log_probs.masked_fill(~label_ok, -math.inf)


def transducer_alpha(blank_log_probs: Tensor, label_log_probs: Tensor) -> Tensor:
    """Forward variable: log-probability of reaching each node.

    blank_log_probs: (batch, T, U+1), label_log_probs: (batch, T, U), both
    masked to each sequence's lattice. Returns alpha (batch, T, U+1) with
    alpha[0, 0] = 0 and
    alpha[t, u] = logaddexp(alpha[t-1, u] + blank[t-1, u], alpha[t, u-1] + label[t, u-1]).
    """
    batch, frames, nodes = blank_log_probs.shape
    n_diagonals = frames + nodes - 1
    blank_diag = _to_diagonals(blank_log_probs, n_diagonals)
    # Column u holds label[t, u-1], the label that enters node (t, u); column 0 none.
    label_diag = _to_diagonals(F.pad(label_log_probs, (1, 0), value=-math.inf), n_diagonals)
    # A leading column that stays -inf makes alpha[t, u-1] a shifted view, not a copy.
    alpha = blank_log_probs.new_full((batch, n_diagonals, nodes + 1), -math.inf)
    alpha[:, 0, 1] = 0.0
    for d in range(1, n_diagonals):
        from_blank = alpha[:, d - 1, 1:] + blank_diag[:, d - 1]  # (t-1, u) -> (t, u)
        from_label = alpha[:, d - 1, :-1] + label_diag[:, d]  # (t, u-1) -> (t, u)
        torch.logaddexp(from_blank, from_label, out=alpha[:, d, 1:])
    return _from_diagonals(alpha[:, :, 1:], frames)


def transducer_beta(
    blank_log_probs: Tensor, label_log_probs: Tensor, logit_lengths: Tensor, target_lengths: Tensor
) -> Tensor:
    """Backward variable: log-probability of finishing from each node.

    Inputs as in ``transducer_alpha``; logit_lengths, target_lengths: (batch,).
    Returns beta (batch, T+1, U+1): beta[t, u] = logaddexp(beta[t+1, u] + blank[t, u],
    beta[t, u+1] + label[t, u]), seeded with beta[T_b, U_b] = 0, the node after
    the final blank; so beta[T_b - 1, U_b] = blank[T_b - 1, U_b].
    """
    batch, frames, nodes = blank_log_probs.shape
    # A row of -inf at t = T so every sequence's seed node exists in the grid,
    # and a label column of -inf at u = U: there is no label after the last one.
    blank_log_probs = F.pad(blank_log_probs, (0, 0, 0, 1), value=-math.inf)
    label_log_probs = F.pad(label_log_probs, (0, 1, 0, 1), value=-math.inf)
    n_diagonals = frames + nodes
    blank_diag = _to_diagonals(blank_log_probs, n_diagonals)
    label_diag = _to_diagonals(label_log_probs, n_diagonals)
    # A trailing column that stays -inf makes beta[t, u+1] a shifted view.
    beta = blank_log_probs.new_full((batch, n_diagonals, nodes + 1), -math.inf)
    rows = torch.arange(batch, device=beta.device)
    beta[rows, logit_lengths + target_lengths, target_lengths] = 0.0
    for d in range(n_diagonals - 2, -1, -1):
        to_blank = beta[:, d + 1, :-1] + blank_diag[:, d]  # (t, u) -> (t+1, u)
        to_label = beta[:, d + 1, 1:] + label_diag[:, d]  # (t, u) -> (t, u+1)
        # Seeds sit only on nodes no transition reaches (t = T_b): one side is -inf.
        torch.maximum(beta[:, d, :-1], torch.logaddexp(to_blank, to_label), out=beta[:, d, :-1])
    return _from_diagonals(beta[:, :, :-1], frames + 1)


class _TransducerLogLikelihood(torch.autograd.Function):
    """log P(y | x) per sequence, with the gradient written out.

    Autograd through T + U loop steps and a full log-softmax was about twice as
    slow on CPU; here the backward is the beta recursion, each transition's
    occupancy, and one softmax-shaped pass over the logits.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, symbols: Tensor, logit_lengths: Tensor, target_lengths: Tensor) -> Tensor:
        """logits (batch, T, U+1, V), symbols (batch, U+1, 2) from ``emitted_symbols`` -> (batch,)."""
        compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        logits_c = logits.to(compute_dtype)
        batch, frames, nodes, _ = logits.shape
        log_normaliser = torch.logsumexp(logits_c, dim=-1)  # (batch, T, U+1)
        index = symbols[:, None].expand(batch, frames, nodes, 2)
        log_probs = torch.gather(logits_c, -1, index) - log_normaliser[..., None]
        blank_log_probs, label_log_probs = _mask_outside_lattice(
            log_probs[..., 0], log_probs[:, :, :-1, 1], logit_lengths, target_lengths
        )
        alpha = transducer_alpha(blank_log_probs, label_log_probs)
        rows = torch.arange(batch, device=alpha.device)
        last_frame = logit_lengths - 1
        log_likelihood = (
            alpha[rows, last_frame, target_lengths] + blank_log_probs[rows, last_frame, target_lengths]
        )
        ctx.save_for_backward(
            logits, index, log_normaliser, blank_log_probs, label_log_probs,
            logit_lengths, target_lengths, alpha, log_likelihood,
        )
        return log_likelihood

    @staticmethod
    def backward(ctx, grad_log_likelihood: Tensor):
        """(batch,) -> gradient w.r.t. logits (batch, T, U+1, V); none for the rest."""
        (
            logits, index, log_normaliser, blank_log_probs, label_log_probs,
            logit_lengths, target_lengths, alpha, log_likelihood,
        ) = ctx.saved_tensors
        beta = transducer_beta(blank_log_probs, label_log_probs, logit_lengths, target_lengths)
        # d log P / d log p(transition) = the probability that a path takes it.
        path_log_prob = alpha - log_likelihood[:, None, None]
        blank_occupancy = torch.exp(path_log_prob + blank_log_probs + beta[:, 1:])
        label_occupancy = torch.exp(path_log_prob[:, :, :-1] + label_log_probs + beta[:, :-1, 1:])
        label_occupancy = F.pad(label_occupancy, (0, 1))
        occupancy = torch.stack([blank_occupancy, label_occupancy], dim=-1)
        occupancy = occupancy * grad_log_likelihood[:, None, None, None].to(occupancy.dtype)  # (b T U+1 2)
        # d log p(k) / d z_j = [j == k] - softmax_j, summed over the two transitions.
        grad = torch.exp(logits.to(log_normaliser.dtype) - log_normaliser[..., None])
        grad.mul_(-occupancy.sum(dim=-1, keepdim=True))
        grad.scatter_add_(-1, index, occupancy)
        return grad.to(logits.dtype), None, None, None
