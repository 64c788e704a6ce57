"""Write a competition submission: `python scripts/make_submission.py checkpoint=PATH data.data_root=DIR output=FILE`.

Config: configs/make_submission.yaml; `validate_only=true` checks an existing file
against the test files instead. The work is in mode_ssm.evaluation.submission.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import get_original_cwd
from omegaconf import DictConfig

from mode_ssm.atomic import WriteError
from mode_ssm.data.t15 import T15DataError
from mode_ssm.evaluation.submission import make_submission
from mode_ssm.runtime.checkpoint import CheckpointError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(config_path=CONFIG_DIR, config_name="make_submission", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from rich.console import Console

    if not cfg.validate_only and not cfg.checkpoint:
        print("error: checkpoint=PATH is required (or validate_only=true to check a file)", file=sys.stderr)
        sys.exit(2)
    try:
        make_submission(cfg, launch_dir=get_original_cwd(), console=Console())
    except (T15DataError, CheckpointError, FileNotFoundError, ValueError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
