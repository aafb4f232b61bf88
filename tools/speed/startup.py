"""Whole-process `liverbench predict` on the reference CT (issue 10, target 3): wall seconds of the
command from start to exit, start-up included; the same command with the interpreter's teardown (as
when `benchmark.cli.main` is called with a list, before `FAST_EXIT`); and the time to import torch alone
for scale; each run `--repeats` times alternated, plus the peak memory of the predict process.
`--against TREE` adds the same predict from another checkout (e.g. `git worktree add /tmp/old COMMIT`),
run with that tree first on the path, to compare two commits in one alternated run.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 .venv/bin/python -m tools.speed.startup \\
        --checkpoint results/paper/unet_baseline__ct__seed0/model.ckpt
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], tree: Path | None = None) -> tuple[float, str]:
    """Wall seconds and stdout of `cmd`; with `tree`, run in that checkout with it first on sys.path."""
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return seconds, out.stdout


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", default="auto")
    p.add_argument("--against", type=Path, default=None, help="another checkout to time alternately")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "liverbench-speed")
    args = p.parse_args(argv)
    args.checkpoint, args.work = args.checkpoint.resolve(), args.work.resolve()  # --against runs elsewhere

    from tools.speed.harness import machine, reference_ct

    image, _ = reference_ct(args.work)
    exe = Path(sys.executable).with_name("liverbench")
    predict = [str(exe), "predict", "--checkpoint", str(args.checkpoint), "--input", str(image),
               "--output", str(args.work / "startup.nii.gz"), "--precision", args.precision]
    with_teardown = [sys.executable, "-c", f"from benchmark.cli import main; raise SystemExit(main({predict[1:]!r}))"]
    torch_only = [sys.executable, "-c", "import torch"]
    print(machine())
    timed(predict)  # warm the page cache
    commands = {"liverbench predict (whole process)": (predict, None),
                "the same, with the interpreter's teardown": (with_teardown, None),
                "python -c 'import torch'": (torch_only, None)}
    if args.against is not None:
        module_predict = [sys.executable, "-m", "benchmark.cli", *predict[1:]]  # that tree's code, not ours
        commands[f"liverbench predict from {args.against}"] = (module_predict, args.against.resolve())
        here = Path(__file__).resolve().parents[2]
        commands["liverbench predict from this tree, the same way"] = (module_predict, here)
    runs: dict[str, list[float]] = {name: [] for name in commands}
    last = ""
    for _ in range(args.repeats):
        for name, (cmd, tree) in commands.items():
            seconds, out = timed(cmd, tree)
            runs[name].append(seconds)
            last = out if cmd is predict else last
    for name, values in runs.items():
        values = sorted(values)
        print(f"{name}: median {values[len(values) // 2]:.2f} s (min {values[0]:.2f}, max {values[-1]:.2f}, "
              f"{len(values)} runs)")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory of the largest child process: {peak_mb:.0f} MiB")
    print("last predict output:\n  " + "\n  ".join(last.strip().splitlines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
