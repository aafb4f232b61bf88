"""The MLflow tracker: Lightning's `MLFlowLogger`, one experiment per suite, one run per result record.

The tracking URI is `--mlflow-uri`, else `MLFLOW_TRACKING_URI`, else a local SQLite store in the results
folder (RESULTS/mlflow.db, artifacts in RESULTS/mlartifacts): no server, nothing leaves the machine.
(MLflow 3 refuses new `file:` stores unless MLFLOW_ALLOW_FILE_STORE=true; such a URI still works here.)
A server is asked for /health before each run, so one that is down costs a second, not MLflow's retries.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import time
import warnings
from pathlib import Path

from benchmark.tracking.backend import Backend
from benchmark.tracking.content import describe_run, record_id, run_params, run_tags
from common.files import DataError

HEALTH_TIMEOUT_S = 5
COMPLETE = "liverbench.complete"  # set last: a run without it is completed by `liverbench report --tracker mlflow`
SUMMARY = "liverbench.summary"


def default_uri(out: str | os.PathLike) -> str:
    return f"sqlite:///{(Path(out) / 'mlflow.db').resolve()}"


def _logger_class():
    from lightning.pytorch.loggers import MLFlowLogger

    class SafeMLFlowLogger(MLFlowLogger):
        """MLFlowLogger whose calls from inside training never raise: the first failure is warned about
        (tracker and URI) and the logger goes quiet for the rest of the run, which goes on. Lightning's
        model/data hyperparameters are logged as `hparams/<name>` (apart from the run's own parameters)."""

        broken = False
        recovery = ""
        folder: str | None = None

        @property
        def save_dir(self) -> str | None:
            """The run folder (Lightning writes the run's config.yaml there, as with the other loggers)."""
            return self.folder

        def _safely(self, what: str, call, *args) -> None:
            if self.broken:
                return
            try:
                call(*args)
            except Exception as exc:
                self.broken = True
                warnings.warn(f"mlflow tracker ({self._tracking_uri}): {what} failed during training: "
                              f"{type(exc).__name__}: {exc}; the run goes on without it; {self.recovery}")

        def log_hyperparams(self, params) -> None:
            from lightning.fabric.utilities.logger import _convert_params

            self._safely("logging hyperparameters", super().log_hyperparams, {"hparams": _convert_params(params)})

        def log_metrics(self, metrics, step=None) -> None:
            self._safely("logging metrics", super().log_metrics, metrics, step)

        def finalize(self, status: str = "success") -> None:
            """Not at the end of fit: the backend closes the run once it is scored."""

    return SafeMLFlowLogger


class MlflowBackend(Backend):
    name = "mlflow"

    def __init__(self, uri: str | None, out: str | os.PathLike):
        if importlib.util.find_spec("mlflow") is None:
            raise DataError("--tracker", "mlflow is not installed (pip install -e '.[mlflow]')")
        self.out = Path(out)
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(out)

    @property
    def where(self) -> str:
        return self.uri

    @property
    def remote(self) -> bool:
        return self.uri.startswith(("http://", "https://"))

    def artifact_location(self, suite: str) -> str | None:
        """A local SQLite store keeps its artifacts beside the database; a server or file store decides itself."""
        if self.uri.startswith("sqlite:///"):
            return str(Path(self.uri[len("sqlite:///"):]).resolve().parent / "mlartifacts" / suite)
        return None

    def check(self) -> None:
        """One quick request to a server's /health (an unreachable server raises ConnectionError)."""
        if not self.remote:
            return
        import requests

        try:
            requests.get(self.uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S).raise_for_status()
        except requests.RequestException as exc:
            raise ConnectionError(f"server not reachable ({type(exc).__name__})") from None

    def experiment(self, client, suite: str) -> str:
        found = client.get_experiment_by_name(suite)
        if found is not None and found.lifecycle_stage != "deleted":
            return found.experiment_id
        return client.create_experiment(suite, artifact_location=self.artifact_location(suite))

    def start(self, record: dict, folder: Path, run_id: str | None = None):
        self.check()
        name = f"{record['variant']}__{record['modality']}__seed{record['seed']}"
        logger = _logger_class()(experiment_name=str(record["suite"]), run_name=name, tracking_uri=self.uri,
                                 artifact_location=self.artifact_location(str(record["suite"])), run_id=run_id)
        logger.recovery, logger.folder = self.recovery(self.out), str(folder)
        client = logger.experiment  # the experiment and the run exist from here: a bad server shows now
        super(type(logger), logger).log_hyperparams(run_params(record))  # unguarded: a failure drops the tracker
        tags = {k: v for k, v in run_tags(record, folder).items() if k not in ("status", "checkpoint")}
        self._log(client, logger.run_id, tags=tags)
        return logger

    def _log(self, client, run_id: str, metrics: dict | None = None, tags: dict | None = None, step: int = 0,
              files: dict[str, bytes] | None = None, under: str | None = None) -> None:
        from mlflow.entities import Metric, RunTag

        stamp = int(time.time() * 1000)
        if metrics or tags:
            client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in (metrics or {}).items()],
                             tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])
        if files:
            with tempfile.TemporaryDirectory() as tmp:
                for name, data in files.items():
                    (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                    (Path(tmp) / name).write_bytes(data)
                client.log_artifacts(run_id, tmp, artifact_path=under)

    def log_overlays(self, logger, key: str, overlays: list) -> None:
        self._log(logger.experiment, logger.run_id, files={o.filename: o.png() for o in overlays}, under=key)

    def finish(self, logger, content, record: dict) -> None:
        client, run_id = logger.experiment, logger.run_id
        step = int((record.get("budget") or {}).get("steps") or 0)
        self._log(client, run_id, metrics=content.metrics, tags=content.tags, step=step, files=content.files)
        for key, overlays in content.overlays.items():
            self.log_overlays(logger, key, overlays)
        if content.checkpoint is not None:
            client.log_artifact(run_id, str(content.checkpoint))
        client.set_tag(run_id, COMPLETE, "true")
        client.set_terminated(run_id, "FINISHED")

    def abort(self, logger, record: dict) -> None:
        if not logger._initialized:
            return
        error = str(record.get("error") or "interrupted")[:5000]
        self._log(logger.experiment, logger.run_id, tags={"status": record.get("status") or "interrupted",
                                                          "error": error})
        logger.experiment.set_terminated(logger.run_id, "FAILED")

    def upload(self, record: dict, folder: Path) -> bool:
        """Log a finished record that MLflow lacks or holds incomplete (its server was down); False when
        it is there already. An incomplete run (training curves only) is completed, not duplicated."""
        from mlflow import MlflowClient

        client = MlflowClient(self.uri)
        found = client.search_runs([self.experiment(client, str(record["suite"]))],
                                   f"tags.`liverbench.record` = '{record_id(record)}'")
        if any(r.data.tags.get(COMPLETE) == "true" for r in found):
            return False
        logger = self.start(record, folder, run_id=found[0].info.run_id if found else None)
        self.finish(logger, describe_run(record, folder), record)
        return True

    def summary(self, content, save_dir: Path) -> str:
        """`<suite>__summary`: one run per suite, reused (the runner logs the per-run table, the report
        adds the ranking, leaderboard.md and its figures)."""
        from mlflow import MlflowClient

        self.check()
        client = MlflowClient(self.uri)
        experiment = self.experiment(client, content.suite)
        found = client.search_runs([experiment], f"tags.`{SUMMARY}` = '{content.suite}'", max_results=1)
        run_id = found[0].info.run_id if found else client.create_run(
            experiment, run_name=f"{content.suite}__summary", tags={SUMMARY: content.suite}).info.run_id
        self._log(client, run_id, tags={"runs": len(content.records)}, files=content.files)
        client.set_terminated(run_id, "FINISHED")
        return f"MLflow summary run {content.suite}__summary ({self.uri}): {len(content.records)} runs"

    def recovery(self, out) -> str:
        return (f"the results are kept; upload them later with `liverbench report --results {out or 'RESULTS'} "
                f"--tracker mlflow --mlflow-uri {self.uri}`")

    def hint(self, out) -> str | None:
        if self.remote:
            return f"MLflow runs: {self.uri} (experiment per suite)"
        return f"MLflow runs in {self.uri}; open them with: mlflow ui --backend-store-uri {self.uri}"
