"""Whole-process `liverbench predict` on the reference CT (issue 10, target 3): wall seconds of the
command from start to exit, start-up included; the same command with the interpreter's teardown (as
when `benchmark.cli.main` is called with a list, before `FAST_EXIT`); and the time to import torch alone
for scale; each run `--repeats` times alternated, plus the peak memory of the predict process.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 .venv/bin/python -m benchmark.speed.startup \\
        --checkpoint results/paper/unet_baseline__ct__seed0/model.ckpt
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return seconds, out.stdout


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", default="auto")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "liverbench-speed")
    args = p.parse_args(argv)

    from benchmark.speed.common import machine, reference_ct

    image, _ = reference_ct(args.work)
    exe = Path(sys.executable).with_name("liverbench")
    predict = [str(exe), "predict", "--checkpoint", str(args.checkpoint), "--input", str(image),
               "--output", str(args.work / "startup.nii.gz"), "--precision", args.precision]
    with_teardown = [sys.executable, "-c", f"from benchmark.cli import main; raise SystemExit(main({predict[1:]!r}))"]
    torch_only = [sys.executable, "-c", "import torch"]
    print(machine())
    timed(predict)  # warm the page cache
    commands = {"liverbench predict (whole process)": predict,
                "the same, with the interpreter's teardown": with_teardown, "python -c 'import torch'": torch_only}
    runs: dict[str, list[float]] = {name: [] for name in commands}
    last = ""
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            seconds, out = timed(cmd)
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
