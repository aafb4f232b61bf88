"""Dataset reader, validation errors and `liverbench data inspect` on small written datasets."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.files import DataError
from datamodules.inspect import inspect_dataset, main as inspect_main
from datamodules.labels import liver_mask, parse_label_option, parse_labels
from datamodules.readers import dataset_modality, load_case, read_dataset

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def synthetic_case(shape=(24, 20, 12), modality="CT", seed=0, liver_shift=0, noise=5.0, body_offset=0.0):
    """A body ellipse with a box 'liver' (label 1) holding a small lesion (label 2)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (x / 0.9) ** 2 + (y / 0.8) ** 2 < 1
    label = np.zeros(shape, np.uint8)
    X, Y, Z = shape
    label[X // 4 + liver_shift: X // 2 + liver_shift, Y // 4: 3 * Y // 4, Z // 4: 3 * Z // 4] = 1
    label[X // 4 + liver_shift + 1: X // 4 + liver_shift + 3, Y // 2: Y // 2 + 2, Z // 2: Z // 2 + 2] = 2
    if modality == "CT":
        image = np.where(body, 40.0 + body_offset, -1000.0) + 70.0 * (label == 1) + 20.0 * (label == 2)
        image = np.rint(image + rng.normal(0, noise, shape)).astype(np.int16)
    else:
        image = np.where(body, 300.0 + body_offset, 5.0) + 200.0 * (label > 0) + rng.normal(0, noise, shape)
        image = image.astype(np.float32)
    return image, label


def make_dataset(root: Path, cases: int = 4, naming: str = "nnunet", shape=(24, 20, 12), spacing=(2.0, 2.0, 3.0),
                 modality: str = "CT", affine_sign=(1, 1, 1), patient_ids: dict | None = None,
                 labels_style: str = "int", noise: float = 5.0, body_step: float = 0.0) -> Path:
    """Write a tiny labelled dataset in the nnU-Net raw (`<case>_0000`) or MSD (`liver_N`) layout."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([*(s * g for s, g in zip(spacing, affine_sign)), 1.0])
    affine[:3, 3] = [-10.0, 5.0, 20.0]
    ids = []
    for i in range(cases):
        case = f"liver_{i}" if naming == "msd" else f"case_{i:03d}"
        ids.append(case)
        image, label = synthetic_case(shape, modality, seed=i, liver_shift=i % 3, noise=noise,
                                      body_offset=body_step * i)
        image_name = f"{case}.nii.gz" if naming == "msd" else f"{case}_0000.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / image_name))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"{case}.nii.gz"))
    labels = {"int": {"background": 0, "liver": 1, "lesion": 2},
              "list": {"background": 0, "liver": [1, 2], "lesion": 2},
              "msd": {"0": "background", "1": "liver", "2": "cancer"}}[labels_style]
    meta = {"channel_names": {"0": modality}, "labels": labels, "numTraining": cases, "file_ending": ".nii.gz"}
    if labels_style == "list":
        meta["regions_class_order"] = [1, 2]
    if naming == "msd":
        meta = {"modality": {"0": modality}, "labels": labels, "numTraining": cases,
                "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids]}
    if patient_ids:
        meta["patient_ids"] = patient_ids
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_naming_skips_macos_files_and_groups_patients(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=3, patient_ids={"case_000": "p0", "case_001": "p0"})
    (root / "imagesTr" / "._case_000_0000.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "labelsTr" / "._case_000.nii.gz").write_bytes(b"junk")
    records = read_dataset(root)
    assert [r.case for r in records] == ["case_000", "case_001", "case_002"]
    assert [r.patient for r in records] == ["p0", "p0", "case_002"]
    assert records[0].image_path.name == "case_000_0000.nii.gz"
    assert records[0].label_path.name == "case_000.nii.gz"
    assert dataset_modality(root) == "ct"


def test_msd_naming_and_label_styles(tmp_path):
    root = make_dataset(tmp_path / "msd", cases=2, naming="msd", labels_style="msd", modality="MRI")
    records = read_dataset(root)
    assert [r.case for r in records] == ["liver_0", "liver_1"]
    assert records[1].image_path.name == "liver_1.nii.gz"
    assert dataset_modality(root) == "mri"
    assert parse_labels({"labels": {"0": "background", "1": "liver", "2": "cancer"}}) == \
        {"background": [0], "liver": [1], "cancer": [2]}
    lists = make_dataset(tmp_path / "lists", cases=1, labels_style="list")
    assert len(read_dataset(lists)) == 1
    assert parse_labels(json.loads((lists / "dataset.json").read_text()))["liver"] == [1, 2]
    with pytest.raises(DataError, match="dataset.json.*label 'liver'"):
        parse_labels({"labels": {"liver": "one"}}, lists / "dataset.json")


def test_load_case_mask_geometry_and_liver_labels(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=1, spacing=(2.0, 2.5, 3.0))
    record = read_dataset(root)[0]
    case = load_case(record)
    label = np.asarray(nib.load(str(record.label_path)).dataobj)
    assert case.mask.dtype == bool and case.mask.sum() == (label > 0).sum()
    assert case.spacing == (2.0, 2.5, 3.0)
    assert case.label_values == [0, 1, 2]
    assert np.allclose(case.affine[:3, 3], [-10, 5, 20])
    only_liver = load_case(record, liver_labels=[1])
    assert only_liver.mask.sum() == (label == 1).sum() < case.mask.sum()
    assert liver_mask(np.array([0, 1, 2, 6]), [6]).tolist() == [False, False, False, True]


def test_image_without_label_names_the_image(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=2)
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case_001_0000\.nii\.gz: no label"):
        read_dataset(root)


def test_label_shape_and_affine_mismatch_name_the_label(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=2)
    label_path = root / "labelsTr" / "case_000.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.eye(4)), str(label_path))
    records = read_dataset(root)
    with pytest.raises(DataError, match=r"labelsTr/case_000\.nii\.gz: label shape \(5, 5, 5\) differs"):
        load_case(records[0])
    img = nib.load(str(records[1].label_path))
    shifted = img.affine.copy()
    shifted[0, 3] += 4.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), str(records[1].label_path))
    with pytest.raises(DataError, match=r"case_001\.nii\.gz: label affine differs"):
        load_case(records[1])


def test_unreadable_file_and_no_liver_name_the_file(tmp_path):
    root = make_dataset(tmp_path / "ds", cases=2)
    bad = root / "imagesTr" / "case_000_0000.nii.gz"
    bad.write_bytes(b"this is not gzip")
    records = read_dataset(root)
    with pytest.raises(DataError, match=r"case_000_0000\.nii\.gz: unreadable NIfTI"):
        load_case(records[0])
    label = records[1].label_path
    img = nib.load(str(label))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(label))
    with pytest.raises(DataError, match=r"case_001\.nii\.gz: no liver voxels"):
        load_case(records[1])
    with pytest.raises(DataError, match=r"case_001\.nii\.gz: no liver voxels \(labels \[7\]\)"):
        load_case(records[1], liver_labels=[7])


def test_dataset_without_liver_is_an_error_naming_the_folder(tmp_path, capsys):
    root = make_dataset(tmp_path / "empty", cases=2)
    for path in (root / "labelsTr").iterdir():
        img = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(path))
    with pytest.raises(DataError, match="no liver voxels"):
        inspect_dataset(root)
    assert inspect_main([str(root), "--json"]) == 2
    assert f"error: {root}: no liver voxels" in capsys.readouterr().err


def test_inspect_json_values_lps(tmp_path, capsys):
    spacing = (2.0, 1.5, 3.0)
    root = make_dataset(tmp_path / "ds", cases=2, spacing=spacing, affine_sign=(-1, -1, 1))
    assert inspect_main([str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["case"] for c in report["cases"]] == ["case_000", "case_001"]
    for c in report["cases"]:
        label = np.asarray(nib.load(c["label"]).dataobj)
        assert c["shape"] == [24, 20, 12] and c["spacing"] == list(spacing)
        assert c["orientation"] == "LPS" and c["labels"] == [0, 1, 2]
        assert c["liver_ml"] == pytest.approx((label > 0).sum() * 2.0 * 1.5 * 3.0 / 1000.0)
    assert report["totals"]["cases"] == 2
    assert report["totals"]["liver_ml_total"] == pytest.approx(sum(c["liver_ml"] for c in report["cases"]))
    assert inspect_main([str(root), "--liver-labels", "2"]) == 0
    assert "LPS" in capsys.readouterr().out


def test_one_parser_reads_every_commands_label_option():
    """`evaluate --liver-labels/--pred-labels`, `data convert --liver-labels`, `data inspect --liver-labels`
    and `--external DIR:N+M` share one parser: the same syntax, an error naming the option."""
    assert parse_label_option("1,2") == [1, 2] and parse_label_option(" 5 , ,6,") == [5, 6]
    assert parse_label_option(None) is None and parse_label_option(" ") is None  # every label > 0
    assert parse_label_option("1+2", "--external", separator="+") == [1, 2]
    for bad in ("liver", "1;2", "1.5", ",", "-1"):
        with pytest.raises(DataError, match="label values") as err:
            parse_label_option(bad, "--pred-labels")
        assert err.value.path == "--pred-labels" and repr(bad) in err.value.problem


def test_bad_label_options_fail_naming_the_option(tmp_path, capsys):
    from benchmark.scoring.evaluate import main as evaluate_main
    from datamodules.convert import main as convert_main

    root = make_dataset(tmp_path / "ds", cases=1)
    assert inspect_main([str(root), "--liver-labels", "liver"]) == 2
    assert "error: --liver-labels: label values must be integers" in capsys.readouterr().err
    assert evaluate_main(["--pred", str(tmp_path), "--gt", str(root), "--pred-labels", "1;2"]) == 2
    assert "error: --pred-labels: label values must be integers" in capsys.readouterr().err
    assert convert_main(["--format", "msd", str(tmp_path / "src"), str(tmp_path / "dst"), "--liver-labels", "-1"]) == 2
    assert "error: --liver-labels: expected label values 0 or above" in capsys.readouterr().err


def test_real_mr_sample_lps(real_data, tmp_path, capsys):
    """TotalSegmentator's MR sample is stored LPS; its liver label is 5 (18,480 voxels, 3 mm iso)."""
    src = real_data / "totalsegmentator"
    root = tmp_path / "real"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "imagesTr" / "mr_0000.nii.gz").symlink_to(src / "example_mr_sm.nii.gz")
    (root / "labelsTr" / "mr.nii.gz").symlink_to(src / "example_seg_mr.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "numTraining": 1}))  # a complete dataset
    assert inspect_main([str(root), "--json", "--liver-labels", "5"]) == 0
    case = json.loads(capsys.readouterr().out)["cases"][0]
    assert case["orientation"] == "LPS" and case["shape"] == [117, 91, 20]
    assert case["liver_voxels"] == 18480
    assert case["liver_ml"] == pytest.approx(18480 * 27 / 1000, rel=1e-4)


def test_ras_spacing_reorders_a_sagittal_file():
    """A file stored (A, S, R) with spacing (0.8, 5.0, 1.2) has RAS spacing (1.2, 0.8, 5.0)."""
    from datamodules.grid import ras_spacing

    affine = np.zeros((4, 4))
    affine[1, 0], affine[2, 1], affine[0, 2], affine[3, 3] = 0.8, 5.0, 1.2, 1.0  # axis 0 -> A, 1 -> S, 2 -> R
    assert ras_spacing(affine, (0.8, 5.0, 1.2)) == (1.2, 0.8, 5.0)
    assert ras_spacing(np.diag([-0.7, -0.7, 3.0, 1.0]), (0.7, 0.7, 3.0)) == (0.7, 0.7, 3.0)  # LPS: same order
