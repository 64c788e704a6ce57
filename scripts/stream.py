"""Decode live with a causal checkpoint: `python scripts/stream.py checkpoint=PATH split=val source=replay ...`.

Config: configs/stream.yaml. Paths are relative to where the command is typed.
The work is in mode_ssm.streaming.job.run_stream (source=redis: mode_ssm.streaming.redis_source).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import get_original_cwd
from omegaconf import DictConfig

from mode_ssm.atomic import WriteError
from mode_ssm.data.t15 import T15DataError
from mode_ssm.runtime.checkpoint import CheckpointError
from mode_ssm.streaming.job import run_stream
from mode_ssm.streaming.schema import StreamSchema  # noqa: F401 (registers stream_schema)

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(config_path=CONFIG_DIR, config_name="stream", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from rich.console import Console

    try:
        run_stream(cfg, launch_dir=get_original_cwd(), console=Console())
    except (T15DataError, CheckpointError, FileNotFoundError, ValueError, WriteError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
