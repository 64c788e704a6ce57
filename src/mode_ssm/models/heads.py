"""Output heads over 41 classes: CTC, and RNN-T (predictor + joiner).

Class 0 is both the CTC blank and the RNN-T blank; the RNN-T predictor also
uses it as its start symbol (as is usual for transducers), so no extra class
is needed. With ``loss="pruned"`` the RNN-T head also has the linear "simple"
joint of pruned RNN-T (``rnnt_pruned.py``) and evaluates its joiner on a band of
label positions per frame only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mode_ssm.models import rnnt_pruned
from mode_ssm.phonemes import BLANK, NUM_CLASSES

RNNT_LOSSES = ("full", "pruned")

PredictorState = tuple[torch.Tensor, torch.Tensor]  # LSTM (h, c), each (n_layers, B, dim)


class CTCHead(nn.Module):
    """Dropout + Linear(d_model -> n_classes)."""

    def __init__(self, d_model: int, n_classes: int = NUM_CLASSES, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> phoneme logits (B, T, n_classes)."""
        return self.proj(self.dropout(x))


class Predictor(nn.Module):
    """RNN-T prediction network: label embedding -> LSTM, conditioned on the labels emitted so far."""

    def __init__(self, dim: int = 128, n_layers: int = 1, n_classes: int = NUM_CLASSES, dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.n_layers = n_layers
        self.embedding = nn.Embedding(n_classes, dim)
        self.lstm = nn.LSTM(dim, dim, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)

    def forward(self, targets: torch.Tensor) -> torch.Tensor:
        """targets (B, U) int64 -> predictor outputs (B, U + 1, dim).

        Output u has seen the start symbol and targets[:, :u]. Padding in
        ``targets`` only affects outputs past each target length.
        """
        start = targets.new_full((targets.shape[0], 1), BLANK)  # also for U = 0 (no label in the whole batch)
        h, _ = self.lstm(self.dropout(self.embedding(torch.cat([start, targets], dim=1))))
        return h

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> PredictorState:
        """Zero LSTM state ((n_layers, B, dim), (n_layers, B, dim))."""
        device = device or self.embedding.weight.device
        zeros = torch.zeros(self.n_layers, batch_size, self.dim, device=device, dtype=self.embedding.weight.dtype)
        return zeros, zeros.clone()

    def step(self, labels: torch.Tensor, state: PredictorState | None = None) -> tuple[torch.Tensor, PredictorState]:
        """One label per hypothesis: labels (B,) int64, state -> (output (B, dim), new state).

        Start decoding with ``labels`` all BLANK and ``state`` None (zero state).
        """
        if state is None:
            state = self.initial_state(labels.shape[0], labels.device)
        h, new_state = self.lstm(self.dropout(self.embedding(labels))[:, None, :], state)
        return h[:, 0], new_state


class Joiner(nn.Module):
    """logits = Linear(tanh(W_e enc + W_p pred)) over n_classes."""

    def __init__(self, enc_dim: int, pred_dim: int, dim: int = 256, n_classes: int = NUM_CLASSES):
        super().__init__()
        self.enc_proj = nn.Linear(enc_dim, dim)
        self.pred_proj = nn.Linear(pred_dim, dim, bias=False)
        self.out = nn.Linear(dim, n_classes)

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Full joint: enc (B, T, enc_dim), pred (B, U + 1, pred_dim) -> logits (B, T, U + 1, n_classes).

        Memory is B * T * (U + 1) * dim floats for the hidden layer.
        """
        hidden = self.enc_proj(enc)[:, :, None, :] + self.pred_proj(pred)[:, None, :, :]
        return self.out(torch.tanh(hidden))

    def band(self, enc: torch.Tensor, pred: torch.Tensor, starts: torch.Tensor, width: int) -> torch.Tensor:
        """Joint on a band of label positions: enc (B, T, enc_dim), pred (B, U + 1, pred_dim),
        starts (B, T) int64 -> logits (B, T, width, n_classes) at nodes (t, starts[t] + k).

        The same function as ``forward`` at those nodes; memory B * T * width * dim for the hidden layer.
        """
        pred_h = self.pred_proj(pred)  # (B, U + 1, dim): projected once, then gathered per band
        rows = torch.arange(pred.shape[0], device=pred.device)[:, None, None]
        hidden = self.enc_proj(enc)[:, :, None, :] + pred_h[rows, rnnt_pruned.band_positions(starts, width)]
        return self.out(torch.tanh(hidden))

    def step(self, enc_frame: torch.Tensor, pred_out: torch.Tensor) -> torch.Tensor:
        """One frame, one predictor output per hypothesis: (B, enc_dim), (B, pred_dim) -> logits (B, n_classes)."""
        return self.out(torch.tanh(self.enc_proj(enc_frame) + self.pred_proj(pred_out)))


class RNNTHead(nn.Module):
    """Predictor and joiner together: the ``rnnt`` component of the model.

    ``loss="pruned"`` adds the simple joint's two projections ``simple_enc``
    (enc_dim -> n_classes) and ``simple_pred`` (pred_dim -> n_classes), used by
    ``pruned_losses``; with ``loss="full"`` they do not exist (no parameter that
    no loss reaches, and the state dict of checkpoints from before this option).
    """

    def __init__(
        self,
        enc_dim: int,
        pred_dim: int = 128,
        pred_layers: int = 1,
        joiner_dim: int = 256,
        n_classes: int = NUM_CLASSES,
        dropout: float = 0.0,
        loss: str = "full",
        prune_range: int = 5,
        simple_loss_scale: float = 0.5,
        pruned_loss_scale: float = 1.0,
    ):
        super().__init__()
        if loss not in RNNT_LOSSES:
            raise ValueError(f"rnnt_loss must be one of {RNNT_LOSSES}, got {loss!r}")
        if loss == "pruned":
            rnnt_pruned.band_width(prune_range, 1)  # raises on prune_range < 2
            if simple_loss_scale < 0 or pruned_loss_scale < 0:
                raise ValueError(f"RNN-T loss scales must be >= 0, got simple {simple_loss_scale}, "
                                 f"pruned {pruned_loss_scale}")
        self.loss = loss
        self.prune_range = int(prune_range)
        self.simple_loss_scale = float(simple_loss_scale)
        self.pruned_loss_scale = float(pruned_loss_scale)
        self.predictor = Predictor(pred_dim, pred_layers, n_classes, dropout)
        self.joiner = Joiner(enc_dim, pred_dim, joiner_dim, n_classes)
        if loss == "pruned":
            self.simple_enc = nn.Linear(enc_dim, n_classes)
            self.simple_pred = nn.Linear(pred_dim, n_classes, bias=False)

    def forward(self, enc: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """enc (B, T, enc_dim), targets (B, U) int64 zero-padded -> joint logits (B, T, U + 1, n_classes)."""
        return self.joiner(enc, self.predictor(targets))

    def pruned_losses(
        self, enc: torch.Tensor, targets: torch.Tensor, enc_lengths: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Pruned RNN-T: enc (B, T, enc_dim), targets (B, U) int64 zero-padded (as ``trim_targets``
        gives them), enc_lengths (B,) ->

        - ``rnnt_simple_nll`` (B,): the simple joint's transducer loss per sequence
        - ``rnnt_pruned_nll`` (B,): the joiner's transducer loss on the pruned lattice
        - ``rnnt_target_lengths`` (B,): the target lengths used (last non-blank label + 1)
        - ``rnnt_prune_starts`` (B, T): band starts; the band is ``prune_range`` positions wide
          (the whole label axis where U + 1 is narrower)

        The lattices run in float32 (float64 for float64 inputs) with autocast
        off; the projections and the joiner under whatever autocast the caller set.
        """
        if self.loss != "pruned":
            raise ValueError("pruned_losses needs an RNNTHead built with loss='pruned'")
        pred = self.predictor(targets)
        target_lengths = rnnt_pruned.infer_target_lengths(targets, BLANK)
        width = rnnt_pruned.band_width(self.prune_range, targets.shape[1])
        am, lm = self.simple_enc(enc), self.simple_pred(pred)
        with torch.autocast(device_type=enc.device.type, enabled=False):
            simple_nll, occupancy = rnnt_pruned.simple_rnnt(am, lm, targets, enc_lengths,
                                                            target_lengths, BLANK)
            starts = rnnt_pruned.prune_starts(occupancy, enc_lengths, target_lengths, width)
        band_logits = self.joiner.band(enc, pred, starts, width)
        with torch.autocast(device_type=enc.device.type, enabled=False):
            pruned_nll = rnnt_pruned.pruned_rnnt(band_logits, targets, starts, enc_lengths,
                                                 target_lengths, BLANK)
        return {"rnnt_simple_nll": simple_nll, "rnnt_pruned_nll": pruned_nll,
                "rnnt_target_lengths": target_lengths, "rnnt_prune_starts": starts}

    def greedy_step_logprobs(self, enc_frame: torch.Tensor, pred_out: torch.Tensor) -> torch.Tensor:
        """(B, enc_dim), (B, pred_dim) -> log-probabilities (B, n_classes) for one decoding step."""
        return F.log_softmax(self.joiner.step(enc_frame, pred_out).float(), dim=-1)
