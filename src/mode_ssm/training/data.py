"""What training needs around the model: the data root, mode pseudo-labels, the word decoder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping

import numpy as np
import torch
from omegaconf import DictConfig

from mode_ssm.data.t15 import T15Split
from mode_ssm.models.mode import mode_targets_for_batch, pseudo_label_blocks
from mode_ssm.training.distributed import DistContext, barrier

log = logging.getLogger(__name__)


def resolve_data_root(cfg: DictConfig, launch_dir: Path, ctx: DistContext) -> Path:
    """``data.data_root`` (relative to where the command was typed), or the simulator's default data."""
    if cfg.data.data_root:
        root = Path(cfg.data.data_root).expanduser()
        root = root if root.is_absolute() else launch_dir / root
        if not root.is_dir():
            raise FileNotFoundError(f"data.data_root={cfg.data.data_root}: no such folder ({root})")
        return root
    from mode_ssm.sim import ensure_default_data

    if ctx.is_main:
        root = ensure_default_data(preset=cfg.data.sim_preset, seed=cfg.data.sim_seed)
    barrier(ctx)
    return ensure_default_data(preset=cfg.data.sim_preset, seed=cfg.data.sim_seed) if not ctx.is_main else root


@dataclass
class ModeTargets:
    """Per-block speaking-mode pseudo-labels, fitted without ever reading the true mode."""

    labels: Mapping[Hashable, tuple[int, float]]

    def lookup(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return mode_targets_for_batch(self.labels, batch["sessions"], batch["block_nums"])

    def agreement_with_truth(self, truth: Mapping[Hashable, int]) -> float | None:
        """Block-level agreement with known modes (simulated data only), for reporting."""
        keys = [k for k in self.labels if k in truth and truth[k] >= 0]
        if not keys:
            return None
        return float(np.mean([self.labels[k][0] == truth[k] for k in keys]))


def block_mode_targets(train_set: T15Split) -> ModeTargets:
    """Pseudo-label every train block from speaking rate and neural statistics (one streamed pass)."""
    meta = train_set.trial_metadata()
    keys = [(m["session"], int(m["block_num"])) for m in meta]
    features = (train_set[i].features for i in range(len(train_set)))
    return ModeTargets(pseudo_label_blocks(keys, features, list(train_set.phoneme_lengths())))


def block_truth(split: T15Split) -> dict[Hashable, int]:
    """Known block modes (simulated data) for reporting; empty for real data."""
    from mode_ssm.data.t15 import speaking_mode_id

    return {(m["session"], int(m["block_num"])): speaking_mode_id(m["speaking_mode"]) for m in split.trial_metadata()
            if m["speaking_mode"] is not None}


def build_word_decoder(cfg: DictConfig, train_set: T15Split, run_dir: Path, ctx: DistContext):
    """Lexicon + n-gram LM decoder: vocabulary = train words + frequent English words, LM from train text."""
    lexicon, lm_path = word_decoder_resources(cfg.decoding, train_set, run_dir / "lm", ctx)
    return make_word_decoder(cfg.decoding, lexicon, lm_path)


def word_decoder_resources(
    decoding: Mapping[str, Any], train_set: T15Split, lm_dir: Path, ctx: DistContext | None = None
):
    """(lexicon, ARPA path) of the word decoder; the LM is built in ``lm_dir`` unless already there.

    Shared by training and evaluation so both decode with the same vocabulary and LM.
    """
    from mode_ssm.decoding.lexicon_decoder import build_vocabulary
    from mode_ssm.decoding.ngram import build_arpa

    ctx = ctx or DistContext()
    sentences = [m["sentence"] for m in train_set.trial_metadata() if m["sentence"]]
    if not sentences:
        raise ValueError(f"{train_set.data_root}: no labelled train sentences to build the language model from")
    extra = _frequent_words(int(decoding["extra_vocabulary"]))
    lm_path = Path(lm_dir) / f"train_{decoding['lm_order']}gram.arpa"
    if ctx.is_main and not lm_path.is_file():
        # the extra words get their own small unigram share instead of all sharing <unk>'s
        build_arpa(sentences, order=int(decoding["lm_order"]), out_path=lm_path, extra_words=extra)
    barrier(ctx)
    return build_vocabulary(sentences, extra_words=extra).lexicon(), lm_path


def make_word_decoder(decoding: Mapping[str, Any], lexicon, lm_path: Path | None, **overrides: Any):
    """A :class:`WordDecoder` with the ``decoding`` settings; ``overrides`` (e.g. lm_weight) win."""
    from mode_ssm.decoding.lexicon_decoder import WordDecoder

    d = {k: decoding[k] for k in ("lm_weight", "word_score", "beam", "beam_size_token", "beam_threshold")}
    d.update(overrides)
    return WordDecoder(
        lexicon, arpa_path=lm_path, lm_weight=float(d["lm_weight"]), word_score=float(d["word_score"]),
        beam=int(d["beam"]), beam_size_token=int(d["beam_size_token"]), beam_threshold=float(d["beam_threshold"]),
    )


def _frequent_words(n: int) -> list[str]:
    if n <= 0:
        return []
    from wordfreq import top_n_list

    return top_n_list("en", n)
