"""The field's augmentations of neural features, on a zero-padded batch (B, T, C).

Every function takes the trial lengths and leaves padding at zero, so CTC and
the encoder see the same trials they would see unaugmented. Randomness comes
only from the ``torch.Generator`` passed in (on the same device as the
features), so a seeded generator reproduces an augmented batch exactly.

:class:`Augmenter` applies them in the official baseline's order: random cut
at the start, white noise, constant offset, Gaussian smoothing (which the
baseline also applies at evaluation, so ``train=False`` keeps only it), then
time masks on what the model finally sees. A channel constant over a trial (a
dead electrode) is zeroed first, at evaluation too, and gets no noise or offset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """lengths (B,) -> (B, T=max_len) bool, True inside each trial."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean_var(x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Per-trial, per-channel mean and (biased) variance over valid time steps.

    x (B, T, C), lengths (B,) -> mean (B, 1, C), var (B, 1, C). A trial of
    length 0 gets mean 0 and variance 0.
    """
    mask = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    n = lengths.clamp(min=1).to(x.dtype)[:, None, None]
    mean = (x * mask).sum(1, keepdim=True) / n
    var = (((x - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return mean, var


def live_channels(x: Tensor, lengths: Tensor, tol: float = 1e-6) -> Tensor:
    """(B, 1, C) bool: channels that vary over the trial's valid steps (all of them for a trial under 2 steps)."""
    _, var = masked_mean_var(x, lengths)
    return (var > tol**2) | (lengths < 2)[:, None, None]


def zero_constant_channels(x: Tensor, lengths: Tensor, tol: float = 1e-6) -> Tensor:
    """Zero every channel that is constant over a trial's valid time steps.

    x (B, T, C), lengths (B,) -> (B, T, C). A disconnected or saturated electrode
    reads a constant; zeroing it makes the model's output independent of the
    value it is stuck at. Trials shorter than 2 steps are left untouched (one
    step is always "constant"). Padded steps are set to 0.
    """
    mask = length_mask(lengths, x.shape[1]).unsqueeze(-1)
    return x * (live_channels(x, lengths, tol) & mask).to(x.dtype)


def _check(features: Tensor, lengths: Tensor) -> None:
    if features.ndim != 3:
        raise ValueError(f"features must be (B, T, C), got shape {tuple(features.shape)}")
    if lengths.shape != (features.shape[0],):
        raise ValueError(f"lengths must be (B,) = ({features.shape[0]},), got {tuple(lengths.shape)}")
    if len(lengths) and int(lengths.max()) > features.shape[1]:
        raise ValueError(f"a length {int(lengths.max())} exceeds the padded time axis {features.shape[1]}")


def add_white_noise(features: Tensor, lengths: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """Independent Gaussian noise per bin and channel. features (B, T, C), lengths (B,) -> (B, T, C)."""
    _check(features, lengths)
    noise = torch.randn(features.shape, generator=generator, device=features.device, dtype=features.dtype)
    mask = length_mask(lengths, features.shape[1])[..., None]
    return (features + std * noise) * mask


def add_constant_offset(
    features: Tensor, lengths: Tensor, std: float, generator: torch.Generator | None = None
) -> Tensor:
    """One Gaussian offset per trial and channel, held over the trial (slow baseline drift).

    features (B, T, C), lengths (B,) -> (B, T, C)
    """
    _check(features, lengths)
    batch, _, channels = features.shape
    offset = torch.randn((batch, 1, channels), generator=generator, device=features.device, dtype=features.dtype)
    mask = length_mask(lengths, features.shape[1])[..., None]
    return (features + std * offset) * mask


def random_time_cut(
    features: Tensor,
    lengths: Tensor,
    max_cut: int,
    generator: torch.Generator | None = None,
    min_lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Drop a random 0..max_cut bins from the start of each trial (uniform, per trial).

    A trial is never cut below ``min_lengths`` (B,) (default 1 bin); pass the CTC
    minimum under the model's output lengths (training uses
    :class:`mode_ssm.models.build.MinimumBins`) to keep labels alignable.

    features (B, T, C), lengths (B,) -> features (B, T', C) with T' = new longest trial, lengths (B,)
    """
    _check(features, lengths)
    floor = torch.ones_like(lengths) if min_lengths is None else min_lengths.to(lengths).clamp(min=1)
    room = (lengths - floor).clamp(min=0).clamp(max=max_cut)
    draw = torch.rand(lengths.shape, generator=generator, device=features.device)
    cut = torch.minimum((draw * (room + 1).to(draw.dtype)).long(), room)
    new_lengths = lengths - cut
    max_len = int(new_lengths.max()) if len(new_lengths) else 0
    time = torch.arange(max_len, device=features.device)[None, :] + cut[:, None]  # (B, T')
    time = time.clamp(max=features.shape[1] - 1)
    shifted = torch.gather(features, 1, time[..., None].expand(-1, -1, features.shape[2]))
    return shifted * length_mask(new_lengths, max_len)[..., None], new_lengths


def gaussian_kernel(std: float, kernel_size: int = 100) -> Tensor:
    """Normalised Gaussian taps (K,) within ``kernel_size``, keeping those whose density exceeds 0.01.

    That cut-off is the official baseline's; for its std of 2 bins it keeps 9 taps.
    """
    if std <= 0:
        raise ValueError(f"smoothing std must be > 0 bins, got {std}")
    half = kernel_size // 2
    t = torch.arange(-half, kernel_size - half, dtype=torch.float64)
    density = torch.exp(-0.5 * (t / std) ** 2) / (std * math.sqrt(2 * math.pi))
    taps = density[density > 0.01]
    if len(taps) == 0:  # std so wide no tap clears the cut-off: plain Gaussian over the window
        taps = density
    return (taps / taps.sum()).float()


def gaussian_smooth(features: Tensor, lengths: Tensor, std: float, kernel_size: int = 100) -> Tensor:
    """Smooth each channel over time with a Gaussian of ``std`` bins (zero outside each trial).

    Treating bins past a trial's end as zero gives each trial exactly what it
    would get smoothed alone, as the baseline's zero-padded convolution does.

    features (B, T, C), lengths (B,) -> (B, T, C)
    """
    _check(features, lengths)
    batch, steps, _ = features.shape
    kernel = gaussian_kernel(std, kernel_size).to(features)
    mask = length_mask(lengths, steps)[..., None]
    signals = rearrange(features * mask, "b t c -> (b c) 1 t")
    taps = len(kernel)
    # conv1d correlates; the kernel is symmetric but pad so the centre tap lands on each bin
    smoothed = F.conv1d(F.pad(signals, ((taps - 1) // 2, taps // 2)), kernel.flip(0)[None, None, :])
    return rearrange(smoothed, "(b c) 1 t -> b t c", b=batch) * mask


def causal_gaussian_kernel(std: float, kernel_size: int = 100) -> Tensor:
    """The past half of ``gaussian_kernel``: taps for lags 0, 1, ... (K,), renormalised to sum to 1."""
    if std <= 0:
        raise ValueError(f"smoothing std must be > 0 bins, got {std}")
    half = kernel_size // 2
    t = torch.arange(0, kernel_size - half, dtype=torch.float64)
    density = torch.exp(-0.5 * (t / std) ** 2) / (std * math.sqrt(2 * math.pi))
    taps = density[density > 0.01]
    if len(taps) == 0:
        taps = density
    return (taps / taps.sum()).float()


def causal_smooth(features: Tensor, lengths: Tensor, std: float, kernel_size: int = 100,
                  history: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Smooth each channel over the bins up to and including each bin: y_t = sum_k w_k x_{t-k}.

    features (B, T, C) -> (smoothed (B, T, C), history (B, K - 1, C): the last K - 1 input bins,
    to pass with the trial's next chunk). Bins before the trial's start are zero (``history=None``),
    as the centred smoothing's padding is.
    """
    _check(features, lengths)
    batch, steps, channels = features.shape
    kernel = causal_gaussian_kernel(std, kernel_size).to(features)
    taps = len(kernel)
    mask = length_mask(lengths, steps)[..., None]
    x = features * mask
    if history is None:
        history = x.new_zeros(batch, taps - 1, channels)
    x = torch.cat([history.to(x.dtype), x], dim=1)
    # y_t = sum_k w_k x_{t-k}: K shifted adds (a few taps), cheaper than a per-channel convolution
    # for the stream's chunks of a few bins, and no larger than the input in training
    smoothed = sum(w * x[:, taps - 1 - k : taps - 1 - k + steps] for k, w in enumerate(kernel.tolist()))
    return smoothed * mask, x[:, x.shape[1] - (taps - 1):]


@dataclass
class LiveState:
    first: Tensor  # (B, C) each channel's first value in the trial
    live: Tensor  # (B, C) bool: has moved from it


def causal_live_mask(x: Tensor, lengths: Tensor, state: LiveState | None = None,
                     tol: float = 1e-6) -> tuple[Tensor, LiveState | None]:
    """(B, T, C) bool: the channel has moved more than ``tol`` from its first bin at or before t
    (False on padded steps), and the state after each sequence's last step."""
    mask = length_mask(lengths, x.shape[1]).unsqueeze(-1)
    if x.shape[1] == 0:
        return mask.expand(-1, -1, x.shape[2]), state
    first = x[:, 0] if state is None else state.first
    moved = ((x - first[:, None]).abs() > tol) & mask
    live = torch.cummax(moved.to(torch.int8), dim=1).values.bool()
    if state is not None:
        live = live | state.live[:, None]
    return live & mask, LiveState(first, live[:, -1])


def causal_live_channels(x: Tensor, lengths: Tensor, state: LiveState | None = None,
                         tol: float = 1e-6) -> tuple[Tensor, LiveState | None]:
    """x (B, T, C) -> (x with every channel zeroed while it has not yet moved, state).

    The causal form of ``zero_constant_channels``: a disconnected or saturated
    electrode never moves from its first value and stays zero throughout; a live
    one is zero until its first change (within a bin or two). Padded steps are zero.
    """
    live, state = causal_live_mask(x, lengths, state, tol)
    return x * live.to(x.dtype), state


def time_mask(
    features: Tensor, lengths: Tensor, n_masks: int, max_width: int, generator: torch.Generator | None = None
) -> Tensor:
    """Zero ``n_masks`` spans of 0..max_width bins per trial, placed uniformly inside the trial.

    features (B, T, C), lengths (B,) -> (B, T, C)
    """
    _check(features, lengths)
    batch, steps, _ = features.shape
    if n_masks <= 0 or max_width <= 0:
        return features * length_mask(lengths, steps)[..., None]
    device = features.device
    width = (torch.rand((batch, n_masks), generator=generator, device=device) * (max_width + 1)).long()
    width = torch.minimum(width, lengths[:, None])
    start_room = (lengths[:, None] - width + 1).to(torch.float32)
    start = (torch.rand((batch, n_masks), generator=generator, device=device) * start_room).long()
    start = torch.minimum(start, lengths[:, None] - width)
    time = torch.arange(steps, device=device)[None, None, :]  # (1, 1, T)
    masked = ((time >= start[..., None]) & (time < (start + width)[..., None])).any(dim=1)  # (B, T)
    keep = length_mask(lengths, steps) & ~masked
    return features * keep[..., None]


@dataclass
class AugmentConfig:
    """All off by default.

    The official baseline trains with white_noise_std=1.0, constant_offset_std=0.2,
    random_cut=3, smooth_std=2, smooth_kernel_size=100 and no time masks. Its
    random cut drops 0..2 bins from the whole batch at once; ours drops
    0..random_cut bins per trial, so that one long trial does not set the cut for all.
    """

    white_noise_std: float = 0.0
    constant_offset_std: float = 0.0
    random_cut: int = 0  # most bins dropped from the start of a trial
    smooth_std: float = 0.0  # Gaussian smoothing std in bins; 0 = off
    smooth_kernel_size: int = 100
    time_masks: int = 0  # masks per trial
    time_mask_max_width: int = 0  # bins
    # a causal model's input pipeline: dead channels judged and smoothing done on past bins only
    # (causal_live_channels, causal_smooth); the trainer sets it from model.causal
    causal: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "AugmentConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown augmentation option(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: values[k] for k in values})


class Augmenter:
    """Apply the configured augmentations to a padded batch.

    ``Augmenter({"white_noise_std": 1.0, "smooth_std": 2})`` or with an
    :class:`AugmentConfig`; a Hydra/OmegaConf node works as a mapping.
    """

    def __init__(self, config: AugmentConfig | Mapping[str, Any] | None = None):
        if config is None:
            config = AugmentConfig()
        elif not isinstance(config, AugmentConfig):
            config = AugmentConfig.from_mapping(dict(config))
        self.config = config

    def __call__(
        self,
        features: Tensor,
        lengths: Tensor,
        generator: torch.Generator | None = None,
        train: bool = True,
        min_lengths: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """features (B, T, C), lengths (B,) -> augmented features (B, T', C), lengths (B,).

        ``train=False`` applies only the zeroing of constant channels and the smoothing, which the
        model expects at evaluation too.
        ``min_lengths`` (B,) bounds the random cut (see :func:`random_time_cut`).
        """
        _check(features, lengths)
        c = self.config
        if train and c.random_cut > 0:
            features, lengths = random_time_cut(features, lengths, c.random_cut, generator, min_lengths)
        # A dead electrode (a channel constant over the trial) reads 0 from here on, in training and at
        # evaluation alike: before the smoothing, whose zero padding would otherwise turn a channel
        # stuck at v != 0 into a ramp at the trial's edges, and through the noise and offsets.
        if c.causal:
            live = causal_live_mask(features, lengths)[0].to(features.dtype)
        else:
            live = live_channels(features, lengths).to(features.dtype)
        features = features * live
        if train and c.white_noise_std > 0:
            features = add_white_noise(features, lengths, c.white_noise_std, generator) * live
        if train and c.constant_offset_std > 0:
            features = add_constant_offset(features, lengths, c.constant_offset_std, generator) * live
        if c.smooth_std > 0 and c.causal:
            features = causal_smooth(features, lengths, c.smooth_std, c.smooth_kernel_size)[0]
        elif c.smooth_std > 0:
            features = gaussian_smooth(features, lengths, c.smooth_std, c.smooth_kernel_size)
        if train and c.time_masks > 0 and c.time_mask_max_width > 0:
            features = time_mask(features, lengths, c.time_masks, c.time_mask_max_width, generator)
        return features, lengths

    def __repr__(self) -> str:
        return f"Augmenter({asdict(self.config)})"


def smoothed(batches: Iterable[Mapping[str, Any]], augmenter: Augmenter) -> Iterator[dict[str, Any]]:
    """Batches as a model reads them at evaluation: only ``augmenter``'s input smoothing applied.

    The one evaluation-time batch transform: training's val/wer, evaluation,
    TTA and submission all pass their batches through it. Non-finite values
    are zeroed first (:func:`finite_features`).
    """
    for batch in batches:
        feats, lens = augmenter(finite_features(batch["features"]), batch["feature_lengths"], None, False)
        yield {**batch, "features": feats, "feature_lengths": lens}


def finite_features(features: Tensor) -> Tensor:
    """Evaluation's NaN/Inf policy: non-finite values become 0 (the trial is decoded, and flagged by the reader)."""
    return torch.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)
