"""The CSV tracker: Lightning's `CSVLogger` in the run folder, for a machine with no tracking service.

`<run>/csv/` holds metrics.csv (the training curves, then one row with the summary metrics), hparams.yaml
(the parameters, and Lightning's model/data hyperparameters), tags.json, and the run's files and overlays
under the same names as MLflow's artifacts; a suite's summary goes to `<results>/<suite>/csv_summary/`.
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmark.tracking.backend import Backend
from benchmark.tracking.content import describe_run, run_params


class CsvBackend(Backend):
    name = "csv"

    @property
    def where(self) -> str:
        return "<run folder>/csv"

    def start(self, record: dict, folder: Path):
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(save_dir=str(folder), name="csv", version="")
        logger.log_hyperparams(run_params(record))
        logger.save()
        return logger

    def log_overlays(self, logger, key: str, overlays: list) -> None:
        _write(Path(logger.log_dir), {f"{key}/{o.filename}": o.png() for o in overlays})

    def finish(self, logger, content, record: dict) -> None:
        folder = Path(logger.log_dir)
        logger.log_metrics(content.metrics, step=(record.get("budget") or {}).get("steps"))
        logger.save()
        _write(folder, {**content.files, "tags.json": json.dumps(content.tags, indent=2).encode()})
        for key, overlays in content.overlays.items():
            self.log_overlays(logger, key, overlays)
        if content.checkpoint is not None:
            _write(folder, {content.checkpoint.name: content.checkpoint.read_bytes()})

    def upload(self, record: dict, folder: Path) -> bool:
        """Write the copy of a finished record that the run did not write (run without `--tracker csv`);
        False when a complete copy (its tags.json with the record's status) is there already."""
        tags = folder / "csv" / "tags.json"
        if tags.is_file() and json.loads(tags.read_text()).get("status") != "failed":
            return False
        self.finish(self.start(record, folder), describe_run(record, folder), record)
        return True

    def abort(self, logger, record: dict) -> None:
        logger.save()
        _write(Path(logger.log_dir), {"tags.json": json.dumps({"status": "failed"}).encode()})

    def summary(self, content, save_dir: Path) -> str:
        folder = save_dir / "csv_summary"
        _write(folder, content.files)
        return f"CSV summary of {content.suite}: {folder}"


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
