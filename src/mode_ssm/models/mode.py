"""Speaking mode: p(z | X), attempted vocalized (0) vs attempted silent (1).

``ModeHead``: a classifier on pooled encoder features and the trial's speaking
rate, and FiLM conditioning of the encoder features on its (soft) posterior, so
the phoneme heads can read vocalized and silent attempts differently. Its
training targets are per-block pseudo-labels (:mod:`mode_ssm.data.mode_labels`).

Class ids match the data layer: 0 vocalized, 1 silent, -1 unknown.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mode_ssm.data.augment import length_mask
from mode_ssm.models.causal import ModeState, causal_pooling, last_valid

VOCALIZED, SILENT, UNKNOWN = 0, 1, -1
CONDITIONINGS = ("film", "none")


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x (B, T, D), lengths (B,) -> mean over valid steps (B, D); zeros for empty trials."""
    mask = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    return (x * mask).sum(1) / lengths.clamp(min=1).to(x.dtype)[:, None]


N_RATE_FEATURES = 2


def rate_features(emission_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """emission_probs (B, T) in [0, 1], lengths (B,) -> (B, 2) speaking-rate features.

    ``emission_probs`` is, per frame, the probability that a phoneme (not the
    CTC blank) is emitted there. Returns how fast and how much the person
    attempted to say, which needs no transcript: ``log(expected emissions per
    frame)`` and ``log(expected emissions + 1)``. Padded frames do not count.
    No rate is assumed here: ``ModeHead`` centres and scales them with
    statistics learnt from the data.
    """
    mask = length_mask(lengths, emission_probs.shape[1]).to(emission_probs.dtype)
    expected = (emission_probs * mask).sum(1)
    per_frame = expected / lengths.clamp(min=1).to(emission_probs.dtype)
    return torch.stack([torch.log(per_frame + 1e-3), torch.log(expected + 1.0)], dim=-1)


class RunningStandardizer(nn.Module):
    """Standardise (B, D) features with running statistics learnt from the training data.

    Training forwards standardise with the current statistics (as inference does) and set
    aside the count, sum and sum of squares of their finite rows; ``commit()``, called by
    the trainer once per optimizer step, merges them into the running mean and variance
    (the first commit sets them, later ones move them by ``momentum``). Under
    torch.distributed ``commit`` all-reduces what every rank set aside, so the statistics
    follow the global batch of each optimizer step: one process accumulating micro-batches
    and several processes sharing them train identically, which batch statistics (as in
    BatchNorm) would not. A row holding a non-finite value (a corrupt trial) is left out.
    """

    def __init__(self, n_features: int, momentum: float = 0.05, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(n_features))
        self.register_buffer("running_var", torch.ones(n_features))
        self.register_buffer("commits", torch.tensor(0))
        # not a buffer: DistributedDataParallel would broadcast rank 0's over the others' at each forward
        self._pending = torch.zeros(1 + 2 * n_features, dtype=torch.float64)

    def forward(self, x: torch.Tensor, observe: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., D) standardised; in training the (B, D) rows of ``observe`` (default x) are set aside."""
        if self.training:
            with torch.no_grad():
                rows = (x if observe is None else observe).detach().double()
                rows = rows[torch.isfinite(rows).all(-1)]
                self._pending = self._pending.to(rows.device) + torch.cat(
                    [rows.new_tensor([rows.shape[0]]), rows.sum(0), (rows**2).sum(0)])
        return (x - self.running_mean.to(x.dtype)) / torch.sqrt(self.running_var.to(x.dtype) + self.eps)

    @torch.no_grad()
    def commit(self, apply: bool = True) -> None:
        """Merge the statistics set aside since the last call (``apply=False``: drop them)."""
        pending, self._pending = self._pending, torch.zeros_like(self._pending)
        if not apply:
            return
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(pending)
        n, d = float(pending[0]), self.running_mean.numel()
        if n < 2:
            return
        mean = pending[1:1 + d] / n
        var = ((pending[1 + d:] / n - mean**2).clamp(min=0) * n / (n - 1)).to(self.running_var.dtype)
        mean = mean.to(self.running_mean.dtype)
        rate = 1.0 if int(self.commits) == 0 else self.momentum
        self.running_mean.lerp_(mean, rate)
        self.running_var.lerp_(var, rate)
        self.commits += 1


def commit_running_statistics(model: nn.Module, apply: bool = True) -> None:
    """``RunningStandardizer.commit`` on every one in ``model``: the trainer calls it at each optimizer
    step, on every rank (``apply=False`` for a skipped step drops what that step's batches set aside)."""
    for module in model.modules():
        if isinstance(module, RunningStandardizer):
            module.commit(apply)


class ModeHead(nn.Module):
    """Mode classifier plus FiLM conditioning on its posterior.

    Classifier: a per-frame layer (Linear + GELU) whose outputs are averaged
    over the trial's valid frames (so the pooled vector can count events, such
    as phoneme onsets, not only average features), joined with the trial's
    ``rate_features`` when the caller supplies emission probabilities, then a
    linear map to 2 logits. Speaking rate is a cue that separates the modes
    (silent attempts run faster), and a mean of encoder features carries it
    only weakly; given explicitly, the head learns it in a few hundred steps.
    The rate features are standardised by a ``RunningStandardizer`` (running
    mean and variance of the training batches, updated at each optimizer step),
    so their centre and scale come from the data, not from any assumed rate.

    ``mode_signal`` (a saved buffer, default on): off when the recording does
    not support a two-mode split (see :func:`mode_ssm.data.mode_labels.fit_block_modes`);
    FiLM then gets the constant posterior (0.5, 0.5), i.e. no mode signal,
    rather than an untrained head's guess. The logits are still returned.

    FiLM: with posterior p = (p_vocalized, p_silent),
    ``(gamma, beta) = p_vocalized * (gamma_v, beta_v) + p_silent * (gamma_s, beta_s)``
    (a bias-free linear map of p), and ``features * (1 + gamma) + beta``. Each
    mode has its own scale and shift, mixed by how sure the head is. The map is
    zero-initialised so switching FiLM on leaves a trained encoder's features
    unchanged until training moves it. The posterior is not detached: the
    phoneme losses may sharpen it where that helps them, while the mode loss
    keeps it tied to the pseudo-labels.
    """

    def __init__(self, d_model: int, hidden: int = 64, conditioning: str = "film", dropout: float = 0.0,
                 causal: bool = False):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.conditioning = conditioning
        self.causal = causal
        self.frame = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU())
        self.dropout = nn.Dropout(dropout)
        self.rate_norm = RunningStandardizer(N_RATE_FEATURES)
        self.classifier = nn.Linear(hidden + N_RATE_FEATURES, 2)
        self.register_buffer("mode_signal", torch.tensor(True))
        self.film = nn.Linear(2, 2 * d_model, bias=False) if conditioning == "film" else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before these buffers existed: the mode signal was always on, and the rates
        # were centred and scaled by fixed constants, 4 * (log rate - log 0.25) and log count - 3,
        # which these running statistics reproduce exactly in eval mode.
        state_dict.setdefault(prefix + "mode_signal", torch.tensor(True))
        if prefix + "rate_norm.running_mean" not in state_dict:
            eps = self.rate_norm.eps
            state_dict[prefix + "rate_norm.running_mean"] = torch.tensor([math.log(0.25), 3.0])
            state_dict[prefix + "rate_norm.running_var"] = torch.tensor([1 / 16 - eps, 1.0 - eps])
        state_dict.setdefault(prefix + "rate_norm.commits", torch.tensor(1))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        mode_probs: torch.Tensor | None = None,
        emission_probs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features (B, T, D), lengths (B,) -> (conditioned (B, T, D), mode_logits (B, 2), mode_probs (B, 2)).

        ``emission_probs`` (B, T): per-frame probability of a non-blank phoneme
        (see ``rate_features``); None feeds zeros in their place.
        ``mode_probs`` (B, 2), if given, replaces the head's posterior in FiLM
        (e.g. to decode as if the mode were known); ``mode_logits`` are still the
        head's own. Padded frames of ``conditioned`` are zero.
        A causal head (``causal=True``) returns its posterior after each trial's last frame
        and conditions each frame on the posterior so far (``causal_forward``).
        """
        if self.causal:
            conditioned, mode_logits, frame_probs, _ = self.causal_forward(features, lengths, mode_probs, emission_probs)
            return conditioned, mode_logits, last_valid(frame_probs, lengths)
        pooled = masked_mean(self.frame(features), lengths)
        if emission_probs is None:
            rate = pooled.new_zeros(pooled.shape[0], N_RATE_FEATURES)
        else:
            rate = self.rate_norm(rate_features(emission_probs.to(pooled.dtype), lengths))
        mode_logits = self.classifier(torch.cat([self.dropout(pooled), rate], dim=-1))
        probs = self._film_posterior(mode_logits, mode_probs)
        if self.film is None:
            return features, mode_logits, probs
        gamma, beta = self.film(probs).chunk(2, dim=-1)
        conditioned = features * (1 + gamma[:, None, :]) + beta[:, None, :]
        conditioned = conditioned * length_mask(lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)
        return conditioned, mode_logits, probs

    def _film_posterior(self, logits: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor:
        """What FiLM reads, shaped like ``logits`` (..., 2): the given posterior, the head's own, or
        (0.5, 0.5) when ``mode_signal`` is off."""
        if given is not None:
            return given.to(logits.dtype).expand_as(logits)
        if bool(self.mode_signal):
            return logits.softmax(-1)
        return torch.full_like(logits, 0.5)

    def causal_forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        mode_probs: torch.Tensor | None = None,
        emission_probs: torch.Tensor | None = None,
        state: ModeState | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ModeState]:
        """The head reading only frames seen so far: features (B, T, D) ->
        (conditioned (B, T, D), mode_logits (B, 2) after each trial's last frame,
        frame_probs (B, T, 2) the posterior after each frame, state).

        The classifier reads, at frame t, the mean of the per-frame features and the
        rate features over frames 0..t (for the whole trial that is exactly what the
        offline head reads), and FiLM at t uses that frame's posterior. ``state``: the
        running sums of the trial's earlier frames (:func:`mode_ssm.models.causal.causal_pooling`).
        """
        emission = features.new_zeros(features.shape[:2]) if emission_probs is None else emission_probs
        pooled, expected, frames, state = causal_pooling(self.frame(features), emission, lengths, state)
        if emission_probs is None:
            rate = pooled.new_zeros(*pooled.shape[:2], N_RATE_FEATURES)
        else:
            raw = torch.stack([torch.log(expected / frames + 1e-3), torch.log(expected + 1.0)], dim=-1)
            rate = self.rate_norm(raw, observe=last_valid(raw, lengths))  # whole-trial rates update the statistics
        frame_logits = self.classifier(torch.cat([self.dropout(pooled), rate], dim=-1))  # (B, T, 2)
        frame_probs = self._film_posterior(frame_logits, None if mode_probs is None else mode_probs[:, None, :])
        conditioned = features
        if self.film is not None:
            gamma, beta = self.film(frame_probs).chunk(2, dim=-1)
            conditioned = (features * (1 + gamma) + beta) * length_mask(lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)
        return conditioned, last_valid(frame_logits, lengths), frame_probs, state


# ---------------------------------------------------------------------------
# Unsupervised block pseudo-labels
