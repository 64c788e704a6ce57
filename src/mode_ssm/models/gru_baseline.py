"""The official Brain-to-Text '25 baseline architecture (Card et al. 2024), sizes configurable.

    features (B, T, 512)
      -> day_layers: per-day 512x512 affine, softsign, input dropout
      -> patches of 14 bins at stride 4, each flattened to 14 * 512 features
      -> encoder: 5-layer unidirectional GRU, 768 units, learned initial state
      -> ctc_head: Linear(768 -> 41)

Output frames: (T - 14) // 4 + 1. Same ``forward`` contract as ``ModeSSM`` (no
mode head: ``mode_logits`` is None), so the same training loop trains both.
Patches flatten time-major (all channels of bin 0, then of bin 1, ...), the
order of the official implementation, so its weights keep their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mode_ssm.data.augment import length_mask
from mode_ssm.models.frontend import DayInputLayers, select_channels
from mode_ssm.phonemes import NUM_CLASSES


@dataclass
class GRUBaselineConfig:
    n_days: int = 1
    n_channels: int = 512
    num_channels: int = 512
    n_units: int = 768
    n_layers: int = 5
    patch_size: int = 14
    patch_stride: int = 4
    input_dropout: float = 0.2
    rnn_dropout: float = 0.4
    day_softsign: bool = True
    n_classes: int = NUM_CLASSES


class GRUEncoder(nn.Module):
    """Unidirectional GRU with a learned initial state; orthogonal recurrent, Xavier input weights."""

    def __init__(self, input_dim: int, n_units: int, n_layers: int, dropout: float = 0.0):
        super().__init__()
        self.gru = nn.GRU(input_dim, n_units, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0)
        self.h0 = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_layers, 1, n_units)))
        for name, p in self.gru.named_parameters():
            if name.startswith("weight_hh"):
                nn.init.orthogonal_(p)
            elif name.startswith("weight_ih"):
                nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, input_dim) -> hidden states of the last layer (B, T, n_units)."""
        h, _ = self.gru(x, self.h0.expand(-1, x.shape[0], -1).contiguous())
        return h


class GRUBaseline(nn.Module):
    COMPONENTS = ("day_layers", "encoder", "ctc_head")

    def __init__(self, config: GRUBaselineConfig):
        super().__init__()
        c = self.config = config
        if c.num_channels > c.n_channels:
            raise ValueError(f"num_channels={c.num_channels} but the data delivers only {c.n_channels}")
        self.day_layers = DayInputLayers(c.n_days, c.num_channels, softsign=c.day_softsign, dropout=c.input_dropout)
        self.encoder = GRUEncoder(c.num_channels * c.patch_size, c.n_units, c.n_layers, c.rnn_dropout)
        self.ctc_head = nn.Linear(c.n_units, c.n_classes)

    @classmethod
    def components_of(cls, config: GRUBaselineConfig) -> tuple[str, ...]:
        return cls.COMPONENTS

    @classmethod
    def loss_reach(cls, config: GRUBaselineConfig) -> dict[str, tuple[str, ...]]:
        return {"ctc": cls.COMPONENTS}

    def output_lengths(self, feature_lengths: torch.Tensor) -> torch.Tensor:
        """(B,) input bins -> (B,) output frames (T - patch_size) // patch_stride + 1."""
        c = self.config
        return ((feature_lengths - c.patch_size) // c.patch_stride + 1).clamp(min=0)

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        day_index: torch.Tensor,
        mode_probs: torch.Tensor | None = None,
        *,
        rnnt_targets: torch.Tensor | None = None,
        denoise: bool = False,
        noise_generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """features (B, T, C), feature_lengths (B,), day_index (B,) ->
        ``phoneme_logits`` (B, T', n_classes), ``out_lengths`` (B,), ``encoder_features`` =
        ``head_features`` (B, T', n_units); ``mode_logits`` / ``mode_probs`` None.
        ``mode_probs`` is accepted and ignored (no mode head). A unidirectional GRU
        never reads ahead, so padding cannot change valid frames.
        """
        if rnnt_targets is not None or denoise:
            raise ValueError("the GRU baseline has no RNN-T head or flow bridge (rnnt_targets / denoise)")
        c = self.config
        x = self.day_layers(select_channels(features, c.num_channels), day_index)
        if x.shape[1] < c.patch_size:
            x = F.pad(x, (0, 0, 0, c.patch_size - x.shape[1]))
        patches = rearrange(x.unfold(1, c.patch_size, c.patch_stride), "b t c k -> b t (k c)")
        h = self.encoder(patches)
        out_lengths = self.output_lengths(feature_lengths)
        h = h * length_mask(out_lengths, h.shape[1]).unsqueeze(-1).to(h.dtype)
        return {
            "phoneme_logits": self.ctc_head(h),
            "out_lengths": out_lengths,
            "mode_logits": None,
            "mode_probs": None,
            "encoder_features": h,
            "conditioned_features": h,
            "head_features": h,
        }
