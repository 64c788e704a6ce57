"""Train MODE-SSM (or the GRU baseline): `python scripts/train.py key=value ...`.

Config: configs/train.yaml. Runs in outputs/<date>_<time>/ (hydra.run.dir=DIR);
data-parallel with `torchrun --nproc_per_node=N scripts/train.py ...`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd
from omegaconf import DictConfig

from mode_ssm.atomic import WriteError
from mode_ssm.data.t15 import T15DataError
from mode_ssm.runtime.checkpoint import CheckpointError
from mode_ssm.training.trainer import TrainingAborted, check_config, train

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

if int(os.environ.get("RANK", "0")) > 0:
    # Under torchrun only rank 0 owns a run directory (ranks could disagree on its
    # timestamp); the others write nothing there and learn rank 0's from it.
    sys.argv = [a for a in sys.argv if not a.startswith("hydra.run.dir=")]
    sys.argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.getLogger("mode_ssm").setLevel(logging.INFO)
    try:  # configuration mistakes end here, before any data is read
        check_config(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        train(cfg, run_dir=HydraConfig.get().runtime.output_dir, launch_dir=get_original_cwd())
    except (TrainingAborted, T15DataError, CheckpointError, FileNotFoundError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
