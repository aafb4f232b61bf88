"""Rich progress for a suite (runs done, ETA) and for the current run (training steps, ETA),
plus the summary table printed at the end."""
from __future__ import annotations

import math

from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class SuiteProgress:
    """Two bars: the suite (one step per run) and the run in progress (one step per training step)."""

    def __init__(self, total_runs: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.suite_task = self.progress.add_task("suite", total=total_runs)
        self.run_task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def start_run(self, name: str, total_steps: int | None) -> None:
        if self.run_task is not None:
            self.progress.remove_task(self.run_task)
        self.run_name = name
        self.run_task = self.progress.add_task(f"{name} [fit]", total=total_steps or None)

    def set_run_stage(self, stage: str) -> None:
        if self.run_task is not None:
            self.progress.update(self.run_task, description=f"{self.run_name} [{stage}]")

    def advance_run(self, completed: int) -> None:
        """Move the run bar; without a terminal (logs, CI) print a line every 10% instead."""
        if self.run_task is None:
            return
        self.progress.update(self.run_task, completed=completed)
        task = self.progress._tasks[self.run_task]
        if not self.console.is_terminal and task.total:
            step = max(1, int(task.total) // 10)
            if completed % step == 0 or completed == task.total:
                self.console.print(f"{self.run_name}: step {completed}/{int(task.total)}, "
                                   f"{task.elapsed or 0:.0f} s", highlight=False)

    def finish_run(self) -> None:
        if self.run_task is not None:
            self.progress.remove_task(self.run_task)
            self.run_task = None
        self.progress.advance(self.suite_task)

    def log(self, message: str) -> None:
        self.progress.console.print(message)


class StepProgress(Callback):
    """Feeds training steps into the run bar."""

    def __init__(self, progress: SuiteProgress):
        self.progress = progress

    def on_train_batch_end(self, trainer, *args, **kwargs):
        self.progress.advance_run(trainer.global_step)


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def failures(records: list[dict]) -> list[str]:
    return [f"{r.get('variant')}__{r.get('modality')}__seed{r.get('seed')}: {r.get('error')}"
            for r in records if r.get("status") == "failed"]


def summary_table(records: list[dict], title: str = "LiverBench results") -> Table:
    """One row per run: status, every metric of the schema (its title and format), time per
    volume/slice, params."""
    from benchmark.report.columns import fmt_metric, metric_title
    from benchmark.scoring.metrics import METRICS

    table = Table(title=title)
    for col in ("variant", "modality", "seed", "status", *(metric_title(m.name) for m in METRICS),
                "volume ms", "slice ms", "params M"):
        table.add_column(col, justify="left" if col in ("variant", "modality", "status") else "right",
                         no_wrap=True, overflow="fold" if col == "variant" else "ellipsis")
    for r in records:
        m, t = r.get("metrics") or {}, r.get("timing") or {}
        params = r.get("params")
        status = r.get("status", "?")
        if status == "failed":
            status = "[red]failed[/red]"
        table.add_row(
            str(r.get("variant")), str(r.get("modality")), str(r.get("seed")), status,
            *(fmt_metric(x.name, _number(m.get(x.name))) for x in METRICS),
            _fmt(t.get("volume_ms"), 0), _fmt(t.get("slice_ms"), 2),
            _fmt(params / 1e6 if params else None, 2),
        )
    return table


def _number(value) -> float:
    """A record's metric as a float; missing or non-numeric (a hand-edited record) shows as "–"."""
    try:
        return math.nan if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return math.nan
