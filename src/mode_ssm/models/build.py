"""Build a model from its Hydra config group (``configs/model/*.yaml``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mode_ssm.models.gru_baseline import GRUBaseline, GRUBaselineConfig
from mode_ssm.models.mode_ssm import ModeSSM, ModeSSMConfig, component_parameters, set_trainable

__all__ = ["build_model", "model_config", "model_components", "model_loss_reach", "output_frames", "MinimumBins", "component_parameters", "set_trainable"]

_MODELS = {"mode_ssm": (ModeSSM, ModeSSMConfig), "gru_baseline": (GRUBaseline, GRUBaselineConfig)}


def _to_dict(cfg: Any) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if not isinstance(cfg, Mapping):
        raise TypeError(f"model config must be a mapping, got {type(cfg).__name__}")
    return dict(cfg)


INPUT_WIDTHS = (256, 512)  # threshold crossings only, or crossings + spike band power


def model_config(
    cfg_model: Mapping[str, Any], n_days: int, n_channels: int, num_channels: int | None = None
) -> ModeSSMConfig | GRUBaselineConfig:
    """The config dataclass for ``cfg_model`` (keys as in configs/model/*.yaml plus ``name``).

    ``n_days`` and ``n_channels`` (features per bin in the files) come from the
    data, ``num_channels`` (features the model reads) from ``preprocessor.num_channels``:
    it is the one place the input width is set, so a model file may not set it.
    Unknown keys raise, so a misspelt option cannot be silently ignored.
    """
    d = _to_dict(cfg_model)
    name = d.pop("name", None)
    if name not in _MODELS:
        raise ValueError(f"model.name must be one of {list(_MODELS)}, got {name!r}")
    config_cls = _MODELS[name][1]
    if "num_channels" in d:
        if num_channels is not None:
            raise ValueError("model.num_channels is not a model option: the input width is preprocessor.num_channels")
        num_channels = d.pop("num_channels")  # a saved checkpoint's model_config records it
    for key in ("n_days", "n_channels"):
        if key in d:
            raise ValueError(f"model.{key} comes from the data and cannot be set")
    fields = {f.name for f in dataclasses.fields(config_cls)} - {"n_days", "n_channels", "num_channels"}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"unknown key(s) {['model.' + k for k in unknown]} for model {name!r}; known: {sorted(fields)}")
    num_channels = int(num_channels if num_channels is not None else n_channels)
    if num_channels not in INPUT_WIDTHS:
        raise ValueError(f"preprocessor.num_channels={num_channels}: must be one of {list(INPUT_WIDTHS)} "
                         "(256 = threshold crossings only, 512 = with spike band power)")
    d.update(n_days=n_days, n_channels=n_channels, num_channels=num_channels)
    return config_cls(**d)


def build_model(cfg_model: Mapping[str, Any], n_days: int, n_channels: int, num_channels: int | None = None) -> nn.Module:
    """``cfg.name`` "mode_ssm" -> ModeSSM, "gru_baseline" -> GRUBaseline."""
    config = model_config(cfg_model, n_days, n_channels, num_channels)
    model_cls = next(m for m, c in _MODELS.values() if isinstance(config, c))
    return model_cls(config)


def model_components(cfg_model: Mapping[str, Any], num_channels: int | None = None) -> tuple[str, ...]:
    """The trainable components a model built from ``cfg_model`` has (checks the config, builds nothing)."""
    config = model_config(cfg_model, n_days=1, n_channels=512, num_channels=num_channels)
    model_cls = next(m for m, c in _MODELS.values() if isinstance(config, c))
    return model_cls.components_of(config)


def model_loss_reach(cfg_model: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Loss name -> the components its gradient reaches, for a model built from ``cfg_model``."""
    config = model_config(cfg_model, n_days=1, n_channels=512, num_channels=512)
    model_cls = next(m for m, c in _MODELS.values() if isinstance(config, c))
    return model_cls.loss_reach(config)


def output_frames(model: nn.Module):
    """``n_bins -> frames the model emits`` for the reader's CTC feasibility rule."""
    def frames(n_bins: int) -> int:
        return int(model.output_lengths(torch.tensor([int(n_bins)]))[0])

    return frames


class MinimumBins:
    """The fewest input bins from which ``model`` emits at least ``n`` frames (cached per ``n``).

    Bounds training's random time cut so a cut trial stays alignable by CTC under
    this model's own output lengths (output frames never fall as bins grow).
    """

    def __init__(self, model: nn.Module, max_bins: int = 1 << 16):
        self._frames = output_frames(model)
        self._max = max_bins
        self._cache: dict[int, int] = {}

    def __call__(self, n_frames: int) -> int:
        n_frames = max(int(n_frames), 1)
        if n_frames not in self._cache:
            lo, hi = 1, 1
            while self._frames(hi) < n_frames:
                if hi >= self._max:
                    raise ValueError(f"no input of up to {self._max} bins gives {n_frames} frames")
                lo, hi = hi + 1, hi * 2
            while lo < hi:  # smallest hi with frames(hi) >= n_frames
                mid = (lo + hi) // 2
                lo, hi = (mid + 1, hi) if self._frames(mid) < n_frames else (lo, mid)
            self._cache[n_frames] = hi
        return self._cache[n_frames]
