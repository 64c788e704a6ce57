"""The model's front end: which day is this, which electrodes to trust, and a conv stem.

Data flow (see ``ModeSSM.forward``)::

    features (B, T, 512)
      -> select_channels         256 threshold crossings only, or all 512
      -> zero_constant_channels  dead electrodes, judged in electrode space (data/augment.py)
      -> DayInputLayers          one affine (+ softsign) layer per session day
      -> Preprocessor            per-trial channel normalisation, learned gates,
                                 strided conv stem (time / downsample)

Dead electrodes are zeroed *before* the day layer because "this channel is
constant" only means "this electrode is dead" while channels are still
electrodes; once a day layer has mixed them that reading is lost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mode_ssm.data.augment import length_mask, masked_mean_var
from mode_ssm.models.causal import NormState, running_normalise

NORMS = ("trial", "running", "layer", "none")


def select_channels(features: torch.Tensor, num_channels: int) -> torch.Tensor:
    """features (B, T, C) -> (B, T, num_channels).

    The T15 feature order puts the 256 threshold-crossing channels first and the
    256 spike-band-power channels after, so 256 keeps threshold crossings only.
    """
    if num_channels not in (256, 512):
        raise ValueError(f"num_channels must be 256 or 512, got {num_channels}")
    if features.shape[-1] < num_channels:
        raise ValueError(f"model uses {num_channels} channels but the features have {features.shape[-1]}")
    return features[..., :num_channels]


class DayInputLayers(nn.Module):
    """One affine layer per session day, identity-initialised, as in the official baseline.

    out = softsign(x @ W[day] + b[day]) (softsign optional), then dropout. The
    layers absorb day-to-day drift of the recording (electrode impedance,
    micromotion) so everything after them can be shared across days.

    Parameters are kept in lists (not one stacked tensor) so ``add_day`` can
    append a layer for a new session, and a batch only touches the layers of
    the days it contains.
    """

    def __init__(self, n_days: int, n_channels: int, softsign: bool = True, dropout: float = 0.0):
        super().__init__()
        if n_days < 1:
            raise ValueError(f"n_days must be >= 1, got {n_days}")
        self.n_channels = n_channels
        self.softsign = softsign
        self.weights = nn.ParameterList([nn.Parameter(torch.eye(n_channels)) for _ in range(n_days)])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(n_channels)) for _ in range(n_days)])
        self.dropout = nn.Dropout(dropout)

    @property
    def n_days(self) -> int:
        return len(self.weights)

    def add_day(self, copy_from: int | None = None) -> int:
        """Append a layer for an unseen session and return its day index.

        ``copy_from``: start from that day's layer (e.g. the nearest earlier
        session, whose drift is the closest guess); ``None``: a fresh identity
        layer. The new parameters are not in any existing optimizer.
        """
        ref = self.weights[0]
        if copy_from is None:
            weight = torch.eye(self.n_channels, device=ref.device, dtype=ref.dtype)
            bias = torch.zeros(self.n_channels, device=ref.device, dtype=ref.dtype)
        else:
            if not 0 <= copy_from < self.n_days:
                raise IndexError(f"copy_from={copy_from} but there are {self.n_days} day layers")
            weight = self.weights[copy_from].detach().clone()
            bias = self.biases[copy_from].detach().clone()
        self.weights.append(nn.Parameter(weight))
        self.biases.append(nn.Parameter(bias))
        return self.n_days - 1

    def smoothness_penalty(self) -> torch.Tensor:
        """Mean over adjacent days (d, d+1) of ||W[d+1] - W[d]||^2 + ||b[d+1] - b[d]||^2 (squared Frobenius).

        Day indices follow the sessions' dates, so this ties each session's layer to its neighbours'
        (drift between consecutive sessions is gradual); 0 with a single day."""
        if self.n_days < 2:
            return self.weights[0].sum() * 0.0
        w = torch.stack(list(self.weights))
        b = torch.stack(list(self.biases))
        return ((w[1:] - w[:-1]).square().sum((1, 2)) + (b[1:] - b[:-1]).square().sum(1)).mean()

    def forward(self, x: torch.Tensor, day_index: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), day_index (B,) int64 -> (B, T, C)."""
        if x.shape[-1] != self.n_channels:
            raise ValueError(f"day layers expect {self.n_channels} channels, got {x.shape[-1]}")
        days = day_index.tolist()
        bad = [d for d in set(days) if not 0 <= d < self.n_days]
        if bad:
            raise IndexError(f"day_index {sorted(bad)} out of range: the model has {self.n_days} day layers")
        out = x.new_zeros(x.shape)
        for day in sorted(set(days)):
            rows = (day_index == day).nonzero().squeeze(1)
            out[rows] = x[rows] @ self.weights[day] + self.biases[day]
        if self.softsign:
            out = F.softsign(out)
        return self.dropout(out)


class Preprocessor(nn.Module):
    """Per-channel normalisation, learned channel gates and a strided conv stem.

    Normalisation (``norm``):
      - ``"trial"`` (default): z-score each channel over the trial's own valid
        time steps. The features arrive z-scored per block already, so this is
        not about scale; it removes the offset and gain a channel drifts by
        between blocks, which the once-per-day layer cannot follow, and it maps
        a channel that is constant in the trial to exactly 0 (after a day layer,
        a dead electrode is a constant offset, which this removes). Statistics
        use only valid steps, so padding changes nothing. Cost: it needs the
        whole trial, which the bidirectional encoder needs anyway. ``eps``
        (1e-2, i.e. std 0.1) damps near-constant channels instead of blowing
        their noise up to unit variance.
      - ``"running"``: z-score each bin by the statistics of the trial's bins
        up to and including it, from a prior of mean 0 and variance 1
        (:func:`mode_ssm.models.causal.running_normalise`); the causal models' norm.
      - ``"layer"``: LayerNorm over channels per time step (causal, but mixes
        channels: one artefact channel rescales all others).
      - ``"none"``.
    Gates: ``2 * sigmoid(g)`` per channel, ``g`` initialised to 0 (gate 1, an
    identity at init); a channel that only adds noise can be turned down to 0.
    Stem: Conv1d(kernel ``stem_kernel``, stride ``downsample``, no padding), so
    an output frame never reads past the trial's end and
    ``out_len = (len - stem_kernel) // downsample + 1`` exactly (0 when the
    trial is shorter than the kernel). ``stem_kernel == downsample`` is patching.
    """

    def __init__(
        self,
        n_channels: int,
        d_model: int,
        downsample: int = 4,
        stem_kernel: int | None = None,
        norm: str = "trial",
        gates: bool = True,
        dropout: float = 0.0,
        eps: float = 1e-2,
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        stem_kernel = downsample if stem_kernel is None else stem_kernel
        if downsample < 1 or stem_kernel < downsample:
            raise ValueError(f"need 1 <= downsample <= stem_kernel, got {downsample=} {stem_kernel=}")
        self.norm = norm
        self.eps = eps
        self.downsample = downsample
        self.stem_kernel = stem_kernel
        self.layer_norm = nn.LayerNorm(n_channels) if norm == "layer" else None
        self.gate_logits = nn.Parameter(torch.zeros(n_channels)) if gates else None
        self.stem = nn.Conv1d(n_channels, d_model, kernel_size=stem_kernel, stride=downsample)
        self.out_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """lengths (B,) -> frames after the stem (B,)."""
        return ((lengths - self.stem_kernel) // self.downsample + 1).clamp(min=0)

    def channel_gates(self) -> torch.Tensor | None:
        """(C,) gate values in (0, 2), or None when gating is off."""
        return None if self.gate_logits is None else 2 * torch.sigmoid(self.gate_logits)

    def normalise(self, x: torch.Tensor, lengths: torch.Tensor, state: NormState | None = None
                  ) -> tuple[torch.Tensor, NormState | None]:
        """x (B, T, C) -> (normalised and gated, zero past each length; the running norm's state).

        ``state`` (``norm="running"`` only): the statistics carried from the trial's earlier bins.
        """
        mask = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
        if self.norm == "trial":
            mean, var = masked_mean_var(x, lengths)
            x = (x - mean) / torch.sqrt(var + self.eps)
        elif self.norm == "running":
            x, state = running_normalise(x, lengths, state, eps=self.eps)
        elif self.norm == "layer":
            x = self.layer_norm(x)
        gates = self.channel_gates()
        if gates is not None:
            x = x * gates
        return x * mask, state  # the stem must read zeros past a trial's end, in a batch as when alone

    def stem_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised bins (B, T, C) -> frames (B, (T - stem_kernel) // downsample + 1, d_model)."""
        if x.shape[1] < self.stem_kernel:
            x = F.pad(x, (0, 0, 0, self.stem_kernel - x.shape[1]))
        y = self.stem(rearrange(x, "b t c -> b c t"))
        return self.dropout(self.out_norm(rearrange(y, "b d t -> b t d")))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C), lengths (B,) -> (features (B, T', d_model), out_lengths (B,)).

        Frames at or past ``out_lengths`` are zero.
        """
        x, _ = self.normalise(x, lengths)
        y = self.stem_frames(x)
        out_lengths = self.output_lengths(lengths)
        y = y * length_mask(out_lengths, y.shape[1]).unsqueeze(-1).to(y.dtype)
        return y, out_lengths
