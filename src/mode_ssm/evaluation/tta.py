"""Test-time adaptation against neural drift, one session at a time, without labels.

By default only sessions decoded with a borrowed day layer adapt (``sessions``:
"unseen"); a session with its own trained layer has no day-to-day drift to undo,
and adapting it cost WER on ``bench`` (README). Up to three steps per session:

1. **Feature whitening** (off by default): an exponential moving average of the
   session's per-channel mean and variance over its trials (valid bins only)
   re-standardises the inputs, ``x' = (x - mean) / sqrt(var + eps)``. The
   release already z-scores features per block, so this is close to the
   identity; it only removes a session-wide offset or gain.
2. **Information maximisation** of the CTC posteriors (the default; entropy
   minimisation as in Tent, Wang et al. 2021, and SUTA, Lin et al. 2022, plus
   the diversity term of SHOT, Liang et al. 2020): a few Adam steps on the mean
   per-frame entropy minus ``diversity`` x the entropy of the frames' mean
   non-blank distribution, updating only the parameters named in ``params``
   (the session's day layer, channel gates, normalisation layers), never the
   encoder or heads. Frames whose best class is blank are left out by default:
   CTC posteriors are mostly blank, and sharpening those only teaches the model
   to delete phonemes; the diversity term keeps the confident frames from
   collapsing onto a few phonemes.
3. **Self-training on language-model transcripts** (off by default; as
   continual online recalibration does for intracortical speech decoders):
   decode the session with the lexicon + n-gram beam search, turn each sentence
   back into phonemes with the lexicon, keep the trials whose greedy CTC
   phonemes disagree with that transcript by at most ``max_disagreement``, and
   take CTC steps towards those pseudo-targets on the same parameters;
   ``self_train_rounds`` repeats decode -> train. It needs transcripts much
   better than the network's own phonemes; at ~50% WER it does not help
   (README). :func:`mode_ssm.evaluation.pipeline.decode_trials` cross-fits it over
   ``self_train_folds`` folds so no trial is decoded by a model fitted to its
   own pseudo-label.

:func:`adapted_to_session` restores every parameter it touched when the
``with`` block ends, so sessions never leak into one another.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import editdistance
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mode_ssm.data.augment import length_mask
from mode_ssm.data.t15 import count_adjacent_repeats
from mode_ssm.decoding.ctc import ctc_greedy
from mode_ssm.models.losses import ctc_loss_per_token

PARAM_GROUPS = ("day_layer", "day_bias", "gates", "norms")
TTA_SESSIONS = ("unseen", "all")


@dataclass
class TTAConfig:
    """The ``tta`` config group (configs/tta/default.yaml)."""

    enabled: bool = False
    sessions: str = "unseen"  # which sessions adapt: "unseen" (decoded with a borrowed day layer) or "all"
    whiten: bool = False  # EMA feature whitening of the session's inputs
    ema_momentum: float = 0.95  # weight of the running statistics at each trial (~20-trial memory)
    eps: float = 1e-2  # variance floor of the whitening: damps near-dead channels
    steps: int = 30  # entropy-minimisation optimizer steps per session (0: whitening only)
    lr: float = 1e-3
    params: tuple[str, ...] = ("day_layer",)  # any of PARAM_GROUPS
    temperature: float = 1.0  # softmax temperature of the entropy
    skip_blank_frames: bool = True  # entropy only over frames whose argmax is not blank
    diversity: float = 1.0  # weight of the mean non-blank distribution's entropy, maximised (0: plain entropy)
    self_train_rounds: int = 0  # rounds of LM-transcript self-training per session (0: off)
    self_train_steps: int = 10  # CTC optimizer steps per round
    self_train_lr: float = 1e-3
    max_disagreement: float = 0.35  # PER between greedy phonemes and the LM transcript above which a trial is left out
    self_train_folds: int = 2  # cross-fitting: each fold is decoded by a model self-trained on the other folds

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "TTAConfig":
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown tta option(s) {unknown}; known: {sorted(known)}")
        if "params" in values:
            values["params"] = tuple(values["params"] or ())
        cfg = cls(**values)
        bad = [p for p in cfg.params if p not in PARAM_GROUPS]
        if bad:
            raise ValueError(f"tta.params {bad} unknown; choose from {list(PARAM_GROUPS)}")
        if cfg.sessions not in TTA_SESSIONS:
            raise ValueError(f"tta.sessions must be one of {list(TTA_SESSIONS)}, got {cfg.sessions!r}")
        if not 0.0 <= cfg.ema_momentum < 1.0:
            raise ValueError(f"tta.ema_momentum must be in [0, 1), got {cfg.ema_momentum}")
        if cfg.steps < 0 or cfg.lr < 0 or cfg.temperature <= 0:
            raise ValueError(f"tta needs steps >= 0, lr >= 0, temperature > 0; "
                             f"got {cfg.steps}, {cfg.lr}, {cfg.temperature}")
        if (cfg.steps > 0 or cfg.self_train_rounds > 0) and not cfg.params:
            raise ValueError("tta.steps or tta.self_train_rounds > 0 but tta.params is empty: "
                             "name what may adapt, e.g. [day_layer]")
        if cfg.self_train_folds < 1:
            raise ValueError(f"tta.self_train_folds must be >= 1, got {cfg.self_train_folds}")
        if cfg.self_train_rounds < 0 or cfg.self_train_steps < 0 or cfg.self_train_lr < 0 or cfg.max_disagreement < 0:
            raise ValueError("tta.self_train_rounds, self_train_steps, self_train_lr and max_disagreement must be >= 0")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = list(self.params)
        return d


def tta_settings(
    config_file: str | Path, overrides: Sequence[str] = (), defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A ``tta`` config group file (e.g. configs/tta/default.yaml) as a dict, for :meth:`TTAConfig.from_mapping`.

    ``defaults`` replace the file's values; ``overrides`` (``key=value`` strings, as on a command
    line) replace both.
    """
    section = OmegaConf.load(config_file)
    if not isinstance(section, DictConfig) or not section:
        raise ValueError(f"{config_file}: not a tta settings file (a mapping such as configs/tta/default.yaml)")
    settings = {**OmegaConf.to_container(section), **dict(defaults or {})}  # type: ignore[dict-item]
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"tta override {item!r} is not key=value")
        settings.update(OmegaConf.to_container(OmegaConf.from_dotlist([item])))  # type: ignore[arg-type]
    return settings


class FeatureWhitener:
    """EMA per-channel mean and variance of one session's features, and re-standardisation with them.

    ``update`` folds in each trial of a batch in order (the first trial sets
    the statistics), as a decoder running online would see them; ``__call__``
    standardises a batch with the current statistics and keeps padding at zero.
    """

    def __init__(self, momentum: float = 0.95, eps: float = 1e-2):
        self.momentum = momentum
        self.eps = eps
        self.mean: torch.Tensor | None = None  # (C,)
        self.var: torch.Tensor | None = None  # (C,)
        self.trials = 0

    def update(self, features: torch.Tensor, lengths: torch.Tensor) -> None:
        """features (B, T, C), lengths (B,): trials in recording order."""
        for x, n in zip(features, lengths.tolist()):
            if n <= 0:
                continue
            x = x[:n].double()
            mean, var = x.mean(0), x.var(0, unbiased=False)
            if self.mean is None:
                self.mean, self.var = mean, var
            else:
                m = self.momentum
                # the spread between the old and new means is part of the session's variance
                self.var = m * self.var + (1 - m) * var + m * (1 - m) * (mean - self.mean) ** 2
                self.mean = m * self.mean + (1 - m) * mean
            self.trials += 1

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features (B, T, C), lengths (B,) -> (B, T, C) standardised, zero past each length."""
        if self.mean is None:
            raise RuntimeError("FeatureWhitener used before any update()")
        mask = length_mask(lengths, features.shape[1])[..., None].to(features.dtype)
        scale = torch.rsqrt(self.var + self.eps).to(features.dtype)
        return (features - self.mean.to(features.dtype)) * scale * mask


def fit_whitener(batches: Iterable[Mapping[str, Any]], momentum: float, eps: float) -> FeatureWhitener:
    """Run the EMA over a session's raw batches (in the order given); every trial then uses the final statistics."""
    whitener = FeatureWhitener(momentum, eps)
    for batch in batches:
        whitener.update(batch["features"], batch["feature_lengths"])
    if whitener.mean is None:
        raise ValueError("fit_whitener got no trials with data")
    return whitener


def adaptable_parameters(model: nn.Module, groups: Iterable[str], day: int) -> list[nn.Parameter]:
    """The parameters TTA may change for a session decoded with day layer ``day``."""
    params: dict[int, nn.Parameter] = {}
    for group in groups:
        if group in ("day_layer", "day_bias"):
            day_layers = getattr(model, "day_layers", None)
            if day_layers is None:
                raise ValueError(f"tta.params has {group!r} but {type(model).__name__} has no day layers")
            chosen = [day_layers.biases[day]] + ([day_layers.weights[day]] if group == "day_layer" else [])
        elif group == "gates":
            gate = getattr(getattr(model, "preprocessor", None), "gate_logits", None)
            if gate is None:
                raise ValueError(f"tta.params has 'gates' but {type(model).__name__} has no channel gates")
            chosen = [gate]
        elif group == "norms":
            chosen = [p for m in model.modules() if "Norm" in type(m).__name__ for p in m.parameters(recurse=False)]
            if not chosen:
                raise ValueError(f"tta.params has 'norms' but {type(model).__name__} has no normalisation layers")
        else:
            raise ValueError(f"unknown tta parameter group {group!r}; choose from {list(PARAM_GROUPS)}")
        params.update((id(p), p) for p in chosen)
    return list(params.values())


def ctc_entropy(
    logits: torch.Tensor,
    lengths: torch.Tensor,
    temperature: float = 1.0,
    skip_blank_frames: bool = True,
    blank: int = 0,
    diversity: float = 0.0,
) -> torch.Tensor | None:
    """Mean per-frame entropy (nats) of softmax(logits / temperature) over valid frames.

    logits (B, T, V), lengths (B,) -> scalar; None when no frame qualifies
    (e.g. every frame is blank and ``skip_blank_frames``). ``diversity`` > 0
    subtracts that multiple of the entropy of the frames' mean distribution over
    the non-blank classes (information maximisation, as in SHOT, Liang et al.
    2020): confident frames, but not all on the same few phonemes.
    """
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)  # (B, T)
    keep = length_mask(lengths, logits.shape[1])
    if skip_blank_frames:
        keep = keep & (logits.argmax(-1) != blank)
    if not bool(keep.any()):
        return None
    loss = entropy[keep].mean()
    if diversity > 0:
        non_blank = torch.cat([log_p[..., :blank], log_p[..., blank + 1 :]], dim=-1)[keep]
        mean_p = non_blank.softmax(-1).mean(0)
        loss = loss + diversity * (mean_p * mean_p.clamp_min(1e-12).log()).sum()
    return loss


@dataclass
class AdaptationReport:
    steps: int
    entropy_before: float | None
    entropy_after: float | None
    n_parameters: int


def entropy_minimisation(
    model: nn.Module,
    batches: Callable[[], Iterable[Mapping[str, Any]]],
    params: list[nn.Parameter],
    cfg: TTAConfig,
) -> AdaptationReport:
    """``cfg.steps`` Adam steps on the CTC entropy, cycling over ``batches()`` (model in eval mode).

    Only ``params`` receive gradients; the caller restores them (see :func:`adapted_to_session`).
    """
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    model.eval()  # no dropout: the entropy of the model that will decode
    losses: list[float] = []
    step = 0
    with only_trainable(model, params), torch.enable_grad():
        while step < cfg.steps:
            progressed = False
            for batch in batches():
                out = model(batch["features"], batch["feature_lengths"], batch["day_index"])
                loss = ctc_entropy(out["phoneme_logits"], out["out_lengths"], cfg.temperature,
                                   cfg.skip_blank_frames, diversity=cfg.diversity)
                if loss is None:
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                step += 1
                progressed = True
                if step >= cfg.steps:
                    break
            if not progressed:  # nothing to adapt on (all frames blank): stop instead of spinning
                break
    return AdaptationReport(step, losses[0] if losses else None, losses[-1] if losses else None,
                            sum(p.numel() for p in params))


@contextlib.contextmanager
def only_trainable(model: nn.Module, params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Inside the block only ``params`` require gradients; every flag is put back afterwards."""
    flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])


def lm_pseudo_labels(
    model: nn.Module, batches: Iterable[Mapping[str, Any]], word_decoder: Any, max_disagreement: float
) -> tuple[list[dict[str, Any]], int]:
    """Decode a session and keep the trials whose LM transcript the network nearly agrees with.

    -> (batches of the kept trials with ``targets`` (B, U) and ``target_lengths`` (B,), number of
    trials seen). A transcript becomes phonemes with ``word_decoder.lexicon`` (first pronunciation,
    boundary after each word); it is kept when edit distance(greedy CTC phonemes, transcript
    phonemes) / transcript length <= ``max_disagreement`` and it fits the trial's frames.
    """
    model.eval()
    kept: list[dict[str, Any]] = []
    seen = 0
    with torch.no_grad():
        for batch in batches:
            out = model(batch["features"], batch["feature_lengths"], batch["day_index"])
            log_probs = out["phoneme_logits"].float().log_softmax(-1)
            lengths = out["out_lengths"]
            sentences = word_decoder.decode_batch(log_probs, lengths)
            greedy = ctc_greedy(log_probs, lengths)
            rows, targets = [], []
            for i, sentence in enumerate(sentences):
                seen += 1
                try:
                    ids = word_decoder.lexicon.sentence_to_ids(sentence)
                except ValueError:  # a word without pronunciation: no target
                    continue
                if not ids or len(ids) + count_adjacent_repeats(ids) > int(lengths[i]):
                    continue  # CTC cannot align it (repeats need a blank between them)
                if editdistance.eval(greedy[i], ids) / len(ids) <= max_disagreement:
                    rows.append(i)
                    targets.append(torch.tensor(ids, dtype=torch.long))
            if rows:
                idx = torch.tensor(rows)
                kept.append({
                    "features": batch["features"][idx], "feature_lengths": batch["feature_lengths"][idx],
                    "day_index": batch["day_index"][idx],
                    "targets": nn.utils.rnn.pad_sequence(targets, batch_first=True),
                    "target_lengths": torch.tensor([len(t) for t in targets]),
                })
    return kept, seen


def ctc_steps(
    model: nn.Module,
    batches: list[Mapping[str, Any]],
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    steps: int,
) -> list[float]:
    """``steps`` optimizer steps of CTC loss on ``params`` only, cycling over ``batches``
    (each with ``targets`` (B, U) and ``target_lengths`` (B,)); returns the loss of each step."""
    losses = []
    with only_trainable(model, params), torch.enable_grad():
        for step in range(steps):
            b = batches[step % len(batches)]
            out = model(b["features"], b["feature_lengths"], b["day_index"])
            loss = ctc_loss_per_token(out["phoneme_logits"], out["out_lengths"], b["targets"], b["target_lengths"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    return losses


def self_training(
    model: nn.Module,
    batches: Callable[[], Iterable[Mapping[str, Any]]],
    params: list[nn.Parameter],
    cfg: TTAConfig,
    word_decoder: Any,
) -> dict[str, Any]:
    """``cfg.self_train_rounds`` rounds of: pseudo-label the session (:func:`lm_pseudo_labels`), then
    ``cfg.self_train_steps`` Adam steps of CTC loss towards those targets on ``params`` (model in eval mode).

    Returns per round the trials kept and the mean CTC loss of its first and last step.
    The caller restores ``params`` (see :func:`adapted_to_session`).
    """
    optimizer = torch.optim.Adam(params, lr=cfg.self_train_lr)
    rounds = []
    for _ in range(cfg.self_train_rounds):
        labelled, seen = lm_pseudo_labels(model, batches(), word_decoder, cfg.max_disagreement)
        report = {"kept": sum(len(b["target_lengths"]) for b in labelled), "trials": seen}
        rounds.append(report)
        if not labelled:
            break
        losses = ctc_steps(model, labelled, params, optimizer, cfg.self_train_steps)
        if losses:
            report.update(loss_first=losses[0], loss_last=losses[-1])
    return {"self_training": rounds}


@contextlib.contextmanager
def restored(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Put the parameters' values back when the block ends, whatever happened inside."""
    params = list(params)
    saved = [p.detach().clone() for p in params]
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)


@contextlib.contextmanager
def adapted_to_session(
    model: nn.Module,
    raw_batches: Callable[[], Iterable[Mapping[str, Any]]],
    transform_batches: Callable[[Iterable[Mapping[str, Any]], Callable | None], Iterable[Mapping[str, Any]]],
    day: int,
    cfg: TTAConfig,
    word_decoder: Any | None = None,
) -> Iterator[tuple[Callable[[Iterable[Mapping[str, Any]]], Iterable[Mapping[str, Any]]], dict[str, Any]]]:
    """Adapt ``model`` to one session; yields (prepare, report) and restores the model on exit.

    ``prepare(raw batches)`` gives what the adapted model reads (the session's whitening,
    then the evaluation transform): decode the adaptation trials themselves, or other
    trials of the session (the held-out fold of :func:`mode_ssm.evaluation.pipeline.decode_trials`).

    Args:
        raw_batches: the trials to adapt on, before any input transform (fresh iterator per call).
        transform_batches: (raw batches, whitener or None) -> what the model reads
            (whitening, then the evaluation smoothing).
        day: the day layer the session is decoded with.
        word_decoder: the lexicon + LM beam search (a ``WordDecoder``); needed for self-training.
    """
    if cfg.self_train_rounds > 0 and word_decoder is None:
        raise ValueError("tta.self_train_rounds > 0 needs the lexicon + LM word decoder (decoder=ctc_lm)")
    whitener = fit_whitener(raw_batches(), cfg.ema_momentum, cfg.eps) if cfg.whiten else None

    def prepare(raw: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
        return transform_batches(raw, whitener)

    def batches() -> Iterable[Mapping[str, Any]]:
        return prepare(raw_batches())

    adapts = cfg.steps > 0 or cfg.self_train_rounds > 0
    params = adaptable_parameters(model, cfg.params, day) if adapts else []
    with restored(params):
        report: dict[str, Any] = {"whitened": whitener is not None, "steps": 0}
        if params and cfg.steps > 0:
            r = entropy_minimisation(model, batches, params, cfg)
            report.update(steps=r.steps, entropy_before=r.entropy_before, entropy_after=r.entropy_after,
                          n_parameters=r.n_parameters)
        if params and cfg.self_train_rounds > 0:
            report.update(self_training(model, batches, params, cfg, word_decoder))
        yield prepare, report


def whiten_batches(batches: Iterable[Mapping[str, Any]], whitener: FeatureWhitener | None) -> Iterator[dict[str, Any]]:
    for batch in batches:
        if whitener is None:
            yield dict(batch)
        else:
            yield {**batch, "features": whitener(batch["features"], batch["feature_lengths"])}


__all__ = [
    "AdaptationReport", "FeatureWhitener", "PARAM_GROUPS", "TTAConfig", "adaptable_parameters",
    "adapted_to_session", "ctc_entropy", "ctc_steps", "entropy_minimisation", "fit_whitener", "lm_pseudo_labels",
    "only_trainable", "restored", "self_training", "tta_settings", "whiten_batches",
]
