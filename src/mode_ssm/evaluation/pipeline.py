"""From a training checkpoint to decoded, scored trials: the one sequence evaluate, submit and tune share.

``scripts/evaluate.py``, ``make_submission.py`` and ``tune_decoder.py`` all run
:func:`prepare` (load the model, resolve the data root, open the split, build
the word decoder and the search) and then :func:`decode_trials`, which decodes
a split session by session through :func:`mode_ssm.runtime.decode.decode_split`
(the function training's val/wer uses), with optional test-time adaptation per
session, and returns rows in file order for :func:`mode_ssm.metrics.summarize`.

- :func:`session_days` decides which day layer decodes each session. A session
  the model never saw uses its nearest earlier session's layer (drift grows
  with time, so the closest earlier day is the best guess), or a fresh
  identity layer (``unseen="identity"``) meant to be adapted by TTA.
- the searches (CTC + lexicon + n-gram, greedy, RNN-T) and the word decoder's
  resources come from :mod:`mode_ssm.evaluation.search`.
- ``rescore.model=DIR`` (:func:`rescoring_decoder`) re-ranks the word decoder's
  n-best with a causal LM on disk; ``rescore.model=null`` (the default) leaves
  the word decoder exactly as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf

from mode_ssm.data.augment import finite_features, smoothed
from mode_ssm.data.batching import collate_trials
from mode_ssm.data.t15 import BIN_SECONDS, T15DataError, T15Split
from mode_ssm.decoding.rescoring import CausalLMScorer, RescoringDecoder
from mode_ssm.models.build import output_frames
from mode_ssm.evaluation.search import RNNTSettings, WordDecoding, make_search, merged_nbest_search
from mode_ssm.evaluation.tta import TTAConfig, adapted_to_session, whiten_batches
from mode_ssm.runtime.decode import Search, decode_split
from mode_ssm.runtime.distributed import DistContext
from mode_ssm.runtime.ensemble import MergedEnsemble, load_checkpoints
from mode_ssm.runtime.loading import LoadedModel, pick_device

UNSEEN_STRATEGIES = ("nearest", "identity")


# --------------------------------------------------------------------------- data


def open_split(
    loaded: LoadedModel,
    data_root: str | Path,
    split: str,
    validate: str = "metadata",
    on_bad_session: str = "error",
    sessions: Sequence[str] | None = None,
) -> T15Split:
    """One split of ``data_root`` (``sessions`` of it, if given) indexed with the model's day index;
    an error if it holds no trials.

    Every readable trial is kept (``rules="eval"``): one that breaks a training rule
    (too short or long for this model's CTC, dead channels, NaN/Inf) is decoded and
    scored, and flagged in ``data.report`` and in its row.
    """
    data = T15Split(data_root, split, day_index=loaded.day_index, validate=validate,  # type: ignore[arg-type]
                    on_bad_session=on_bad_session, num_channels=loaded.num_channels,  # type: ignore[arg-type]
                    output_frames=output_frames(loaded.model), rules="eval",
                    sessions=list(sessions) if sessions else None)
    if len(data) == 0:
        has_files = any(split in s.files for s in data.session_infos)
        why = "every trial in them was skipped:\n" + data.report.summary() if has_files else \
            f"no session folder holds data_{split}.hdf5"
        raise T15DataError(f"{Path(data_root)}: no {split} trials to decode; {why}")
    return data


@dataclass(frozen=True)
class SessionDay:
    """Which day layer decodes a session, and why."""

    session: str
    day: int
    exact: bool  # the model was trained on this session
    note: str  # for reports: "own day layer", "nearest earlier day t15....", "new identity day layer"


def session_days(loaded: LoadedModel, sessions: Sequence[str], unseen: str = "nearest") -> dict[str, SessionDay]:
    """Day layer per session. ``unseen="identity"`` appends a fresh identity layer per unseen session."""
    if unseen not in UNSEEN_STRATEGIES:
        raise ValueError(f"unseen_sessions must be one of {UNSEEN_STRATEGIES}, got {unseen!r}")
    out: dict[str, SessionDay] = {}
    for s in sessions:
        found = loaded.day_index.lookup(s)
        if found.exact:
            out[s] = SessionDay(s, found.index, True, "own day layer")
        elif unseen == "identity":
            day_layers = getattr(loaded.model, "day_layers", None)
            if day_layers is None:
                raise ValueError(f"unseen_sessions=identity but {type(loaded.model).__name__} has no day layers")
            out[s] = SessionDay(s, day_layers.add_day(None), False, "new identity day layer (unseen session)")
        else:
            nearest = loaded.day_index.sessions[found.index]
            relation = "nearest earlier" if nearest < s else "first (no earlier)"
            out[s] = SessionDay(s, found.index, False, f"{relation} day layer {nearest} (unseen session)")
    return out


def raw_batches(
    data: T15Split, indices: Sequence[int], batch_size: int, day: int | None, device: torch.device
) -> Iterator[dict[str, Any]]:
    """Collated trials in the order given, on ``device``, non-finite values zeroed, day index overridden."""
    for start in range(0, len(indices), batch_size):
        batch = collate_trials([data[i] for i in indices[start : start + batch_size]])
        batch["features"] = finite_features(batch["features"])  # before TTA's whitening reads them
        if day is not None:
            batch["day_index"] = torch.full_like(batch["day_index"], day)
        yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# --------------------------------------------------------------------------- decoding a split


@dataclass
class DecodeResult:
    rows: list[dict[str, Any]]  # one per trial, in the split's file order
    days: dict[str, SessionDay]
    tta: dict[str, dict[str, Any]] = field(default_factory=dict)  # per session, when TTA ran
    seconds: float = 0.0  # decoding wall time (model, adaptation and search)
    neural_seconds: float = 0.0  # duration of the neural data decoded

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.neural_seconds if self.neural_seconds else float("nan")


def decode_trials(
    loaded: LoadedModel,
    data: T15Split,
    *,
    search: Search | None = None,
    word_decoder: Any | None = None,
    tta: TTAConfig | None = None,
    batch_size: int = 16,
    unseen: str = "nearest",
    amp: bool = False,
    keep_log_probs: bool = False,
    log: Callable[[str], None] | None = None,
    adapt_also: T15Split | None = None,
) -> DecodeResult:
    """Decode every trial of ``data`` session by session (with TTA per session if enabled).

    With TTA, each session that ``tta.sessions`` selects (by default those the model has no day
    layer of its own for) adapts on its own trials plus, if ``adapt_also`` is given, that
    split's trials of the same session (unlabelled data recorded that day; labels are never
    read). Self-training is cross-fitted: the session's trials are dealt into
    ``tta.self_train_folds`` interleaved folds and each fold is decoded by the model adapted
    on everything else, so no trial is decoded by a model fitted to its own pseudo-label.
    """
    tta = tta or TTAConfig()
    meta = data.trial_metadata()
    extra_meta = adapt_also.trial_metadata() if adapt_also is not None else []
    days = session_days(loaded, data.sessions, unseen)
    ctx = DistContext(device=loaded.device)
    augmenter = loaded.eval_augmenter()
    model = loaded.model
    rows: list[dict[str, Any]] = []
    reports: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()

    def transform(batches, whitener):
        return smoothed(whiten_batches(batches, whitener), augmenter)

    for session in data.sessions:
        indices = [i for i, m in enumerate(meta) if m["session"] == session]  # recording order
        extra = [i for i, m in enumerate(extra_meta) if m["session"] == session]
        day = days[session].day
        if not tta.enabled or (tta.sessions == "unseen" and days[session].exact):
            rows += decode_split(model, smoothed(raw_batches(data, indices, batch_size, day, loaded.device), augmenter),
                                 ctx, word_decoder, amp, search=search, keep_log_probs=keep_log_probs)
        else:
            folds = min(tta.self_train_folds, len(indices)) if tta.self_train_rounds > 0 else 1
            fold_reports = []
            for k in range(folds):
                decode = indices[k::folds]
                adapt = [i for j, i in enumerate(indices) if j % folds != k] if folds > 1 else indices

                def raw(adapt=adapt, day=day, extra=extra):
                    yield from raw_batches(data, adapt, batch_size, day, loaded.device)
                    if extra:
                        yield from raw_batches(adapt_also, extra, batch_size, day, loaded.device)

                with adapted_to_session(model, raw, transform, day, tta, word_decoder) as (prepare, report):
                    batches = prepare(raw_batches(data, decode, batch_size, day, loaded.device))
                    rows += decode_split(model, batches, ctx, word_decoder, amp, search=search,
                                         keep_log_probs=keep_log_probs)
                fold_reports.append({**report, "adapted_on": len(adapt) + len(extra), "decoded": len(decode)})
            reports[session] = fold_reports[0] if folds == 1 else {"folds": fold_reports}
        if log is not None:
            log(f"{session}: {len(indices)} trials, {days[session].note}"
                + (f", TTA {reports[session]}" if session in reports else ""))
    seconds = time.perf_counter() - started
    position = {m["source"]: i for i, m in enumerate(meta)}
    rows.sort(key=lambda r: position[r["source"]])
    neural = float(np.sum(data.trial_lengths())) * BIN_SECONDS
    return DecodeResult(rows, days, reports, seconds, neural)


def config_dict(cfg: Any) -> dict[str, Any]:
    """A Hydra/OmegaConf node or mapping as a plain dict (None -> {})."""
    if cfg is None:
        return {}
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def resolve_data_root(value: str | None, loaded: LoadedModel, launch_dir: str | Path) -> Path:
    """``data.data_root`` relative to where the command was typed, else the folder the model was trained on."""
    if value:
        root = Path(value).expanduser()
        root = root if root.is_absolute() else Path(launch_dir) / root
    elif loaded.trained_data_root is not None:
        root = loaded.trained_data_root
    else:
        raise T15DataError(f"{loaded.path} records no data root; pass data.data_root=DIR")
    if not root.is_dir():
        raise T15DataError(f"{root}: data root does not exist" + ("" if value else f" (recorded in {loaded.path})"))
    return root


# --------------------------------------------------------------------------- LM rescoring


def rescore_model_path(rescore: Any, launch_dir: str | Path, decoder_name: str = "ctc_lm") -> Path | None:
    """``rescore.model`` resolved against ``launch_dir``, None when rescoring is off; an error naming the
    option if the folder is missing or the decoder has no n-best to rescore (checked before anything loads)."""
    settings = config_dict(rescore)
    if not settings.get("model"):
        return None
    if decoder_name != "ctc_lm":
        raise ValueError(f"rescore.model={settings['model']} rescores the lexicon + n-gram decoder's n-best: "
                         f"it needs decoder=ctc_lm, not decoder={decoder_name}")
    path = Path(str(settings["model"])).expanduser()
    path = path if path.is_absolute() else Path(launch_dir) / path
    if not path.is_dir():
        raise FileNotFoundError(f"rescore.model={settings['model']}: no model folder at {path} "
                                "(write one with scripts/train_text_lm.py; nothing is downloaded)")
    return path


def rescoring_decoder(word_decoder: Any | None, rescore: Any, launch_dir: str | Path, device: Any = "cpu",
                      decoder_name: str = "ctc_lm") -> Any | None:
    """The word decoder with its n-best re-ranked by ``rescore.model`` (see configs/evaluate.yaml), or
    ``word_decoder`` itself, untouched, when ``rescore`` is empty or ``rescore.model`` is null.

    ``rescore.model`` is relative to ``launch_dir``. Combined score:
    ``decoder score + rescore.weight * ln P_LM(sentence) + rescore.length_bonus * n_words``.
    """
    settings = config_dict(rescore)
    path = rescore_model_path(settings, launch_dir, decoder_name)
    if path is None:
        return word_decoder
    if word_decoder is None:
        raise ValueError(f"rescore.model={settings['model']} rescores the lexicon + n-gram decoder's n-best: "
                         f"it needs decoder=ctc_lm, not decoder={decoder_name}")
    try:
        scorer = CausalLMScorer.from_pretrained(path, device=str(device), score_eos=bool(settings.get("score_eos", True)),
                                                batch_size=int(settings.get("batch_size", 32)))
    except ValueError as e:
        hint = " (its tokenizer has no eos token: set rescore.score_eos=false)" if "eos_token_id" in str(e) else ""
        raise ValueError(f"rescore.model={settings['model']}: {e}{hint}") from None
    weight, bonus, nbest = float(settings.get("weight", 0.5)), float(settings.get("length_bonus", 0.0)), \
        int(settings.get("nbest", 10))
    return RescoringDecoder(word_decoder, scorer, alpha=weight, length_bonus=bonus, nbest=nbest,
                            description=f"{nbest}-best rescored with {path} (weight {weight:g}, "
                                        f"length bonus {bonus:g}, score_eos {scorer.score_eos})")


# --------------------------------------------------------------------------- the sequence every job runs


@dataclass
class Prepared:
    """A checkpoint, a split and a search, ready to decode (what :func:`prepare` returns)."""

    loaded: LoadedModel
    data_root: Path
    data: T15Split
    words: WordDecoding
    search: Search | None
    word_decoder: Any | None
    tta: TTAConfig
    batch_size: int
    unseen: str
    amp: bool

    def decode(self, log: Callable[[str], None] | None = None, keep_log_probs: bool = False) -> DecodeResult:
        return decode_trials(self.loaded, self.data, search=self.search, word_decoder=self.word_decoder,
                             tta=self.tta, batch_size=self.batch_size, unseen=self.unseen, amp=self.amp,
                             keep_log_probs=keep_log_probs, log=log)


def prepare(cfg: Any, launch_dir: str | Path, split: str, work_dir: str | Path, *,
            decoder: str | None = None, validate: str | None = None) -> Prepared:
    """Load ``cfg.checkpoint``, open ``split`` of the data root, build the word decoder and the search.

    ``cfg`` is an evaluate / make_submission / tune_decoder config (checkpoint, device,
    torch_threads, data, decoding, tta, batch_size, unseen_sessions, amp, and rnnt
    for the RNN-T decoders). The LM is built in ``work_dir/lm`` unless the training
    run's own fits. ``decoder`` defaults to ``cfg.decoder``; ``validate`` to the
    checkpoint's training setting.
    """
    launch_dir = Path(launch_dir)
    torch.set_num_threads(int(cfg.torch_threads))
    tta = TTAConfig.from_mapping(config_dict(cfg.tta))
    rescore_model_path(cfg.get("rescore"), launch_dir, decoder or str(cfg.decoder))  # a bad path fails before loading
    loaded = load_checkpoints(cfg.checkpoint, launch_dir, pick_device(str(cfg.device)))
    if loaded.members and tta.enabled:
        raise ValueError("tta.enabled=true adapts one model's day layers; it is not available for an ensemble")
    data_root = resolve_data_root(cfg.data.get("data_root"), loaded, launch_dir)
    if validate is None:
        validate = cfg.data.get("validate") or loaded.config.get("data", {}).get("validate", "full")
    data = open_split(loaded, data_root, split, validate, cfg.data.get("on_bad_session", "error"))
    words = WordDecoding(loaded, data_root, Path(work_dir) / "lm", config_dict(cfg.decoding))
    decoder = decoder or str(cfg.decoder)
    search, word_decoder = make_search(decoder, loaded, words, RNNTSettings(**config_dict(cfg.get("rnnt"))))
    word_decoder = rescoring_decoder(word_decoder, cfg.get("rescore"), launch_dir, loaded.device, decoder)
    if isinstance(loaded.model, MergedEnsemble):
        if decoder != "ctc_lm":
            raise ValueError(f"decoder={decoder}: an ensemble of models with different frame rates "
                             f"({loaded.description}) is combined by merging the lexicon + n-gram search's n-best "
                             "lists, so it decodes with decoder=ctc_lm only")
        search = merged_nbest_search(word_decoder)
    return Prepared(loaded, data_root, data, words, search, word_decoder, tta, int(cfg.batch_size),
                    str(cfg.unseen_sessions), bool(cfg.amp) and loaded.device.type == "cuda")
