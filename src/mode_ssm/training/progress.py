"""Terminal output of training: a progress bar per epoch and a summary table at the end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console()


class Progress:
    """Per-epoch bar with loss, batch time and ETA; silent on non-main ranks."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar: RichProgress | None = None
        self._task = None

    def start_epoch(self, title: str, total: int, completed: int = 0) -> None:
        if not self.enabled:
            return
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  {task.fields[batch_time]:.2f} s/batch"),
            TimeRemainingColumn(), console=console, transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(title, total=total + completed, completed=completed, loss=float("nan"), batch_time=0.0)

    def advance(self, loss: float, batch_time: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, loss=loss, batch_time=batch_time)

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def epoch_line(self, metrics: dict[str, Any], stage: str) -> None:
        parts = [f"epoch {metrics['epoch'] + 1} ({stage})"]
        for key, fmt in (("val/loss", "{:.3f}"), ("val/per", "{:.3f}"), ("val/wer", "{:.1f}%"),
                         ("train/wer", "{:.1f}%"), ("val/mode_accuracy", "{:.1f}%"), ("learning_rate", "{:.2e}"),
                         ("time/epoch_seconds", "{:.0f}s")):
            if metrics.get(key) is not None:
                parts.append(f"{key} " + fmt.format(metrics[key]))
        console.print("  ".join(parts))


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="MODE-SSM training summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    wer, per = summary.get("best_val_wer"), summary.get("best_val_per")
    table.add_row("best val WER", f"{wer:.2f}%" if wer is not None else "n/a")
    table.add_row("best val PER", f"{per:.4f}" if per is not None else "n/a")
    mode = summary.get("best_val_mode") or {}
    if "mode_accuracy" in mode:
        text = f"{100 * mode['mode_accuracy']:.1f}% of trials"
        if "mode_majority" in mode:
            text += f" (always the commoner mode: {100 * mode['mode_majority']:.1f}%)"
        if "mode_accuracy_block" in mode:
            text += f", {100 * mode['mode_accuracy_block']:.1f}% of blocks (majority vote)"
        table.add_row("val speaking mode (best)", text)
    table.add_row("best checkpoint", summary["best_checkpoint"])
    table.add_row("last checkpoint", summary["last_checkpoint"])
    table.add_row("epochs", str(summary["epochs"]))
    table.add_row("skipped non-finite batches", str(summary["nonfinite_batches"]))
    if summary.get("wandb_dir"):
        table.add_row("W&B run files", f"{summary['wandb_dir']} ({summary['wandb_mode']})")
        if summary.get("wandb_mode") == "offline":
            table.add_row("upload later", f"wandb sync {summary['wandb_dir']}")
            table.add_row("view locally", f"wandb leet {summary['wandb_dir']}")
    else:
        table.add_row("W&B", "disabled (wandb.enabled=true to track)")
    console.print(table)
    examples = summary.get("examples") or []
    if examples:
        shown = Table(title="val trials decoded by the best checkpoint (a fixed sample)")
        shown.add_column("reference")
        shown.add_column("decoded")
        with_mode = any(e.get("mode") for e in examples)
        if with_mode:
            shown.add_column("mode: predicted / true")
        for e in examples:
            cells = [e["reference"], e["decoded"] or ""]
            if with_mode:
                cells.append(f"{e.get('mode') or '-'} / {e.get('true_mode') or '-'}")
            shown.add_row(*cells)
        console.print(shown)
