"""Phantom generator: determinism, anatomy statistics, CT/MRI contrast, dataset layout, CLI."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from common.files import DataError
from datamodules.phantom import GENERATOR_VERSION, generate_case, main, phantom_cache_dir, write_phantom_dataset
from datamodules.phantom.tissues import T

COARSE = (5.0, 5.0, 5.0)


def _centroid_x(case, mask):
    idx = np.argwhere(mask)
    return float(nib.affines.apply_affine(case.affine, idx.mean(0))[0])


def _median(case, code):
    return float(np.median(case.image[case.tissue == code]))


def test_same_seed_same_case_other_seed_differs():
    a = generate_case(3, "ct", COARSE)
    b = generate_case(3, "ct", COARSE)
    c = generate_case(4, "ct", COARSE)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert np.array_equal(a.affine, b.affine) and a.params == b.params
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)
    assert a.params["liver_ml"] != c.params["liver_ml"]


def test_dataset_files_identical_byte_for_byte(tmp_path):
    """Same seed, different folders: every written file (gzip headers included) is identical."""
    for name in ("a", "b"):
        write_phantom_dataset(tmp_path / name, "ct", cases=2, seed=7, spacing=6.0)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 6
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_liver_size_position_and_neighbours(seed):
    case = generate_case(seed, "ct", COARSE, fov="full")
    liver = case.label > 0
    vox_ml = np.prod(np.abs(np.diag(case.affine)[:3])) / 1000
    assert 1000 <= liver.sum() * vox_ml <= 2200
    assert case.params["liver_ml"] == pytest.approx(liver.sum() * vox_ml, abs=0.1)
    assert nib.aff2axcodes(case.affine) == ("R", "A", "S")
    # RAS: the liver lies on the patient's right (+x), the spleen on the left (-x)
    body_x = _centroid_x(case, case.tissue != T.AIR)
    assert _centroid_x(case, liver) > body_x + 30
    assert _centroid_x(case, case.tissue == T.SPLEEN) < body_x - 60
    spleen_ml = (case.tissue == T.SPLEEN).sum() * vox_ml
    assert 100 <= spleen_ml <= 320
    # full field of view: the whole liver is inside the scan, lungs above it
    assert not liver[:, :, 0].any() and not liver[:, :, -1].any()
    top = np.nonzero(liver.any((0, 1)))[0].max()
    assert (case.tissue[:, :, min(top + 3, liver.shape[2] - 1)] == T.LUNG).any()
    extent = (np.ptp(np.nonzero(liver.any((0, 1)))[0]) + 1) * abs(case.affine[2, 2])
    assert 110 <= extent <= 210


def test_lesions_are_inside_the_liver():
    found = 0
    for seed in range(12):
        case = generate_case(seed, "ct", (4.0, 4.0, 4.0), fov="full")
        lesion = case.label == 2
        if not lesion.any():
            continue
        comps, n = ndimage.label(lesion)
        liver_only = ndimage.binary_dilation(case.label == 1, iterations=1)
        for i in range(1, n + 1):
            assert (liver_only & (comps == i)).any(), f"seed {seed}: lesion {i} not touching liver"
        assert set(np.unique(case.tissue[lesion])) <= {T.LESION_HYPO, T.LESION_HYPER, T.LESION_CYST}
        found += 1
    assert found >= 3
    none = generate_case(0, "ct", COARSE, lesions=0)
    assert not (none.label == 2).any() and none.params["lesions"] == []


def test_ct_hounsfield_units_per_tissue():
    case = generate_case(2, "ct", (3.0, 3.0, 3.0), fov="full", phase="portal")
    assert case.image.dtype == np.int16 and case.params["appearance"]["phase"] == "portal"
    steatosis = case.params["appearance"]["steatosis_hu"]  # fatty liver lowers its HU (20 % of cases)
    assert 90 <= _median(case, T.LIVER) + steatosis <= 155
    assert 95 <= _median(case, T.SPLEEN) <= 155
    assert -125 <= _median(case, T.SUBCUT_FAT) <= -80
    assert 40 <= _median(case, T.MUSCLE) <= 70
    assert -870 <= _median(case, T.LUNG) <= -730
    assert _median(case, T.AORTA) > _median(case, T.LIVER)
    assert _median(case, T.BONE_CORTICAL) > 400
    # no threshold separates liver from spleen: their HU distributions overlap
    liver, spleen = case.image[case.tissue == T.LIVER], case.image[case.tissue == T.SPLEEN]
    assert np.percentile(spleen, 75) > np.percentile(liver, 25)
    native = generate_case(2, "ct", (3.0, 3.0, 3.0), fov="full", phase="native")
    assert 40 <= _median(native, T.LIVER) + steatosis <= 75 and 33 <= _median(native, T.SPLEEN) <= 60
    assert np.array_equal(native.label, case.label)


def test_mri_t1_t2_contrast_and_shared_anatomy():
    t1 = generate_case(6, "t1", (4.0, 4.0, 6.0), fov="full", mr_variant="t1_in")
    t2 = generate_case(6, "t2", (4.0, 4.0, 6.0), fov="full", mr_variant="t2_fs")
    assert np.array_equal(t1.label, t2.label) and np.array_equal(t1.affine, t2.affine)
    assert _median(t1, T.LIVER) > _median(t1, T.SPLEEN)
    assert _median(t2, T.SPLEEN) > _median(t2, T.LIVER)
    assert _median(t1, T.SUBCUT_FAT) > _median(t1, T.LIVER)  # T1: fat bright
    assert _median(t2, T.GALLBLADDER) > _median(t2, T.LIVER)  # T2: fluid bright
    assert t1.image.min() >= 0 and t1.image.dtype == np.int16


def test_mri_gut_contents_range_below_and_above_the_liver():
    """Stomach contents are drawn per case from a range that straddles the liver on T1 and on T2 (generator v3)."""
    for scan in ("t1", "t2"):
        ratios = [_median(c, T.GI_FLUID) / _median(c, T.LIVER)
                  for c in (generate_case(s, scan, 8.0, fov="full", lesions=0) for s in range(8))]
        assert min(ratios) < 0.9 and max(ratios) > 1.1, (scan, ratios)


def test_liver_vessel_trees_are_dense():
    """Every portal branch and hepatic vein sends side branches into the liver (generator v4): vessels are
    2.4-4.1 % of the liver label at 4 mm for seeds 0-5, where v3's few trunks were 1.1-1.7 %."""
    for seed in range(6):
        case = generate_case(seed, "ct", 4.0, fov="full", lesions=0)
        share = np.isin(case.tissue, (T.PORTAL_VEIN, T.HEPATIC_VEIN)).sum() / (case.label == 1).sum()
        assert share > 0.02, (seed, share)


def test_ct_contrast_phases():
    cases = {ph: generate_case(2, "ct", (3.0, 3.0, 3.0), fov="full", phase=ph)
             for ph in ("native", "arterial", "portal", "delayed")}
    aorta = {ph: _median(c, T.AORTA) for ph, c in cases.items()}
    liver = {ph: _median(c, T.LIVER) for ph, c in cases.items()}
    assert aorta["arterial"] > 200 > aorta["portal"] > aorta["native"]
    assert liver["portal"] > liver["native"] and liver["delayed"] > liver["native"]
    drawn = {generate_case(s, "ct", 8.0).params["appearance"]["phase"] for s in range(12)}
    assert len(drawn) >= 3  # the default phantom mixes phases
    with pytest.raises(ValueError, match="phase"):
        generate_case(0, "ct", 8.0, phase="venous")


def test_mri_sequence_variants():
    kw = dict(spacing=(3.0, 3.0, 6.0), fov="full")
    t1in = generate_case(6, "t1", mr_variant="t1_in", **kw)
    opp = generate_case(6, "t1", mr_variant="t1_opposed", **kw)
    post = generate_case(6, "t1", mr_variant="t1_post_fs", **kw)
    nofs = generate_case(6, "t2", mr_variant="t2_nofs", **kw)
    fs = generate_case(6, "t2", mr_variant="t2_fs", **kw)
    rel = lambda c, code: _median(c, code) / _median(c, T.LIVER)
    # opposed phase: fat/water borders cancel (India ink), so the fat rim next to muscle darkens
    border = ndimage.binary_dilation(t1in.tissue == T.MUSCLE) & (t1in.tissue == T.SUBCUT_FAT)
    assert np.median(opp.image[border]) / _median(opp, T.SUBCUT_FAT) < \
        0.9 * np.median(t1in.image[border]) / _median(t1in, T.SUBCUT_FAT)
    assert rel(post, T.AORTA) > 1.2 and rel(t1in, T.AORTA) < 1.0  # contrast-enhanced vessels
    assert rel(post, T.SUBCUT_FAT) < 0.8 < rel(t1in, T.SUBCUT_FAT)  # fat saturated after contrast
    assert rel(nofs, T.SUBCUT_FAT) > max(1.2, 1.5 * rel(fs, T.SUBCUT_FAT))  # T2 without / with fat suppression
    assert {c.params["appearance"]["variant"] for c in (t1in, opp, post, nofs, fs)} == \
        {"t1_in", "t1_opposed", "t1_post_fs", "t2_nofs", "t2_fs"}
    with pytest.raises(ValueError, match="mr_variant"):
        generate_case(0, "t1", 8.0, mr_variant="t2_fs")


def test_noise_follows_the_native_voxel_size():
    """A coarse grid stands for many native voxels, so it carries less noise (as resampling does)."""
    kw = dict(fov="full", phase="portal")
    noisy, clean = generate_case(5, "ct", (4.0, 4.0, 4.0), **kw), generate_case(5, "ct", (4.0, 4.0, 4.0), noise=0, **kw)
    look, native = noisy.params["appearance"], noisy.params["native_spacing"]
    expected = look["noise_hu"] / np.sqrt(64.0 / np.prod(native))  # sigma / sqrt(native voxels per grid voxel)
    assert look["noise_hu_on_grid"] == pytest.approx(expected, rel=0.02) and expected < 0.5 * look["noise_hu"]
    liver = noisy.tissue == T.LIVER  # same seed, same texture: the difference is the noise alone (+ rounding)
    measured = float(np.std(noisy.image[liver].astype(float) - clean.image[liver]))
    assert measured == pytest.approx(np.sqrt(expected**2 + 1 / 6), rel=0.2)


def test_native_and_explicit_spacing():
    mri = generate_case(1, "t1")
    sx, sy, sz = np.diag(mri.affine)[:3]
    assert 1.4 <= sx <= 1.9 and sx == sy and 5 <= sz <= 9
    case = generate_case(1, "ct", (4.0, 5.0, 6.0))
    assert np.allclose(np.diag(case.affine)[:3], (4, 5, 6))
    # the same patient at another spacing: same anatomy, so about the same liver volume
    v4 = generate_case(1, "ct", 4.0, fov="full").params["liver_ml"]
    v6 = generate_case(1, "ct", 6.0, fov="full").params["liver_ml"]
    assert v4 == pytest.approx(v6, rel=0.06)


def test_random_field_of_view_sometimes_cuts_the_liver():
    cut = [s for s in range(16) if (lambda c: c[:, :, 0].any() or c[:, :, -1].any())(
        generate_case(s, "ct", 6.0).label > 0)]
    assert 1 <= len(cut) <= 10


def test_cli_writes_mri_layout(tmp_path, capsys):
    out = tmp_path / "mri"
    assert main(["--modality", "mri", "--cases", "2", "--out", str(out), "--seed", "3", "--spacing", "6"]) == 0
    names = [f"phantom_mri_{i:03d}_{s}" for i in range(2) for s in ("t1", "t2")]
    for n in names:
        img = nib.load(out / "imagesTr" / f"{n}_0000.nii.gz")
        lab = nib.load(out / "labelsTr" / f"{n}.nii.gz")
        assert np.allclose(img.affine, lab.affine) and img.shape == lab.shape
        assert np.allclose(np.abs(np.diag(img.affine)[:3]), 6.0)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert lab.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2}
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "MRI"} and ds["numTraining"] == 4 and ds["file_ending"] == ".nii.gz"
    assert ds["labels"] == {"background": 0, "liver": 1, "lesion": 2}
    assert ds["patient_ids"]["phantom_mri_001_t2"] == "phantom_mri_001"
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["version"] == GENERATOR_VERSION and meta["seed"] == 3 and set(meta["case_params"]) == set(names)
    assert "wrote phantom_mri_000_t1" in capsys.readouterr().out


def test_cli_ct_knobs_and_errors(tmp_path, capsys):
    out = tmp_path / "ct"
    assert main(["--cases", "1", "--out", str(out), "--spacing", "6", "6", "8", "--phase", "native",
                 "--lesions", "0", "--noise", "0", "--quiet"]) == 0
    img = nib.load(out / "imagesTr" / "phantom_ct_000_0000.nii.gz")
    assert np.allclose(np.diag(img.affine)[:3], (6, 6, 8)) and img.get_data_dtype() == np.int16
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {"0": "CT"}
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["case_params"]["phantom_ct_000"]["appearance"]["noise_hu"] == 0
    assert main(["--out", str(tmp_path / "x"), "--spacing", "1", "2"]) == 2
    assert "1 or 3" in capsys.readouterr().err
    bad = tmp_path / "file"
    bad.write_text("x")
    assert main(["--out", str(bad), "--cases", "1", "--spacing", "6"]) == 2
    assert str(bad) in capsys.readouterr().err
    with pytest.raises(DataError):
        write_phantom_dataset(bad, "ct", 1, spacing=6)
    with pytest.raises(ValueError):
        generate_case(0, "pet")
    with pytest.raises(ValueError, match="mr_variant"):
        write_phantom_dataset(tmp_path / "z", "mri", 1, spacing=6, mr_variant="t1_oposed")  # typo: opposed
    with pytest.raises(TypeError, match="lesion"):
        write_phantom_dataset(tmp_path / "y", "ct", 1, spacing=6, lesion=3)  # typo: lesions


def test_randomised_mode_keeps_anatomy(tmp_path):
    ct = generate_case(2, "ct", COARSE)
    rnd = generate_case(2, "ct", COARSE, randomised=True)
    assert np.array_equal(ct.label, rnd.label) and not np.array_equal(ct.image, rnd.image)
    assert 0 <= rnd.image.min() and rnd.image.max() <= 1000 and rnd.params["appearance"]["randomised"]
    write_phantom_dataset(tmp_path / "r", "ct", 1, spacing=6, randomised=True)
    assert json.loads((tmp_path / "r" / "dataset.json").read_text())["channel_names"] == {"0": "MRI"}


def test_randomised_share_keeps_the_modality_scale_and_the_other_cases(tmp_path):
    """A CT dataset's randomised share stays in HU (the liver window maps it to random contrasts);
    the other scans are byte-identical to the realistic dataset's, and the draw is per case."""
    plain = write_phantom_dataset(tmp_path / "plain", "ct", 6, spacing=6)
    mixed = write_phantom_dataset(tmp_path / "mixed", "ct", 6, spacing=6, randomised_share=0.5)
    meta = json.loads((mixed / "phantom.json").read_text())
    assert json.loads((mixed / "dataset.json").read_text())["channel_names"] == {"0": "CT"}
    drawn = {name: bool(p["appearance"].get("randomised")) for name, p in meta["case_params"].items()}
    assert 0 < sum(drawn.values()) < 6  # 3 of these 6 at seed 0
    for name, randomised in drawn.items():
        a = nib.load(mixed / "imagesTr" / f"{name}_0000.nii.gz").get_fdata()
        b = nib.load(plain / "imagesTr" / f"{name}_0000.nii.gz").get_fdata()
        labels = [nib.load(d / "labelsTr" / f"{name}.nii.gz").get_fdata() for d in (mixed, plain)]
        assert np.array_equal(*labels)
        if randomised:
            assert -250 <= a.min() and a.max() <= 350 and not np.array_equal(a, b)
        else:
            assert np.array_equal(a, b)
    mri = write_phantom_dataset(tmp_path / "mri", "mri", 4, spacing=6, randomised_share=1.0)
    looks = json.loads((mri / "phantom.json").read_text())["case_params"].values()
    assert all(p["appearance"]["scale"] == "unit" for p in looks)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="randomised_share"):
            write_phantom_dataset(tmp_path / "bad", "ct", 1, spacing=6, randomised_share=bad)
    with pytest.raises(ValueError, match="exclude"):
        write_phantom_dataset(tmp_path / "bad", "ct", 1, spacing=6, randomised=True, randomised_share=0.5)
    assert not (tmp_path / "bad").exists()


def test_figure_shows_each_randomisation_level_on_the_same_anatomy(tmp_path):
    """docs/phantom.png: realistic CT/T1/T2 rows and a randomised row whose CT-share draws share the CT
    row's anatomy (same liver outline) but not its look, and differ from each other."""
    from matplotlib.image import imread

    from datamodules.phantom.figure import make_figure, phantom_panels

    rows = phantom_panels(seed=2, spacing=COARSE)
    assert list(rows) == ["ct", "t1", "t2", "randomised"]
    (ct, ct_label, _), (draw1, label1, _), (draw2, label2, _), mr = rows["ct"][0], *rows["randomised"]
    assert np.array_equal(ct_label, label1) and np.array_equal(ct_label, label2)
    assert not np.array_equal(draw1, ct) and not np.array_equal(draw1, draw2)
    assert -250 <= draw1.min() and draw1.max() <= 350 and 0 <= mr[0].min() and mr[0].max() <= 1000
    png = imread(make_figure(tmp_path / "phantom.png", seed=2, spacing=COARSE))
    assert png.shape[0] > png.shape[1] > 500  # 4 rows of 3 panels


def test_cache_dir_names_version_and_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("LIVERBENCH_CACHE", str(tmp_path))
    a = phantom_cache_dir("ct", 20, 0, None)
    assert a.is_relative_to(tmp_path) and f"v{GENERATOR_VERSION}" in str(a)
    assert a != phantom_cache_dir("ct", 20, 0, 3.0) != phantom_cache_dir("mri", 20, 0, 3.0)
    assert phantom_cache_dir("ct", 20, 0, 3.0) == phantom_cache_dir("ct", 20, 0, (3, 3, 3))
    assert a != phantom_cache_dir("ct", 20, 1, None) and a != phantom_cache_dir("ct", 10, 0, None)
    assert a != phantom_cache_dir("ct", 20, 0, None, randomised_share=0.5) != phantom_cache_dir(
        "ct", 20, 0, None, randomised_share=0.25)


def test_phantom_writer_is_atomic_and_keeps_foreign_files(tmp_path, capsys, monkeypatch):
    """Issue 27, items 6 and 7: Ctrl-C or a full disk mid-way leaves no partial dataset (nothing
    `data inspect` would pass) and no traceback; a folder of the user's is refused, never mixed into."""
    import errno

    from datamodules import volumes
    from datamodules.inspect import main as inspect_main
    from datamodules.phantom.command import main

    out = tmp_path / "ph"
    args = ["--out", str(out), "--cases", "2", "--spacing", "6", "--quiet"]
    real = volumes.save_nifti
    calls = []

    def interrupted(img, path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(img, path)

    monkeypatch.setattr(volumes, "save_nifti", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert not out.exists() and list(tmp_path.iterdir()) == []

    def full(img, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(volumes, "save_nifti", full)
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: {out}: No space left on device\n"
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(volumes, "save_nifti", real)
    assert main(args) == 0 and inspect_main([str(out)]) == 0
    (out / "NOTES.txt").write_text("mine")
    assert main(args) == 0 and (out / "NOTES.txt").read_text() == "mine"  # re-written in place
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    assert main(["--out", str(mine), "--cases", "1", "--spacing", "6", "--quiet"]) == 2
    assert f"error: {mine}: folder is not empty and holds no phantom (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
