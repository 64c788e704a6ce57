"""Compare training runs side by side from their W&B files (works offline, before any sync).

    python scripts/compare_runs.py outputs/ multirun/          # every run found below these folders
    python scripts/compare_runs.py outputs/a outputs/b --keys training.optimizer.lr model.name
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from mode_ssm.training.wandb_records import find_run_logs, read_run


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit():
            node = node[int(part)] if int(part) < len(node) else None
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def _best(history: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in history if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return min(values) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="run directories or folders holding them")
    p.add_argument("--keys", nargs="*", default=["model.name", "training.optimizer.lr", "training.batch_size"],
                   help="config keys to show (dotted)")
    args = p.parse_args()
    runs = {}
    for path in args.paths:
        for log in find_run_logs(path):
            run = read_run(log)
            # a resumed offline run has one log per process; keep the longest history per run id
            if run.run_id not in runs or len(run.history) > len(runs[run.run_id].history):
                runs[run.run_id] = run
    if not runs:
        raise SystemExit(f"no W&B runs found under {args.paths}")
    table = Table(title=f"{len(runs)} run(s)")
    for col in ["run", "project", *args.keys, "epochs", "best val/wer %", "best val/per", "last val/wer %"]:
        table.add_column(col)
    for run in sorted(runs.values(), key=lambda r: _best(r.history, "val/wer") or math.inf):
        epochs = [r for r in run.history if "val/wer" in r and "val/cut_at_batch" not in r]  # whole epochs
        best_wer, best_per = _best(run.history, "val/wer"), _best(run.history, "val/per")
        table.add_row(
            run.name or run.run_id, run.project or "", *[str(_get(run.config, k)) for k in args.keys], str(len(epochs)),
            f"{best_wer:.2f}" if best_wer is not None else "-", f"{best_per:.4f}" if best_per is not None else "-",
            f"{epochs[-1]['val/wer']:.2f}" if epochs else "-",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
