"""Evaluate a checkpoint: `python scripts/evaluate.py checkpoint=PATH split=val|test key=value ...`.

Config: configs/evaluate.yaml. Paths are relative to where the command is typed.
The work is in mode_ssm.evaluation.reports.run_evaluation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import get_original_cwd
from omegaconf import DictConfig

from mode_ssm.atomic import WriteError
from mode_ssm.data.t15 import T15DataError
from mode_ssm.evaluation.evaluate import run_evaluation
from mode_ssm.runtime.checkpoint import CheckpointError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from rich.console import Console

    console = Console()
    try:
        result = run_evaluation(cfg, launch_dir=get_original_cwd(), console=console)
    except (T15DataError, CheckpointError, FileNotFoundError, ValueError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    console.print(f"report written to {result['out_dir']}")


if __name__ == "__main__":
    main()
