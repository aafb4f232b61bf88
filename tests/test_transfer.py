"""Transfer sources: the synthetic pretraining cache, CT->MRI runs and their source checks, offline."""
from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest
import torch

from benchmark.run import dependencies, plan, records, run_config, runner, shard
from common import locks
from common.files import DataError
from datamodules.phantom import GENERATOR_VERSION
from datamodules.phantom.tissue_task import N_CLASSES
from models import synthetic_pretrain as sp
from models.resnet_unet import ResNetUNetNet

TINY = {"patients": 1, "spacing": 8, "steps": 2, "batch_size": 2, "patch": 32}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach another machine fails, as on a machine without internet (loopback, e.g.
    W&B's local service, still works)."""
    real = socket.socket.connect

    def refuse(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError("network blocked by the test")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    folder, was_built = sp.ensure_encoder(TINY, root, log=lambda m: None)
    return root, folder, sp.load_cached(folder)[1], was_built


def test_synthetic_encoder_is_cached_under_its_hash_and_reused(built):
    root, folder, meta, was_built = built
    cfg = sp.resolve_config(TINY)
    assert was_built and folder == root / sp.config_hash(cfg) and meta["hash"] == folder.name
    assert meta["config"] == cfg and meta["generator_version"] == GENERATOR_VERSION
    assert {p.name for p in root.iterdir()} == {folder.name}  # no temp folder or lock left behind
    assert sp.ensure_encoder(TINY, root, log=lambda m: None) == (folder, False)
    assert sp.config_hash({**cfg, "steps": 3}) != folder.name  # another config, another folder
    state = torch.load(folder / sp.WEIGHTS, weights_only=True)
    assert "layer4.2.bn2.running_var" in state and not any(k.startswith("fc.") for k in state)


def test_same_config_and_seed_give_the_same_weights(built):
    _, folder, _, _ = built
    cached = torch.load(folder / sp.WEIGHTS, weights_only=True)
    fresh = sp.train_encoder(sp.resolve_config(TINY), log=lambda m: None)
    assert cached.keys() == fresh.keys() and all(torch.equal(cached[k], fresh[k]) for k in cached)
    untrained = ResNetUNetNet(1, N_CLASSES).encoder.state_dict()  # and training did change the weights
    assert not torch.equal(cached["layer1.0.conv1.weight"], untrained["layer1.0.conv1.weight"])


def test_corrupt_or_mismatched_cache_is_a_data_error_naming_the_file(built, tmp_path):
    _, folder, _, _ = built
    copy = tmp_path / folder.name
    copy.mkdir()
    for name in (sp.WEIGHTS, sp.CONFIG):
        (copy / name).write_bytes((folder / name).read_bytes())
    weights = copy / sp.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(DataError, match="corrupt") as err:
        sp.load_cached(copy)
    assert err.value.path == str(weights)
    (copy / sp.WEIGHTS).write_bytes((folder / sp.WEIGHTS).read_bytes())
    meta = json.loads((copy / sp.CONFIG).read_text())
    meta["config"]["steps"] = 999  # the config no longer hashes to the folder's name
    (copy / sp.CONFIG).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="hash mismatch") as err:
        sp.load_cached(copy)
    assert err.value.path == str(copy / sp.CONFIG)


def test_two_processes_asking_at_once_build_it_once(tmp_path):
    results, built = [], []
    real = sp.train_encoder

    def counting(cfg, log=print):
        built.append(1)
        return real(cfg, log)

    sp.train_encoder, original = counting, sp.train_encoder
    try:
        threads = [threading.Thread(target=lambda: results.append(sp.ensure_encoder(TINY, tmp_path, log=lambda m: None)))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sp.train_encoder = original
    assert len(built) == 1 and sorted(r[1] for r in results) == [False, True]
    assert results[0][0] == results[1][0]


def test_resnet_unet_synthetic_loads_the_cached_encoder_and_names_it(built, monkeypatch, no_network):
    import models

    root, folder, meta, _ = built
    monkeypatch.setattr(sp, "cache_root", lambda: root)
    model = models.create_model("resnet_unet", pretrained="synthetic", synthetic_pretrain=TINY)
    assert model.transfer == {"source": "synthetic", "detail": meta["hash"]}
    cached = torch.load(folder / sp.WEIGHTS, weights_only=True)
    assert torch.equal(model.net.encoder.layer3[0].conv1.weight, cached["layer3.0.conv1.weight"])
    assert models.create_model("resnet_unet").transfer == {"source": "none", "detail": None}
    by_path = models.create_model("resnet_unet", pretrained=str(folder))  # a `liverbench pretrain --out` folder
    assert by_path.transfer == {"source": "path", "detail": str(folder)}


def test_imagenet_offline_still_fails_clearly(no_network):
    import models
    from models import resnet_unet

    with pytest.raises(resnet_unet.PretrainedWeightsUnavailable, match="cannot get ImageNet weights"):
        models.create_model("resnet_unet", pretrained="imagenet")


def test_pretrain_command_prints_where_it_is(built, capsys):
    from benchmark.cli import main

    root, folder, _, _ = built
    args = ["pretrain", "--out", str(root)] + [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert main(args) == 0 and f"found {folder / sp.WEIGHTS} (hash {folder.name}" in capsys.readouterr().out
    assert main(["pretrain", "--out", str(root), "--patch", "33"]) == 2
    assert "patch a multiple of 32" in capsys.readouterr().err


# ---- CT -> MRI: planning, sharding, the source check ---------------------------------------------------
def _paper_plan(tmp_path, modalities=("ct", "mri"), seeds=(0, 1)):
    return plan.plan_runs(plan.load_suite("paper"), plan.load_preset("cpu"), list(modalities), list(seeds),
                          "phantom", tmp_path)


def test_ct_to_mri_entry_plans_mri_only_after_its_source(tmp_path):
    runs = _paper_plan(tmp_path)
    names = [r.name for r in runs]
    dependents = [r for r in runs if r.variant == "resnet_transfer_ct2mri"]
    assert [r.name for r in dependents] == ["resnet_transfer_ct2mri__mri__seed0", "resnet_transfer_ct2mri__mri__seed1"]
    for r in dependents:
        assert r.source == records.run_dir(tmp_path, "paper", "resnet_transfer", "ct", r.seed)
        assert names.index(r.source.name) < names.index(r.name)
        args = run_config.build_config(r, r.folder)["model"]["init_args"]
        assert args["init_from"] == str(r.source / "model.ckpt") and args["pretrained"] == "none"
    assert not [r for r in _paper_plan(tmp_path, ["ct"]) if r.variant == "resnet_transfer_ct2mri"]
    source = next(r for r in runs if r.name == "resnet_transfer__ct__seed0")
    config = run_config.build_config(source, source.folder)  # the cpu preset forces the offline source
    assert config["model"]["init_args"]["pretrained"] == "synthetic"
    assert {"key": "model.init_args.pretrained", "entry": "imagenet", "used": "synthetic",
            "source": "preset cpu (forced)"} in config["overrides"]


def test_shards_keep_a_source_and_its_dependents_together(tmp_path):
    runs = _paper_plan(tmp_path, seeds=(0,))
    for n in (2, 3):
        parts = [shard.shard_runs(runs, k, n) for k in range(n)]
        assert sorted(r.name for p in parts for r in p) == sorted(r.name for r in runs)
        for part in parts:
            mine = {r.folder for r in part}
            assert all(r.source in mine for r in part if r.source is not None)
    plain = [r for r in runs if r.source is None and r.variant != "resnet_transfer"]
    costs = [shard.expected_cost(r) for r in plain]  # no dependencies: the cost split as before
    assert [[plain[i] for i in p] for p in shard.split(costs, 3)] == [shard.shard_runs(plain, k, 3) for k in range(3)]


def test_source_check_names_a_missing_failed_or_busy_source(tmp_path):
    source = records.run_dir(tmp_path, "paper", "resnet_transfer", "ct", 0)
    with pytest.raises(DataError, match="source run not found") as err:
        dependencies.source_checkpoint(source, "paper")
    assert err.value.path == str(source)
    source.mkdir(parents=True)
    records.write_result(source, {"status": "failed", "error": "RuntimeError: out of memory"})
    with pytest.raises(DataError, match=r"source run failed \(RuntimeError: out of memory\)"):
        dependencies.source_checkpoint(source, "paper")
    lock = locks.run_lock(tmp_path, "paper", source.name).acquire()  # a live retry elsewhere: wait, then give up
    try:
        with pytest.raises(DataError, match="still running elsewhere"):
            dependencies.source_checkpoint(source, "paper", wait_s=0.2, poll_s=0.05)
    finally:
        lock.release()
    records.write_result(source, {"status": "ok"})
    (source / "model.ckpt").write_bytes(b"x")
    assert dependencies.source_checkpoint(source, "paper") == source / "model.ckpt"


def _transfer_suite(folder: Path, source_modalities: str = "[ct, mri]") -> Path:
    paper = plan.PACKAGE_DIR / "suites" / "paper"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "xfer.yaml"
    path.write_text(
        "name: xfer\nbudget: smoke\nentries:\n"
        f"  - {{variant: resnet_transfer, label: ResNet, config: {paper / 'resnet_transfer.yaml'},\n"
        f"      modalities: {source_modalities}}}\n"
        f"  - {{variant: resnet_transfer_ct2mri, label: CT2MRI, config: {paper / 'resnet_transfer_ct2mri.yaml'},\n"
        "      modalities: [mri], init_from: {variant: resnet_transfer, modality: ct}}\n")
    return path


def test_missing_source_is_the_dependent_runs_recorded_failure(tmp_path, no_network):
    suite, out = _transfer_suite(tmp_path, source_modalities="[ct]"), tmp_path / "out"
    code = runner.main(["--suite", str(suite), "--modalities", "mri", "--out", str(out), "--wandb", "disabled"])
    r = records.read_result(records.run_dir(out, "xfer", "resnet_transfer_ct2mri", "mri", 0))
    source = records.run_dir(out, "xfer", "resnet_transfer", "ct", 0)
    assert code == 1 and r["status"] == "failed"  # recorded; the suite itself finished
    assert f"{source}: source run not found" in r["error"]


@pytest.mark.slow
def test_ct_to_mri_smoke_run_on_a_fresh_clone_offline(tmp_path, monkeypatch, no_network):
    """CT run (synthetic encoder, built once), MRI run (reuses it), CT->MRI run (from the CT checkpoint)."""
    monkeypatch.setenv("LIVERBENCH_CACHE", str(tmp_path / "cache"))
    builds = []
    real = sp.train_encoder
    monkeypatch.setattr(sp, "train_encoder", lambda cfg, log=print: builds.append(cfg) or real(cfg, log))
    suite, out = _transfer_suite(tmp_path), tmp_path / "out"
    code = runner.main(["--suite", str(suite), "--modalities", "ct,mri", "--out", str(out), "--wandb", "offline"])
    assert code == 0
    ct, mri, xfer = (records.read_result(records.run_dir(out, "xfer", v, m, 0)) for v, m in
                     [("resnet_transfer", "ct"), ("resnet_transfer", "mri"), ("resnet_transfer_ct2mri", "mri")])
    assert [r["status"] for r in (ct, mri, xfer)] == ["ok"] * 3
    cache = tmp_path / "cache" / "pretrain-synthetic"
    digest = sp.config_hash(sp.resolve_config(ct["config"]["model"]["init_args"]["synthetic_pretrain"]))
    assert [p.name for p in cache.iterdir()] == [digest] and len(builds) == 1  # the MRI run reused it
    assert ct["transfer"] == mri["transfer"] == {"source": "synthetic", "detail": digest}
    assert xfer["transfer"] == {"source": "run", "detail": f"resnet_transfer__ct__seed0 (its encoder: synthetic {digest})"}
    assert xfer["config"]["model"]["init_args"]["init_from"] == str(records.run_dir(out, "xfer", "resnet_transfer", "ct", 0) / "model.ckpt")
    assert not os.path.exists(records.run_dir(out, "xfer", "resnet_transfer_ct2mri", "ct", 0))
    from wandb_offline import find_offline_runs

    (run,) = find_offline_runs(records.run_dir(out, "xfer", "resnet_transfer_ct2mri", "mri", 0))
    assert run.config["transfer"] == xfer["transfer"]  # W&B names the transfer source too


def test_report_names_the_transfer_source_of_every_run(tmp_path):
    from test_report import _row, _write_run

    from benchmark.report import main as report

    for seed in (0, 1):
        _write_run(tmp_path, "unet_baseline", "ct", seed)
        _write_run(tmp_path, "unet3d", "ct", seed)
    for seed in (0, 1):  # the 3D CNN records name their source; the baseline's are older records (no field)
        path = tmp_path / "paper" / f"unet3d__ct__seed{seed}" / "result.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "transfer": {"source": "synthetic", "detail": "abc123"}}))
    assert report(["--results", str(tmp_path), "--out", str(tmp_path / "leaderboard.md")]) == 0
    cost = (tmp_path / "leaderboard.md").read_text().split("### Cost")[1]
    assert "| Transfer |" in cost.splitlines()[2]
    assert _row(cost, "3D CNN").endswith("| synthetic abc123 |") and _row(cost, "U-Net Baseline").endswith("| n/a |")
