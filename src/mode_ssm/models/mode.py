"""Speaking mode: p(z | X), attempted vocalized (0) vs attempted silent (1).

``ModeHead``: a classifier on pooled encoder features and the trial's speaking
rate, and FiLM conditioning of the encoder features on its (soft) posterior, so
the phoneme heads can read vocalized and silent attempts differently. Its
training targets are per-block pseudo-labels (:mod:`mode_ssm.data.mode_labels`).

Class ids match the data layer: 0 vocalized, 1 silent, -1 unknown.
"""

from __future__ import annotations

import torch
from torch import nn

from mode_ssm.data.augment import length_mask

VOCALIZED, SILENT, UNKNOWN = 0, 1, -1
CONDITIONINGS = ("film", "none")


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x (B, T, D), lengths (B,) -> mean over valid steps (B, D); zeros for empty trials."""
    mask = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    return (x * mask).sum(1) / lengths.clamp(min=1).to(x.dtype)[:, None]


N_RATE_FEATURES = 2
RATE_CENTRE = 0.25  # phonemes per 80 ms frame, between the modes' typical rates
RATE_SCALE = 4.0
COUNT_CENTRE = 3.0  # log of ~20 phonemes


def rate_features(emission_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """emission_probs (B, T) in [0, 1], lengths (B,) -> (B, 2) speaking-rate features.

    ``emission_probs`` is, per frame, the probability that a phoneme (not the
    CTC blank) is emitted there. Returns how fast and how much the person
    attempted to say, which needs no transcript: ``RATE_SCALE * log(expected
    emissions per frame / RATE_CENTRE)`` and ``log(expected emissions + 1) -
    COUNT_CENTRE``. Padded frames do not count. The constants only centre and
    scale the features (the ~1.7x rate ratio between modes becomes ~2 units),
    so a linear layer starting from small weights separates the modes within
    a few hundred steps; any remaining offset is learnt by its bias.
    """
    mask = length_mask(lengths, emission_probs.shape[1]).to(emission_probs.dtype)
    expected = (emission_probs * mask).sum(1)
    per_frame = expected / lengths.clamp(min=1).to(emission_probs.dtype)
    rate = RATE_SCALE * torch.log((per_frame + 1e-3) / RATE_CENTRE)
    return torch.stack([rate, torch.log(expected + 1.0) - COUNT_CENTRE], dim=-1)


class ModeHead(nn.Module):
    """Mode classifier plus FiLM conditioning on its posterior.

    Classifier: a per-frame layer (Linear + GELU) whose outputs are averaged
    over the trial's valid frames (so the pooled vector can count events, such
    as phoneme onsets, not only average features), joined with the trial's
    ``rate_features`` when the caller supplies emission probabilities, then a
    linear map to 2 logits. Speaking rate is the cue that separates the modes
    most reliably (silent attempts run faster), and a mean of encoder features
    carries it only weakly; given explicitly, the head learns it in a few
    hundred steps.

    FiLM: with posterior p = (p_vocalized, p_silent),
    ``(gamma, beta) = p_vocalized * (gamma_v, beta_v) + p_silent * (gamma_s, beta_s)``
    (a bias-free linear map of p), and ``features * (1 + gamma) + beta``. Each
    mode has its own scale and shift, mixed by how sure the head is. The map is
    zero-initialised so switching FiLM on leaves a trained encoder's features
    unchanged until training moves it. The posterior is not detached: the
    phoneme losses may sharpen it where that helps them, while the mode loss
    keeps it tied to the pseudo-labels.
    """

    def __init__(self, d_model: int, hidden: int = 64, conditioning: str = "film", dropout: float = 0.0):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.conditioning = conditioning
        self.frame = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden + N_RATE_FEATURES, 2)
        self.film = nn.Linear(2, 2 * d_model, bias=False) if conditioning == "film" else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)

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
        """
        pooled = masked_mean(self.frame(features), lengths)
        if emission_probs is None:
            rate = pooled.new_zeros(pooled.shape[0], N_RATE_FEATURES)
        else:
            rate = rate_features(emission_probs.to(pooled.dtype), lengths)
        mode_logits = self.classifier(torch.cat([self.dropout(pooled), rate], dim=-1))
        probs = mode_logits.softmax(-1) if mode_probs is None else mode_probs.to(features.dtype)
        if self.film is None:
            return features, mode_logits, probs
        gamma, beta = self.film(probs).chunk(2, dim=-1)
        conditioned = features * (1 + gamma[:, None, :]) + beta[:, None, :]
        conditioned = conditioned * length_mask(lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)
        return conditioned, mode_logits, probs


# ---------------------------------------------------------------------------
# Unsupervised block pseudo-labels
