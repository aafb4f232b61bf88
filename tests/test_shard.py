"""`liverbench run --shard K/N`: the split, shared results folders, locks between processes, DDP ranks."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.run import plan, records, runner, shard
from common import locks
from test_runner import REPO, TINY_UNET, _wait_for, blobs, result, run_args, smoke, write_suite  # noqa: F401

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def paper_plan(tmp_path, modalities=("ct", "mri"), seeds=(0, 1)):
    return plan.plan_runs(plan.load_suite("paper"), plan.load_preset("cpu"), list(modalities), list(seeds),
                          "phantom", tmp_path)


def test_parse_shard_and_auto_from_slurm():
    assert shard.parse_shard(None) is None
    assert shard.parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "1/0", "x", "1-3"):
        with pytest.raises(ValueError, match="--shard"):
            shard.parse_shard(bad)
    assert shard.parse_shard("auto", {}) == (0, 1)  # outside a SLURM array: everything
    assert shard.parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (3, 4)
    # --array=1-4: ids 1..4 -> shards 0..3
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}
    assert shard.parse_shard("auto", env) == (0, 4)
    # torchrun's RANK is a DDP rank of one run, not a shard number
    assert shard.parse_shard("auto", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (0, 1)


def test_split_is_deterministic_disjoint_complete_and_balanced(tmp_path):
    def independent():  # runs that start from no other run (chains: tests/test_transfer.py)
        return [r for r in paper_plan(tmp_path) if not r.variant.startswith("resnet_transfer")]

    runs = independent()  # 5 variants x 2 modalities x 2 seeds = 20 runs
    costs = [shard.expected_cost(r) for r in runs]
    is_3d = [r.variant.startswith("cnn3d") for r in runs]
    assert all(c3 > c2 for c3, d3 in zip(costs, is_3d) for c2, d2 in zip(costs, is_3d) if d3 and not d2)
    for k in range(3):  # a fresh plan (another node) gives the same shard
        assert [r.name for r in shard.shard_runs(independent(), k, 3)] == \
            [runs[i].name for i in shard.split(costs, 3)[k]]
    for n in (1, 2, 3, 5, 30):
        parts = [[runs[i] for i in part] for part in shard.split(costs, n)]
        names = [r.name for p in parts for r in p]
        assert sorted(names) == sorted(r.name for r in runs) and len(set(names)) == len(runs)
        for p in parts:  # each shard keeps plan order
            assert [runs.index(r) for r in p] == sorted(runs.index(r) for r in p)
        loads = [sum(costs[runs.index(r)] for r in p) for p in parts]
        if n <= len(runs):  # LPT: no shard exceeds the mean by more than the largest run
            assert max(loads) - sum(loads) / n <= max(costs) + 1e-9
    assert shard.split([5, 1, 1, 1, 1, 1], 2) == [[0], [1, 2, 3, 4, 5]]


def test_rank_zero_from_launcher_environment():
    assert shard.is_rank_zero({})
    assert shard.is_rank_zero({"RANK": "0", "LOCAL_RANK": "0", "SLURM_PROCID": "0"})
    assert not shard.is_rank_zero({"LOCAL_RANK": "1"})  # Lightning's DDP launcher, second process
    assert not shard.is_rank_zero({"RANK": "3", "LOCAL_RANK": "1"})  # torchrun
    assert not shard.is_rank_zero({"NODE_RANK": "1", "LOCAL_RANK": "0"})  # second node


def test_a_second_plain_run_on_the_same_out_refuses_naming_the_pid(blobs, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from common import locks\n"
        f"with locks.results_folder({str(out)!r}, sharded=False, command='liverbench run --out out'):\n"
        "    print('held', flush=True); time.sleep(60)")], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        suite = write_suite(tmp_path / "suite", "lock", {"a": TINY_UNET})
        assert runner.main(run_args(suite, blobs, out)) == 2
        err = capsys.readouterr().err
        assert f"error: {out}: in use by another `liverbench run` by PID {holder.pid}" in err
        assert runner.main([*run_args(suite, blobs, out), "--shard", "0/2"]) == 2  # shards too
        assert f"PID {holder.pid}" in capsys.readouterr().err
        assert not (out / "lock").exists()  # nothing was started
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is stale and the next run goes ahead
    assert runner.main(run_args(suite, blobs, out)) == 0
    assert result(out, "lock", "a")["status"] == "ok"
    assert not list((out / ".locks").rglob("*.lock"))


def test_claim_skips_runs_held_elsewhere_and_takes_over_stale_locks(blobs, tmp_path):
    """The per-run decision of every shard process, with locks left by other processes."""
    from test_locks import dead_pid, write_lock

    suite = plan.load_suite(str(write_suite(tmp_path / "suite", "cl", {v: TINY_UNET for v in "abc"})))
    out = tmp_path / "out"
    a, b, c = plan.plan_runs(suite, plan.load_preset("cpu"), ["ct"], [0], str(blobs), out)
    write_lock(locks.locks_dir(out) / "cl" / f"{a.name}.lock", host="node3", pid=42)  # live, elsewhere
    write_lock(locks.locks_dir(out) / "cl" / f"{b.name}.lock", pid=dead_pid(), token="dead")  # killed here
    since = records.now()
    lock, previous, why = shard.claim(a, out, False, "cmd", since)
    assert lock is None and previous is None and why == "running elsewhere (PID 42 on host node3)"
    lock, previous, why = shard.claim(b, out, False, "cmd", since)
    assert lock is not None and lock.broke["token"] == "dead" and why.startswith("took over the stale lock")
    assert shard.claim(b, out, False, "cmd", since)[0] is None  # now ours, held
    lock.release()
    records.write_result(c.folder, {"status": "failed", "finished": records.now()})
    assert shard.claim(c, out, False, "cmd", since)[2] == "already failed (use --resume to retry)"
    # with --resume a failed run is retried, unless another process retried it during this invocation
    assert shard.claim(c, out, True, "cmd", since)[2] == "already failed (finished by another process)"
    lock = shard.claim(c, out, True, "cmd", records.now())[0]
    assert lock is not None
    lock.release()


def started(output: str) -> list[str]:
    return re.findall(r"^start (\S+)", output, flags=re.M)


@pytest.mark.slow
def test_two_processes_on_one_shard_never_run_the_same_entry(blobs, tmp_path):
    """Two processes on the same shard (here: the whole plan) started together: the run locks give
    every entry to exactly one of them."""
    suite = write_suite(tmp_path / "suite", "sh", {v: TINY_UNET for v in "abc"})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmark.cli", "run", *run_args(suite, blobs, out), "--shard", "0/1"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ran = [started(o) for o in outputs]
    assert sorted(ran[0] + ran[1]) == [f"{v}__ct__seed0" for v in "abc"], outputs  # each exactly once
    for v in "abc":
        record = result(out, "sh", v)
        assert record["status"] == "ok" and record["shard"] == "0/1"
        assert record["pid"] == procs[0 if f"{v}__ct__seed0" in ran[0] else 1].pid
    assert not list(locks.locks_dir(out).rglob("*.lock"))  # all released


@pytest.mark.slow
def test_killed_shard_run_is_retried_by_the_next_invocation(blobs, tmp_path):
    """A shard killed mid-run leaves its run lock behind (dead PID): the next invocation takes it over."""
    suite = write_suite(tmp_path / "suite", "kill", {"a": TINY_UNET})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmark.cli", "run", *run_args(suite, blobs, out), "--shard", "0/2"]
    folder, lock = records.run_dir(out, "kill", "a", "ct", 0), locks.locks_dir(out) / "kill" / "a__ct__seed0.lock"
    empty = subprocess.run([*cmd[:-1], "1/2"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert empty.returncode == 0 and not started(empty.stderr)  # one run, two shards: shard 1 has none
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: (folder / "split.json").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads(lock.read_text())["pid"] == proc.pid  # stale: its owner is dead
    assert not (folder / "result.json").exists()
    res = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert started(res.stderr) == ["a__ct__seed0"]
    assert f"took over the stale lock of PID {proc.pid}" in res.stderr
    assert result(out, "kill", "a")["status"] == "ok" and not lock.exists()


def test_rank_nonzero_process_trains_but_never_records(blobs, tmp_path, monkeypatch):
    """A DDP follower (LOCAL_RANK=1): fit only; no lock, no W&B run, no record, no summary."""
    suite = write_suite(tmp_path / "suite", "follow", {"a": TINY_UNET})
    out = tmp_path / "out"
    monkeypatch.setenv("LOCAL_RANK", "1")
    args = run_args(suite, blobs, out)
    args[args.index("--wandb") + 1] = "offline"
    assert runner.main(args) == 0
    folder = records.run_dir(out, "follow", "a", "ct", 0)
    assert folder.is_dir() and (folder / "split.json").is_file()  # it did train on the same split
    assert not (folder / "result.json").exists() and not (folder / "per_case.csv").exists()
    assert not (folder / "wandb").exists() and not (out / "follow" / "wandb").exists()
    assert not locks.locks_dir(out).exists()


def _comparable(report: str) -> str:
    """The report without wall-clock and timing content: generation time, run times, time columns (Table 1's
    time per volume, the budget tables' fit seconds and validating share)."""
    keep, skipping, budget = [], False, False
    for line in report.splitlines():
        if line.startswith("### Cost"):
            skipping = True
        elif line.startswith("## "):
            skipping = False
        if skipping or "UTC" in line or line.startswith("- Runs:") or ".png" in line:
            continue
        budget = "| Fit seconds |" in line or (budget and line.startswith("|"))
        if budget:
            line = line.rsplit("|", 3)[0] + "|"  # the budget tables' fit seconds and validating share
        elif "time/volume" in line or line.startswith("| U-Net") or line.startswith("| 3D") \
                or line.startswith("| ResNet") or line.startswith("| **Paper"):
            line = line.rsplit("|", 2)[0] + "|"  # Table 1's last column: time per volume
        keep.append(line)
    return "\n".join(keep)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_shards_on_the_smoke_suite_equal_one_process(smoke, tmp_path):
    """Shards 0/2 and 1/2 started together into one folder: the same runs, the same Dice and per-case
    rows as one process, and the same report (timing and wall-clock aside)."""
    from benchmark import report

    from test_external import write_multi_organ_set

    single, code, _ = smoke
    assert code == 0
    shared = tmp_path / "shared"
    ext = write_multi_organ_set(tmp_path / "external" / "ct", cases=1)  # the same set as the fixture's
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "--suite", "smoke", "--modalities", "ct",
           "--out", str(shared), "--wandb", "disabled", "--external", f"ct={ext}", "--shard"]
    procs = [subprocess.Popen([*cmd, f"{k}/2"], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in range(2)]
    outputs = [p.communicate(timeout=800)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    names = sorted(p.parent.name for p in (single / "smoke").glob("*/result.json"))
    assert names == sorted(p.parent.name for p in (shared / "smoke").glob("*/result.json")) and len(names) == 6
    shards = {}
    for name in names:
        a = json.loads((single / "smoke" / name / "result.json").read_text())
        b = json.loads((shared / "smoke" / name / "result.json").read_text())
        assert a["status"] == b["status"] == "ok"
        assert a["metrics"] == b["metrics"], name  # bit-identical Dice, HD95, ...
        assert (single / "smoke" / name / "per_case.csv").read_text() == \
            (shared / "smoke" / name / "per_case.csv").read_text()
        shards.setdefault(b["shard"], []).append(name)
    assert sorted(shards) == ["0/2", "1/2"] and all(shards.values())  # both shards did work
    for out in (single, shared):
        assert report.main(["--results", str(out), "--out", str(out / "leaderboard.md")]) == 0
    single_report, shared_report = ((out / "leaderboard.md").read_text().replace(str(out), "<results>")
                                    for out in (single, shared))  # the header names the results folder
    assert _comparable(single_report) == _comparable(shared_report)


def test_report_wandb_makes_one_summary_run_per_suite_from_every_record(tmp_path, capsys):
    """`liverbench report --wandb`: the W&B summary run, made once after the shards, over all records."""
    from benchmark import report
    from test_report import _write_run
    from wandb_offline import find_offline_runs

    for variant in ("unet_baseline", "unet3d"):
        for seed in (0, 1):  # as if written by different shards
            _write_run(tmp_path, variant, "ct", seed)
    _write_run(tmp_path, "unet_baseline", "ct", 0, suite="smoke")
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "lb.md"), "--wandb", "offline"]) == 0
    assert "W&B summary run paper__summary (offline): 4 runs" in capsys.readouterr().out
    for suite, n in (("paper", 4), ("smoke", 1)):
        (run,) = [r for r in find_offline_runs(tmp_path / suite / "wandb") if r.job_type == "summary"]
        assert run.group == suite and len(run.table("leaderboard")["data"]) == n
