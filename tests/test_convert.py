"""Converters to the nnU-Net raw layout, each on data written in its real layout + real samples."""
from __future__ import annotations

import json
import tarfile

import nibabel as nib
import numpy as np
import pytest
from test_dicom import write_series

from common.files import DataError
from datamodules.convert import main as convert_main
from datamodules.convert import convert

AFF = np.diag([-0.8, -0.8, 2.0, 1.0])


def _nifti(path, data, affine=AFF):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _labels(rng, shape=(16, 14, 6), values=(1, 2)):
    lab = np.zeros(shape, np.uint8)
    lab[3:10, 4:11, 1:5] = values[0]
    lab[5:7, 6:8, 2:3] = values[-1]
    lab[12:15, 1:3, 0:2] = 9 if len(values) > 2 else 0  # another organ
    return lab


def _check_case(root, case, image_src, expected_mask):
    img = nib.load(root / "imagesTr" / f"{case}_0000.nii.gz")
    lab = nib.load(root / "labelsTr" / f"{case}.nii.gz")
    np.testing.assert_array_equal(np.asarray(img.dataobj), image_src)
    np.testing.assert_array_equal(np.asarray(lab.dataobj), expected_mask.astype(np.uint8))
    np.testing.assert_allclose(lab.affine, img.affine)


def test_msd_skips_macos_files_and_merges_liver_and_cancer(tmp_path):
    rng = np.random.default_rng(0)
    task = tmp_path / "Task03_Liver"
    images = {}
    for n in (0, 1, 10):
        images[n] = rng.integers(-100, 200, (16, 14, 6)).astype(np.int16)
        _nifti(task / "imagesTr" / f"liver_{n}.nii.gz", images[n])
        _nifti(task / "labelsTr" / f"liver_{n}.nii.gz", _labels(rng))
    (task / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"\0\5\26\7 mac resource fork")
    out = convert("msd", tmp_path, tmp_path / "out")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["numTraining"] == 3
    assert meta["labels"] == {"background": 0, "liver": 1} and meta["file_ending"] == ".nii.gz"
    _check_case(out, "liver_10", images[10], _labels(rng) > 0)
    assert convert("msd", tmp_path, tmp_path / "out").name == "out"  # re-converting is fine
    _nifti(tmp_path / "lits" / "volume-0.nii", images[0])
    _nifti(tmp_path / "lits" / "segmentation-0.nii", _labels(rng))
    with pytest.raises(DataError, match="already holds dataset 'MSD_Task03_Liver'"):
        convert("lits", tmp_path / "lits", tmp_path / "out")


def test_lits_uncompressed_volumes(tmp_path):
    rng = np.random.default_rng(1)
    vol = rng.integers(-100, 200, (16, 14, 6)).astype(np.int16)
    _nifti(tmp_path / "batch1" / "volume-3.nii", vol)
    _nifti(tmp_path / "batch1" / "segmentation-3.nii", _labels(rng).astype(np.float32))
    _nifti(tmp_path / "test" / "test-volume-0.nii", vol)  # unlabelled: ignored
    out = convert("lits", tmp_path, tmp_path / "out")
    _check_case(out, "lits_003", vol, _labels(rng) > 0)
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1


def test_amos_splits_ct_and_mri_and_keeps_only_label_6(tmp_path):
    rng = np.random.default_rng(2)
    lab = _labels(rng, values=(6, 6, 1))
    vols = {}
    for cid, split in ((5, "Tr"), (510, "Tr"), (7, "Va")):
        vols[cid] = rng.integers(0, 500, (16, 14, 6)).astype(np.int16)
        _nifti(tmp_path / "amos22" / f"images{split}" / f"amos_{cid:04d}.nii.gz", vols[cid])
        _nifti(tmp_path / "amos22" / f"labels{split}" / f"amos_{cid:04d}.nii.gz", lab)
    out = convert("amos", tmp_path, tmp_path / "out")
    ct, mri = json.loads((out / "ct" / "dataset.json").read_text()), json.loads((out / "mri" / "dataset.json").read_text())
    assert ct["channel_names"]["0"] == "CT" and ct["numTraining"] == 2
    assert mri["channel_names"]["0"] == "MRI" and mri["numTraining"] == 1
    _check_case(out / "mri", "amos_0510", vols[510], lab == 6)
    only_mri = convert("amos", tmp_path, tmp_path / "mri_only", modality="mri")
    assert sorted(p.name for p in (only_mri / "labelsTr").iterdir()) == ["amos_0510.nii.gz"]


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _square_for(z_index, n=16):
    """A slice-specific mask (rows, cols) so a mask on the wrong slice is detected."""
    m = np.zeros((n, n), np.uint8)
    m[2 + z_index: 6 + z_index, 3:3 + z_index + 2] = 1
    return m


def test_chaos_ct_mask_follows_file_name_order_when_z_decreases(tmp_path):
    nz = 5
    vol = np.zeros((16, 16, nz), np.float32)
    for k in range(nz):
        vol[:, :, k] = 100 * k  # slice k (ascending z) has value 100k
    patient = tmp_path / "CHAOS_Train_Sets" / "Train_Sets" / "CT" / "7"
    names = [f"i{n},0000b.dcm" for n in (1, 2, 3, 10, 11)]  # natural order differs from lexical
    write_series(patient / "DICOM_anon", vol, names=names, z_decreasing=True)
    # file index f holds slice z = nz-1-f; its PNG (the f-th name) marks that slice's square
    for f in range(nz):
        _png(patient / "Ground" / f"liver_GT_{f:03d}.png", _square_for(nz - 1 - f) * 255)
    out = convert("chaos", tmp_path, tmp_path / "out", modality="ct")
    img = nib.load(out / "imagesTr" / "chaos_ct_7_0000.nii.gz")
    lab = np.asarray(nib.load(out / "labelsTr" / "chaos_ct_7.nii.gz").dataobj)
    assert img.affine[2, 2] > 0
    for k in range(nz):
        assert np.asarray(img.dataobj)[0, 0, k] == 100 * k
        np.testing.assert_array_equal(lab[:, :, k], _square_for(k).T)


def test_chaos_mr_bands_and_patient_ids(tmp_path):
    root = tmp_path / "Train_Sets" / "MR" / "2"
    vol = np.arange(16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3)
    for sub in ("T1DUAL/DICOM_anon/InPhase", "T1DUAL/DICOM_anon/OutPhase", "T2SPIR/DICOM_anon"):
        write_series(root / sub, vol, modality="MR")
    for seq in ("T1DUAL", "T2SPIR"):
        for k in range(3):
            gt = np.zeros((16, 16), np.uint8)
            gt[2:6, 2:6] = 63  # liver
            gt[8:12, 8:12] = 126  # right kidney: not liver
            gt[13:15, 0:3] = 252  # spleen
            _png(root / seq / "Ground" / f"IMG-{k:04d}.png", gt)
    out = convert("chaos", tmp_path, tmp_path / "out", modality="t1in,t1out,t2")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MRI"} and meta["numTraining"] == 3
    assert meta["patient_ids"] == {f"chaos_2_{m}": "chaos_2" for m in ("t1in", "t1out", "t2")}
    lab = np.asarray(nib.load(out / "labelsTr" / "chaos_2_t2.nii.gz").dataobj)
    assert lab.sum() == 16 * 3 and lab[2:6, 2:6].all()
    from datamodules.readers import load_case, read_dataset

    records = read_dataset(out)  # the DataModules' reader accepts the result
    assert {r.patient for r in records} == {"chaos_2"} and len(records) == 3
    assert load_case(records[0]).mask.sum() == 16 * 3
    with pytest.raises(DataError, match="modality"):
        convert("chaos", tmp_path, tmp_path / "bad", modality="ct,t2")


def test_dicom_series_with_totalsegmentator_nifti_mask(real_data, tmp_path):
    ts = real_data / "totalsegmentator"
    rc = convert_main(["--format", "dicom", str(ts / "example_ct_dicom"), str(tmp_path / "out"),
                       "--mask", str(ts / "example_seg_dicom.nii.gz"), "--liver-labels", "5", "--case", "ts"])
    assert rc == 0
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    lab = nib.load(tmp_path / "out" / "labelsTr" / "ts.nii.gz")
    seg = nib.load(ts / "example_seg_dicom.nii.gz")
    lab_c, seg_c = nib.as_closest_canonical(lab), nib.as_closest_canonical(seg)
    np.testing.assert_allclose(lab_c.affine, seg_c.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(lab_c.dataobj), (np.asarray(seg_c.dataobj) == 5).astype(np.uint8))


def test_dicom_seg_and_nrrd_masks_append_to_one_dataset(real_data, tmp_path):
    with tarfile.open(real_data / "dcmqi_liver_3slice" / "ct-3slice.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    d = real_data / "dcmqi_liver_3slice"
    out = tmp_path / "out"
    convert("dicom", tmp_path / "ct-3slice", out, mask=d / "liver_seg.dcm", case="seg")
    convert("dicom", tmp_path / "ct-3slice", out, mask=d / "liver_seg.nrrd", case="nrrd")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 2
    a = np.asarray(nib.load(out / "labelsTr" / "seg.nii.gz").dataobj)
    b = np.asarray(nib.load(out / "labelsTr" / "nrrd.nii.gz").dataobj)
    assert a.sum() == 107098
    np.testing.assert_array_equal(a, b)
    img = np.asarray(nib.load(out / "imagesTr" / "seg_0000.nii.gz").dataobj)
    assert img.dtype == np.int16 and img.min() == -3024


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    assert convert_main(["--format", "msd", str(tmp_path / "src"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'src'}: ") and "imagesTr" in err
    assert convert_main(["--format", "dicom", str(tmp_path / "src"), str(tmp_path / "o")]) == 2
    assert "--mask" in capsys.readouterr().err


def test_real_totalsegmentator_niftis_through_msd_and_amos_layouts(real_data, tmp_path):
    """The real CT (RAS) and MR (LPS) samples, linked into MSD and AMOS layouts (liver = 5 there)."""
    ts = real_data / "totalsegmentator"
    links = {"msd/Task03_Liver/imagesTr/liver_0.nii.gz": "example_ct_sm.nii.gz",
             "msd/Task03_Liver/labelsTr/liver_0.nii.gz": "example_seg.nii.gz",
             "amos/imagesTr/amos_0600.nii.gz": "example_mr_sm.nii.gz",
             "amos/labelsTr/amos_0600.nii.gz": "example_seg_mr.nii.gz"}
    for link, target in links.items():
        (tmp_path / link).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / link).symlink_to(ts / target)
    ct = convert("msd", tmp_path / "msd", tmp_path / "ct", liver_labels=[5])
    mr = convert("amos", tmp_path / "amos", tmp_path / "mr", modality="mri", liver_labels=[5])
    for root, case, image, seg, voxels in ((ct, "liver_0", "example_ct_sm.nii.gz", "example_seg.nii.gz", 38634),
                                           (mr, "amos_0600", "example_mr_sm.nii.gz", "example_seg_mr.nii.gz", 18480)):
        src = nib.load(ts / image)
        _check_case(root, case, np.asarray(src.dataobj), np.asarray(nib.load(ts / seg).dataobj) == 5)
        out = nib.load(root / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
        assert int(np.asarray(out.dataobj).sum()) == voxels
    assert nib.aff2axcodes(nib.load(mr / "labelsTr" / "amos_0600.nii.gz").affine) == ("L", "P", "S")


def test_chaos_failing_half_way_leaves_no_dataset(tmp_path, capsys):
    """Patient 2 has a missing ground-truth PNG: nothing that looks like a dataset may be left."""
    from datamodules.convert import main as convert_main

    vol = np.zeros((16, 16, 3), np.float32)
    for pid in ("1", "2"):
        patient = tmp_path / "Train_Sets" / "CT" / pid
        write_series(patient / "DICOM_anon", vol)
        for f in range(3 if pid == "1" else 2):
            _png(patient / "Ground" / f"liver_GT_{f:03d}.png", _square_for(1) * 255)
    out = tmp_path / "out"
    assert convert_main(["--format", "chaos", str(tmp_path), str(out)]) == 2
    assert "2 ground-truth PNGs for 3 DICOM files" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    (tmp_path / "Train_Sets" / "CT" / "2" / "DICOM_anon" / "slice002.dcm").unlink()  # now consistent
    assert convert_main(["--format", "chaos", str(tmp_path), str(out)]) == 0
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_inspect_flags_missing_dataset_json_and_count_mismatch(tmp_path, capsys):
    from datamodules.inspect import main as inspect_main

    rng = np.random.default_rng(1)
    for n in (0, 1):
        _nifti(tmp_path / "Task03_Liver" / "imagesTr" / f"liver_{n}.nii.gz", np.zeros((16, 14, 6), np.int16))
        _nifti(tmp_path / "Task03_Liver" / "labelsTr" / f"liver_{n}.nii.gz", _labels(rng))
    out = convert("msd", tmp_path / "Task03_Liver", tmp_path / "ds")
    meta = json.loads((out / "dataset.json").read_text())
    (out / "dataset.json").write_text(json.dumps({**meta, "numTraining": meta["numTraining"] + 1}))
    assert inspect_main([str(out)]) == 2
    assert f"error: {out / 'dataset.json'}: numTraining is {meta['numTraining'] + 1} but {meta['numTraining']}" \
        in capsys.readouterr().err
    (out / "dataset.json").unlink()
    assert inspect_main([str(out)]) == 2  # issue 27, item 7: a partial dataset fails inspection
    assert f"error: {out / 'dataset.json'}: missing: not a complete dataset" in capsys.readouterr().err


def _msd_task(root, cases=(0, 1)):
    rng = np.random.default_rng(2)
    for n in cases:
        _nifti(root / "imagesTr" / f"liver_{n}.nii.gz", rng.integers(-100, 200, (16, 14, 6)).astype(np.int16))
        _nifti(root / "labelsTr" / f"liver_{n}.nii.gz", _labels(rng))
    return root


def test_converting_again_keeps_everything_the_converter_did_not_write(tmp_path):
    """Issue 27, item 1: a second conversion into a dataset folder the user added to deletes nothing."""
    task = _msd_task(tmp_path / "Task03_Liver")
    out = convert("msd", task, tmp_path / "ds")
    (out / "NOTES.txt").write_text("my notes")
    (out / "imagesTs").mkdir()
    (out / "imagesTs" / "new_0000.nii.gz").write_bytes(b"mine")
    (out / "predictions").mkdir()
    (out / "predictions" / "liver_0.nii.gz").write_bytes(b"mine too")
    (out / "labelsTr" / "liver_0.nii.gz").write_bytes(b"stale, rewritten by the converter")
    assert convert_main(["--format", "msd", str(task), str(out)]) == 0
    assert (out / "NOTES.txt").read_text() == "my notes"
    assert (out / "imagesTs" / "new_0000.nii.gz").read_bytes() == b"mine"
    assert (out / "predictions" / "liver_0.nii.gz").read_bytes() == b"mine too"
    assert nib.load(out / "labelsTr" / "liver_0.nii.gz").shape == (16, 14, 6)
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_converting_refuses_to_mix_cases_it_does_not_write(tmp_path, capsys):
    """A case file in imagesTr/ that this conversion does not produce is never deleted nor mixed in;
    a non-empty folder without a dataset is refused, naming what it holds."""
    out = convert("msd", _msd_task(tmp_path / "Task03_Liver"), tmp_path / "ds")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    smaller = _msd_task(tmp_path / "small" / "Task03_Liver", cases=(0,))
    assert convert_main(["--format", "msd", str(smaller), str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'imagesTr'}: holds case files that this command does not write (liver_1_0000.nii.gz)" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "NOTES.txt").write_text("x")
    (mine / "imagesTs").mkdir()
    assert convert_main(["--format", "msd", str(smaller), str(mine)]) == 2
    assert f"error: {mine}: folder is not empty and holds no converted dataset (NOTES.txt, imagesTs/)" \
        in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["NOTES.txt", "imagesTs"]


def test_written_files_get_the_umask_mode(tmp_path):
    """Issue 27, item 9: converted NIfTIs and dataset.json are readable by the group and others under
    umask 022 (a shared project space), as a plain `open()` would make them; not mkstemp's 0600."""
    import os

    old = os.umask(0o022)
    try:
        out = convert("msd", _msd_task(tmp_path / "Task03_Liver"), tmp_path / "ds")
        os.umask(0o027)
        from common.files import atomic_write_json

        atomic_write_json(tmp_path / "result.json", {"status": "ok"})
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o644}, modes
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o640
