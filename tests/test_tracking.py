"""Tracking without training: `--tracker` parsing, the one description of a run (keys from METRICS),
the summary table's columns, overlays, the local MLflow store and CSV folder fed by `liverbench report`,
and docs/tracking.md's table of keys."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark import report
from benchmark.run import records, runner
from benchmark.scoring.metrics import METRICS
from benchmark.tracking import content, parse_trackers
from benchmark.tracking.overlays import overlay_image
from common.files import DataError
from test_report import _write_run

REPO = Path(__file__).resolve().parents[1]


def test_tracker_names(tmp_path, capsys):
    assert parse_trackers(None) == ["wandb"]  # the default: W&B, as before
    assert parse_trackers("none") == []
    assert parse_trackers("wandb, mlflow,csv,mlflow") == ["wandb", "mlflow", "csv"]
    with pytest.raises(DataError, match="unknown tracker 'neptune'"):
        parse_trackers("mlflow,neptune")
    assert runner.main(["--suite", "smoke", "--out", str(tmp_path / "r"), "--tracker", "tensorboard"]) == 2
    assert "error: --tracker: unknown tracker 'tensorboard' (choose from wandb, mlflow, csv, or none)" \
        in capsys.readouterr().err
    _write_run(tmp_path / "res", "unet_baseline", "ct", 0)
    assert report.main(["--results", str(tmp_path / "res"), "--out", str(tmp_path / "lb.md"), "--tracker", "x"]) == 2
    assert "error: --tracker: unknown tracker 'x'" in capsys.readouterr().err


def test_one_description_of_a_run_with_keys_from_the_metric_schema(tmp_path):
    _write_run(tmp_path, "unet_baseline", "ct", 0)
    folder = tmp_path / "paper" / "unet_baseline__ct__seed0"
    record = json.loads((folder / "result.json").read_text())
    record.update(checkpoint={"path": "model.ckpt"}, config={"trainer": {"max_steps": 4}},
                  overrides=[{"key": "model.init_args.lr", "entry": 1e-4, "used": 1e-3, "source": "preset cpu"}])
    record["external"] = {"name": "real", "n": 2, "failed": 0, "metrics": {"dice": 0.8, "hd95": float("nan")}}
    run = content.describe_run(record, folder)
    assert run.name == "unet_baseline__ct__seed0" and run.suite == "paper"
    assert {m.wandb_key for m in METRICS} <= set(run.metrics)  # every metric of the schema, under test/
    assert run.metrics["test/dice"] == record["metrics"]["dice"] and run.metrics["time/volume_ms"] == record["timing"]["volume_ms"]
    assert run.metrics["external/dice"] == 0.8 and "external/hd95" not in run.metrics  # NaN is left out
    assert run.tags["external/set"] == "real" and "external/set" not in run.metrics  # text is a tag
    assert run.tags["checkpoint"] == str((folder / "model.ckpt").resolve()) and run.checkpoint is None
    assert run.params["overrides"] == {"model.init_args.lr": 1e-3} and run.params["config"] == record["config"]
    assert run.files["result.json"] == records.write_result(tmp_path, record).read_bytes()  # what the run writes
    assert run.files["per_case.csv"] == (folder / "per_case.csv").read_bytes()
    cases = [line.split(",")[0] for line in (folder / "per_case.csv").read_text().splitlines()[1:]]
    assert [r["case"] for r in run.tables["test/per_case"]] == cases and cases
    (folder / "model.ckpt").write_bytes(b"weights")
    assert content.describe_run(record, folder, upload_checkpoint=True).checkpoint == folder / "model.ckpt"


def test_the_summary_table_is_one_list_of_columns(monkeypatch):
    """A column added to SUMMARY_COLUMNS reaches every tracker's summary table (W&B's columns too)."""
    from benchmark.tracking import wandb_logging

    records = [{"variant": "a", "metrics": {"dice": 0.9}, "world_size": 2, "status": "ok"},
               {"variant": "b", "status": "failed"}]
    columns, rows = content.summary_table(records)
    assert columns == wandb_logging.LEADERBOARD_COLUMNS and columns[4] == "dice" and rows[1][4] is None
    monkeypatch.setattr(content, "SUMMARY_COLUMNS", (*content.SUMMARY_COLUMNS, ("world_size", lambda r: r.get("world_size"))))
    summary = content.describe_summary("s", records)
    assert summary.files["leaderboard.csv"].decode().splitlines()[0].endswith(",status,world_size")
    assert summary.tables["leaderboard"][1][0][-1] == 2


def test_convergence_fields_reach_every_tracker(tmp_path):
    """What W&B logs of a run's convergence (summary budget/converged, budget/steps, budget/stop_reason;
    converged and stop_reason in the leaderboard table, converged in the ranking) is in the tracker-neutral
    content, so MLflow and CSV get it too: converged as a 1/0 metric, stop_reason as a tag."""
    _write_run(tmp_path, "unet_baseline", "ct", 0)
    folder = tmp_path / "paper" / "unet_baseline__ct__seed0"
    record = {**json.loads((folder / "result.json").read_text()),
              "budget": {"steps": 350, "converged": True, "stop_reason": "plateau", "curve": [0.5, 0.8]}}
    values = content.summary_values(record)  # W&B's summary: the record's own values
    assert (values["budget/converged"], values["budget/steps"], values["budget/stop_reason"]) == (True, 350, "plateau")
    run = content.describe_run(record, folder)
    assert run.metrics["budget/converged"] == 1.0 and run.metrics["budget/steps"] == 350.0
    assert run.tags["budget/stop_reason"] == "plateau" and "budget/stop_reason" not in run.metrics
    assert content.describe_run({**record, "budget": {"converged": False}}, folder).metrics["budget/converged"] == 0.0
    columns, rows = content.summary_table([record, {"variant": "b", "status": "failed"}])
    assert columns[-3:] == ["converged", "stop_reason", "status"]
    assert rows[0][-3:] == [True, "plateau", "ok"] and rows[1][-3:] == [None, None, "failed"]
    columns, rows = content.ranking_table([{"variant": "unet_baseline", "converged": False}])
    assert columns[-1] == "converged" and rows[0][-1] is False


def test_overlay_png_shows_prediction_and_ground_truth():
    gt = np.zeros((16, 12, 5), bool)
    gt[4:10, 3:8, 1:4] = True
    pred = np.roll(gt, 3, axis=0)
    image = np.random.default_rng(0).normal(size=gt.shape).astype(np.float32)
    overlay = overlay_image(image, pred, gt, "case/1")
    rgb = overlay.rgb()
    assert rgb.shape == (12, 16, 3) and overlay.filename == "case_1.png"  # (X, Y) shown with X across
    assert (rgb[overlay.pred & ~overlay.gt][:, 0] >= 102).all()  # prediction: red blend
    edge = overlay.gt & ~np.roll(overlay.gt, 1, axis=0)
    assert (rgb[edge] == (0, 255, 0)).all()  # ground truth: green outline
    assert overlay.png().startswith(b"\x89PNG")


def test_report_uploads_records_to_the_local_store_and_the_csv_folder(tmp_path, monkeypatch, capsys):
    """Records written without tracking (a tracker was down): `report --tracker mlflow,csv` logs them to
    the default local MLflow store (RESULTS/mlflow.db, no server), once, and the summary run."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient
    from mlflow_checks import artifact_names, mlflow_runs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for variant in ("unet_baseline", "unet3d"):
        _write_run(tmp_path, variant, "ct", 0)
    path = tmp_path / "paper" / "unet3d__ct__seed0" / "result.json"  # a converged run (W&B's budget/* keys)
    path.write_text(json.dumps({**json.loads(path.read_text()), "budget": {"steps": 300, "converged": True,
                                                                           "stop_reason": "plateau"}}))
    _write_run(tmp_path, "broken", "ct", 0, status="failed")
    args = ["--results", str(tmp_path), "--out", str(tmp_path / "lb.md"), "--tracker", "mlflow,csv"]
    assert report.main(args) == 0
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert f"mlflow ({uri}): uploaded 2 finished runs" in capsys.readouterr().out
    runs = mlflow_runs(uri, "paper")
    assert set(runs) == {"unet_baseline__ct__seed0", "unet3d__ct__seed0", "paper__summary"}
    for name in ("unet_baseline__ct__seed0", "unet3d__ct__seed0"):
        record = json.loads((tmp_path / "paper" / name / "result.json").read_text())
        run = runs[name]
        assert run.data.metrics["test/dice"] == pytest.approx(record["metrics"]["dice"])
        assert run.data.metrics["time/volume_ms"] == pytest.approx(record["timing"]["volume_ms"])
        assert run.data.params["variant"] == record["variant"] and run.data.tags["liverbench.complete"] == "true"
        assert artifact_names(uri, run.info.run_id) == {"result.json", "per_case.csv"}
    assert runs["unet3d__ct__seed0"].data.metrics["budget/converged"] == 1.0
    assert runs["unet3d__ct__seed0"].data.tags["budget/stop_reason"] == "plateau"
    assert "budget/converged" not in runs["unet_baseline__ct__seed0"].data.metrics  # no budget recorded
    csv_run = tmp_path / "paper" / "unet3d__ct__seed0" / "csv"  # the CSV tracker's copy of the run
    assert json.loads((csv_run / "tags.json").read_text())["budget/stop_reason"] == "plateau"
    assert "budget/converged" in (csv_run / "metrics.csv").read_text().splitlines()[0].split(",")
    summary = artifact_names(uri, runs["paper__summary"].info.run_id)
    assert summary == {"leaderboard.csv", "ranking.csv", "lb.md", "lb_pareto.png", "lb_ranks.png"}
    assert (tmp_path / "mlartifacts" / "paper").is_dir()
    csv_summary = tmp_path / "paper" / "csv_summary"
    assert (csv_summary / "lb.md").read_bytes() == (tmp_path / "lb.md").read_bytes()
    ranking = (csv_summary / "ranking.csv").read_text().splitlines()
    assert ranking[0].startswith(",".join(content.RANK_COLUMNS)) and len(ranking) == 3  # the failed run is not ranked
    leaderboard = (csv_summary / "leaderboard.csv").read_text().splitlines()
    assert len(leaderboard) == 4 and leaderboard[0].endswith(",converged,stop_reason,status")  # failed runs too
    assert any(line.endswith(",True,plateau,ok") for line in leaderboard)
    assert report.main(args) == 0  # nothing uploaded twice, the summary run reused
    assert "uploaded 0 finished runs" in capsys.readouterr().out and set(mlflow_runs(uri, "paper")) == set(runs)

    from benchmark.tracking import Tracking  # the checkpoint goes up only when asked for
    from benchmark.tracking.mlflow_backend import MlflowBackend

    folder = tmp_path / "paper" / "unet3d__ct__seed0"
    (folder / "model.ckpt").write_bytes(b"weights")
    record = {**json.loads((folder / "result.json").read_text()), "started": "again", "checkpoint": {"path": "model.ckpt"}}
    tracking = Tracking([MlflowBackend(None, tmp_path)], tmp_path)
    tracking.start(record, folder).finish(record, folder, upload_checkpoint=True)
    (again,) = [r for r in MlflowClient(uri).search_runs([runs["paper__summary"].info.experiment_id])
                if r.data.tags.get("liverbench.record", "").endswith("/again")]
    assert "model.ckpt" in artifact_names(uri, again.info.run_id)
    assert again.data.tags["checkpoint"] == str((folder / "model.ckpt").resolve())


def test_mlflow_uri_from_the_flag_then_the_environment_then_the_results_folder(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from benchmark.tracking.mlflow_backend import MlflowBackend

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert MlflowBackend(None, tmp_path).uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert MlflowBackend(None, tmp_path).artifact_location("s") == str((tmp_path / "mlartifacts" / "s").resolve())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    backend = MlflowBackend(None, tmp_path)
    assert backend.uri == "http://127.0.0.1:5000" and backend.artifact_location("s") is None  # the server's
    assert MlflowBackend("http://127.0.0.1:6000", tmp_path).uri == "http://127.0.0.1:6000"


def test_docs_table_of_keys_is_generated_from_the_schema():
    """docs/tracking.md's table is `content.keys_markdown()`'s: every key of METRICS in it."""
    text = (REPO / "docs" / "tracking.md").read_text()
    assert content.keys_markdown() in text, "paste content.keys_markdown() into docs/tracking.md"
    assert all(f"| `{m.wandb_key}` | summary metric |" in text for m in METRICS)
