"""`liverbench run`: records, resume after a kill, failure capture, presets, the smoke suite."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmark.inference.predictor import cpu_has_bf16
from benchmark.run import plan, records, run_config, runner
from benchmark.run.stages import interrupt

REPO = Path(__file__).resolve().parents[1]
TINY_UNET = """\
model:
  class_path: models.unet2d.UNet2D
  init_args: {features: 4, depth: 2}
data:
  class_path: datamodules.CTDataModule
  init_args: {dims: 2, augmentation: false, samples_per_epoch: 8}
"""
BAD_MODEL = """\
model:
  class_path: models.unet2d.NoSuchNet
data:
  class_path: datamodules.CTDataModule
  init_args: {dims: 2}
"""


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    """A tiny CT dataset in nnU-Net raw layout: bright ellipsoids ('liver') in noise, 3 mm voxels."""
    root = tmp_path_factory.mktemp("blobs")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(np.arange(32), np.arange(32), np.arange(12), indexing="ij")
    for i in range(6):
        cx, cy = rng.uniform(12, 20, 2)
        label = (((x - cx) / 8) ** 2 + ((y - cy) / 6) ** 2 + ((z - 6) / 4) ** 2 < 1).astype(np.uint8)
        image = (rng.normal(0, 20, label.shape) + np.where(label, 120, -50)).astype(np.int16)
        affine = np.diag([3.0, 3.0, 3.0, 1.0])
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"b{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"b{i}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
        "numTraining": 6, "file_ending": ".nii.gz"}))
    return root


PAPER = REPO / "benchmark" / "suites" / "paper"


def write_suite(folder: Path, name: str, entries: dict[str, str | Path]) -> Path:
    """A smoke-budget suite FILE; entries map variant -> config YAML text or an existing config."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}", "budget: smoke", "entries:"]
    for variant, config in entries.items():
        if isinstance(config, str):
            (folder / f"{variant}.yaml").write_text(config)
            config = folder / f"{variant}.yaml"
        lines.append(f"  - {{variant: {variant}, label: {variant}, config: {config}}}")
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_args(suite: Path, data: Path | str, out: Path, *extra: str, modality="ct") -> list[str]:
    return ["--suite", str(suite), "--data", str(data), "--modalities", modality, "--out", str(out),
            "--wandb", "disabled", *extra]


def result(out: Path, suite: str, variant: str, modality="ct") -> dict:
    return json.loads((records.run_dir(out, suite, variant, modality, 0) / "result.json").read_text())


def test_failing_entry_is_recorded_and_the_suite_goes_on(tmp_path):
    """A bad entry fails, the others (2D and 3D paper variants on the MRI phantom) complete and are
    logged to W&B offline; a plain re-run keeps the failure, --resume retries it."""
    suite = write_suite(tmp_path / "suite", "fails", {"broken": BAD_MODEL, "unet": PAPER / "unet_baseline.yaml",
                                                      "cnn3d": PAPER / "cnn3d.yaml"})
    out = tmp_path / "out"
    args = run_args(suite, "phantom", out, modality="mri")
    args[args.index("--wandb") + 1] = "offline"

    def record(variant):
        return result(out, "fails", variant, "mri")

    assert runner.main([*args, "--strict"]) == 1  # one run failed
    bad, good = record("broken"), record("unet")
    assert bad["status"] == "failed" and "NoSuchNet" in bad["error"] and "Traceback" in bad["traceback"]
    assert good["status"] == "ok" and good["model"] == "unet2d" and record("cnn3d")["model"] == "unet3d"
    assert record("cnn3d")["config"]["data"]["class_path"].endswith("MRIDataModule")
    folder = records.run_dir(out, "fails", "unet", "mri", 0)
    for name in ("model.ckpt", "split.json", "per_case.csv", "result.json"):
        assert (folder / name).is_file(), name
    rows = list(csv.DictReader((folder / "per_case.csv").open()))
    split = json.loads((folder / "split.json").read_text())
    assert [r["case"] for r in rows] == split["test"] and rows
    assert all(r["case"].startswith(r["patient"]) for r in rows)  # MRI: <patient>_t1 / <patient>_t2
    assert good["metrics"]["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    assert good["timing"]["volume_ms"] > 0 and good["params"] > 0 and good["git_commit"]
    # the cpu preset keeps the largest component after a 6 mm opening
    assert good["postprocessing"] == {"largest_component": True, "opening_mm": 6.0}
    bf16 = cpu_has_bf16()  # cpu preset precision `auto`: bf16 where native, resolved and recorded
    # ... and channels-last on a CPU also in fp32: the test split runs the network as the timing stage times it
    assert good["evaluation"] == {"largest_component": True, "opening_mm": 6.0, "precision": "bf16" if bf16 else "fp32",
                                  "channels_last": True}
    assert good["timing"]["channels_last"] is True
    assert good["config"]["trainer"]["precision"] == ("bf16-mixed" if bf16 else "32-true")
    assert good["versions"]["torch"] and good["config"]["data"]["init_args"]["data_dir"] is None
    # Checkpoints of 2D and 3D runs load as untrusted files (no MetaTensor leaked into them).
    from models import load_module

    for variant, model in (("unet", "unet2d"), ("cnn3d", "unet3d")):
        module, preprocessing = load_module(records.run_dir(out, "fails", variant, "mri", 0) / "model.ckpt")
        assert module.model_name == model and preprocessing["modality"] == "mri"
    check_wandb_runs(out, "fails", ["unet", "cnn3d"], "mri")

    # a plain re-run keeps every record; --resume retries only the failed one
    finished = good["finished"]
    assert runner.main(args) == 0  # not --strict: some runs are ok
    assert record("broken")["finished"] == bad["finished"]
    assert runner.main([*args, "--resume"]) == 0
    assert record("broken")["started"] > bad["finished"]
    assert record("unet")["finished"] == finished


def _wait_for(predicate, proc, timeout=150.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"suite exited early ({proc.returncode}):\n{proc.stdout.read()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("timed out waiting for the suite")


def test_killed_suite_resumes_cleanly(blobs, tmp_path):
    """SIGINT stops the suite (exit 130, finished results kept); SIGKILL mid-run leaves a stale
    folder that the next run cleans and redoes; finished runs are never redone."""
    suite = write_suite(tmp_path / "suite", "kill", {"a": TINY_UNET, "b": TINY_UNET, "c": TINY_UNET})
    out = tmp_path / "out"
    args = run_args(suite, blobs, out)
    cmd = [sys.executable, "-m", "benchmark.cli", "run", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    folder = {v: records.run_dir(out, "kill", v, "ct", 0) for v in "abc"}

    def record(variant):
        return result(out, "kill", variant)


    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: (folder["a"] / "result.json").is_file() and folder["b"].is_dir(), proc)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    assert "interrupted" in output
    first = record("a")
    assert first["status"] == "ok" and not (folder["b"] / "result.json").exists()

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: (folder["c"] / "split.json").is_file(), proc)  # run c is mid-way
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert record("b")["status"] == "ok"
    assert not (folder["c"] / "result.json").exists()
    (folder["c"] / "leftover.tmp").write_text("from the killed run")

    assert runner.main([*args, "--resume"]) == 0
    assert record("a") == first  # untouched
    assert record("c")["status"] == "ok"
    assert not (folder["c"] / "leftover.tmp").exists()  # the stale folder was emptied first
    assert record("b")["config"]["data"]["init_args"]["data_dir"] == str(blobs)


def check_wandb_runs(out: Path, suite: str, variants, modality: str) -> None:
    """Each finished run's offline W&B run holds its record's numbers, table, images; plus the
    suite's summary run. Runs of killed attempts were removed with their stale folders."""
    from wandb_offline import find_offline_runs

    for variant in variants:
        folder = records.run_dir(out, suite, variant, modality, 0)
        record = json.loads((folder / "result.json").read_text())
        (run,) = find_offline_runs(folder)
        assert (run.group, run.job_type, set(run.tags)) == (suite, modality, {record["model"], variant})
        assert run.config["variant"] == variant and run.config["config"] == record["config"]
        assert run.summary["test/dice"] == pytest.approx(record["metrics"]["dice"])
        if record["metrics"]["hd95"] is not None:  # null when every prediction was empty
            assert run.summary["test/hd95"] == pytest.approx(record["metrics"]["hd95"])
        assert run.summary["time/volume_ms"] == pytest.approx(record["timing"]["volume_ms"])
        assert run.summary["params"] == record["params"]
        assert run.summary["budget/converged"] is record["budget"]["converged"]  # the smoke runs: False
        assert run.summary["budget/stop_reason"] == record["budget"]["stop_reason"]
        assert any("val/dice_grid" in row for row in run.history)  # Lightning's own logging
        assert any(key.startswith("lr-") for row in run.history for key in row)  # the learning rate per step
        cases = [row["case"] for row in csv.DictReader((folder / "per_case.csv").open())]
        assert [row[0] for row in run.table("test/per_case")["data"]] == cases
        assert run.images() and run.exit_code == 0
        logged = {key for row in run.history for key in row}
        assert {"val/overlays", "test/overlays"} <= logged  # validation overlays after fit, test overlays
    summaries = [r for r in find_offline_runs(out / suite / "wandb") if r.job_type == "summary"]
    runs = [p for p in (out / suite).iterdir() if (p / "result.json").is_file()]
    table = summaries[-1].table("leaderboard")
    assert len(table["data"]) == len(runs)  # failed runs too
    assert {"converged", "stop_reason"} <= set(table["columns"])
    assert len(summaries[-1].table("accuracy_vs_time_table")["data"]) == len(variants)


def test_presets_layer_budgets_by_dims_and_smoke(tmp_path):
    cpu, gpu = plan.load_preset("cpu"), plan.load_preset("gpu")
    b2, b3 = run_config.budget(cpu, 2, smoke=False), run_config.budget(cpu, 3, smoke=False)
    assert b2["data"]["batch_size"] != b3["data"]["batch_size"]
    assert b2["convergence"]["stop"] and b2["trainer"]["max_steps"] > 0  # the plateau ends a run; max_steps caps it
    assert len(b3["data"]["patch_size"]) == 3 and len(b2["data"]["patch_size"]) == 2
    assert b2["data"]["preset"] == "cpu" and b2["trainer"]["accelerator"] == "cpu"
    smoke = run_config.budget(cpu, 2, smoke=True)
    assert smoke["trainer"]["max_steps"] <= 10 and smoke["trainer"]["accelerator"] == "cpu"
    assert smoke["data"]["patch_size"] != b2["data"]["patch_size"]  # smoke's dims layer wins
    resnet = "models.resnet_unet.ResNetUNet"  # per-model layer, by class or registry name
    tiny = run_config.budget(cpu, 2, smoke=True, class_path=resnet)["model"]  # offline transfer, tiny pretraining
    assert tiny["pretrained"] == "synthetic" and tiny["synthetic_pretrain"]["steps"] <= 5
    assert run_config.budget(cpu, 2, smoke=False, class_path=resnet)["model"] == {**b2["model"], "pretrained": "synthetic"}
    assert "pretrained" not in run_config.budget(cpu, 2, smoke=False)["model"]
    assert "pretrained" not in run_config.budget(gpu, 2, smoke=False, class_path=resnet)["model"]  # gpu: imagenet
    g = run_config.budget(gpu, 2, smoke=False)  # the paper's recipe
    assert (g["model"]["loss"], g["model"]["lr"], g["trainer"]["max_epochs"], g["data"]["batch_size"]) == \
        ("ce", 1e-4, 100, 16)
    assert g["data"]["preset"] == "gpu" and g["convergence"] == {"stop": False}  # reported, not acted on
    gc = run_config.budget(plan.load_preset("gpu-converged"), 2, smoke=False)  # extends gpu: same recipe, plateau stop
    assert gc["model"] == g["model"] and gc["data"] == g["data"] and gc["convergence"]["stop"] is True
    assert gc["trainer"]["max_epochs"] > g["trainer"]["max_epochs"]
    assert b2["evaluation"] == {"largest_component": True, "opening_mm": 6.0, "precision": "auto"}  # recipe switch
    assert g["evaluation"] == {"largest_component": False}  # gpu: the paper's plain argmax
    lcc = tmp_path / "lcc.yaml"
    lcc.write_text("evaluation: {largest_component: false}\n")
    assert run_config.budget(plan.load_preset(str(lcc)), 3, smoke=False)["evaluation"]["largest_component"] is False
    run_config.check_opening({"largest_component": True, "opening_mm": 6})  # checked before training
    with pytest.raises(ValueError, match="evaluation: opening_mm must be a number of mm >= 0"):
        run_config.check_opening({"largest_component": True, "opening_mm": -1})
    with pytest.raises(ValueError, match="needs largest_component"):
        run_config.check_opening({"largest_component": False, "opening_mm": 6})
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {}\nbudgets: {}\n")
    with pytest.raises(plan.DataError, match=r"unknown key `budgets` \(did you mean `budget`\?\)"):
        plan.load_preset(str(bad))
    with pytest.raises(plan.DataError, match="no suite named 'nope'"):
        plan.load_suite("nope")


def test_the_cpu_preset_dry_run_warms_up_within_its_steps(tmp_path):
    """`--dry-run` with the cpu preset: its 300-step warm-up cannot fit the dry run's 2 steps (the schedule refused
    it, so every dry run failed), so a tenth of them warms up, as in the smoke layer; the real run keeps 300."""
    import torch

    from models.schedules import lr_scheduler

    for dry_run in (True, False):
        for spec in plan.plan_runs(plan.load_suite("paper"), plan.load_preset("cpu"), ["ct"], [0], "phantom",
                                   tmp_path, dry_run=dry_run):
            config = run_config.build_config(spec, spec.folder)
            model, steps = config["model"]["init_args"], config["trainer"]["max_steps"]
            assert (steps, model["warmup_steps"]) == ((2, None) if dry_run else (5000, 300))
            optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
            lr_scheduler(optimizer, model["lr_schedule"], model["lr"], steps, model["warmup_steps"])  # what refused it


def test_auto_training_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    """Preset `trainer.precision: auto`: bf16-mixed on a CPU with AVX-512 BF16/AMX, fp32 elsewhere
    (emulated bf16 is slower than fp32), resolved at planning so result.json names the one used."""
    import benchmark.inference.predictor as inference

    assert run_config.auto_trainer_precision("cpu") == ("bf16-mixed" if cpu_has_bf16() else "32-true")
    monkeypatch.setattr(inference, "cpu_has_bf16", lambda: False)  # e.g. an AMD EPYC without AVX-512 BF16
    assert run_config.auto_trainer_precision("cpu") == "32-true"
    monkeypatch.setattr(inference, "cpu_has_bf16", lambda: True)
    assert run_config.auto_trainer_precision("cpu") == "bf16-mixed"
    spec = plan.plan_runs(plan.load_suite("paper"), plan.load_preset("cpu"), ["ct"], [0], "phantom", "out")[0]
    assert run_config.build_config(spec, spec.folder)["trainer"]["precision"] == "bf16-mixed"


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert runner.main(["--suite", "smoke", "--modalities", "ct,pet", "--out", str(tmp_path)]) == 2
    assert "--modalities" in capsys.readouterr().err
    assert runner.main(["--suite", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "missing.yaml: file not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke suite: all six paper variants on the CT phantom, each also scored on a tiny external
    multi-organ set (W&B: see the kill/resume test and tests/test_external.py)."""
    from test_external import write_multi_organ_set

    out = tmp_path_factory.mktemp("smoke")
    ext = write_multi_organ_set(tmp_path_factory.mktemp("smoke_external") / "ct", cases=1)
    start = time.monotonic()
    code = runner.main(["--suite", "smoke", "--modalities", "ct", "--out", str(out), "--wandb", "disabled",
                        "--external", f"ct={ext}"])
    return out, code, time.monotonic() - start


def test_smoke_suite_runs_every_paper_variant(smoke):
    out, code, seconds = smoke
    assert code == 0
    entries = plan.load_suite("smoke")["entries"]
    variants = [e["variant"] for e in entries if "ct" in e.get("modalities", ["ct"])]
    assert len(variants) == 6  # the CT->MRI entry plans MRI only (tests/test_transfer.py)
    for variant in variants:
        r = result(out, "smoke", variant)
        assert r["status"] == "ok", r.get("error")
        folder = records.run_dir(out, "smoke", variant, "ct", 0)
        assert {"result.json", "per_case.csv", "model.ckpt", "split.json"} <= {p.name for p in folder.iterdir()}
        assert 0.0 <= r["metrics"]["dice"] <= 1.0 and r["metrics"]["cases"] >= 1
        assert r["preset"] == "cpu" and r["config"]["trainer"]["max_steps"] <= 10
        assert r["timing"]["volume_ms"] > 0 and r["timing"]["model_volume_ms"] > 0
        is_2d = r["config"]["data"]["init_args"]["dims"] == 2
        assert (r["timing"]["slice_ms"] is not None) == is_2d
        assert r["preprocessing"]["modality"] == "ct"
        b = r["budget"]  # one unit for every variant: steps x samples per step, and the fit's seconds
        assert b["steps"] == r["config"]["trainer"]["max_steps"] == b["limit"]["steps"]
        assert b["samples"] == b["steps"] * b["samples_per_step"]
        assert b["samples_per_step"] == r["config"]["data"]["init_args"]["batch_size"]
        assert 0 < b["seconds"] <= r["durations"]["fit_s"] + 0.01 and len(b["val_dice"]) >= 1
        assert 0 < b["validation_seconds"] < b["seconds"]
        assert r["test_set"]["fixed"] and r["test_set"]["name"].startswith("phantomtest_ct_")
        assert {o["key"] for o in r["overrides"]} >= {"model.init_args.lr", "data.init_args.batch_size"}
        assert r["transfer"]["source"] == ("synthetic" if variant == "resnet_transfer" else "none")
        assert (r["external"]["n"], r["external"]["liver_labels"]) == (1, [3])  # liver by name, not label > 0
        rows = list(csv.DictReader((folder / "external_per_case.csv").open()))
        assert [row["case"] for row in rows] == ["real_0"]
        assert r["external"]["metrics"]["dice"] == pytest.approx(np.mean([float(row["dice"]) for row in rows]))
    print(f"smoke suite (6 runs, CT): {seconds:.0f} s")


def test_run_accepts_a_converted_dataset(blobs, tmp_path):
    """`liverbench data convert` output feeds `liverbench run --data DIR` directly (here: a LiTS layout)."""
    from datamodules.convert import main as convert_main

    lits = tmp_path / "lits"
    lits.mkdir()
    for i in range(6):  # LiTS names, liver 1 + tumour 2 (tumour inside the liver)
        image = nib.load(blobs / "imagesTr" / f"b{i}_0000.nii.gz")
        label = np.asarray(nib.load(blobs / "labelsTr" / f"b{i}.nii.gz").dataobj).astype(np.uint8)
        label[(label == 1) & (np.asarray(image.dataobj) > 140)] = 2
        nib.save(image, lits / f"volume-{i}.nii")
        nib.save(nib.Nifti1Image(label, image.affine), lits / f"segmentation-{i}.nii")
    converted = tmp_path / "converted"
    assert convert_main(["--format", "lits", str(lits), str(converted)]) == 0
    suite = write_suite(tmp_path / "suite", "converted", {"unet": PAPER / "unet_baseline.yaml"})
    out = tmp_path / "out"
    assert runner.main(run_args(suite, converted, out)) == 0
    record = result(out, "converted", "unet")
    assert record["status"] == "ok" and record["data"] == str(converted.resolve())
    assert record["metrics"]["cases"] >= 1 and 0.0 <= record["metrics"]["dice"] <= 1.0


def test_ctrl_c_swallowed_by_a_finaliser_still_stops_the_suite():
    """Python ignores a KeyboardInterrupt raised inside `__del__` (seen in CI: Lightning's profiler
    finaliser ate a Ctrl-C); the runner's handler remembers it and stops at the next check."""
    import time

    class Finaliser:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler runs here and its KeyboardInterrupt is swallowed

    with interrupt.interruptible():
        interrupt.stop_if_interrupted()  # nothing pending yet
        obj = Finaliser()
        del obj
        with pytest.raises(KeyboardInterrupt):
            interrupt.stop_if_interrupted()
    interrupt.STOP.clear()


def test_a_finished_run_is_reused_only_with_the_config_that_would_run_now(blobs, tmp_path, capsys):
    """Issue 27, item 2: after editing an entry (dropout 0.1 -> 0.5) a plain re-run refuses the old
    result and names the change; --resume re-runs it and says why; then it is reused again."""
    entry = TINY_UNET.replace("{features: 4, depth: 2}", "{features: 4, depth: 2, dropout: 0.1}")
    suite = write_suite(tmp_path / "suite", "stale", {"tiny": entry})
    out = tmp_path / "out"
    args = run_args(suite, blobs, out)
    assert runner.main(args) == 0
    first = result(out, "stale", "tiny")
    assert runner.main(args) == 0 and "skip tiny__ct__seed0: already ok" in capsys.readouterr().err
    (tmp_path / "suite" / "tiny.yaml").write_text(entry.replace("dropout: 0.1", "dropout: 0.5"))
    assert runner.main(args) == 1  # the only run is refused: nothing reused, nothing deleted
    text = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "finished with another config (model.init_args.dropout: 0.1 -> 0.5)" in text and "--resume re-runs it" in text
    assert result(out, "stale", "tiny") == first
    assert runner.main([*args, "--resume"]) == 0
    text = " ".join(capsys.readouterr().err.split())
    assert "start tiny__ct__seed0 (re-run: config changed since it finished (model.init_args.dropout: 0.1 -> 0.5))" in text
    second = result(out, "stale", "tiny")
    assert second["started"] > first["finished"] and second["config"]["model"]["init_args"]["dropout"] == 0.5
    assert runner.main([*args, "--resume"]) == 0 and "skip tiny__ct__seed0: already ok" in capsys.readouterr().err


def test_which_config_fields_make_a_finished_run_stale(blobs, tmp_path):
    """Preset layers and data count; the results folder's location and derived summaries do not."""
    from benchmark.run.reuse import config_changes

    suite = plan.load_suite(str(write_suite(tmp_path / "suite", "s", {"tiny": TINY_UNET})))
    cpu = plan.load_preset("cpu")

    def spec(preset=cpu, data=str(blobs), out=tmp_path / "out"):
        return plan.plan_runs(suite, preset, ["ct"], [0], data, str(out), False)[0]

    from benchmark.run.run_config import build_config

    record = {"status": "ok", "config": build_config(spec(), spec().folder)}
    assert config_changes(record, spec()) == []
    assert config_changes(record, spec(out=tmp_path / "moved")) == []  # the folder moved: same experiment
    assert config_changes(record, spec(data="phantom")) == [f"data.init_args.data_dir: \"{blobs}\" -> null"]
    lr = {**cpu, "smoke": {**cpu.get("smoke", {}), "model": {**cpu.get("smoke", {}).get("model", {}), "lr": 0.5}}}
    assert config_changes(record, spec(preset=lr))[0].startswith("model.init_args.lr: ")
    sanity = {**cpu, "trainer": {**cpu["trainer"], "num_sanity_val_steps": 7}}  # a key the smoke layer leaves
    was = json.dumps(cpu["trainer"].get("num_sanity_val_steps"))
    assert config_changes(record, spec(preset=sanity)) == [f"trainer.num_sanity_val_steps: {was} -> 7"]
    rule = {**cpu, "convergence": {**cpu["convergence"], "min_delta": 0.01}}  # the stopping rule counts
    assert config_changes(record, spec(preset=rule)) == ["convergence.min_delta: 0.005 -> 0.01"]


def test_the_runner_keeps_the_smoke_budgets_single_validation_batch():
    """`limit_val_batches: 1` is one batch, not the fraction 1.0 (all of them): it depends on importing
    Lightning before rich (see benchmark/run/runner.py), so it is checked in a fresh process."""
    code = ("import benchmark.run.runner\n"
            "from benchmark.run import plan, run_config\n"
            "from benchmark.run.stages.build import instantiate\n"
            "spec = plan.plan_runs(plan.load_suite('smoke'), plan.load_preset('cpu'), ['ct'], [0], 'phantom', 'out')[0]\n"
            "config = run_config.build_config(spec, spec.folder)\n"
            "print(repr(instantiate(config, [], [], spec.folder)[2].limit_val_batches))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "1"
