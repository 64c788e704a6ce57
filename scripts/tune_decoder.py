"""Tune the word decoder on val: `python scripts/tune_decoder.py checkpoint=PATH [grid.lm_weight=[0.5,1]] ...`.

Config: configs/tune_decoder.yaml. Decodes the model once, then re-runs only the
lexicon + LM search for each lm_weight x word_score x beam, and prints the table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from hydra.utils import get_original_cwd
from omegaconf import DictConfig

from mode_ssm.data.t15 import T15DataError
from mode_ssm.training.checkpoint import CheckpointError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def tune(cfg: DictConfig, launch_dir: Path, console) -> list[dict]:
    import torch
    from rich.table import Table

    from mode_ssm.inference import (
        WordDecoding, config_dict, decode_trials, load_model, open_split, pick_device, resolve_data_root,
        word_search_grid,
    )
    from mode_ssm.reports import write_csv
    from mode_ssm.tta import TTAConfig

    if cfg.split == "test":
        raise ValueError("split=test has no labels to tune on; use val")
    torch.set_num_threads(int(cfg.torch_threads))
    loaded = load_model(launch_dir / Path(str(cfg.checkpoint)).expanduser(), pick_device(str(cfg.device)))
    data_root = resolve_data_root(cfg.data.data_root, loaded, launch_dir)
    out_dir = launch_dir / Path(str(cfg.output_dir))
    validate = cfg.data.validate or loaded.config.get("data", {}).get("validate", "full")
    data = open_split(loaded, data_root, cfg.split, validate, cfg.data.on_bad_session)
    words = WordDecoding(loaded, data_root, out_dir / "lm", config_dict(cfg.decoding))
    result = decode_trials(loaded, data, tta=TTAConfig.from_mapping(config_dict(cfg.tta)),
                           batch_size=int(cfg.batch_size), unseen=cfg.unseen_sessions,
                           amp=bool(cfg.amp) and loaded.device.type == "cuda", keep_log_probs=True)
    console.print(f"model ran once over {len(data)} {cfg.split} trials in {result.seconds:.1f} s")
    g = cfg.grid
    grid = word_search_grid(result.rows, words, list(g.lm_weight), list(g.word_score), list(g.beam))
    best = min(grid, key=lambda r: (r["wer"], r["seconds"]))
    table = Table(title=f"word decoder grid on {cfg.split} ({grid[0]['words']} words)")
    for col in ("lm_weight", "word_score", "beam", "WER %", "s / trial"):
        table.add_column(col, justify="right")
    for r in grid:
        table.add_row(f"{r['lm_weight']:g}", f"{r['word_score']:g}", str(r["beam"]), f"{100 * r['wer']:.2f}",
                      f"{r['seconds'] / len(result.rows):.4f}", style="bold green" if r is best else None)
    console.print(table)
    trained = loaded.decoding()
    console.print(f"checkpoint's setting: lm_weight={trained['lm_weight']} word_score={trained['word_score']} "
                  f"beam={trained['beam']}")
    console.print(f"best: WER {100 * best['wer']:.2f}% with decoding.lm_weight={best['lm_weight']:g} "
                  f"decoding.word_score={best['word_score']:g} decoding.beam={best['beam']}")
    write_csv(grid, out_dir / "grid.csv")
    (out_dir / "best.json").write_text(json.dumps(best, indent=2))
    return grid


@hydra.main(config_path=CONFIG_DIR, config_name="tune_decoder", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from rich.console import Console

    try:
        tune(cfg, Path(get_original_cwd()), Console())
    except (T15DataError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
