"""Output heads over 41 classes: CTC, and RNN-T (predictor + joiner).

Class 0 is both the CTC blank and the RNN-T blank; the RNN-T predictor also
uses it as its start symbol (as is usual for transducers), so no extra class
is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mode_ssm.phonemes import BLANK, NUM_CLASSES

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
        start = torch.full_like(targets[:, :1], BLANK)
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

    def step(self, enc_frame: torch.Tensor, pred_out: torch.Tensor) -> torch.Tensor:
        """One frame, one predictor output per hypothesis: (B, enc_dim), (B, pred_dim) -> logits (B, n_classes)."""
        return self.out(torch.tanh(self.enc_proj(enc_frame) + self.pred_proj(pred_out)))


class RNNTHead(nn.Module):
    """Predictor and joiner together: the ``rnnt`` component of the model."""

    def __init__(
        self,
        enc_dim: int,
        pred_dim: int = 128,
        pred_layers: int = 1,
        joiner_dim: int = 256,
        n_classes: int = NUM_CLASSES,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.predictor = Predictor(pred_dim, pred_layers, n_classes, dropout)
        self.joiner = Joiner(enc_dim, pred_dim, joiner_dim, n_classes)

    def forward(self, enc: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """enc (B, T, enc_dim), targets (B, U) int64 zero-padded -> joint logits (B, T, U + 1, n_classes)."""
        return self.joiner(enc, self.predictor(targets))

    def greedy_step_logprobs(self, enc_frame: torch.Tensor, pred_out: torch.Tensor) -> torch.Tensor:
        """(B, enc_dim), (B, pred_dim) -> log-probabilities (B, n_classes) for one decoding step."""
        return F.log_softmax(self.joiner.step(enc_frame, pred_out).float(), dim=-1)
