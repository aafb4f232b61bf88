"""MLflow against a real tracking server started here (`mlflow server`, SQLite backend, artifact folder,
127.0.0.1 only): the smoke suite's runs read back through the MLflow client, the CSV tracker beside it,
the summary run from `liverbench report`, and a server that is down or goes away: results are kept and
the report uploads them afterwards."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark import report
from benchmark.run import records, runner
from mlflow_checks import artifact_names, check_csv_run, check_mlflow_run, free_port, mlflow_runs

pytest.importorskip("mlflow")
REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "benchmark" / "suites" / "paper"
FAST_FAILURE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


class Server:
    """`mlflow server` in a subprocess; booting takes a while, so tests that need it call `wait()`."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = (root / "server.log").open("w")
        bin_dir = Path(sys.executable).parent
        self.proc = subprocess.Popen(
            [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        self.ready = False

    def wait(self, timeout: float = 180) -> str:
        import requests

        deadline = time.monotonic() + timeout
        while not self.ready:
            assert self.proc.poll() is None, f"mlflow server exited: {Path(self.log.name).read_text()[-2000:]}"
            try:
                self.ready = requests.get(self.uri + "/health", timeout=2).ok
            except requests.RequestException:
                assert time.monotonic() < deadline, "mlflow server did not come up"
                time.sleep(0.5)
        return self.uri

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow_server"))
    yield srv
    srv.stop()


def tiny_suite(folder: Path, name: str) -> Path:
    """The smoke budget on one paper variant (the smoke suite's unet_baseline entry)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nbudget: smoke\nentries:\n"
                    f"  - {{variant: unet_baseline, label: U-Net Baseline, config: {PAPER / 'unet_baseline.yaml'}}}\n")
    return path


def run_suite(suite: Path, out: Path, *tracking: str) -> int:
    return runner.main(["--suite", str(suite), "--modalities", "ct", "--out", str(out), *tracking])


def test_unreachable_server_keeps_the_results_and_report_uploads_them(server, tmp_path, monkeypatch, capsys):
    """A closed port: the run finishes and writes its record, the warning names the tracker and URI;
    once a server is up, `liverbench report --tracker mlflow` uploads the finished run."""
    for key, value in FAST_FAILURE.items():
        monkeypatch.setenv(key, value)
    dead = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=rf"mlflow tracker \({dead}\): .*failed") as caught:
        assert run_suite(tiny_suite(tmp_path, "down"), out, "--tracker", "mlflow", "--mlflow-uri", dead) == 0
    folder = records.run_dir(out, "down", "unet_baseline", "ct", 0)
    assert json.loads((folder / "result.json").read_text())["status"] == "ok"
    messages = [str(w.message) for w in caught if dead in str(w.message)]
    assert any("not reachable" in m and f"--results {out} --tracker mlflow --mlflow-uri {dead}" in m for m in messages)

    uri = server.wait()
    args = ["--results", str(out), "--out", str(out / "leaderboard.md"), "--tracker", "mlflow", "--mlflow-uri", uri]
    assert report.main(args) == 0
    assert f"mlflow ({uri}): uploaded 1 finished runs" in capsys.readouterr().out
    runs = mlflow_runs(uri, "down")
    check_mlflow_run(uri, runs["unet_baseline__ct__seed0"], folder, live=False)
    assert report.main(args) == 0  # a second report uploads nothing again
    assert "uploaded 0 finished runs" in capsys.readouterr().out and set(mlflow_runs(uri, "down")) == set(runs)


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """The tiny suite tracked live by the server and the CSV tracker."""
    root = tmp_path_factory.mktemp("served")
    out = root / "out"
    uri = server.wait()
    assert run_suite(tiny_suite(root, "served"), out, "--tracker", "mlflow,csv", "--mlflow-uri", uri) == 0
    return out, uri


def test_the_server_holds_what_result_json_holds(served):
    out, uri = served
    runs = mlflow_runs(uri, "served")
    assert set(runs) == {"unet_baseline__ct__seed0", "served__summary"}
    folder = records.run_dir(out, "served", "unet_baseline", "ct", 0)
    check_mlflow_run(uri, runs["unet_baseline__ct__seed0"], folder)
    check_csv_run(folder)
    assert artifact_names(uri, runs["served__summary"].info.run_id) == {"leaderboard.csv"}  # the runner's summary
    assert not (out / "mlflow.db").exists() and not (out / "mlartifacts").exists()  # all on the server


def test_report_adds_the_ranking_and_figures_to_the_summary_run(served, capsys):
    out, uri = served
    assert report.main(["--results", str(out), "--out", str(out / "leaderboard.md"), "--tracker", "mlflow",
                        "--mlflow-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert "uploaded 0 finished runs" in printed and f"MLflow summary run served__summary ({uri}): 1 runs" in printed
    runs = mlflow_runs(uri, "served")  # no second summary run, no duplicate of the tracked run
    summary = artifact_names(uri, runs["served__summary"].info.run_id)
    assert summary == {"leaderboard.csv", "ranking.csv", "leaderboard.md", "leaderboard_pareto.png", "leaderboard_ranks.png"}


def test_a_server_that_goes_away_mid_run_is_completed_by_the_report(served, tmp_path, monkeypatch):
    """The run was started on the server, then every call fails (the server is gone): training logs go
    quiet with one warning, the run's content is not sent; `report` later completes the same run."""
    from mlflow import MlflowClient

    from benchmark.tracking import Tracking
    from benchmark.tracking.mlflow_backend import MlflowBackend

    for key, value in FAST_FAILURE.items():
        monkeypatch.setenv(key, value)
    out, uri = served
    results = tmp_path / "results"
    folder = results / "served" / "unet_baseline__ct__seed0"
    shutil.copytree(records.run_dir(out, "served", "unet_baseline", "ct", 0), folder,
                    ignore=shutil.ignore_patterns("csv", "wandb"))
    record = json.loads((folder / "result.json").read_text())
    record["started"] = "2026-12-01T00:00:00.000+00:00"  # another attempt of the same run
    (folder / "result.json").write_text(json.dumps(record))

    tracking = Tracking([MlflowBackend(uri, results)], results)
    run = tracking.start(record, folder)
    (logger,) = run.loggers
    logger._mlflow_client = MlflowClient(f"http://127.0.0.1:{free_port()}")  # the server went away
    with pytest.warns(UserWarning, match=rf"mlflow tracker \(http://127.0.0.1:\d+\): logging metrics failed during"):
        logger.log_metrics({"train/loss": 0.5}, step=1)
    logger.log_metrics({"train/loss": 0.4}, step=2)  # quiet now: no second attempt, no raise
    run.finish(record, folder)  # nothing raised, the broken logger is left out
    incomplete = [r for r in MlflowClient(uri).search_runs([logger.experiment_id])
                  if r.data.tags.get("liverbench.record", "").endswith(record["started"])]
    assert len(incomplete) == 1 and "liverbench.complete" not in incomplete[0].data.tags

    assert report.main(["--results", str(results), "--out", str(results / "lb.md"), "--tracker", "mlflow",
                        "--mlflow-uri", uri]) == 0
    (done,) = [r for r in MlflowClient(uri).search_runs([logger.experiment_id])
               if r.data.tags.get("liverbench.record", "").endswith(record["started"])]
    assert done.info.run_id == incomplete[0].info.run_id  # completed, not duplicated
    assert done.data.tags["liverbench.complete"] == "true"
    assert done.data.metrics["test/dice"] == pytest.approx(record["metrics"]["dice"])


@pytest.mark.slow
def test_default_local_store_needs_no_server(tmp_path):
    """No URI, no MLFLOW_TRACKING_URI: a SQLite store and artifact folder inside the results folder."""
    out = tmp_path / "out"
    env_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        assert run_suite(tiny_suite(tmp_path, "local"), out, "--tracker", "mlflow") == 0
    finally:
        if env_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    runs = mlflow_runs(uri, "local")
    check_mlflow_run(uri, runs["unet_baseline__ct__seed0"], records.run_dir(out, "local", "unet_baseline", "ct", 0))
    assert (out / "mlartifacts" / "local").is_dir()
