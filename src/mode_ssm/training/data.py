"""What training needs around the model: the data root, mode pseudo-labels, the word decoder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mode_ssm.data.mode_labels import BlockModes, fit_block_modes, mode_targets_for_batch
from mode_ssm.data.sentences import train_sentences
from mode_ssm.data.t15 import T15Split, speaking_mode_id
from mode_ssm.decoding.words import make_word_decoder, word_resources
from mode_ssm.runtime.distributed import DistContext, barrier
from mode_ssm.sim import ensure_default_data

log = logging.getLogger(__name__)


def resolve_data_root(cfg: DictConfig, launch_dir: Path, ctx: DistContext) -> Path:
    """``data.data_root`` (relative to where the command was typed), or the simulator's default data."""
    if cfg.data.data_root:
        root = Path(cfg.data.data_root).expanduser()
        root = root if root.is_absolute() else launch_dir / root
        if not root.is_dir():
            raise FileNotFoundError(f"data.data_root={cfg.data.data_root}: no such folder ({root})")
        return root
    if ctx.is_main:
        root = ensure_default_data(preset=cfg.data.sim_preset, seed=cfg.data.sim_seed)
    barrier(ctx)
    return ensure_default_data(preset=cfg.data.sim_preset, seed=cfg.data.sim_seed) if not ctx.is_main else root


@dataclass
class ModeTargets:
    """Per-block speaking-mode pseudo-labels, fitted without ever reading the true mode."""

    fit: BlockModes

    @property
    def labels(self) -> Mapping[Hashable, tuple[int, float]]:
        return self.fit.labels

    def lookup(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return mode_targets_for_batch(self.labels, batch["sessions"], batch["block_nums"])

    def agreement_with_truth(self, truth: Mapping[Hashable, int]) -> float | None:
        """Block-level agreement with known modes (simulated data only), for reporting."""
        keys = [k for k in self.labels if k in truth and truth[k] >= 0]
        if not keys or not self.fit.supported:
            return None
        return float(np.mean([self.labels[k][0] == truth[k] for k in keys]))


def block_mode_targets(train_set: T15Split) -> ModeTargets:
    """Pseudo-label every train block from speaking rate and neural statistics (one streamed pass)."""
    meta = train_set.trial_metadata()
    keys = [(m["session"], int(m["block_num"])) for m in meta]
    features = (train_set[i].features for i in range(len(train_set)))
    return ModeTargets(fit_block_modes(keys, features, list(train_set.phoneme_lengths())))


def block_truth(split: T15Split) -> dict[Hashable, int]:
    """Known block modes (simulated data) for reporting; empty for real data."""
    return {(m["session"], int(m["block_num"])): speaking_mode_id(m["speaking_mode"]) for m in split.trial_metadata()
            if m["speaking_mode"] is not None}


def build_word_decoder(cfg: DictConfig, train_set: T15Split, run_dir: Path, ctx: DistContext):
    """Lexicon + n-gram LM decoder for val/wer: vocabulary = train words + frequent English words, LM from train text.

    The same sentences (:func:`mode_ssm.data.sentences.train_sentences`) and
    settings that evaluation reads, so both build the same LM; rank 0 builds it,
    the other ranks wait and read the same file.
    """
    decoding = OmegaConf.to_container(cfg.decoding, resolve=True)
    sentences = train_sentences(train_set.data_root, train_set.sessions, train_set.day_index)
    if ctx.is_main:
        word_resources(decoding, sentences, run_dir / "lm")
    barrier(ctx)
    lexicon, path = word_resources(decoding, sentences, run_dir / "lm", build=False)
    return make_word_decoder(decoding, lexicon, path)
