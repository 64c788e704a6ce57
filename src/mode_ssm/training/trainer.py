"""The training loop: data, forward, loss, backward, step, log — one place to read.

``train(cfg, run_dir, launch_dir)`` runs the curriculum in ``cfg.training.stages``
on one process or data-parallel under torchrun, tracks it in W&B, checkpoints
atomically to ``run_dir/checkpoints/`` and resumes exactly (stage, epoch, batch,
optimizer, scheduler, RNG and data order) from ``last.pt``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mode_ssm.atomic import remove_stale_temporaries
from mode_ssm.data.augment import Augmenter, smoothed
from mode_ssm.data.batching import LengthBucketSampler, collate_trials
from mode_ssm.data.t15 import SPEAKING_MODES, DayIndex, T15Split, count_adjacent_repeats
from mode_ssm.metrics import summarize
from mode_ssm.models.build import (
    MinimumBins, build_model, component_parameters, model_components, model_loss_reach, output_frames, set_trainable,
)
from mode_ssm.models.losses import compute_losses, trim_targets
from mode_ssm.models.mode import commit_running_statistics
from mode_ssm.runtime import distributed
from mode_ssm.runtime.checkpoint import (
    CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state,
)
from mode_ssm.runtime.decode import autocast_for, decode_split, move_batch
from mode_ssm.runtime.memory import HeapReleaser, heap_release_available
from mode_ssm.runtime.schema import check_values
from mode_ssm.runtime.tracking import start_tracker
from mode_ssm.training.curriculum import LOSS_NAMES, Stage, plan_curriculum
from mode_ssm.training.data import block_mode_targets, block_truth, build_word_decoder, resolve_data_root
from mode_ssm.training.optim import parameter_groups
from mode_ssm.training.progress import Progress, print_summary
from mode_ssm.training.schema import TrainSchema
from mode_ssm.training.schedule import warmup_cosine

log = logging.getLogger(__name__)

class TrainingAborted(RuntimeError):
    pass


@dataclass
class Position:
    """Where training is; saved in every checkpoint so a resume continues exactly here."""

    stage: int = 0
    epoch_in_stage: int = 0
    epoch: int = 0  # global epoch counter across stages (the W&B `epoch` axis)
    batch_in_epoch: int = 0  # micro-batches of this rank done in the current epoch
    batch: int = 0  # global micro-batch counter (the W&B `batch` axis)
    optimizer_steps_in_stage: int = 0
    optimizer_steps: int = 0  # over the whole run, every launch: what training.max_steps counts
    train_seconds: float = 0.0  # training-loop wall time over every launch: what time_budget_minutes counts
    nonfinite_batches: int = 0  # optimizer steps skipped for a non-finite loss or gradient
    best_wer: float = math.inf
    best_per: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    # a few val trials as decoded at the best epoch so far (reference, text): the summary shows them
    best_examples: list[dict[str, str]] = field(default_factory=list)
    # val speaking-mode accuracy at the best epoch so far (trials, blocks, majority-class share)
    best_mode: dict[str, float] = field(default_factory=dict)

    def next_stage(self) -> None:
        self.stage += 1
        self.epoch_in_stage = self.batch_in_epoch = self.optimizer_steps_in_stage = 0


def _augmenter(cfg: DictConfig) -> Augmenter:
    aug = dict(OmegaConf.to_container(cfg.augmentation, resolve=True))
    enabled = aug.pop("enabled", True)
    if not enabled:  # smoothing belongs to the input pipeline, the rest is augmentation
        aug = {"smooth_std": aug.get("smooth_std", 0.0)}
    # a causal model's input pipeline reads past bins only (data/augment.py, models/causal.py)
    return Augmenter({**aug, "causal": bool(cfg.model.get("causal", False))})


def _make_optimizer(cfg: DictConfig, model: torch.nn.Module, components: tuple[str, ...], steps: int):
    params = [p for p in component_parameters(model, components) if p.requires_grad]
    o = cfg.training.optimizer
    groups = parameter_groups(model, params, o.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    s = cfg.training.scheduler
    return optimizer, warmup_cosine(optimizer, steps, s.warmup_steps, s.min_lr_ratio), params


def check_config(cfg: DictConfig) -> list[Stage]:
    """What can be checked before any data is read: every option's range and choices (the schema; its types
    were checked when Hydra composed the config), the model (keys and values, built on the meta device: no
    memory, no random draws), the input width, the curriculum. Raises ValueError naming the key."""
    check_values(cfg, TrainSchema)
    num_channels = cfg.preprocessor.num_channels
    components = model_components(cfg.model, num_channels)  # ValueError naming a bad model key or width
    try:
        with torch.device("meta"):
            build_model(cfg.model, n_days=1, n_channels=512, num_channels=num_channels)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ValueError(f"model={cfg.model.name}: {e}") from None
    return plan_curriculum(OmegaConf.to_container(cfg.training.stages, resolve=True), components, cfg.model.name,
                           model_loss_reach(cfg.model))


def train(cfg: DictConfig, run_dir: str | Path, launch_dir: str | Path) -> dict[str, Any]:
    stages = check_config(cfg)
    ctx = distributed.setup(cfg.device)
    run_dir = Path(distributed.broadcast_object(ctx, str(Path(run_dir).resolve())))
    launch_dir = Path(launch_dir).resolve()
    ckpt_dir = run_dir / "checkpoints"
    torch.set_num_threads(int(cfg.torch_threads))
    amp = bool(cfg.amp) and ctx.device.type == "cuda"

    # ---- resume? -------------------------------------------------------------------------
    if ctx.is_main:
        remove_stale_temporaries(ckpt_dir)
    resume_path = launch_dir / Path(cfg.training.resume).expanduser() if cfg.training.resume else ckpt_dir / "last.pt"
    state = load_checkpoint(resume_path) if resume_path.is_file() else None
    if cfg.training.resume and state is None:
        raise FileNotFoundError(f"training.resume={cfg.training.resume}: no such checkpoint")
    if state is None:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
    else:
        _check_resumable(state, resume_path, stages)
        saved = Position(**state["position"])
        done = _finished(saved, stages, cfg)
        if done:  # nothing to train: say so and leave everything as it is
            if ctx.is_main:
                print(f"{resume_path}: {done}; nothing to train (a new hydra.run.dir starts a new run)")
            summary = _summary(saved, ckpt_dir, None)
            if ctx.is_main:
                print_summary(summary)
            distributed.cleanup(ctx)
            return summary

    # ---- data ------------------------------------------------------------------------------
    data_root = resolve_data_root(cfg, launch_dir, ctx)
    num_channels = int(cfg.preprocessor.num_channels)
    day_index = DayIndex.from_dict(state["day_index"]) if state else None
    split_args = dict(
        max_sessions=cfg.data.max_sessions, on_bad_session=cfg.data.on_bad_session,
        validate=cfg.data.validate, num_channels=num_channels,
    )
    # the CTC feasibility rule of this model's own output lengths (a 1-day twin: frames do not depend on days)
    with torch.device("meta"):  # the lengths are arithmetic on the config: no weights, no random draws
        twin = build_model(cfg.model, n_days=1, n_channels=num_channels, num_channels=num_channels)
    frames, min_bins = output_frames(twin), MinimumBins(twin)
    train_set = T15Split(data_root, "train", day_index=day_index, output_frames=frames, **split_args)
    day_index = train_set.day_index
    # val is scored on every trial its files hold; the training rules only flag trials there
    val_set = T15Split(data_root, "val", day_index=day_index, sessions=train_set.sessions, output_frames=frames,
                       rules="eval", **split_args)
    if ctx.is_main:
        print(train_set.report.summary())
        print(val_set.report.summary())  # every readable val trial is scored; flagged ones are listed
    # one optimizer step's micro-batches (every rank's, every accumulation step's) of similar lengths
    sampler = LengthBucketSampler(
        train_set.trial_lengths(), cfg.training.batch_size, shuffle=True, seed=cfg.seed,
        num_replicas=ctx.world_size, rank=ctx.rank,
        group_batches=ctx.world_size * int(cfg.training.gradient_accumulation_steps),
    )
    # its own generator: a loader drawing from the global RNG would make a resumed run differ
    # workers (data.num_workers > 0) read and collate the next batches while the model trains; they live
    # for the whole run rather than being started again every epoch (each start reopens every file)
    train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_trials,
                              num_workers=cfg.data.num_workers, persistent_workers=cfg.data.num_workers > 0,
                              generator=torch.Generator())

    def eval_loader(dataset, indices=None):
        lengths = dataset.trial_lengths() if indices is None else dataset.trial_lengths()[indices]
        ev = LengthBucketSampler(lengths, cfg.training.batch_size, shuffle=False, num_replicas=ctx.world_size, rank=ctx.rank)
        base = dataset if indices is None else torch.utils.data.Subset(dataset, indices)
        return DataLoader(base, batch_sampler=_unique(ev, ctx), collate_fn=collate_trials,
                          generator=torch.Generator())

    n_train_wer = min(int(cfg.data.train_wer_trials), len(train_set))
    train_wer_indices = np.random.default_rng(cfg.seed).choice(len(train_set), n_train_wer, replace=False)
    mode_targets = block_mode_targets(train_set)  # unsupervised pseudo-labels, never the truth
    if ctx.is_main:
        truth = block_truth(train_set)
        agreement = mode_targets.agreement_with_truth(truth)
        if not truth:
            verdict = "no ground truth in this data (real data): agreement cannot be measured"
        elif agreement is None:
            verdict = "no block labelled, so nothing to compare with the simulator's truth"
        else:
            verdict = f"{100 * agreement:.1f}% of train blocks agree with the simulator's truth"
        print(f"speaking-mode pseudo-labels: {mode_targets.fit.describe()}; {verdict}")
    word_decoder = build_word_decoder(cfg, train_set, run_dir, ctx)
    augmenter = _augmenter(cfg)
    aug_generator = torch.Generator().manual_seed(cfg.seed * 1000 + ctx.rank)

    # ---- model -----------------------------------------------------------------------------
    model = build_model(cfg.model, n_days=len(day_index), n_channels=num_channels,
                        num_channels=num_channels).to(ctx.device)
    # what load_model rebuilds from: the model options and the input width
    model_cfg = OmegaConf.create({**OmegaConf.to_container(cfg.model, resolve=True), "num_channels": num_channels})
    if state:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{resume_path}: its weights belong to another model than model={cfg.model.name} "
                                  f"with these options ({str(e).splitlines()[0]}); resume with the run's own "
                                  "config or start a new hydra.run.dir") from None
    if getattr(model, "mode_head", None) is not None:  # no supported two-mode split: FiLM gets no mode signal
        model.mode_head.mode_signal.fill_(mode_targets.fit.supported)
    ddp_model = DistributedDataParallel(model, find_unused_parameters=True) if ctx.enabled else model

    pos = Position()
    if state:
        pos = Position(**state["position"])
        if ctx.is_main:
            print(f"resuming {resume_path}: stage {pos.stage + 1}/{len(stages)} {stages[pos.stage].name}, "
                  f"epoch {pos.epoch_in_stage + 1} of the stage, batch {pos.batch_in_epoch} of the epoch "
                  f"(global batch {pos.batch}, optimizer step {pos.optimizer_steps})")
        set_rng_state(state["rng"])  # after model construction, which draws from the RNG
        aug_generator.set_state(state["aug_rng"])
    tracker = start_tracker(
        cfg.wandb, run_dir, OmegaConf.to_container(cfg, resolve=True), launch_dir,
        resume_id=state.get("wandb_run_id") if state else None, is_main=ctx.is_main,
    )

    def checkpoint(name: str, optimizer=None, scheduler=None) -> None:
        """Save; at a stage boundary there is no optimizer state worth keeping (the next stage builds its own).

        Never with a non-finite parameter: the previous checkpoint stays, and training stops.
        """
        pos.train_seconds = seconds_before + time.perf_counter() - train_start
        if not ctx.is_main:
            return
        bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise TrainingAborted(f"{len(bad)} parameter tensors are non-finite (e.g. {bad[0]}) at batch {pos.batch}; "
                                  f"{ckpt_dir / name} was not overwritten")
        save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "position": pos.__dict__,
                "rng": rng_state(),
                "aug_rng": aug_generator.get_state(),
                "day_index": day_index.to_dict(),
                "config": OmegaConf.to_container(cfg, resolve=True),
                "model_config": OmegaConf.to_container(model_cfg, resolve=True),
                "wandb_run_id": tracker.run_id,
                "stages": [s.name for s in stages],
                "data_root": str(data_root),
            },
            ckpt_dir / name,
        )

    def evaluate(dataset, indices=None) -> dict[str, Any]:
        rows = decode_split(model, smoothed(eval_loader(dataset, indices), augmenter), ctx, word_decoder, amp,
                            release_heap=release_heap)
        return summarize(rows) | {"examples": decoded_examples(rows)}

    # freed heap memory goes back to the OS once the resident set has grown this much: without it the
    # resident set climbs from epoch to epoch (runtime/memory.py says why and what was measured)
    growth_mb = cfg.training.release_heap_mb
    if growth_mb is not None and not heap_release_available() and ctx.is_main:
        print(f"training.release_heap_mb={growth_mb}: this C library has no malloc_trim (glibc only), so freed "
              "heap memory stays with the process; peak RSS may grow from epoch to epoch")
    release_heap = HeapReleaser(None if growth_mb is None else float(growth_mb))
    progress = Progress(enabled=ctx.is_main)
    max_steps = cfg.training.max_steps
    budget_s = 60.0 * cfg.training.time_budget_minutes if cfg.training.time_budget_minutes else math.inf
    train_start, seconds_before = time.perf_counter(), pos.train_seconds

    def out_of_budget() -> bool:
        """Run totals over every launch: a resumed run stops where one uninterrupted run would."""
        if max_steps and pos.optimizer_steps >= max_steps:
            return True
        if budget_s == math.inf:
            return False
        # rank 0's clock decides, so every rank stops at the same step
        spent = seconds_before + time.perf_counter() - train_start
        return bool(distributed.broadcast_object(ctx, spent > budget_s))

    accum = int(cfg.training.gradient_accumulation_steps)
    try:
        while pos.stage < len(stages):
            stage = stages[pos.stage]
            components, weights = stage.components, dict(stage.loss_weights)
            set_trainable(model, components)
            # the day-layer smoothness penalty acts in the stages that train the day layers
            smoothness = float(cfg.training.day_smoothness) if "day_layers" in components else 0.0
            steps_per_epoch = math.ceil(sampler.batches_per_rank / accum)
            optimizer, scheduler, trained = _make_optimizer(cfg, model, components, steps_per_epoch * stage.epochs)
            if state and state["optimizer"] is not None:
                optimizer.load_state_dict(_regrouped(state["optimizer"], optimizer, trained))
                scheduler.load_state_dict(state["scheduler"])
            state = None
            if ctx.is_main and pos.epoch_in_stage == 0 and pos.batch_in_epoch == 0:
                print(f"stage {pos.stage + 1}/{len(stages)} {stage.name}: training {list(components)} "
                      f"with loss weights {weights}")
                tracker.log({"stage/index": pos.stage, "epoch": pos.epoch})
            while pos.epoch_in_stage < stage.epochs:
                sampler.set_epoch(pos.epoch, start_batch=pos.batch_in_epoch)
                ddp_model.train()
                progress.start_epoch(f"{stage.name} epoch {pos.epoch + 1}", len(sampler), pos.batch_in_epoch)
                epoch_start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                window_problems: list[str] = []  # non-finite micro-batches of the current accumulation window
                data_wait, fetch_start = 0.0, time.perf_counter()  # time the model waited for the loader
                for batch in train_loader:
                    t0 = time.perf_counter()
                    data_wait += t0 - fetch_start
                    batch = move_batch(batch, ctx.device)
                    # the random cut keeps every trial alignable by CTC under this model's output lengths
                    min_len = torch.tensor([min_bins(int(n) + count_adjacent_repeats(p[:n].tolist())) for p, n in
                                            zip(batch["phoneme_ids"].cpu(), batch["phoneme_lengths"].cpu())])
                    feats, lens = augmenter(batch["features"], batch["feature_lengths"], aug_generator, True,
                                            min_len.to(ctx.device))
                    batch = {**batch, "features": feats, "feature_lengths": lens}
                    last_micro = (pos.batch_in_epoch + 1) % accum == 0 or pos.batch_in_epoch + 1 == sampler.batches_per_rank
                    sync = ddp_model.no_sync() if ctx.enabled and not last_micro else contextlib.nullcontext()
                    with sync:
                        with autocast_for(ctx.device, amp):
                            # every loss's parameters are used inside the (DDP-wrapped) forward
                            rnnt_targets = trim_targets(batch["phoneme_ids"], batch["phoneme_lengths"]) \
                                if weights["rnnt"] else None
                            out = ddp_model(batch["features"], batch["feature_lengths"], batch["day_index"],
                                            rnnt_targets=rnnt_targets, denoise=bool(weights["denoise"]),
                                            noise_generator=_batch_generator(cfg.seed, pos, ctx) if
                                            weights["denoise"] else None)
                            targets = mode_targets.lookup(batch).to(ctx.device)
                            losses = compute_losses(model, batch, out, weights, targets)
                        finite = bool(torch.isfinite(losses["total"]).item())
                        if not finite:
                            window_problems.append(_nonfinite_problem(batch, losses))
                        # backward even so, keeping DDP's collectives in step on every rank; the
                        # non-finite gradients it leaves are caught below and never reach a parameter
                        (losses["total"] / accum).backward()
                    pos.batch_in_epoch += 1
                    pos.batch += 1
                    grad_norm = None
                    if last_micro:
                        if smoothness:
                            day_penalty = add_day_smoothness_gradient(model.day_layers, smoothness)
                        grad_norm = float(torch.nn.utils.clip_grad_norm_(
                            [p for p in model.parameters() if p.requires_grad], cfg.training.max_grad_norm))
                        if not math.isfinite(grad_norm) and not window_problems:
                            window_problems.append("non-finite gradients from a finite loss")
                        if window_problems:
                            # (gradients are all-reduced first, so every rank skips the same step)
                            _skip_step(pos, window_problems, cfg.training.max_nonfinite_batches)
                            grad_norm = None
                        else:
                            optimizer.step()
                            scheduler.step()
                        commit_running_statistics(model, apply=not window_problems)
                        window_problems = []
                        optimizer.zero_grad(set_to_none=True)
                        pos.optimizer_steps_in_stage += 1
                        pos.optimizer_steps += 1
                    batch_time = time.perf_counter() - t0
                    metrics = {"train/loss": float(losses["total"].detach()) if finite else float("nan"),
                               "train/batch_time": batch_time, "batch": pos.batch, "epoch": pos.epoch,
                               "train/trials_per_second": len(batch["sessions"]) * ctx.world_size / batch_time}
                    for name in LOSS_NAMES:
                        if weights[name] and name in losses:
                            metrics[f"train/loss_{name}"] = float(losses[name].detach())
                    if grad_norm is not None:
                        metrics["train/grad_norm"] = grad_norm
                        if smoothness:
                            metrics["train/day_smoothness"] = day_penalty
                    tracker.log(metrics)
                    progress.advance(metrics["train/loss"], batch_time)
                    if last_micro:
                        del out, losses, batch, feats
                        release_heap()
                    if last_micro and cfg.training.checkpoint_every_steps and \
                            pos.optimizer_steps_in_stage % cfg.training.checkpoint_every_steps == 0:
                        checkpoint("last.pt", optimizer, scheduler)
                    if last_micro and out_of_budget():
                        break
                    fetch_start = time.perf_counter()
                progress.end_epoch()
                epoch_time = time.perf_counter() - epoch_start
                eval_start = time.perf_counter()
                if pos.batch_in_epoch < sampler.batches_per_rank:
                    # cut by max_steps or the time budget: scored as it stands for the record (best.pt is
                    # chosen at epoch ends) and saved there, so a rerun with a larger budget trains the
                    # epoch's remaining batches exactly as one uninterrupted run would (the RNG state is
                    # saved as it was before this scoring)
                    before_scoring = rng_state()
                    val = evaluate(val_set)
                    set_rng_state(before_scoring)
                    cut = {"epoch": pos.epoch, "cut_at_batch": pos.batch_in_epoch, "stage": stage.name,
                           "val/per": val.get("per"), "val/wer": _pct(val.get("wer")), "val/loss": val.get("loss"),
                           "time/epoch_seconds": epoch_time,
                           "time/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
                    pos.history.append({k: v for k, v in cut.items() if v is not None})
                    tracker.log({k: v for k, v in cut.items() if k.startswith("val/") and v is not None}
                                | {"val/cut_at_batch": pos.batch_in_epoch})
                    if ctx.is_main:
                        print(f"stopped by {_budget_name(cfg)} in epoch {pos.epoch + 1} at batch "
                              f"{pos.batch_in_epoch}/{sampler.batches_per_rank} (optimizer step "
                              f"{pos.optimizer_steps}); rerun the same command with a larger budget to go on")
                        progress.epoch_line(cut, stage.name)
                    if not math.isfinite(pos.best_wer) and not math.isfinite(pos.best_per):
                        # no epoch has ended yet (a short smoke run): best.pt is the only scored model so
                        # far; the first epoch end replaces it, as it would in one uninterrupted run
                        checkpoint("best.pt", optimizer, scheduler)
                    checkpoint("last.pt", optimizer, scheduler)
                    break
                # ---- end of epoch: validation on the whole val set, train/wer on a fixed sample --
                val = evaluate(val_set)
                train_eval = evaluate(train_set, train_wer_indices)
                epoch_metrics = {
                    "epoch": pos.epoch, "learning_rate": optimizer.param_groups[0]["lr"],
                    "val/loss": val.get("loss"), "val/per": val.get("per"),
                    "val/wer": _pct(val.get("wer")), "val/phoneme_accuracy": _pct(val.get("phoneme_accuracy")),
                    "train/wer": _pct(train_eval.get("wer")), "train/per": train_eval.get("per"),
                    "time/epoch_seconds": epoch_time, "stage/index": pos.stage,
                    "time/data_wait_seconds": data_wait, "time/eval_seconds": time.perf_counter() - eval_start,
                    "time/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
                if val.get("mode_accuracy") is not None:
                    epoch_metrics["val/mode_accuracy"] = _pct(val["mode_accuracy"])
                    epoch_metrics["val/mode_accuracy_block"] = _pct(val.get("mode_accuracy_block"))
                tracker.log({k: v for k, v in epoch_metrics.items() if v is not None})
                pos.history.append({k: v for k, v in epoch_metrics.items() if v is not None} | {"stage": stage.name})
                if ctx.is_main:
                    progress.epoch_line(epoch_metrics, stage.name)
                pos.epoch += 1
                pos.epoch_in_stage += 1
                pos.batch_in_epoch = 0
                improved = _improved(val, pos)
                if improved:
                    pos.best_examples = val["examples"]
                    pos.best_mode = {k: float(val[k]) for k in ("mode_accuracy", "mode_accuracy_block", "mode_majority")
                                     if val.get(k) is not None}
                checkpoint("last.pt", optimizer, scheduler)
                if improved:
                    checkpoint("best.pt", optimizer, scheduler)
                distributed.barrier(ctx)
                if out_of_budget():
                    break
            if out_of_budget():
                break
            pos.next_stage()
            checkpoint("last.pt")
        summary = _summary(pos, ckpt_dir, tracker)
        tracker.summary({k: v for k, v in summary.items() if k.startswith("best_") and v is not None})
        if ctx.is_main:
            print_summary(summary)
        return summary
    finally:
        tracker.finish()
        distributed.cleanup(ctx)


def _finished(pos: Position, stages: list[Stage], cfg: DictConfig) -> str | None:
    """Why a saved run has nothing left to train under ``cfg``, or None."""
    remaining = stages[pos.stage + 1:] if pos.stage < len(stages) else []
    if pos.stage >= len(stages) or (pos.epoch_in_stage >= stages[pos.stage].epochs and
                                    all(s.epochs == 0 for s in remaining)):
        return f"the run is finished (all {len(stages)} curriculum stages, {pos.optimizer_steps} optimizer steps)"
    max_steps = cfg.training.max_steps
    if max_steps and pos.optimizer_steps >= max_steps:
        return (f"the run has reached training.max_steps={max_steps} ({pos.optimizer_steps} optimizer steps; "
                "raise it to train on)")
    minutes = cfg.training.time_budget_minutes
    if minutes and pos.train_seconds >= 60.0 * minutes:
        return (f"the run has spent training.time_budget_minutes={minutes} ({pos.train_seconds / 60:.1f} min of "
                "training; raise it to train on)")
    return None


def _budget_name(cfg: DictConfig) -> str:
    if cfg.training.max_steps:
        return f"training.max_steps={cfg.training.max_steps}" + (
            f" or time_budget_minutes={cfg.training.time_budget_minutes}" if cfg.training.time_budget_minutes else "")
    return f"training.time_budget_minutes={cfg.training.time_budget_minutes}"


def _summary(pos: Position, ckpt_dir: Path, tracker: Any | None) -> dict[str, Any]:
    active = tracker is not None and tracker.active
    return {
        "best_val_wer": _pct(pos.best_wer) if math.isfinite(pos.best_wer) else None,
        "best_val_per": pos.best_per if math.isfinite(pos.best_per) else None,
        "best_checkpoint": str(ckpt_dir / "best.pt"),
        "last_checkpoint": str(ckpt_dir / "last.pt"),
        "wandb_dir": str(ckpt_dir.parent / "wandb") if active else None,
        "wandb_mode": tracker.mode if active else None,
        "nonfinite_batches": pos.nonfinite_batches,
        "epochs": pos.epoch,
        "optimizer_steps": pos.optimizer_steps,
        "history": pos.history,
        "examples": pos.best_examples,
        "best_val_mode": pos.best_mode,
    }


def add_day_smoothness_gradient(day_layers: torch.nn.Module, weight: float) -> float:
    """Add ``weight`` x the gradient of the day layers' smoothness penalty to their ``.grad``; the penalty.

    Called once per optimizer step after the backward (and DDP's all-reduce): the penalty depends on
    the parameters alone, identical on every rank, so adding its gradient after the averaging equals
    adding it to every rank's loss, without a second use of the parameters outside the DDP forward."""
    params = [*day_layers.weights, *day_layers.biases]
    with torch.enable_grad():
        penalty = day_layers.smoothness_penalty()
        grads = torch.autograd.grad(penalty, params, allow_unused=True)
    for p, g in zip(params, grads):
        if g is None:
            continue
        if p.grad is None:
            p.grad = weight * g
        else:
            p.grad.add_(g, alpha=weight)
    return float(penalty.detach())


def decoded_examples(rows: list[dict[str, Any]], n: int = 8) -> list[dict[str, str]]:
    """``n`` labelled trials spread evenly over the split in file order (the same trials every epoch):
    reference, decoded words (or greedy phonemes when there is no word decoder), and the speaking mode
    predicted (None when the model predicts none)."""
    labelled = sorted((r for r in rows if r.get("true_sentence")), key=lambda r: (r["session"], r["block"], r["trial"]))
    if not labelled:
        return []
    k = min(n, len(labelled))
    picks = sorted({round(i * (len(labelled) - 1) / max(1, k - 1)) for i in range(k)})
    def mode(k: int | None) -> str | None:
        return SPEAKING_MODES[k] if k is not None and 0 <= k < len(SPEAKING_MODES) else None

    return [{"reference": labelled[i]["true_sentence"],
             "decoded": labelled[i]["predicted_sentence"] if labelled[i]["predicted_sentence"] is not None
             else labelled[i]["predicted_phonemes"],
             "mode": mode(labelled[i]["mode_pred"]), "true_mode": mode(labelled[i]["mode_truth"])}
            for i in picks]


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def _improved(val: dict[str, Any], pos: Position) -> bool:
    wer, per = val.get("wer", math.inf), val.get("per", math.inf)
    if (wer, per) < (pos.best_wer, pos.best_per):
        pos.best_wer, pos.best_per = wer, per
        return True
    return False


def _nonfinite_problem(batch: dict[str, Any], losses: dict[str, Any]) -> str:
    """What made a micro-batch's loss non-finite, and which trials it held."""
    trials = ", ".join(f"{s} block {b} trial {t}" for s, b, t in
                       zip(batch["sessions"], batch["block_nums"], batch["trial_nums"]))
    inputs = "non-finite input features" if not bool(torch.isfinite(batch["features"]).all()) else "finite inputs"
    return f"non-finite {'/'.join(losses.get('nonfinite') or ['total'])} loss ({inputs}) in trials {trials}"


def _skip_step(pos: Position, problems: list[str], limit: int) -> None:
    """Skip an optimizer step whose gradients are non-finite: no parameter or optimizer state changes."""
    pos.nonfinite_batches += 1
    for p in problems:
        log.warning("optimizer step skipped at batch %d: %s", pos.batch, p)
    if pos.nonfinite_batches > limit:
        raise TrainingAborted(
            f"{pos.nonfinite_batches} optimizer steps had non-finite gradients (limit "
            f"training.max_nonfinite_batches={limit}); the last: {problems[-1]}. Non-finite input features "
            "point at the data (data.validate=full skips such trials); finite inputs at the learning rate "
            "(training.optimizer.lr) or at trials too short for their labels")


def _check_resumable(state: dict[str, Any], path: Path, stages: list[Stage]) -> None:
    """A checkpoint resumes only into the curriculum it was trained with."""
    names = [s.name for s in stages]
    saved = state.get("stages")  # absent in checkpoints written before it was recorded
    stage = int(state["position"]["stage"])
    if (saved is not None and list(saved) != names) or stage > len(names):
        raise CheckpointError(f"{path}: this run was trained with the curriculum stages {saved or '(not recorded)'} "
                              f"and stopped in stage {stage}, but the config has {names}; resume with the run's own "
                              "curriculum or start a new hydra.run.dir")


def _regrouped(saved: dict[str, Any], optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> dict[str, Any]:
    """An optimizer state saved with one parameter group (before weight-decay groups), laid out as ``optimizer``'s.

    Both cover the same parameters: the old single group in the order of ``params``
    (the stage's trainable parameters), the new groups that order split into decayed
    and not decayed. States saved with the current layout are returned as they are.
    """
    if len(saved["param_groups"]) == len(optimizer.param_groups):
        return saved
    if len(saved["param_groups"]) != 1:
        raise CheckpointError(f"optimizer state has {len(saved['param_groups'])} parameter groups, expected 1 or "
                              f"{len(optimizer.param_groups)}")
    old_index = {id(p): i for i, p in enumerate(params)}
    old_group = saved["param_groups"][0]
    if len(old_group["params"]) != len(params):
        raise CheckpointError(f"optimizer state covers {len(old_group['params'])} parameters, this stage trains "
                              f"{len(params)}")
    state, groups, k = {}, [], 0
    for group in optimizer.param_groups:
        indices = []
        for p in group["params"]:
            old = old_group["params"][old_index[id(p)]]
            if old in saved["state"]:
                state[k] = saved["state"][old]
            indices.append(k)
            k += 1
        groups.append({**old_group, "weight_decay": group["weight_decay"], "params": indices})
    return {"state": state, "param_groups": groups}


def _batch_generator(seed: int, pos: Position, ctx) -> torch.Generator:
    """The flow bridge's noise for one micro-batch, seeded by its place in the epoch's global batch order.

    Rank r's k-th micro-batch is the sampler's batch k * world_size + r, so N ranks draw the
    same noise for the same trials as one process accumulating N micro-batches.
    """
    index = pos.batch_in_epoch * ctx.world_size + ctx.rank
    return torch.Generator(device=ctx.device).manual_seed((seed * 1_000_003 + pos.epoch) * 1_000_003 + index)


def _unique(sampler: LengthBucketSampler, ctx) -> list[list[int]]:
    """Evaluation batches with no trial twice across ranks (the train sampler repeats a few to even out ranks)."""
    batches = sampler.epoch_batches()
    return batches[ctx.rank :: ctx.world_size]
