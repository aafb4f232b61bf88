"""Experiment tracking for `liverbench run` and `report`: W&B, MLflow and a CSV folder, several at once.

`Tracking` holds a suite's trackers (`--tracker wandb,mlflow,csv|none`); each run gets a `RunTracking`:
one Lightning logger per tracker (training curves come from Lightning), then, once the run is scored,
the same `RunContent` (benchmark.tracking.content) to every tracker. A tracker that fails (a server that
is down or goes away) is warned about with its name and address and dropped for that run: the run goes
on and writes its record; `liverbench report --tracker mlflow` uploads what is missing afterwards.
"""
from __future__ import annotations

import os
from pathlib import Path

from benchmark.tracking.backend import Backend
from benchmark.tracking.content import RunContent, describe_run, describe_summary
from common.files import DataError

NAMES = ("wandb", "mlflow", "csv")


def parse_trackers(text: str | None) -> list[str]:
    """`--tracker`: a comma list of wandb, mlflow, csv, or `none`; the default is W&B alone (as before)."""
    names = [t.strip().lower() for t in (text or "wandb").split(",") if t.strip()]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in NAMES]
    if bad or not names:
        raise DataError("--tracker", f"unknown tracker {', '.join(map(repr, bad)) or repr(text)} "
                                     f"(choose from {', '.join(NAMES)}, or none)")
    return list(dict.fromkeys(names))


class RunTracking:
    """One run's loggers (one per tracker). Every call is guarded: a tracker that fails is warned about
    and left out for the rest of the run; the run itself never fails because of tracking."""

    def __init__(self, started: list[tuple[Backend, object]], out=None):
        self._live = started
        self._out = out

    @property
    def loggers(self) -> list:
        return [logger for _, logger in self._live if logger is not None]

    @property
    def wants_images(self) -> bool:
        return any(b.wants_images for b, _ in self._live)

    def _each(self, what: str, call) -> None:
        for pair in list(self._live):
            backend, logger = pair
            if getattr(logger, "broken", False):  # already warned from inside training
                self._live.remove(pair)
                continue
            try:
                call(backend, logger)
            except Exception as exc:  # tracking trouble must not lose the benchmark
                backend.warn(what, exc, self._out)
                self._live.remove(pair)

    def log_overlays(self, key: str, overlays: list) -> None:
        if overlays:
            self._each(f"logging {key}", lambda b, lg: b.log_overlays(lg, key, overlays))

    def finish(self, record: dict, folder: Path, per_case=None, overlays=None, external_rows=None,
               upload_checkpoint: bool = False) -> None:
        """Send the finished run (ok: everything; failed: closed as failed) to every tracker."""
        name = f"{record['variant']}__{record['modality']}__seed{record['seed']}"
        if record.get("status") != "ok":
            self._each(f"closing the failed run {name}", lambda b, lg: b.abort(lg, record))
            return
        content = describe_run(record, folder, per_case, external_rows, overlays, upload_checkpoint)
        self._each(f"logging {name}", lambda b, lg: b.finish(lg, content, record))

    def abort(self, record: dict) -> None:
        self._each("closing an interrupted run", lambda b, lg: b.abort(lg, record))


class Tracking:
    """A suite's trackers. `wandb_mode` is kept for the progress line and the closing `wandb sync` hint."""

    def __init__(self, backends: list[Backend], out=None, upload_checkpoint: bool = False):
        self.backends = backends
        self.out = out
        self.upload_checkpoint = upload_checkpoint

    def describe(self) -> str:
        return ", ".join(f"{b.name} {b.where}" for b in self.backends) or "no tracking"

    def start(self, record: dict, folder: Path) -> RunTracking:
        started = []
        for backend in self.backends:
            try:
                logger = backend.start(record, folder)
            except Exception as exc:
                backend.warn(f"starting {record['variant']}__{record['modality']}__seed{record['seed']}", exc, self.out)
                continue
            if logger is not None:
                started.append((backend, logger))
        return RunTracking(started, self.out)

    def summary(self, suite: str, records: list[dict], save_dir: Path, rank_rows=None, report_files=()) -> list[str]:
        """The suite's summary run in every tracker; returns one line per tracker that logged it."""
        if not records:
            return []
        content = describe_summary(suite, records, rank_rows, report_files)
        lines = []
        for backend in self.backends:
            try:
                lines.append(backend.summary(content, Path(save_dir)))
            except Exception as exc:
                backend.warn(f"the summary run of {suite}", exc, self.out)
        return [line for line in lines if line]

    def hints(self) -> list[str]:
        return [h for h in (b.hint(self.out) for b in self.backends) if h]


def tracking_from_args(trackers: str | None, wandb_mode: str | None, project: str, mlflow_uri: str | None,
                       out: str | os.PathLike, upload_checkpoint: bool = False) -> Tracking:
    """The trackers `--tracker`, `--wandb`, `--project`, `--mlflow-uri` ask for (bad values: DataError).
    W&B in mode `disabled` (`--wandb disabled`, `WANDB_MODE=disabled`) is left out."""
    backends: list[Backend] = []
    for name in parse_trackers(trackers):
        if name == "wandb":
            from benchmark.tracking.wandb_backend import WandbBackend
            from benchmark.tracking.wandb_logging import resolve_mode

            try:
                mode = resolve_mode(wandb_mode)
            except ValueError as exc:
                raise DataError("--wandb", str(exc)) from None
            if mode != "disabled":
                backends.append(WandbBackend(mode, project))
        elif name == "mlflow":
            from benchmark.tracking.mlflow_backend import MlflowBackend

            backends.append(MlflowBackend(mlflow_uri, out))
        else:
            from benchmark.tracking.csv_backend import CsvBackend

            backends.append(CsvBackend())
    return Tracking(backends, out, upload_checkpoint)


def add_arguments(parser) -> None:
    """The tracking options `liverbench run` and `report` share (each keeps its own `--wandb`)."""
    parser.add_argument("--tracker", default=None, metavar="NAMES",
                        help="comma list of wandb, mlflow, csv, or none (run's default: wandb); see docs/tracking.md")
    parser.add_argument("--mlflow-uri", default=None, metavar="URI",
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else a local SQLite store "
                             "RESULTS/mlflow.db with artifacts in RESULTS/mlartifacts: no server needed)")
