"""`liverbench predict` / Predictor: masks in the input's exact geometry, in the right place."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from test_dicom import write_series

from benchmark.inference.predict import main as predict_main, postprocessing_of
from benchmark.inference.predictor import Predictor, liver_ml
from datamodules.transforms import preprocessing_config
from datamodules.volumes import read_scan
from datamodules.volumes import write_volume
from common.files import DataError


def _save_ckpt(path, config=None, model="unet2d", **kw):
    """A checkpoint as Lightning writes it (state_dict, hyper_parameters, DataModule state, our entries)."""
    from models import create_model
    from models.checkpoint_format import PREPROCESSING_KEY

    module = create_model(model, **kw)
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": "2.6.0"}
    if config is not None:
        ckpt["LiverDataModule"] = {"preprocessing": config}
    module.on_save_checkpoint(ckpt)
    ckpt[PREPROCESSING_KEY] = config  # what the trainer's DataModule gives `on_save_checkpoint`
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {m: _save_ckpt(root / f"{m}.ckpt", preprocessing_config(m), features=4, depth=2) for m in ("ct", "mri")}


class ThresholdNet(torch.nn.Module):
    """Liver = preprocessed intensity above `t`: its mask must land where the bright voxels are."""

    def __init__(self, t: float):
        super().__init__()
        self.t = t

    def predict_volume(self, x):
        x = torch.as_tensor(x)
        return torch.cat([torch.zeros_like(x), x - self.t], dim=1)


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("name,modality", [("totalsegmentator/example_mr_sm.nii.gz", "mri"),
                                           ("totalsegmentator/example_ct_dicom", "ct")])
def test_predict_cli_keeps_input_geometry_on_real_samples(real_data, ckpts, tmp_path, capsys, name, modality):
    src = real_data / name
    out = tmp_path / "mask.nii.gz"
    assert predict_main(["--checkpoint", str(ckpts[modality]), "--input", str(src), "--output", str(out),
                         "--device", "cpu"]) == 0
    scan = read_scan(src)
    mask = nib.load(out)
    assert mask.shape == scan.image.shape
    np.testing.assert_allclose(mask.affine, scan.affine, atol=1e-4)
    if src.is_file():  # LPS stays LPS
        assert nib.aff2axcodes(mask.affine) == nib.aff2axcodes(nib.load(src).affine) == ("L", "P", "S")
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    printed = capsys.readouterr().out
    assert " ml, " in printed and printed.rstrip().endswith(" s")


def test_inverted_mask_lands_on_the_anatomy_lps_mr(real_data):
    scan = read_scan(real_data / "totalsegmentator" / "example_mr_sm.nii.gz")
    mask, affine = Predictor(ThresholdNet(0.0), preprocessing_config("mri"), "cpu").predict_image(scan.image, scan.affine)
    lo, hi = np.percentile(scan.image, [0.5, 99.5])
    clipped = np.clip(scan.image, lo, hi)
    expected = clipped > clipped.mean()  # z-score > 0 on the original grid
    assert _dice(mask.astype(bool), expected) > 0.97


FINGERPRINT = {"median_spacing": [1.0, 1.0, 3.0], "fg_mean": 100.0, "fg_std": 50.0,
               "fg_percentile_00_5": -200.0, "fg_percentile_99_5": 300.0}


# thresholds halfway between the body and the sphere after preprocessing (window: 0.125 and 0.875; advanced
# z-score: -4 and 2), so the interpolated margin puts the edge where it is; advanced adds the body crop
@pytest.mark.parametrize("advanced,threshold", [(False, 0.5), (True, -1.0)])
def test_oblique_anisotropic_input_round_trip(tmp_path, advanced, threshold):
    shape, spacing = (64, 48, 12), np.array([0.7, 0.9, 4.0])
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ np.diag([-1, -1, 1])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = [10, -20, 30]
    idx = np.indices(shape).reshape(3, -1).T
    mm = (idx - np.array(shape) / 2) * spacing
    sphere = (np.linalg.norm(mm - [5, 3, 0], axis=1) < 14).reshape(shape)
    image = np.full(shape, -1000.0, np.float32)  # air around the body
    image[8:-6, 5:-9, 1:] = -100.0
    image[sphere] = 200.0
    nib.save(nib.Nifti1Image(image.astype(np.int16), affine), tmp_path / "obl.nii.gz")
    config = preprocessing_config("ct", advanced=advanced, fingerprint=FINGERPRINT)
    predictor = Predictor(ThresholdNet(threshold), config, "cpu")
    mask, out_affine = predictor.predict_file(tmp_path / "obl.nii.gz")
    assert mask.shape == shape and np.allclose(out_affine, affine)
    assert _dice(mask.astype(bool), sphere) > 0.9
    assert liver_ml(mask, affine) == pytest.approx(liver_ml(sphere, affine), rel=0.15)


def test_predict_writes_the_mask_the_benchmark_scored(ckpts, tmp_path, capsys):
    """The run's result.json `postprocessing` beside the checkpoint is applied (the leaderboard's numbers
    describe that mask); the command line overrides it; a checkpoint alone gets none."""
    shape, affine = (40, 40, 10), np.diag([2.0, 2.0, 4.0, 1.0])
    image = np.full(shape, -100.0, np.float32)
    image[5:25, 5:25, 2:8] = 200.0  # the liver
    image[32:37, 32:37, 4:6] = 200.0  # an island
    nib.save(nib.Nifti1Image(image.astype(np.int16), affine), tmp_path / "scan.nii.gz")
    predictor = Predictor(ThresholdNet(0.5), preprocessing_config("ct", fingerprint=FINGERPRINT), "cpu")
    masks = []
    for post in ({"largest_component": False}, {"largest_component": True, "opening_mm": 0.0}):
        predictor.predict_to_file(tmp_path / "scan.nii.gz", tmp_path / "mask.nii.gz", postprocessing=post)
        masks.append(np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj) > 0)
    raw, kept = masks
    assert raw[30:, 30:].any() and not kept[30:, 30:].any()  # the island is dropped
    np.testing.assert_array_equal(kept[:28, :28], raw[:28, :28])  # the liver is not touched
    assert kept[:28, :28].sum() > 0.9 * 20 * 20 * 6

    run = tmp_path / "run"
    run.mkdir()
    ckpt = shutil.copy(ckpts["ct"], run / "model.ckpt")
    assert postprocessing_of(run / "model.ckpt") == ({"largest_component": False, "opening_mm": 0.0},
                                                     "no result.json beside the checkpoint")
    (run / "result.json").write_text(json.dumps({"status": "ok", "postprocessing": {"largest_component": True,
                                                                                     "opening_mm": 6.0}}))
    post, source = postprocessing_of(run / "model.ckpt")
    assert post == {"largest_component": True, "opening_mm": 6.0} and str(run / "result.json") in source
    assert postprocessing_of(run / "model.ckpt", opening_mm=0.0)[0] == {"largest_component": True, "opening_mm": 0.0}
    assert postprocessing_of(run / "model.ckpt", False)[0] == {"largest_component": False, "opening_mm": 0.0}
    with pytest.raises(DataError, match="needs largest_component"):
        postprocessing_of(run / "model.ckpt", False, 6.0)
    assert predict_main(["--checkpoint", str(ckpt), "--input", str(tmp_path / "scan.nii.gz"), "--output",
                         str(tmp_path / "cli.nii.gz"), "--device", "cpu"]) == 0
    assert "post-processing: largest component after an opening of 6 mm (as " in capsys.readouterr().out
    (run / "result.json").write_text("{not json")
    assert predict_main(["--checkpoint", str(ckpt), "--input", str(tmp_path / "scan.nii.gz"), "--output",
                         str(tmp_path / "cli.nii.gz"), "--device", "cpu"]) == 2
    assert "result.json: not a valid result.json" in capsys.readouterr().err


def test_batch_folder_of_nifti_and_dicom(ckpts, tmp_path, capsys):
    inp = tmp_path / "in"
    vol = np.random.default_rng(0).normal(100, 50, (24, 20, 6)).astype(np.float32)
    inp.mkdir()
    nib.save(nib.Nifti1Image(vol.astype(np.int16), np.diag([1.5, 1.5, 3, 1])), inp / "a_0000.nii.gz")
    write_series(inp / "series1", vol, step=3.0)
    (inp / "notes.txt").write_text("ignored")
    assert predict_main(["--checkpoint", str(ckpts["ct"]), "--input", str(inp), "--output", str(tmp_path / "out"),
                         "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "series1.nii.gz"]
    assert nib.load(tmp_path / "out" / "series1.nii.gz").shape == (24, 20, 6)
    assert "2 scans in" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_or_corrupt_checkpoints_give_clear_errors(tmp_path, real_data, capsys):
    src = str(real_data / "totalsegmentator" / "example_ct_sm.nii.gz")

    def run(ckpt, *extra):
        return predict_main(["--checkpoint", str(ckpt), "--input", src, "--output", str(tmp_path / "m.nii.gz"), *extra])

    (tmp_path / "corrupt.ckpt").write_bytes(b"\x80\x04garbage")
    assert run(tmp_path / "corrupt.ckpt") == 2
    assert "corrupt.ckpt: not a readable PyTorch checkpoint" in capsys.readouterr().err
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "foreign.ckpt")
    assert run(tmp_path / "foreign.ckpt") == 2
    assert "not a LiverBench checkpoint" in capsys.readouterr().err
    torch.save({"obj": ThresholdNet(0.0)}, tmp_path / "pickled.ckpt")  # needs unpickling code: refused
    assert run(tmp_path / "pickled.ckpt") == 2
    assert "pickled.ckpt: not a readable PyTorch checkpoint" in capsys.readouterr().err
    import lightning as L

    from models import create_model

    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", enable_progress_bar=False)
    trainer.strategy.connect(create_model("unet2d", features=4, depth=2))
    bare = tmp_path / "bare.ckpt"
    trainer.save_checkpoint(bare)  # Lightning's own file, saved without a DataModule
    assert run(bare) == 2 and "--modality" in capsys.readouterr().err
    assert run(bare, "--modality", "ct", "--device", "cpu") == 0
    assert nib.load(tmp_path / "m.nii.gz").shape == (122, 101, 30)


def test_predict_process_skips_teardown_but_keeps_its_output(ckpts, tmp_path):
    """The `liverbench` executable (`benchmark.cli.console`) ends `predict` through `os._exit` (torch's
    teardown took 0.2-0.9 s): atexit hooks do not run, yet its lines reach a pipe, the mask is complete and
    a bad scan still exits 2; `main([...])` returns as before."""
    src = tmp_path / "ct.nii.gz"
    image = np.random.default_rng(0).normal(40, 200, (40, 40, 12)).astype(np.float32)
    write_volume(src, image, np.diag([2.0, 2.0, 4.0, 1.0]))
    out = tmp_path / "mask.nii.gz"

    def liverbench_predict(scan, entry="console()"):
        args = ['predict', '--checkpoint', str(ckpts['ct']), '--input', str(scan), '--output', str(out),
                '--precision', 'fp32', '--device', 'cpu']
        code = ("import atexit, sys; atexit.register(lambda: print('teardown ran')); "
                f"sys.argv = ['liverbench', *{args!r}]; "
                f"from benchmark.cli import console, main; sys.exit({entry})")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)

    proc = liverbench_predict(src)
    assert proc.returncode == 0, proc.stderr
    assert f"{src} -> {out}: liver" in proc.stdout and "teardown ran" not in proc.stdout
    expected, _ = Predictor.from_checkpoint(ckpts["ct"], device="cpu").predict_file(src)
    assert np.array_equal(np.asarray(nib.load(out).dataobj), expected)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a NIfTI file")
    proc = liverbench_predict(bad)
    assert proc.returncode == 2 and "bad.nii.gz" in proc.stderr and "teardown ran" not in proc.stdout
    proc = liverbench_predict(src, entry="main(sys.argv[1:])")  # called as a function: returns, normal exit
    assert proc.returncode == 0 and "teardown ran" in proc.stdout, proc.stderr


def test_the_scan_is_read_without_torch(tmp_path):
    """`liverbench predict` reads the first scan on the other core while torch is imported: that
    only overlaps if the command module and `read_scan` leave torch unimported."""
    src = tmp_path / "scan.nii.gz"
    write_volume(src, np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), np.diag([0.8, 0.8, 2.5, 1.0]))
    code = ("import sys, benchmark.inference.predict; from datamodules.volumes import read_scan; "
            f"s = read_scan({str(src)!r}); print(s.image.dtype, s.image.shape, float(s.image[5, 4, 3]), "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["float32", "(6,", "5,", "4)", "119.0", "False"]
