"""Simulate a T15-format data root.

    python scripts/simulate.py                                   # mini, seed 0, default root
    python scripts/simulate.py preset=bench output_dir=data/bench seed=1
    python scripts/simulate.py preset=full output_dir=/tmp/full
    python scripts/simulate.py preset=mini preset.trial_fraction=0.5 output_dir=/tmp/mini_half

The config is configs/simulate.yaml with one preset from configs/preset/.
Relative output_dir is taken from the directory the command is run in.
Hydra's own record goes to outputs/simulate/<time>/.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # per-block matrices are small; BLAS threads only contend

import hydra  # noqa: E402
from hydra.utils import to_absolute_path  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from mode_ssm.atomic import WriteError  # noqa: E402
from mode_ssm.sim import simulate  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="simulate")
def main(cfg: DictConfig) -> None:
    output_dir = to_absolute_path(cfg.output_dir) if cfg.output_dir else None
    try:
        summary = simulate(
            cfg.preset,
            output_dir,
            seed=int(cfg.seed),
            overwrite=bool(cfg.overwrite),
            progress=True,
            write_alignment=bool(cfg.write_alignment),
        )
    except (FileExistsError, ValueError, WriteError) as e:  # nothing half-written stays behind
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    counts = summary["counts"]
    print(
        f"{summary['preset']} (seed {summary['seed']}): {summary['n_sessions']} sessions, "
        f"{counts['train']} train / {counts['val']} val / {counts['test']} test trials, "
        f"{summary['bytes'] / 1e6:.0f} MB in {summary['seconds']:.1f} s -> {summary['root']}"
    )


if __name__ == "__main__":
    main()
