"""The W&B tracker: `benchmark.tracking.wandb_logging` (WandbLogger runs, tables, masked images) behind `Backend`."""
from __future__ import annotations

from pathlib import Path

from benchmark.tracking import wandb_logging as wl
from benchmark.tracking.backend import Backend


class WandbBackend(Backend):
    name = "wandb"

    def __init__(self, mode: str, project: str):
        self.mode, self.project = mode, project

    @property
    def where(self) -> str:
        return f"{self.mode}, project {self.project}"

    def start(self, record: dict, folder: Path):
        return wl.make_logger(self.mode, self.project, record["suite"], record, folder)

    def log_overlays(self, logger, key: str, overlays: list) -> None:
        logger.experiment.log({key: [wl.to_wandb(o) for o in overlays]})

    def finish(self, logger, content, record: dict) -> None:
        """The run's files go into the run's folder (uploaded with it), the checkpoint's path into its
        config (W&B tags are plain labels), then the summary, tables and overlays."""
        run = logger.experiment
        files = Path(run.dir)
        for name, data in content.files.items():
            (files / name).write_bytes(data)
        if content.checkpoint is not None:
            run.save(str(content.checkpoint), base_path=str(content.checkpoint.parent), policy="end")
        run.config.update({"checkpoint": content.tags.get("checkpoint")}, allow_val_change=True)
        wl.log_result(logger, record, content.tables.get("test/per_case"), content.overlays.get("test/overlays"),
                      content.tables.get("external/per_case"))

    def abort(self, logger, record: dict) -> None:
        wl.abort_run(logger)

    def summary(self, content, save_dir: Path) -> str:
        wl.log_suite_summary(self.mode, self.project, content.suite, content.records, save_dir, content.rank_rows)
        return f"W&B summary run {content.suite}__summary ({self.mode}): {len(content.records)} runs"

    def hint(self, out) -> str | None:
        return wl.sync_hint(out) if self.mode == "offline" else None
