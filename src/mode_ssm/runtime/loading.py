"""Loading a trained model: what training, evaluation, submission and benchmarks share.

:func:`load_model` checks that a file is a MODE-SSM training checkpoint and
rebuilds the model exactly as trained (weights, day index, input smoothing,
decoding settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from mode_ssm.data.augment import Augmenter
from mode_ssm.data.t15 import DayIndex
from mode_ssm.decoding.words import DECODING_KEYS
from mode_ssm.models.build import build_model
from mode_ssm.runtime.checkpoint import CheckpointError, load_checkpoint

REQUIRED_KEYS = ("model", "model_config", "day_index", "config")


@dataclass
class LoadedModel:
    """A trained model ready to decode, with what it was trained with."""

    model: torch.nn.Module
    day_index: DayIndex
    config: dict[str, Any]  # the full resolved training config
    path: Path
    trained_data_root: Path | None
    device: torch.device
    members: list[Path] | None = None  # an ensemble's checkpoints (runtime/ensemble.py); None: one model

    @property
    def description(self) -> str:
        return str(self.path) if not self.members else f"ensemble of {len(self.members)}: " + ", ".join(map(str, self.members))

    @property
    def num_channels(self) -> int:
        """Features per bin the model reads (256 or 512): what it was built with."""
        return int(self.model.config.num_channels)

    @property
    def has_rnnt(self) -> bool:
        return getattr(self.model, "rnnt", None) is not None

    def eval_augmenter(self) -> Augmenter:
        """Only the input smoothing the model was trained with (what ``train=False`` applies);
        past bins only for a causal model."""
        aug = self.config.get("augmentation", {}) or {}
        causal = bool(getattr(getattr(self.model, "config", None), "causal", False))
        return Augmenter({**{k: aug[k] for k in ("smooth_std", "smooth_kernel_size") if k in aug}, "causal": causal})

    def decoding(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint's ``decoding`` settings with the non-null ``overrides`` applied."""
        d = dict(self.config.get("decoding", {}) or {})
        d.update({k: v for k, v in (overrides or {}).items() if v is not None})
        missing = [k for k in DECODING_KEYS if d.get(k) is None]
        if missing:
            raise CheckpointError(f"{self.path}: training config has no decoding.{missing[0]} (and none was given)")
        return d


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint written by ``scripts/train.py`` into an eval-mode model on ``device``."""
    path = Path(path)
    state = load_checkpoint(path, map_location="cpu")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a MODE-SSM checkpoint (holds a {type(state).__name__}, expected a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: not a MODE-SSM training checkpoint: missing {missing} (has {sorted(state)[:8]})"
        )
    try:
        day_index = DayIndex.from_dict(state["day_index"])
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: bad day index ({e})") from None
    config = dict(state["config"])
    model_cfg = dict(state["model_config"])
    num_channels = int(model_cfg.pop("num_channels", model_cfg.get("n_channels", 512)))
    n_channels = int(model_cfg.pop("n_channels", num_channels))
    model_cfg.pop("n_days", None)
    device = torch.device(device)
    if model_cfg.get("use_cuda_kernel") is True and device.type != "cuda":
        # a speed setting, not part of the weights: the pure scan computes the same function
        model_cfg["use_cuda_kernel"] = "auto"
    try:
        model = build_model(model_cfg, n_days=len(day_index), n_channels=n_channels, num_channels=num_channels)
        model.load_state_dict(state["model"])
    except (ValueError, TypeError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes ({e})") from None
    model.to(device).eval()
    root = state.get("data_root")
    return LoadedModel(model, day_index, config, path, Path(root) if root else None, device)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
