"""The interface every tracker implements (W&B, MLflow, CSV): its own module so the backends and the
`Tracking` that picks them import it without importing each other."""
from __future__ import annotations

import warnings
from pathlib import Path

from benchmark.tracking.content import RunContent


class Backend:
    """One tracker for a whole suite; subclasses in wandb_backend, mlflow_backend, csv_backend."""

    name = ""
    wants_images = True

    @property
    def where(self) -> str:  # the address every message names
        raise NotImplementedError

    def start(self, record: dict, folder: Path):
        """A Lightning logger whose run exists and holds the run's parameters (None: nothing to log)."""
        raise NotImplementedError

    def log_overlays(self, logger, key: str, overlays: list) -> None:
        raise NotImplementedError

    def finish(self, logger, content: RunContent, record: dict) -> None:
        raise NotImplementedError

    def abort(self, logger, record: dict) -> None:
        raise NotImplementedError

    def summary(self, content, save_dir: Path) -> str:
        """Log a suite's summary run; returns a line saying where it went."""
        raise NotImplementedError

    def recovery(self, out) -> str:
        """What to do after a failure (the record is always kept)."""
        return "its results are in the run folders"

    def hint(self, out) -> str | None:
        """A closing line for the suite (e.g. how to open or upload the runs)."""
        return None

    def warn(self, what: str, exc: BaseException, out=None) -> None:
        warnings.warn(f"{self.name} tracker ({self.where}): {what} failed: {type(exc).__name__}: {exc}; "
                      f"{self.recovery(out)}", stacklevel=3)
