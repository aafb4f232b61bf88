"""Reading runs back from an MLflow store or a CSV tracker folder, and checking them against result.json."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from benchmark.tracking.content import summary_values


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_runs(uri: str, suite: str) -> dict:
    """run name -> MLflow Run, in the suite's experiment (the summary run under `<suite>__summary`)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(suite)
    assert experiment is not None, f"no experiment {suite} in {uri}"
    runs = client.search_runs([experiment.experiment_id])
    names = [r.info.run_name for r in runs]
    assert len(names) == len(set(names)), f"duplicate runs: {names}"
    return {r.info.run_name: r for r in runs}


def artifact_names(uri: str, run_id: str, path: str | None = None) -> set[str]:
    from mlflow import MlflowClient

    out = set()
    for item in MlflowClient(uri).list_artifacts(run_id, path):
        out |= artifact_names(uri, run_id, item.path) if item.is_dir else {item.path}
    return out


def check_mlflow_run(uri: str, run, folder: Path, live: bool = True) -> None:
    """Name, parameters, tags, every summary metric equal to result.json, the run's files as artifacts
    (result.json as written); overlays and training curves when the run was tracked live (an upload
    afterwards has the record, not the images or curves)."""
    from mlflow import MlflowClient

    record = json.loads((folder / "result.json").read_text())
    assert run.info.run_name == folder.name == f"{record['variant']}__{record['modality']}__seed{record['seed']}"
    assert run.info.status == "FINISHED" and run.data.tags["liverbench.complete"] == "true"
    params = run.data.params
    for key in ("suite", "variant", "modality", "preset", "data"):
        assert params[key] == str(record[key]), key
    assert params["seed"] == str(record["seed"])
    assert params["config/trainer/max_steps"] == str(record["config"]["trainer"]["max_steps"])
    for override in record["overrides"]:
        assert params[f"overrides/{override['key']}"] == str(override["used"])[:250]
    expected = {k: v for k, v in summary_values(record).items() if isinstance(v, (int, float))}
    assert {k for k in expected if k.startswith("test/")} == {f"test/{m}" for m in
                                                              ("dice", "jaccard", "precision", "recall", "hd95",
                                                               "assd", "failed")}
    for key, value in expected.items():
        assert run.data.metrics[key] == pytest.approx(float(value)), key  # converged true/false: 1.0/0.0
    tags = run.data.tags
    assert tags["checkpoint"] == str((folder / "model.ckpt").resolve()) and tags["variant"] == record["variant"]
    assert tags["model"] == record["model"] and tags["status"] == "ok"
    names = artifact_names(uri, run.info.run_id)
    assert {"result.json", "per_case.csv"} <= names and "model.ckpt" not in names
    client = MlflowClient(uri)
    local = Path(client.download_artifacts(run.info.run_id, "result.json"))
    assert json.loads(local.read_text()) == record
    if live:
        assert any(n.startswith("test/overlays/") and n.endswith(".png") for n in names)
        assert any(n.startswith("val/overlays/") for n in names)
        assert client.get_metric_history(run.info.run_id, "val/dice_grid"), "Lightning's validation curve"
        assert run.data.params.get("hparams/lr"), "Lightning's model hyperparameters, apart from ours"


def check_csv_run(folder: Path) -> None:
    """The CSV tracker's folder: the curves and the summary row, parameters, tags, files, overlays."""
    import csv

    import yaml

    record = json.loads((folder / "result.json").read_text())
    logged = folder / "csv"
    rows = list(csv.DictReader((logged / "metrics.csv").open()))
    assert any(row.get("val/dice_grid") for row in rows), "the validation curve"
    summary = rows[-1]
    for key, value in summary_values(record).items():
        if isinstance(value, (int, float)):
            assert float(summary[key]) == pytest.approx(float(value)), key
    hparams = yaml.safe_load((logged / "hparams.yaml").read_text())
    assert hparams["variant"] == record["variant"] and hparams["config"] == record["config"]
    assert json.loads((logged / "tags.json").read_text())["checkpoint"] == str((folder / "model.ckpt").resolve())
    assert json.loads((logged / "result.json").read_text()) == record
    assert (logged / "per_case.csv").read_bytes() == (folder / "per_case.csv").read_bytes()
    assert list((logged / "test" / "overlays").glob("*.png")) and list((logged / "val" / "overlays").glob("*.png"))
