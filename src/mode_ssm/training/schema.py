"""The schema of configs/train.yaml (see :mod:`mode_ssm.runtime.schema` for how it is checked)."""

# no `from __future__ import annotations`: OmegaConf and check_values read the field types as objects
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from mode_ssm.runtime.schema import DEVICES, ON_BAD_SESSION, VALIDATE, DecodingSchema, WandbSchema, option, register

SIM_PRESETS = ("quick", "mini", "bench", "full")  # configs/preset/


@dataclass
class DataSchema:
    data_root: Optional[str] = None
    sim_preset: str = option("quick", choices=SIM_PRESETS)
    sim_seed: int = 0
    max_sessions: Optional[int] = option(None, ge=1)
    on_bad_session: str = option("error", choices=ON_BAD_SESSION)
    validate: str = option("full", choices=VALIDATE)
    num_workers: int = option(0, ge=0)
    train_wer_trials: int = option(64, ge=0)


@dataclass
class PreprocessorSchema:
    num_channels: int = option(512, choices=(256, 512))


@dataclass
class AugmentationSchema:
    enabled: bool = True
    white_noise_std: float = option(0.5, ge=0)
    constant_offset_std: float = option(0.1, ge=0)
    random_cut: int = option(3, ge=0)
    smooth_std: float = option(2.0, ge=0)
    smooth_kernel_size: int = option(100, ge=1)
    time_masks: int = option(2, ge=0)
    time_mask_max_width: int = option(10, ge=0)


@dataclass
class OptimizerSchema:
    lr: float = option(3e-3, gt=0)
    weight_decay: float = option(0.01, ge=0)
    betas: List[float] = option([0.9, 0.999], each={"ge": 0, "lt": 1})
    eps: float = option(1e-8, gt=0)


@dataclass
class SchedulerSchema:
    warmup_steps: int = option(50, ge=0)
    min_lr_ratio: float = option(0.05, ge=0, le=1)


@dataclass
class TrainingSchema:
    batch_size: int = option(8, ge=1)
    gradient_accumulation_steps: int = option(1, ge=1)
    max_grad_norm: float = option(1.0, gt=0)
    optimizer: OptimizerSchema = option(OptimizerSchema())
    scheduler: SchedulerSchema = option(SchedulerSchema())
    stages: List[Any] = option([])  # configs/curriculum/, checked by training.curriculum.plan_curriculum
    resume: Optional[str] = None
    checkpoint_every_steps: int = option(50, ge=0)
    max_nonfinite_batches: int = option(20, ge=0)
    max_steps: Optional[int] = option(None, ge=1)
    time_budget_minutes: Optional[float] = option(None, gt=0)
    release_heap_mb: Optional[float] = option(0.0, ge=0)
    day_smoothness: float = option(0.0, ge=0)


@dataclass
class TrainSchema:
    model: Dict[str, Any] = option({})  # configs/model/, checked by building the model on the meta device
    decoding: DecodingSchema = option(DecodingSchema())
    seed: int = 0
    device: str = option("auto", choices=DEVICES)
    torch_threads: int = option(1, ge=1)
    amp: bool = True
    data: DataSchema = option(DataSchema())
    preprocessor: PreprocessorSchema = option(PreprocessorSchema())
    augmentation: AugmentationSchema = option(AugmentationSchema())
    training: TrainingSchema = option(TrainingSchema())
    wandb: WandbSchema = option(WandbSchema())


register("train_schema", TrainSchema)
