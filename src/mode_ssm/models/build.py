"""Build a model from its Hydra config group (``configs/model/*.yaml``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from mode_ssm.models.gru_baseline import GRUBaseline, GRUBaselineConfig
from mode_ssm.models.mode_ssm import ModeSSM, ModeSSMConfig, component_parameters, set_trainable

__all__ = ["build_model", "model_config", "component_parameters", "set_trainable"]

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


def model_config(cfg_model: Mapping[str, Any], n_days: int, n_channels: int) -> ModeSSMConfig | GRUBaselineConfig:
    """The config dataclass for ``cfg_model`` (keys as in configs/model/*.yaml plus ``name``).

    ``n_days`` and ``n_channels`` come from the data, not the file. Unknown keys
    raise, so a misspelt option cannot be silently ignored.
    """
    d = _to_dict(cfg_model)
    name = d.pop("name", None)
    if name not in _MODELS:
        raise ValueError(f"model name must be one of {list(_MODELS)}, got {name!r}")
    config_cls = _MODELS[name][1]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for model {name!r}; known: {sorted(fields)}")
    d.update(n_days=n_days, n_channels=n_channels)
    return config_cls(**d)


def build_model(cfg_model: Mapping[str, Any], n_days: int, n_channels: int) -> nn.Module:
    """``cfg.name`` "mode_ssm" -> ModeSSM, "gru_baseline" -> GRUBaseline."""
    config = model_config(cfg_model, n_days, n_channels)
    model_cls = next(m for m, c in _MODELS.values() if isinstance(config, c))
    return model_cls(config)
