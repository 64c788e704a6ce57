"""Ensembles: several trained checkpoints decoded as one model.

``checkpoint=[A,B,C]`` (a Hydra list) in evaluate / make_submission loads every member.
Members with the same output frames (the same conv stem: every MODE-SSM variant here) are
wrapped in :class:`EnsembleModel`, whose forward averages their CTC log-probabilities frame by
frame (the log of the geometric mean of their posteriors, which the search renormalises); the
word search then runs once on the average. Members at other frame rates (the GRU baseline's
14-bin patches) form further groups, each averaged the same way, and :class:`MergedEnsemble`
runs them all: the word search runs once per group and the groups' n-best lists are merged and
rescored by every group's CTC likelihood (:mod:`mode_ssm.decoding.nbest_merge`). Phonemes
(PER) and the CTC loss of a merged ensemble are those of its first group, the one holding the
first checkpoint. All members need the same training sessions (one day index) and the same
input pipeline; a mismatch is an error naming both checkpoints. The speaking mode is the mean of
the posteriors of the members that predict one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mode_ssm.runtime.loading import LoadedModel, load_model

PROBE_LENGTHS = (7, 8, 100, 257, 1000, 1501)  # bins at which the members' output frames must agree


def _predicts_mode(model: nn.Module) -> bool:
    head = getattr(model, "mode_head", None)
    return head is not None and bool(head.mode_signal)


class _Combined(nn.Module):
    """Models decoded together: the first one's config and output lengths, decoding options only."""

    def __init__(self, parts: Sequence[nn.Module], what: str, unit: str):
        super().__init__()
        if len(parts) < 2:
            raise ValueError(f"{what} needs at least 2 {unit}, got {len(parts)}")
        self.parts = nn.ModuleList(parts)
        self.config = parts[0].config

    def output_lengths(self, feature_lengths: torch.Tensor) -> torch.Tensor:
        return self.parts[0].output_lengths(feature_lengths)

    def _forward_parts(self, features: torch.Tensor, feature_lengths: torch.Tensor, day_index: torch.Tensor,
                       unused: dict[str, Any]) -> list[dict[str, Any]]:
        if any(v is not None and v is not False for v in unused.values()):
            raise ValueError(f"an ensemble decodes only: {sorted(unused)} are training options")
        return [m(features, feature_lengths, day_index) for m in self.parts]


class EnsembleModel(_Combined):
    """Members with the same output frames, their CTC log-probabilities averaged per frame."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__(members, "an ensemble", "members")

    @property
    def members(self) -> nn.ModuleList:
        return self.parts

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor, day_index: torch.Tensor,
                **unused: Any) -> dict[str, torch.Tensor]:
        outs = self._forward_parts(features, feature_lengths, day_index, unused)
        lengths = outs[0]["out_lengths"]
        log_probs = torch.stack([o["phoneme_logits"].float().log_softmax(-1) for o in outs]).mean(0)
        out = {"phoneme_logits": log_probs, "out_lengths": lengths}
        voters = [o["mode_logits"].float().softmax(-1) for o, m in zip(outs, self.members)
                  if "mode_logits" in o and _predicts_mode(m)]
        if voters:
            probs = torch.stack(voters).mean(0)
            out.update(mode_probs=probs, mode_logits=probs.log())
        return out


class MergedEnsemble(_Combined):
    """Groups of members at different frame rates: every group's log-probabilities, for an n-best merge.

    The output is the first group's (``phoneme_logits``, ``out_lengths``: what PER, the CTC loss and
    greedy phonemes read) plus ``group_log_probs`` and ``group_lengths``, one entry per group, for
    the merging search (``evaluation/search.py``); the mode is averaged over every member that predicts one.
    """

    def __init__(self, groups: Sequence[nn.Module]):
        super().__init__(groups, "a merged ensemble", "groups")

    @property
    def groups(self) -> nn.ModuleList:
        return self.parts

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor, day_index: torch.Tensor,
                **unused: Any) -> dict[str, Any]:
        outs = self._forward_parts(features, feature_lengths, day_index, unused)
        log_probs = [o["phoneme_logits"].float().log_softmax(-1) for o in outs]
        out: dict[str, Any] = {"phoneme_logits": log_probs[0], "out_lengths": outs[0]["out_lengths"],
                               "group_log_probs": log_probs, "group_lengths": [o["out_lengths"] for o in outs]}
        voters = []  # one posterior per member that predicts a mode
        for o, g in zip(outs, self.groups):
            if isinstance(g, EnsembleModel):
                if "mode_probs" in o:  # the group's voters already averaged: weigh it by their number
                    voters += [o["mode_probs"]] * sum(_predicts_mode(m) for m in g.members)
            elif "mode_logits" in o and _predicts_mode(g):
                voters.append(o["mode_logits"].float().softmax(-1))
        if voters:
            probs = torch.stack(voters).mean(0)
            out.update(mode_probs=probs, mode_logits=probs.log())
        return out


def _frame_rate_groups(loaded: Sequence[LoadedModel]) -> list[list[LoadedModel]]:
    """Members grouped by the output frames they emit (checked at ``PROBE_LENGTHS``), first-seen order."""
    probe = torch.tensor(PROBE_LENGTHS)
    groups: list[tuple[torch.Tensor, list[LoadedModel]]] = []
    for m in loaded:
        frames = m.model.output_lengths(probe)
        for key, members in groups:
            if torch.equal(key, frames):
                members.append(m)
                break
        else:
            groups.append((frames, [m]))
    return [members for _, members in groups]


def load_checkpoints(checkpoint: Any, launch_dir: str | Path, device: Any) -> LoadedModel:
    """``checkpoint``: one path, or a list of paths (relative to ``launch_dir``) -> one model or their ensemble."""
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    if not paths or not all(isinstance(p, (str, Path)) for p in paths):
        raise ValueError(f"checkpoint={checkpoint}: give a path or a list of paths, e.g. 'checkpoint=[A.pt,B.pt]'")
    loaded = [load_model(Path(launch_dir) / Path(str(p)).expanduser(), device) for p in paths]
    if len(loaded) == 1:
        return loaded[0]
    first = loaded[0]
    pipeline = first.eval_augmenter().config
    for other in loaded[1:]:
        pair = f"ensemble members {first.path} and {other.path}"
        if list(other.day_index.sessions) != list(first.day_index.sessions):
            raise ValueError(f"{pair} were trained on different sessions; their day layers cannot be shared")
        if other.eval_augmenter().config != pipeline or other.num_channels != first.num_channels:
            raise ValueError(f"{pair} read their input differently (smoothing, causality or channels): "
                             f"{pipeline} / {other.eval_augmenter().config}")
    groups = [g[0].model if len(g) == 1 else EnsembleModel([m.model for m in g]) for g in _frame_rate_groups(loaded)]
    model = (groups[0] if len(groups) == 1 else MergedEnsemble(groups)).to(first.device).eval()
    return LoadedModel(model, first.day_index, first.config, first.path, first.trained_data_root, first.device,
                       members=[m.path for m in loaded])
