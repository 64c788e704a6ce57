"""Weights & Biases tracking that never hangs and never crashes training.

Mode resolution (first match wins):
1. ``wandb.enabled=false`` -> no tracking at all.
2. ``WANDB_MODE`` in the environment (offline, dryrun, disabled, online).
3. ``./wandb/settings`` in the directory the command was typed in (what
   ``wandb offline`` writes there), then the global ``~/.config/wandb/settings``.
   wandb itself only reads the local file from the directory current at
   ``wandb.init``; we read it explicitly so the run honours it wherever it runs.
4. No API key (``WANDB_API_KEY`` or a netrc entry) -> offline, with one warning:
   with a terminal wandb would prompt forever, without one it would fail.
5. A key but the server unreachable within a few seconds -> offline, one warning
   (wandb's own init otherwise blocks for about 100 s).
Offline runs are synced later with ``wandb sync RUN_DIR/wandb/``.
"""

from __future__ import annotations

import configparser
import logging
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
BATCH_METRICS = ("train/loss", "train/batch_time", "train/loss_*", "train/grad_norm", "train/trials_per_second")
EPOCH_METRICS = ("val/*", "train/wer", "train/per", "learning_rate", "stage/*", "time/*")


def _settings_file_mode(path: Path) -> tuple[str | None, str | None]:
    """(mode, base_url) from a wandb settings file, if it sets them."""
    if not path.is_file():
        return None, None
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error:
        return None, None
    section = parser["default"] if parser.has_section("default") else {}
    mode = section.get("mode")
    if mode is None and section.get("disabled", "").lower() == "true":
        mode = "disabled"
    return mode, section.get("base_url")


def _has_api_key(base_url: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urllib.parse.urlparse(base_url).hostname or ""
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        import netrc

        return netrc.netrc(netrc_path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(base_url: str, timeout: float = 3.0) -> bool:
    parsed = urllib.parse.urlparse(base_url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(launch_dir: str | os.PathLike) -> tuple[str, str | None]:
    """Return (mode, reason-if-not-online) for an enabled W&B config."""
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("offline", "dryrun"):
        return "offline", "WANDB_MODE=" + env_mode
    if env_mode == "disabled":
        return "disabled", "WANDB_MODE=disabled"
    base_url = os.environ.get("WANDB_BASE_URL", "")
    for path in (Path(launch_dir) / "wandb" / "settings", Path.home() / ".config" / "wandb" / "settings"):
        mode, url = _settings_file_mode(path)
        base_url = base_url or (url or "")
        if env_mode != "online" and mode in ("offline", "dryrun"):
            return "offline", f"'wandb offline' setting in {path}"
        if env_mode != "online" and mode == "disabled":
            return "disabled", f"'wandb disabled' setting in {path}"
    base_url = base_url or DEFAULT_BASE_URL
    if not _has_api_key(base_url):
        return "offline", "no W&B API key found (WANDB_API_KEY or `wandb login`)"
    if not _reachable(base_url):
        return "offline", f"{base_url} is not reachable"
    return "online", None


class Tracker:
    """One W&B run per training run; a no-op when disabled or on non-main ranks."""

    def __init__(self, run: Any | None = None, mode: str = "disabled"):
        self.run = run
        self.mode = mode

    @property
    def active(self) -> bool:
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def run_dir(self) -> str | None:
        return self.run.dir if self.run is not None else None

    def log(self, metrics: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.log(dict(metrics))

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def log_image(self, key: str, path: str | os.PathLike) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path))})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def start_tracker(
    wandb_cfg: Mapping[str, Any],
    run_dir: str | os.PathLike,
    config: Mapping[str, Any],
    launch_dir: str | os.PathLike,
    resume_id: str | None = None,
    is_main: bool = True,
) -> Tracker:
    """Start (or resume, with ``resume_id``) the W&B run of this training run.

    Files go to ``run_dir/wandb/``. Never raises for W&B trouble: it falls back
    to offline, and to no tracking only if even offline init fails.
    """
    if not is_main or not wandb_cfg.get("enabled", False):
        return Tracker()
    mode, reason = resolve_mode(launch_dir)
    if mode == "disabled":
        log.warning("W&B is disabled (%s); training runs without tracking.", reason)
        return Tracker()
    if mode == "offline" and reason and not reason.startswith(("WANDB_MODE", "'wandb offline'")):
        log.warning("W&B: %s; logging offline. Upload later with: wandb sync %s", reason, Path(run_dir) / "wandb")
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    tags = wandb_cfg.get("tags")
    if isinstance(tags, str):  # tags=a,b from a shell that dropped the brackets
        tags = [t for t in tags.strip("[]").split(",") if t]
    kwargs = dict(
        project=wandb_cfg.get("project", "mode-ssm"),
        entity=wandb_cfg.get("entity"),
        name=wandb_cfg.get("run_name"),
        tags=list(tags) if tags else None,
        notes=wandb_cfg.get("notes"),
        config=dict(config),
        dir=str(run_dir),
        id=resume_id,
        resume="allow" if resume_id else None,
        settings=wandb.Settings(init_timeout=float(wandb_cfg.get("init_timeout", 90)), console="off"),
    )
    try:
        run = wandb.init(mode=mode, **kwargs)
    except Exception as e:  # network trouble mid-init must not end the training run
        if mode == "offline":
            log.warning("W&B offline init failed (%s); training runs without tracking.", e)
            return Tracker()
        log.warning("W&B online init failed (%s); logging offline instead.", e)
        mode = "offline"
        run = wandb.init(mode=mode, **kwargs)
    # Batch metrics plot against `batch`, epoch metrics against `epoch`.
    run.define_metric("batch")
    run.define_metric("epoch")
    for name in BATCH_METRICS:
        run.define_metric(name, step_metric="batch")
    for name in EPOCH_METRICS:
        run.define_metric(name, step_metric="epoch")
    return Tracker(run, mode)
