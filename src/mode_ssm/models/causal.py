"""The causal parts of MODE-SSM: what the model computes when it may not read a future bin.

``model.causal=true`` (``configs/model/mode_ssm_causal*.yaml``) replaces every
part of the offline model that reads the whole trial:

======================================  =============================================
offline (whole trial)                   causal (the bins received so far)
======================================  =============================================
dead channels: constant over the trial  ``causal_live_channels``: a channel is dead
                                        until it has moved more than ``tol`` from
                                        its first bin (so bin 0 is always zero)
``norm=trial``: per-trial z-score       ``norm=running`` (``running_normalise``):
                                        mean and variance of the bins so far, started
                                        from ``prior_bins`` bins of mean 0, variance 1
                                        (the features arrive z-scored per block)
bidirectional SSM                       forward direction only
mode posterior pooled over the trial    ``causal_mode``: pooled over the frames so
                                        far; FiLM at frame t reads the posterior at t
flow bridge (a centred convolution)     left out (``flow_bridge=false`` is required)
input smoothing: a centred Gaussian     ``causal_smooth``: the Gaussian's past half
(``augmentation.smooth_std``)           (taps at lags 0..K-1, renormalised)
======================================  =============================================

The conv stem is causal as it stands: output frame k reads bins
``downsample * k`` to ``downsample * k + stem_kernel - 1`` and exists once the
last of them has arrived. Day layers, gates, the CTC head and the RNN-T
predictor and joiner act per bin or per frame.

The input pipeline before the model (``Augmenter``, data/augment.py) follows
the model: for a causal model its dead-channel zeroing and smoothing are the
causal forms above (``AugmentConfig.causal``, set by the trainer from the model).

Each function takes the state carried from earlier bins (None at a trial's
start) and returns the state after its input, so the offline forward (one
call on the padded batch, no state) and the stream
(:class:`mode_ssm.streaming.CausalStream`, one call per chunk of a single
trial) run the same arithmetic. Returned states are those after each
sequence's last time step, which is the stream's case (batch of one, no
padding); the offline forward ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mode_ssm.data.augment import LiveState, causal_live_channels, causal_smooth, length_mask  # noqa: F401 (re-exported)

__all__ = ["LiveState", "ModeState", "NormState", "causal_live_channels", "causal_pooling", "causal_smooth",
           "last_valid", "running_normalise"]

RUNNING_PRIOR_BINS = 50.0  # 1 s of 20 ms bins: how much the prior (mean 0, variance 1) weighs at a trial's start


@dataclass
class NormState:
    count: Tensor  # (B, 1, 1) float64: bins seen
    total: Tensor  # (B, 1, C) float64: their sum
    total_sq: Tensor  # (B, 1, C) float64: sum of squares


def running_normalise(x: Tensor, lengths: Tensor, state: NormState | None = None,
                      prior_bins: float = RUNNING_PRIOR_BINS, eps: float = 1e-2) -> tuple[Tensor, NormState]:
    """x (B, T, C) -> (each bin z-scored by the statistics of the trial's bins up to and including it, state).

    mean_t = sum_{s<=t} x_s / (prior + n_t), var_t = (prior + sum x_s^2) / (prior + n_t) - mean_t^2:
    ``prior_bins`` pseudo-bins of mean 0 and variance 1 keep the first bins from being divided by the
    variance of one or two samples. ``eps`` as in the trial norm. Sums are kept in float64 so a stream
    fed in chunks agrees with one pass over the whole trial. Padded steps are zero.
    """
    mask = length_mask(lengths, x.shape[1]).unsqueeze(-1)
    x64 = (x * mask.to(x.dtype)).double()
    if state is None:
        shape = (x.shape[0], 1, x.shape[2])
        state = NormState(x64.new_zeros(x.shape[0], 1, 1), x64.new_zeros(shape), x64.new_zeros(shape))
    total = state.total + torch.cumsum(x64, 1)
    total_sq = state.total_sq + torch.cumsum(x64**2, 1)
    count = state.count + torch.arange(1, x.shape[1] + 1, device=x.device, dtype=torch.float64)[None, :, None]
    denom = prior_bins + count
    mean = total / denom
    var = ((prior_bins + total_sq) / denom - mean**2).clamp(min=0)
    out = ((x64 - mean) / torch.sqrt(var + eps)).to(x.dtype) * mask.to(x.dtype)
    if x.shape[1] == 0:
        return out, state
    return out, NormState(count[:, -1:], total[:, -1:], total_sq[:, -1:])


@dataclass
class ModeState:
    frame_sum: Tensor  # (B, H) sum of the head's per-frame features so far
    emission_sum: Tensor  # (B,) expected phoneme emissions so far
    count: Tensor  # (B,) frames so far


def causal_pooling(h: Tensor, emission: Tensor, lengths: Tensor, state: ModeState | None = None
                   ) -> tuple[Tensor, Tensor, Tensor, ModeState]:
    """Running means for the causal mode head.

    h (B, T, H) per-frame features, emission (B, T) non-blank probabilities ->
    (pooled (B, T, H): mean of h over frames 0..t, expected (B, T): emissions
    summed over 0..t, frames (B, T): t + 1, state). Padded frames add nothing.
    """
    mask = length_mask(lengths, h.shape[1]).to(h.dtype)
    if state is None:
        state = ModeState(h.new_zeros(h.shape[0], h.shape[2]), h.new_zeros(h.shape[0]), h.new_zeros(h.shape[0]))
    frame_sum = state.frame_sum[:, None] + torch.cumsum(h * mask[..., None], 1)
    expected = state.emission_sum[:, None] + torch.cumsum(emission.to(h.dtype) * mask, 1)
    frames = state.count[:, None] + torch.arange(1, h.shape[1] + 1, device=h.device, dtype=h.dtype)[None, :]
    pooled = frame_sum / frames[..., None]
    if h.shape[1] == 0:
        return pooled, expected, frames, state
    return pooled, expected, frames, ModeState(frame_sum[:, -1], expected[:, -1], frames[:, -1])


def last_valid(x: Tensor, lengths: Tensor) -> Tensor:
    """x (B, T, ...) -> x[b, lengths[b] - 1] (B, ...); index 0 for an empty trial (zeros when T = 0)."""
    if x.shape[1] == 0:
        return x.new_zeros(x.shape[0], *x.shape[2:])
    index = (lengths.to(x.device) - 1).clamp(min=0).reshape(-1, *([1] * (x.dim() - 1))).expand(-1, 1, *x.shape[2:])
    return torch.gather(x, 1, index).squeeze(1)
