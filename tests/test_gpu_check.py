"""GPU readiness without a GPU: the gpu preset's dry run on CPU, `make gpu-check DRY_RUN=1`, and the
wheels that let it run on a lent GPU machine with no package index."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from benchmark.inference.predictor import cpu_has_bf16
from benchmark.run import plan, run_config
from benchmark.run.stages.build import instantiate
from tools import gpu_check

REPO = Path(__file__).resolve().parents[1]
# the gpu preset's bf16 where this CPU computes it natively; elsewhere (AVX2 only) emulated bf16 is many times
# slower, so the dry run uses fp32 there
DRY_RUN_PRECISION = "bf16-mixed" if cpu_has_bf16() else "32-true"


def test_every_paper_entry_builds_with_the_full_gpu_preset_on_cpu(tmp_path):
    """The gpu preset's own (non-smoke) layers, as a dry run: model, DataModule and Trainer are
    instantiated by the runner's LightningCLI for every paper variant (nothing is trained)."""
    runs = plan.plan_runs(plan.load_suite("paper"), plan.load_preset("gpu"), ["ct"], [0], "phantom",
                          tmp_path, dry_run=True)
    for spec in runs:
        config = run_config.build_config(spec, spec.folder)
        t = config["trainer"]
        assert (t["accelerator"], t["devices"], t["precision"], t["max_steps"]) == ("cpu", 1, DRY_RUN_PRECISION, 2)
        assert config["model"]["init_args"]["lr"] == 1e-4 and config["data"]["init_args"]["preset"] == "gpu"
        if config["model"]["init_args"].get("pretrained") == "imagenet":
            config["model"]["init_args"]["pretrained"] = "none"  # no ImageNet download on this machine
        model, datamodule, trainer = instantiate(config, None, [], spec.folder)
        assert trainer.max_steps == 2 and datamodule.hparams.preset == "gpu"
        if config["data"]["init_args"]["dims"] == 3:
            assert list(datamodule.patch_size) == [128, 128, 128]  # the gpu preset's patch, kept


def test_gpu_check_dry_run_writes_its_report(tmp_path):
    """`make gpu-check DRY_RUN=1`: the gpu preset's smoke runs (dry run on CPU), predict timing per
    variant, training steps/s; JSON + markdown written; the Makefile calls exactly this."""
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "dry_run.json").read_text())
    s = report["sections"]
    assert report["dry_run"] and [s[k]["status"] for k in ("smoke", "predict", "training")] == ["ok"] * 3
    assert s["ddp_2gpu"]["status"] == "skipped"
    runs = s["smoke"]["runs"]
    assert set(runs) == {"unet_baseline__ct__seed0", "cnn3d__ct__seed0"}
    assert all(r["status"] == "ok" and r["precision"] == DRY_RUN_PRECISION for r in runs.values())
    assert s["training"]["precision"] == s["predict"]["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert set(s["predict"]["variants"]) == {"unet_baseline", "cnn3d"}
    for v in s["predict"]["variants"].values():  # timed at the gpu preset's spacing, as on the GPU
        assert v["volume_ms"] > 0 and v["model_volume_ms"] > 0 and v["target_spacing"] == [1.5, 1.5, 6.0]
        assert v["preprocessed_shape"][2] == 12 and v["preprocessed_shape"][0] > 24  # upsampled from 3 mm
    assert s["predict"]["variants"]["cnn3d"]["roi_size"] == [40, 40, 16]  # main's windows, not the smoke's 32^3
    assert gpu_check.gpu_batch_and_patch(2) == (16, [256, 256]) and gpu_check.gpu_batch_and_patch(3) == (2, [128] * 3)
    assert {m: r["steps_per_s"] > 0 for m, r in s["training"]["models"].items()} == {"unet2d": True, "unet3d": True}
    md = (tmp_path / "dry_run.md").read_text()
    assert "dry run on CPU" in md and "| unet_baseline | unet2d |" in md


# The lent GPU image's packages (../.library/device/KINDS.md, "Python packages already there", read
# 2026-11-17) that the check may import; everything else must come from tools/gpu_wheels.txt.
GPU_IMAGE = {"torch", "torchvision", "lightning", "lightning-utilities", "pytorch-lightning", "torchmetrics",
             "numpy", "scipy", "scikit-image", "matplotlib", "rich", "pyyaml", "einops", "pillow", "packaging",
             "typing-extensions", "fsspec", "filelock", "jinja2", "markupsafe", "networkx", "sympy", "mpmath",
             "triton", "tqdm", "pygments", "markdown-it-py", "mdurl", "aiohttp", "yarl", "multidict",
             "frozenlist", "aiosignal", "attrs", "propcache", "aiohappyeyeballs", "idna", "psutil", "contourpy",
             "cycler", "fonttools", "kiwisolver", "pyparsing", "python-dateutil", "six", "imageio", "tifffile",
             "lazy-loader", "protobuf", "setuptools", "certifi", "charset-normalizer", "urllib3", "requests",
             "cloudpickle", "joblib", "threadpoolctl", "scikit-learn", "pandas", "tensorboard", "zipp"}


def _wheel_names() -> set[str]:
    lines = (REPO / "tools" / "gpu_wheels.txt").read_text().splitlines()
    return {line.split("==")[0].strip().lower() for line in lines if line.strip() and not line.startswith("#")}


def test_the_dry_run_imports_only_the_gpu_image_and_the_wheels(tmp_path):
    """On the lent GPU machine nothing can be installed but .whl/: every distribution the check imports
    (run in a fresh process) is in the image or in tools/gpu_wheels.txt, so W&B, say, is not needed."""
    # mlflow and two of its dependencies (the dev extra here, absent there) blocked as on that machine: MONAI's
    # optional imports load each of them whenever it is installed
    script = f"""
import importlib.metadata as md, json, sys
sys.modules.update(dict.fromkeys(("mlflow", "pyarrow", "narwhals")))
from tools import gpu_check
assert gpu_check.main(["--dry-run", "--out", {str(tmp_path)!r}]) == 0
tops = {{name.split(".")[0] for name, module in list(sys.modules.items()) if module is not None}}
owners = md.packages_distributions()
print(json.dumps(sorted({{d.lower().replace("_", "-") for t in tops for d in owners.get(t, [])}})))
"""
    env = dict(os.environ, WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert {"torch", "monai", "nibabel", "jsonargparse"} <= loaded  # the scan really ran the check
    cuda = {d for d in loaded if d.startswith(("nvidia-", "cuda-"))}  # torch's CUDA libraries, in the image
    assert loaded - cuda - GPU_IMAGE - _wheel_names() - {"liverbench"} == set()


def test_make_gpu_check_installs_the_wheels_when_there_are_some(tmp_path):
    """`make gpu-check` takes the venv without wheels and tools/gpu_check.sh with them; `make gpu-wheels`
    downloads tools/gpu_wheels.txt for the GPU image's Python; the script without wheels says so."""
    def make(*args):
        proc = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    empty, wheels = tmp_path / "empty", tmp_path / "wheels"
    empty.mkdir(), wheels.mkdir()
    (wheels / "monai-1.6.1-py3-none-any.whl").write_bytes(b"")
    assert "-m tools.gpu_check --dry-run" in make("gpu-check", "DRY_RUN=1", f"GPU_WHEELS={empty}")
    assert "sh tools/gpu_check.sh --dry-run" in make("gpu-check", "DRY_RUN=1", f"GPU_WHEELS={wheels}")
    download = make("gpu-wheels", f"GPU_WHEELS={wheels}")
    assert "--python-version 3.12" in download and f"-d {wheels} -r tools/gpu_wheels.txt" in download
    proc = subprocess.run(["sh", "tools/gpu_check.sh", "--dry-run"], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, GPU_WHEELS=str(empty)))
    assert proc.returncode == 2 and f"{empty}/: no wheels" in proc.stderr


def test_gpu_check_sh_installs_the_wheels_into_a_scratch_folder(tmp_path):
    """The script pip-installs every wheel in $GPU_WHEELS offline into $TMPDIR/liverbench-gpu-site (the
    machine's own Python untouched), then runs the check with them on the path (here: its --help)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "liverbench_probe-0.1-py3-none-any.whl", "w") as whl:
        whl.writestr("liverbench_probe.py", "ANSWER = 42\n")
        info = "liverbench_probe-0.1.dist-info/"
        whl.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: liverbench-probe\nVersion: 0.1\n")
        whl.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(info + "RECORD", "")
    env = dict(os.environ, GPU_WHEELS=str(wheels), GPU_PYTHON=sys.executable, TMPDIR=str(tmp_path))
    proc = subprocess.run(["sh", "tools/gpu_check.sh", "--help"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "--dry-run" in proc.stdout
    assert (tmp_path / "liverbench-gpu-site" / "liverbench_probe.py").read_text() == "ANSWER = 42\n"
