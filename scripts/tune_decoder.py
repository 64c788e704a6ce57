"""Tune the word decoder on val: `python scripts/tune_decoder.py checkpoint=PATH [grid.lm_weight=[0.5,1]] ...`.

Config: configs/tune_decoder.yaml. Decodes the model once, then re-runs only the
lexicon + LM search for each lm_weight x word_score x beam, and prints the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import get_original_cwd
from omegaconf import DictConfig

from mode_ssm.atomic import WriteError
from mode_ssm.data.t15 import T15DataError
from mode_ssm.evaluation.tuning import tune
from mode_ssm.runtime.checkpoint import CheckpointError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(config_path=CONFIG_DIR, config_name="tune_decoder", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from rich.console import Console

    try:
        tune(cfg, Path(get_original_cwd()), Console())
    except (T15DataError, CheckpointError, FileNotFoundError, ValueError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
