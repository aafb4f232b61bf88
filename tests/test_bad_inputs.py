"""One test per class of bad input: the message names the file and the problem, and nothing is
written or lost (issue 11, items 2 and 6)."""
from __future__ import annotations

import gzip
import json
import struct

import nibabel as nib
import numpy as np
import pytest
from test_dicom import write_series
from test_runner import blobs  # noqa: F401 (fixture)

from common.files import DataError
from datamodules.readers import load_case, read_dataset
from datamodules.volumes import MAX_VOXELS, read_geometry, read_volume

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


def _nifti(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_nan_voxels_are_an_error_or_filled_by_policy(tmp_path, monkeypatch):
    data = np.full((6, 5, 4), 7.0, np.float32)
    data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf
    path = _nifti(tmp_path / "nan.nii.gz", data)
    with pytest.raises(DataError, match=r"nan\.nii\.gz: 2 NaN/Inf voxels of 120 \(use --nan-policy fill"):
        read_volume(path)
    monkeypatch.setenv("LIVERBENCH_NAN_POLICY", "fill")  # what --nan-policy fill sets
    with pytest.warns(UserWarning, match="2 NaN/Inf voxels replaced by the minimum finite value 7"):
        vol = read_volume(path)
    assert np.all(vol.array == 7.0)
    with pytest.raises(DataError, match="NaN/Inf"):  # labels never take the fill policy
        read_volume(path, nan="error")


def test_zero_or_negative_spacing(tmp_path):
    flat = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), None)
    flat.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # a slice axis of 0 mm
    nib.save(flat, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(DataError, match=r"flat\.nii\.gz: zero voxel spacing in the affine"):
        read_volume(tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), None), str(tmp_path / "ok.nii"))  # geometry from pixdim
    for name, value in (("neg.nii", -2.0), ("zero.nii", 0.0)):  # nibabel would silently use abs() / 1 mm
        raw = bytearray((tmp_path / "ok.nii").read_bytes())
        raw[84:88] = struct.pack("<f", value)  # pixdim[2]
        (tmp_path / name).write_bytes(bytes(raw))
        with pytest.raises(DataError, match=rf"{name}: zero or negative voxel spacing in the header \(pixdim \[1.0, {value}"):
            read_volume(tmp_path / name)


def test_declared_size_checked_before_allocating(tmp_path):
    path = _nifti(tmp_path / "short.nii", np.zeros((20, 20, 20), np.int16))
    path.write_bytes(path.read_bytes()[:5000])  # truncated: header promises 16,000 voxel bytes
    with pytest.raises(DataError, match=r"short\.nii: header declares 16,352 bytes .* file holds 5,000"):
        read_geometry(path)
    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 4096))
    header.set_data_dtype(np.int16)
    header.set_qform(AFFINE, code=1)
    huge = tmp_path / "huge.nii.gz"
    with gzip.open(huge, "wb") as fh:  # 68 billion declared voxels in a file of a few hundred bytes
        fh.write(header.binaryblock + b"\x00" * 4 + b"\x00" * 1000)
    with pytest.raises(DataError, match=rf"huge\.nii\.gz: header declares 68,719,476,736 voxels .* {MAX_VOXELS:,}"):
        read_volume(huge)
    header.set_data_shape((64, 64, 64))
    lying = tmp_path / "lying.nii.gz"
    with gzip.open(lying, "wb") as fh:
        fh.write(header.binaryblock + b"\x00" * 4 + b"\x00" * 1000)
    with pytest.raises(DataError, match=r"lying\.nii\.gz: header declares 524,288 bytes .* gzip stream holds 1,352"):
        read_volume(lying)


def test_unsupported_dimensionality(tmp_path):
    with pytest.raises(DataError, match=r"t\.nii\.gz: expected a 3D volume, got shape \(4, 4, 4, 3\) \(4D"):
        read_volume(_nifti(tmp_path / "t.nii.gz", np.zeros((4, 4, 4, 3), np.int16)))
    with pytest.raises(DataError, match=r"s\.nii\.gz: expected a 3D volume, got shape \(4, 4\)"):
        read_volume(_nifti(tmp_path / "s.nii.gz", np.zeros((4, 4), np.int16)))


def _dataset(root, label, labels=None):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    _nifti(root / "imagesTr" / "c_0000.nii.gz", np.zeros(label.shape, np.int16))
    _nifti(root / "labelsTr" / "c.nii.gz", label)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"},
                                                   "labels": labels or {"background": 0, "liver": 1, "tumour": 2}}))
    return read_dataset(root)[0]


@pytest.mark.parametrize("value, dtype, message", [
    (-1, np.int16, r"negative label values \[-1\]"),
    (3, np.uint8, r"label values \[3\] are not declared in dataset.json labels \(declared: \[0, 1, 2\]\)"),
    (0.5, np.float32, r"label has non-integer values \(e.g. \[0.5\]\)"),
])
def test_bad_label_values(tmp_path, value, dtype, message):
    label = np.zeros((8, 8, 4), dtype)
    label[2:6, 2:6, 1:3] = 1
    label[3, 3, 2] = value
    record = _dataset(tmp_path / "ds", label)
    with pytest.raises(DataError, match=r"labelsTr/c\.nii\.gz: " + message):
        load_case(record)


def test_liver_picked_by_name_not_every_label(tmp_path):
    """CHAOS-style labels: kidneys (2) and spleen (4) are not liver."""
    label = np.zeros((8, 8, 4), np.uint8)
    label[0:3, :, :] = 1
    label[5:7, :, :] = 2
    label[7, :, :] = 4
    record = _dataset(tmp_path / "ds", label, {"background": 0, "liver": 1, "kidney_r": 2, "kidney_l": 3, "spleen": 4})
    assert record.liver_labels == (1,)
    assert load_case(record).mask.sum() == 3 * 8 * 4
    assert load_case(record, liver_labels=[1, 2]).mask.sum() == 5 * 8 * 4  # explicit labels still override


def test_dicom_folder_with_two_series(tmp_path):
    vol = np.zeros((6, 5, 3), np.float32)
    first = write_series(tmp_path / "s", vol)
    write_series(tmp_path / "other", vol + 10, origin=(-100.0, -80.0, 500.0))
    for p in (tmp_path / "other").iterdir():
        p.rename(tmp_path / "s" / f"b_{p.name}")
    with pytest.raises(DataError, match=r"s: holds 2 DICOM series: .*\(.*, 3 slices\); .*3 slices\); pick one with --series UID"):
        read_volume(tmp_path / "s")
    import pydicom

    uid = str(pydicom.dcmread(str(first[0])).SeriesInstanceUID)
    vol1 = read_volume(tmp_path / "s", series=uid)
    assert vol1.shape == (6, 5, 3) and np.all(vol1.array == 0)
    with pytest.raises(DataError, match="no DICOM series '1.2.3'"):
        read_volume(tmp_path / "s", series="1.2.3")


# ---- predict ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from test_predict import _save_ckpt

    from datamodules.transforms import preprocessing_config

    return _save_ckpt(tmp_path_factory.mktemp("ckpt") / "ct.ckpt", preprocessing_config("ct"), features=4, depth=2)


def _scan(path, value=100.0):
    return _nifti(path, np.full((16, 14, 4), value, np.float32))


def test_predict_refuses_to_overwrite_its_input(ckpt, tmp_path, capsys):
    from benchmark.inference.predict import main

    scan = _scan(tmp_path / "scan.nii.gz")
    before = scan.read_bytes()
    assert main(["--checkpoint", str(ckpt), "--input", str(scan), "--output", str(scan), "--device", "cpu"]) == 2
    assert "scan.nii.gz: output would overwrite or write into the input" in capsys.readouterr().err
    assert scan.read_bytes() == before
    series = tmp_path / "dicom"
    write_series(series, np.zeros((6, 5, 3), np.float32))
    files = sorted(p.name for p in series.iterdir())
    assert main(["--checkpoint", str(ckpt), "--input", str(series), "--output", str(series / "m.nii.gz")]) == 2
    assert "m.nii.gz: output would overwrite or write into the input" in capsys.readouterr().err
    assert sorted(p.name for p in series.iterdir()) == files
    assert main(["--checkpoint", str(ckpt), "--input", str(scan), "--output", str(tmp_path / "mask.png")]) == 2
    assert "mask.png: output must be a .nii.gz / .nii file" in capsys.readouterr().err
    assert not (tmp_path / "mask.png").exists()


def test_predict_cuda_without_gpu_is_a_clear_error(ckpt, tmp_path, capsys):
    import torch

    from benchmark.inference.predict import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    scan = _scan(tmp_path / "scan.nii.gz")
    assert main(["--checkpoint", str(ckpt), "--input", str(scan), "--output", str(tmp_path / "m.nii.gz"),
                 "--device", "cuda"]) == 2
    assert "error: --device: cuda requested but no CUDA GPU is available" in capsys.readouterr().err
    assert not (tmp_path / "m.nii.gz").exists()


def test_predict_batch_reports_a_bad_scan_and_goes_on(ckpt, tmp_path, capsys):
    from benchmark.inference.predict import main

    inp = tmp_path / "in"
    inp.mkdir()
    _scan(inp / "a.nii.gz")
    bad = np.full((16, 14, 4), 100.0, np.float32)
    bad[0, 0, 0] = np.nan
    _nifti(inp / "b.nii.gz", bad)
    _scan(inp / "c.nii.gz")
    out = tmp_path / "out"
    assert main(["--checkpoint", str(ckpt), "--input", str(inp), "--output", str(out), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "b.nii.gz: 1 NaN/Inf voxels of 896" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "c.nii.gz"]  # no b, no temp files
    assert "2 of 3 scans" in captured.out and "1 failed" in captured.out
    assert main(["--checkpoint", str(ckpt), "--input", str(inp / "b.nii.gz"), "--output", str(out / "b.nii.gz"),
                 "--device", "cpu", "--nan-policy", "fill"]) == 0
    assert nib.load(out / "b.nii.gz").shape == (16, 14, 4)


def _tampered(ckpt, path, value):
    """A copy of `ckpt` with one weight tensor set to `value` (NaN: diverged; 1e38: overflows to Inf)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point() and v.ndim > 1)
    state["state_dict"][name] = torch.full_like(state["state_dict"][name], value)
    torch.save(state, path)
    return path


def test_predict_refuses_nan_weights_and_non_finite_output(ckpt, tmp_path, capsys):
    """Issue 27, item 3: a diverged checkpoint never predicts 'liver 0.0 ml' with exit 0."""
    from benchmark.inference.predict import main

    scan = _scan(tmp_path / "scan.nii.gz")
    nan = _tampered(ckpt, tmp_path / "nan.ckpt", float("nan"))
    assert main(["--checkpoint", str(nan), "--input", str(scan), "--output", str(tmp_path / "m.nii.gz"),
                 "--device", "cpu"]) == 2
    assert f"error: {nan}: non-finite weights (NaN/Inf) in 1 tensor(s)" in capsys.readouterr().err
    huge = _tampered(ckpt, tmp_path / "huge.ckpt", 1e38)  # finite weights, an Inf/NaN output
    assert main(["--checkpoint", str(huge), "--input", str(scan), "--output", str(tmp_path / "m.nii.gz"),
                 "--device", "cpu"]) == 2
    assert f"error: {huge}: non-finite network output (NaN/Inf)" in capsys.readouterr().err
    assert not (tmp_path / "m.nii.gz").exists()


# ---- config files: every file x {unknown key, wrong type} -----------------------------------------

ENTRY = "model:\n  class_path: models.unet2d.UNet2D\n  init_args: {features: 4, depth: 2, dropout: 0.1}\n" \
        "data:\n  class_path: datamodules.CTDataModule\n  init_args: {dims: 2}\n"
SUITE = "name: s\nbudget: smoke\nentries:\n  - {variant: tiny, label: Tiny, config: tiny.yaml}\n"
PRESET = "name: p\ntrainer: {max_steps: 4}\nsmoke:\n  dims:\n    2: {trainer: {max_steps: 2}}\n"


@pytest.mark.parametrize("file, before, after, problem", [
    ("suite", "budget: smoke", "budgt: smoke", "unknown key `budgt` (did you mean `budget`?)"),
    ("suite", "budget: smoke", "budget: 4", "`budget` must be one of smoke, got 4"),
    ("suite", "label: Tiny", "labl: Tiny", "entry 0: unknown key `labl` (did you mean `label`?)"),
    ("suite", "config: tiny.yaml", "config: [tiny.yaml]", "entry 0: `variant` and `config` must be strings"),
    ("entry", "dropout: 0.1", "dropuot: 0.1", "model.init_args: unknown key `dropuot` (did you mean `dropout`?)"),
    ("entry", "data:\n", "dta:\n", "unknown key `dta` (did you mean `data`?)"),
    ("entry", "init_args: {dims: 2}", "init_args: [2]", "`data.init_args` must be a mapping, got list [2]"),
    ("entry", "init_args: {dims: 2}", "init_args: {dims: 2, patch_sise: [8, 8]}",
     "data.init_args: unknown key `patch_sise` (did you mean `patch_size`?)"),
    ("preset", "max_steps: 4", "max_step: 4", "trainer: unknown key `max_step` (did you mean `max_steps`?)"),
    ("preset", "2: {trainer: {max_steps: 2}}", "2: {trainr: {max_steps: 2}}",
     "smoke: dims 2: unknown key `trainr` (did you mean `trainer`?)"),
    ("preset", "trainer: {max_steps: 4}", "trainer: 4", "`trainer` must be a mapping, got int 4"),
    ("preset", "name: p", "name: p\nmodels: {unet2: {model: {lr: 0.1}}}",
     "models: unknown key `unet2` (did you mean `unet2d`?)"),
    ("preset", "name: p", "name: p\nextnds: cpu", "unknown key `extnds` (did you mean `extends`?)"),
    ("preset", "max_steps: 2}}", "max_steps: 2}, convergence: {stpo: true}}",
     "smoke: dims 2: convergence: unknown key `stpo` (did you mean `stop`?)"),
])
def test_config_files_refuse_unknown_keys_and_wrong_types(tmp_path, capsys, file, before, after, problem):
    """Issue 27, item 4: a typo never changes the experiment in silence: `run` stops before training
    with `error: <file>: <problem>` and the nearest valid key."""
    from benchmark.run.runner import main

    texts = {"suite": SUITE, "entry": ENTRY, "preset": PRESET}
    assert before in texts[file]
    texts[file] = texts[file].replace(before, after)
    paths = {"suite": tmp_path / "s.yaml", "entry": tmp_path / "tiny.yaml", "preset": tmp_path / "p.yaml"}
    for name, text in texts.items():
        paths[name].write_text(text)
    out = tmp_path / "out"
    assert main(["--suite", str(paths["suite"]), "--preset", str(paths["preset"]), "--modalities", "ct",
                 "--out", str(out), "--wandb", "disabled"]) == 2
    assert f"error: {paths[file]}: {problem}" in capsys.readouterr().err
    assert not out.exists()


# ---- every command x {read-only output, full disk, output inside input} ---------------------------
# The faults are injected where every writer goes through: `tempfile.mkstemp` (a folder that refuses
# new files) and `os.fsync` (the disk fills up as the file is flushed), as the OS would raise them.

@pytest.fixture(scope="module")
def world(tmp_path_factory, ckpt):
    """Tiny inputs for every command: an MSD task, its converted dataset, a scan, masks, results."""
    from test_convert import _msd_task
    from test_report import _write_run

    from datamodules.convert import convert

    root = tmp_path_factory.mktemp("world")
    task = _msd_task(root / "Task03_Liver")
    ds = convert("msd", task, root / "ds")
    ds4 = convert("msd", _msd_task(root / "Task03_Liver4", cases=(0, 1, 2, 3)), root / "ds4")  # 2 folds of 2
    _scan(root / "scan.nii.gz")
    for name in ("pred", "gt"):
        (root / name).mkdir()
        for case in ("a", "b"):
            mask = np.zeros((16, 14, 4), np.uint8)
            mask[4:10, 4:10, 1:3] = 1
            _nifti(root / name / f"{case}.nii.gz", mask)
    for seed in (0, 1):
        _write_run(root / "results", "unet_baseline", "ct", seed)
    return {"root": root, "task": task, "ds": ds, "ds4": ds4, "ckpt": ckpt}


COMMANDS = {  # command -> argv writing into the output folder OUT
    "data phantom": lambda w, out: ["data", "phantom", "--out", str(out / "ph"), "--cases", "1", "--spacing", "6",
                                    "--quiet"],
    "data convert": lambda w, out: ["data", "convert", "--format", "msd", str(w["task"]), str(out / "conv")],
    "report": lambda w, out: ["report", "--results", str(w["root"] / "results"), "--out", str(out / "lb.md")],
    "predict": lambda w, out: ["predict", "--checkpoint", str(w["ckpt"]), "--input", str(w["root"] / "scan.nii.gz"),
                               "--output", str(out / "m.nii.gz"), "--device", "cpu"],
    "evaluate": lambda w, out: ["evaluate", "--pred", str(w["root"] / "pred"), "--gt", str(w["root"] / "gt"),
                                "--out", str(out / "scores.csv")],
    "external-eval": lambda w, out: ["external-eval", "--checkpoint", str(w["ckpt"]), "--external", str(w["ds"]),
                                     "--out", str(out / "ext.csv"), "--device", "cpu"],
    "crossval": lambda w, out: ["crossval", "--data", str(w["ds4"]), "--modality", "ct", "--folds", "2",
                                "--out", str(out / "cv")],
}


def _read_only(monkeypatch):
    import errno
    import os
    import tempfile

    def refuse(suffix=None, prefix=None, dir=None, text=False):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir or "/tmp", f"{prefix}x{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def _full_disk(monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)


@pytest.mark.parametrize("fault", [_read_only, _full_disk], ids=["read-only", "full-disk"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_on_a_read_only_or_full_output(world, tmp_path, capsys, monkeypatch, command, fault):
    """Issue 27, item 6: `error: <the user's output>: <problem>`, exit 2, no traceback, no temp file left."""
    from benchmark.cli import main

    out = tmp_path / "out"
    out.mkdir()
    argv = COMMANDS[command](world, out)
    fault(monkeypatch)
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("error: "))
    assert line.startswith(f"error: {out}") and ("Permission denied" in line or "No space left" in line), err
    assert ".tmp" not in line and "partial" not in line and "Traceback" not in err
    left = [p for p in tmp_path.rglob("*") if ".tmp" in p.name or "partial" in p.name]
    assert left == [] and not (out / "conv" / "dataset.json").exists() and not (out / "ph").exists()


@pytest.mark.parametrize("command, argv, problem", [
    ("predict", lambda w: ["--input", str(w["root"] / "pred"), "--output", str(w["root"] / "pred")],
     "output would overwrite or write into the input"),
    ("data convert", lambda w: [str(w["task"] / "imagesTr"), str(w["task"])], "output folder is, or holds, the source"),
    ("evaluate", lambda w: ["--pred", str(w["root"] / "pred"), "--gt", str(w["root"] / "gt"),
                            "--out", str(w["root"] / "gt" / "a.nii.gz")], "the per-case output must be a .csv file"),
])
def test_outputs_inside_inputs_are_refused(world, capsys, command, argv, problem):
    """Output inside input: refused before anything is written, and the input is left as it was."""
    from benchmark.cli import main

    extra = {"predict": ["predict", "--checkpoint", str(world["ckpt"]), "--device", "cpu"],
             "data convert": ["data", "convert", "--format", "msd"], "evaluate": ["evaluate"]}[command]
    before = sorted(p for p in world["root"].rglob("*"))
    assert main([*extra, *argv(world)]) == 2
    assert problem in capsys.readouterr().err
    assert sorted(p for p in world["root"].rglob("*")) == before


def test_run_onto_a_full_disk_names_the_results_folder_last(tmp_path, capsys, monkeypatch, request):
    """`run` x full disk: the message names the run's folder in --out (not a temp file elsewhere) and is
    the last thing printed, after the progress display; the suite stops with exit 2."""
    import errno
    import os

    from test_runner import TINY_UNET, run_args, write_suite

    from benchmark.run import runner

    blobs = request.getfixturevalue("blobs")
    suite = write_suite(tmp_path / "suite", "full", {"tiny": TINY_UNET, "other": TINY_UNET})
    out = tmp_path / "out"

    real = os.fsync

    def full(fd):  # the disk fills up once the run folder is being written (the suite's lock got in)
        if f"{out / 'full'}{os.sep}" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", full)
    assert runner.main(run_args(suite, blobs, out)) == 2
    err = capsys.readouterr().err.rstrip().splitlines()
    assert err[-1].startswith(f"error: {out / 'full' / 'tiny__ct__seed0'}") and err[-1].endswith("No space left on device")
    assert not (out / "full" / "other__ct__seed0").exists()  # the suite stopped
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_a_truncated_test_scan_stops_the_run_before_training(blobs, tmp_path):
    """Issue 27, item 8: every input of a run (train, validation, test) is checked before training:
    a truncated test image fails the run with its file named, and no model is trained."""
    import shutil

    from test_runner import TINY_UNET, run_args, write_suite

    from benchmark.run import runner
    from datamodules.datamodule import LiverDataModule

    data = shutil.copytree(blobs, tmp_path / "data")
    dm = LiverDataModule(data_dir=str(data), modality="ct")
    dm._prepare()
    image = next(r.image_path for r in dm.records if r.case == dm.split["test"][0])
    image.write_bytes(image.read_bytes()[:-200])  # cut short, as an interrupted copy leaves it
    suite = write_suite(tmp_path / "suite", "cut", {"tiny": TINY_UNET})
    out = tmp_path / "out"
    assert runner.main(run_args(suite, data, out)) == 1
    record = json.loads((out / "cut" / "tiny__ct__seed0" / "result.json").read_text())
    assert record["status"] == "failed" and f"{image}:" in record["error"], record["error"]
    assert record["budget"] is None and not (out / "cut" / "tiny__ct__seed0" / "model.ckpt").exists()


def test_every_shipped_preset_and_suite_passes_the_key_check(tmp_path):
    """The key check knows every key the shipped presets, suites and entry configs use (`extends`,
    `convergence`, the DataModule's `val_margin_mm`/`val_slice_stride`, ...), and an entry's own
    `split_file` (a cross-validation fold, `liverbench crossval`)."""
    from benchmark.run import plan

    presets = sorted((plan.PACKAGE_DIR / "presets").glob("*.yaml"))
    suites = sorted((plan.PACKAGE_DIR / "suites").glob("*.yaml"))
    assert {p.stem for p in presets} >= {"cpu", "gpu", "gpu-converged"} and {s.stem for s in suites} >= {"paper", "smoke"}
    for path in presets:
        plan.load_preset(str(path))
    for path in suites:
        plan.load_suite(str(path))
    (tmp_path / "fold0.yaml").write_text(ENTRY.replace("init_args: {dims: 2}", "init_args: {dims: 2, split_file: f.json}"))
    (tmp_path / "s.yaml").write_text("name: s\nentries:\n  - {variant: fold0, config: fold0.yaml}\n")
    assert plan.load_suite(str(tmp_path / "s.yaml"))["entries"][0]["variant"] == "fold0"
    (tmp_path / "p.yaml").write_text("extends: cpu\nconvergence: {stop: false}\nsmoke: {convergence: {min_points: 3}}\n")
    assert plan.load_preset(str(tmp_path / "p.yaml"))["convergence"]["stop"] is False
