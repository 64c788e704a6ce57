"""Read a W&B run back from its ``.wandb`` transaction log (offline runs keep everything there).

Uses ``wandb leet inspect --json``, wandb's own reader of the log format, so it
follows the format as wandb changes it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunRecords:
    run_id: str
    name: str | None
    project: str | None
    entity: str | None
    tags: list[str]
    notes: str | None
    config: dict[str, Any]
    history: list[dict[str, Any]]
    step_metrics: dict[str, str] = field(default_factory=dict)  # metric -> its x-axis metric
    exit_code: int | None = None
    path: Path | None = None

    def series(self, name: str) -> list[Any]:
        return [row[name] for row in self.history if name in row]


def find_run_logs(path: str | Path) -> list[Path]:
    """All ``run-*.wandb`` logs under a run folder, a ``wandb/`` folder or a training run directory."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("run-*.wandb") if "latest-run" not in p.parts)


def _records(log_path: Path) -> list[dict[str, Any]]:
    exe = shutil.which("wandb")
    cmd = [exe] if exe else [sys.executable, "-m", "wandb"]
    out = subprocess.run(cmd + ["leet", "inspect", "--json", str(log_path)], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"{log_path}: wandb leet inspect failed: {out.stderr.strip()[:500]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _unwrap_config(update: dict[str, Any]) -> dict[str, Any]:
    """Config records may wrap each value as {"value": ...} depending on the wandb version."""
    out = {}
    for k, v in update.items():
        if k == "_wandb":
            continue
        out[k] = v["value"] if isinstance(v, dict) and set(v) == {"value"} else v
    return out


def read_run(log_path: str | Path) -> RunRecords:
    log_path = Path(log_path)
    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    step_metrics: dict[str, str] = {}
    exit_code = None
    for rec in _records(log_path):
        kind = rec.get("type")
        if kind == "run":
            run = rec["run"]
            config.update(_unwrap_config(run.get("config", {}).get("update", {})))
        elif kind == "config":
            config.update(_unwrap_config(rec["config"].get("update", {})))
        elif kind == "history":
            history.append({k: v for k, v in rec["history"]["item"].items() if not k.startswith("_")})
        elif kind == "metric":
            m = rec["metric"]
            if m.get("step_metric"):
                step_metrics[m.get("name") or m.get("glob_name")] = m["step_metric"]
        elif kind == "exit":
            exit_code = rec["exit"].get("exit_code", 0)
    return RunRecords(
        run_id=run.get("run_id", ""), name=run.get("display_name"), project=run.get("project"),
        entity=run.get("entity") or None, tags=list(run.get("tags", [])), notes=run.get("notes"),
        config=config, history=history, step_metrics=step_metrics, exit_code=exit_code, path=log_path,
    )
