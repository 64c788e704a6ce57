"""Flow bridge: a few-step denoiser on encoder features.

Formulation (conditional flow matching along straight paths from corrupted to
clean features):
  - clean features x1 (B, T, D) are the (detached) features the heads read;
  - a corrupted start x0 = x1 + s * eps, eps ~ N(0, I), s = ``noise_std`` times
    the trial's feature RMS (so the corruption is scale-free);
  - on the path x_t = (1 - t) x0 + t x1, t ~ U(0, 1) per trial, the velocity
    is x1 - x0 = -s * eps; a small network v(x_t, t) regresses it:
        loss = E || v(x_t, t) - (x1 - x0) ||^2 / (s^2 D)
    so a network that outputs 0 (the zero-initialised one) scores 1.0;
  - at inference the features are taken as x0 and moved by ``n_steps`` Euler
    steps x <- x + v(x, t) / n_steps, t = 0, 1/n, ..., (n-1)/n.
The features at inference are not pure noise but, e.g., features of a drifted
session; the bridge is trained to pull corrupted features back onto the
training features' manifold. It also moves clean features a little (it
cannot know they are clean), so it is an optional stage, switched by
``enabled``, and an identity until trained.

The encoder is not trained through this loss: with x1 not detached the easiest
way to lower it would be to shrink the encoder's features. Conversely, while
the bridge is enabled during training, the phoneme losses reach its weights
too; freeze it (``set_trainable``) in stages where it should stay a pure
denoiser.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from mode_ssm.data.augment import length_mask


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t (B,) in [0, 1] -> sinusoidal features (B, dim), dim even."""
    freqs = torch.exp(torch.arange(dim // 2, device=t.device, dtype=t.dtype) * (-math.log(1000.0) / (dim // 2)))
    angles = 1000.0 * t[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FlowBridge(nn.Module):
    """Velocity network v(x_t, t) over encoder features and its Euler integrator.

    v: Linear(D -> hidden) + time embedding, GELU, depthwise Conv1d over time
    (``kernel_size`` frames of context, padded frames zeroed first so padding
    changes nothing), GELU, Linear(hidden -> D) initialised to zero.
    """

    def __init__(
        self,
        d_model: int,
        n_steps: int = 4,
        hidden: int | None = None,
        noise_std: float = 0.5,
        kernel_size: int = 5,
        t_dim: int = 32,
        enabled: bool = False,
    ):
        super().__init__()
        if n_steps < 1 or kernel_size % 2 == 0:
            raise ValueError(f"need n_steps >= 1 and an odd kernel_size, got {n_steps=} {kernel_size=}")
        hidden = hidden or 2 * d_model
        self.n_steps = n_steps
        self.noise_std = noise_std
        self.t_dim = t_dim
        self.enabled = enabled
        self.inp = nn.Linear(d_model, hidden)
        self.t_proj = nn.Linear(t_dim, hidden)
        self.conv = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.out = nn.Linear(hidden, d_model)
        self.act = nn.GELU()
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), t (B,), lengths (B,) -> velocity (B, T, D), zero at padded frames."""
        mask = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
        h = self.act(self.inp(x) + self.t_proj(time_embedding(t.to(x.dtype), self.t_dim))[:, None, :]) * mask
        h = self.act(rearrange(self.conv(rearrange(h, "b t h -> b h t")), "b h t -> b t h"))
        return self.out(h) * mask

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), lengths (B,) -> denoised (B, T, D); x itself when not ``enabled``."""
        if not self.enabled:
            return x
        dt = 1.0 / self.n_steps
        for step in range(self.n_steps):
            t = torch.full((x.shape[0],), step * dt, device=x.device, dtype=x.dtype)
            x = x + dt * self.velocity(x, t, lengths)
        return x

    def loss(
        self, clean: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Flow-matching loss (scalar) on clean features (B, T, D), lengths (B,); see the module docstring."""
        x1 = clean.detach()
        mask = length_mask(lengths, x1.shape[1]).unsqueeze(-1).to(x1.dtype)
        n_valid = lengths.clamp(min=1).to(x1.dtype)[:, None, None]
        rms = torch.sqrt(((x1**2) * mask).sum((1, 2), keepdim=True) / (n_valid * x1.shape[-1]) + 1e-8)
        scale = self.noise_std * rms  # (B, 1, 1)
        eps = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        t = torch.rand(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)
        x0 = x1 + scale * eps
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        err = ((self.velocity(xt, t, lengths) - (x1 - x0)) / scale) ** 2 * mask
        return err.sum() / (lengths.sum().clamp(min=1) * x1.shape[-1])
