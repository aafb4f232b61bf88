"""LiverDataModule: patient-level splits, caching, batch formats, augmentation only in training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import datamodules.datasets as datasets_module
from common.files import DataError
from datamodules import CTDataModule, LiverDataModule, MRIDataModule
from datamodules.readers import read_dataset
from datamodules.splits import split_patients
from test_readers import make_dataset

SMALL = dict(patch_size=[32, 32], batch_size=4, samples_per_epoch=8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 cases of 4 patients (pairs share a patient), shape 40x36x16 at 2x2x3 mm."""
    pids = {f"case_{i:03d}": f"p{i // 2}" for i in range(8)}
    return make_dataset(tmp_path_factory.mktemp("dm") / "ds", cases=8, shape=(40, 36, 16), patient_ids=pids,
                        noise=0.0, body_step=3.0)


def _patients(records, cases):
    by_case = {r.case: r.patient for r in records}
    return {by_case[c] for c in cases}


def test_split_by_patient_and_no_slice_leakage_in_2d(dataset, tmp_path):
    split_file = tmp_path / "split.json"
    dm = LiverDataModule(str(dataset), dims=2, target_spacing=[2.0, 2.0, 3.0], split_file=str(split_file),
                         val_fraction=0.25, test_fraction=0.25, samples_per_epoch=64, patch_size=[48, 48])
    dm.setup("fit")
    records = read_dataset(dataset)
    parts = [_patients(records, dm.split[k]) for k in ("train", "val", "test")]
    assert all(parts) and not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sorted(sum(dm.split.values(), [])) == sorted(r.case for r in records)
    assert json.loads(split_file.read_text()) == dm.split
    # Each case has its own body intensity (40 + 3 i HU, scaled by the CT window): no training
    # slice may carry the body value of a validation or test case.
    body = {f"case_{i:03d}": np.float32((40 + 3 * i + 150) / 400) for i in range(8)}
    held_out = {body[c] for c in dm.split["val"] + dm.split["test"]}
    seen = set()
    for batch in dm.train_dataloader():
        for image in batch["image"]:
            values = set(np.unique(image.numpy()).tolist())
            assert not values & held_out
            seen |= {c for c, b in body.items() if b in values}
    assert seen and seen <= set(dm.split["train"])
    again = LiverDataModule(str(dataset), split_file=str(split_file), seed=123)
    again.setup("validate")
    assert again.split == dm.split  # an existing split file wins over the seed


def test_split_file_with_leak_is_rejected(dataset, tmp_path):
    bad = tmp_path / "split.json"
    bad.write_text(json.dumps({"train": ["case_000", "case_002"], "val": ["case_001"], "test": []}))
    with pytest.raises(DataError, match="split.json: patient 'p0' is in both 'train' and 'val'"):
        LiverDataModule(str(dataset), split_file=str(bad)).setup("fit")


def test_val_train_validates_on_the_training_cases_and_still_guards_the_test_split(dataset, tmp_path):
    """The few-patient cross-validation's split: the curve on the training cases, the test split untouched."""
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["case_002", "case_003"], "val": "train", "test": ["case_004"]}))
    dm = LiverDataModule(str(dataset), split_file=str(split))
    dm.setup("fit")
    assert dm.split == {"train": ["case_002", "case_003"], "val": ["case_002", "case_003"], "test": ["case_004"]}
    split.write_text(json.dumps({"train": ["case_002"], "val": "train", "test": ["case_003"]}))  # same patient
    with pytest.raises(DataError, match="split.json: patient 'p1' is in both 'train' and 'test'"):
        LiverDataModule(str(dataset), split_file=str(split)).setup("fit")
    split.write_text(json.dumps({"train": ["case_002"], "val": "all", "test": []}))
    with pytest.raises(DataError, match='"val": \\[...\\] or "train"'):
        LiverDataModule(str(dataset), split_file=str(split)).setup("fit")


def test_kfold_folds_are_disjoint_and_cover_all_patients(dataset):
    records = read_dataset(dataset)
    folds = [split_patients(records, test_fraction=0.0, num_folds=4, fold=k, seed=3) for k in range(4)]
    vals = [set(f["val"]) for f in folds]
    assert set().union(*vals) == {r.case for r in records}
    assert sum(len(v) for v in vals) == len(records)
    for f in folds:
        assert not set(f["train"]) & set(f["val"]) and not _patients(records, f["train"]) & _patients(records, f["val"])
    dm = LiverDataModule(str(dataset), num_folds=3, fold=2, test_fraction=0.25)
    dm.setup("validate")
    assert len(_patients(records, dm.split["test"])) == 1 and dm.split["val"]
    with pytest.raises(ValueError, match="num_folds"):
        split_patients(records, test_fraction=0.0, num_folds=5)


def test_batch_shapes_2d_and_3d(dataset):
    dm2 = LiverDataModule(str(dataset), dims=2, **SMALL)
    batch = next(iter(dm2.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 1, 32, 32) and set(batch["label"].unique().tolist()) <= {0.0, 1.0}
    dm3 = LiverDataModule(str(dataset), dims=3, patch_size=[16, 16, 8], batch_size=2, samples_per_epoch=4)
    batch = next(iter(dm3.train_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16, 8) and batch["label"].shape == (2, 1, 16, 16, 8)
    assert batch["label"].sum() > 0  # liver oversampling puts liver in the patches
    dm3.setup("test")
    batches = list(dm3.test_dataloader())
    assert [b["case"] for b in batches] == [[c] for c in dm3.split["test"]]
    val = batches[0]
    # 40x36x16 voxels at 2x2x3 mm -> 3 mm isotropic: (n - 1) * s / 3 + 1 voxel centres
    assert val["image"].shape == (1, 1, 27, 24, 16) and val["label"].shape == val["image"].shape
    assert np.allclose(np.diag(val["image"].affine[0].numpy())[:3], 3.0)


def test_cache_second_epoch_and_second_run_do_not_decode(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVERBENCH_CACHE", str(tmp_path / "cache"))
    calls = []
    real = datasets_module.load_case
    monkeypatch.setattr(datasets_module, "load_case", lambda *a, **k: calls.append(a[0].case) or real(*a, **k))
    dm = LiverDataModule(str(dataset), cache="disk", **SMALL)
    dm.setup("fit")
    n_fit = len(dm.split["train"]) + len(dm.split["val"])
    for _epoch in range(2):
        for _ in dm.train_dataloader():
            pass
        for _ in dm.val_dataloader():
            pass
        assert len(calls) == n_fit  # decoded once each, in setup; epochs read the cache
    fresh = LiverDataModule(str(dataset), cache="disk", **SMALL)
    fresh.setup("fit")
    next(iter(fresh.train_dataloader()))
    assert len(calls) == n_fit  # second run: memory-mapped .npy from the disk cache
    assert isinstance(fresh.volumes("train")[0].image, np.memmap)
    np.testing.assert_array_equal(fresh.volumes("val")[0].image, dm.volumes("val")[0].image)


def test_augmentation_changes_training_samples_never_val(dataset):
    plain = LiverDataModule(str(dataset), augmentation=False, seed=5, **SMALL)
    aug = LiverDataModule(str(dataset), augmentation="paper", seed=5, **SMALL)
    a, b = next(iter(plain.train_dataloader())), next(iter(aug.train_dataloader()))
    assert not torch.equal(a["image"], b["image"])
    for x, y in zip(plain.val_dataloader(), aug.val_dataloader()):
        assert torch.equal(x["image"].as_tensor(), y["image"].as_tensor()) and x["case"] == y["case"]


def test_each_loader_worker_gets_its_own_augmentation_stream(dataset):
    """MONAI's worker_init_fn reseeds the dataset per worker; the augmentation must follow."""
    from monai.data.utils import worker_init_fn

    ds = LiverDataModule(str(dataset), augmentation="paper", seed=5, **SMALL).train_dataloader().dataset
    draws = []
    for worker_seed in (101, 202, 101):
        ds.set_random_state(seed=worker_seed)
        draws.append([ds.augment.R.randint(10**9) for _ in range(4)])
    assert draws[0] == draws[2] and draws[0] != draws[1]  # follows the worker's seed, and only it
    assert worker_init_fn.__module__.startswith("monai")  # the mechanism this relies on


def test_state_dict_carries_preprocessing_into_a_new_module(dataset):
    dm = LiverDataModule(str(dataset), target_spacing=[4.0, 4.0, 4.0], **SMALL)
    state = dm.state_dict()
    assert state["preprocessing"]["target_spacing"] == [4.0, 4.0, 4.0]
    json.dumps(state)
    restored = LiverDataModule(str(dataset), seed=9, **SMALL)
    restored.load_state_dict(state)
    restored.setup("validate")
    assert restored.preprocessing == dm.preprocessing and restored.split == dm.split
    vol = restored.volumes("val")[0]
    assert np.allclose(np.diag(vol.affine)[:3], 4.0)


def test_modality_modules_and_hparams(dataset):
    dm = MRIDataModule(data_dir=str(dataset), dims=3, augmentation="nnunet")
    assert dm.modality == "mri" and dm.hparams["modality"] == "mri" and dm.hparams["augmentation"] == "nnunet"
    assert CTDataModule(data_dir=str(dataset)).hparams["modality"] == "ct"
    with pytest.raises(ValueError, match="CTDataModule is for modality 'ct'"):
        CTDataModule(modality="mri")
    with pytest.raises(ValueError, match="patch_size"):
        LiverDataModule(str(dataset), dims=3, patch_size=[32, 32])
    with pytest.raises(ValueError, match="recipe"):
        LiverDataModule(str(dataset), augmentation="heavy")
    with pytest.raises(ValueError, match="preset"):
        LiverDataModule(str(dataset), preset="tpu")


def test_workers_yield_distinct_samples(dataset):
    dm = LiverDataModule(str(dataset), num_workers=2, **SMALL)
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and not torch.equal(batches[0]["image"], batches[1]["image"])


def test_default_data_is_the_cached_phantom(tmp_path, monkeypatch):
    pytest.importorskip("datamodules.phantom")
    monkeypatch.setenv("LIVERBENCH_CACHE", str(tmp_path / "cache"))
    dm = MRIDataModule(phantom_cases=3, val_fraction=0.3, test_fraction=0.3, liver_oversample=1.0, **SMALL)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.data_dir.is_relative_to(tmp_path / "cache") and (dm.data_dir / "dataset.json").is_file()
    assert len(dm.records) == 6  # T1 + T2 per patient, never split apart
    for part in dm.split.values():
        assert {c.rsplit("_", 1)[0] for c in part}.isdisjoint(
            {c.rsplit("_", 1)[0] for other in dm.split.values() if other is not part for c in other})
    assert dm.preprocessing["target_spacing"] == [3.0, 3.0, 3.0]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32)
    assert (batch["label"].sum(dim=(1, 2, 3)) > 0).all()  # liver_oversample=1: every slice shows liver
    stamp = (dm.data_dir / "dataset.json").stat().st_mtime_ns
    again = MRIDataModule(phantom_cases=3, val_fraction=0.3, test_fraction=0.3, **SMALL)
    again.setup("validate")
    assert again.data_dir == dm.data_dir and (dm.data_dir / "dataset.json").stat().st_mtime_ns == stamp


def test_advanced_ct_fingerprint_comes_from_training_cases_only(dataset):
    dm = LiverDataModule(str(dataset), advanced_preprocessing=True, **SMALL)
    dm.setup("fit")
    fp = dm.preprocessing["fingerprint"]
    assert fp["num_cases"] == len(dm.split["train"])
    liver_hu = [40 + 3 * int(c[-3:]) + 70 for c in dm.split["train"]]  # noise-free liver voxels
    assert min(liver_hu) - 1 <= fp["fg_mean"] <= max(liver_hu) + 1
    assert dm.preprocessing["intensity"]["method"] == "ct_fingerprint" and dm.preprocessing["crop_to_body"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[-1] == 16


def test_held_out_test_phantom_is_fixed_across_seeds_and_separate(tmp_path, monkeypatch):
    """`phantom_test_cases`: every seed is tested on the same patients of a separate phantom."""
    pytest.importorskip("datamodules.phantom")
    monkeypatch.setenv("LIVERBENCH_CACHE", str(tmp_path / "cache"))
    kwargs = dict(phantom_cases=4, phantom_test_cases=2, val_fraction=0.25, **SMALL)
    splits = []
    for seed in (0, 1):
        dm = CTDataModule(seed=seed, **kwargs)
        dm.setup("test")
        splits.append(dm.split)
        info = dm.test_set_info()
        assert (info["n_patients"], info["n_cases"], info["fixed"]) == (2, 2, True)
        assert info["name"].startswith("phantomtest_ct_n2_")
    assert splits[0] == splits[1]  # the seed changes sampling, never the split
    split = splits[0]
    assert split["test"] == ["phantomtest_ct_000", "phantomtest_ct_001"]
    assert len(split["train"]) == 3 and len(split["val"]) == 1
    assert all(c.startswith("phantom_ct_") for c in split["train"] + split["val"])
    test_dir = {Path(r.image_path).parent.parent for r in dm.test_records}
    assert len(test_dir) == 1 and test_dir != {dm.data_dir}  # its own folder, generated once


def test_randomised_share_changes_the_training_phantom_only(tmp_path, monkeypatch):
    pytest.importorskip("datamodules.phantom")
    monkeypatch.setenv("LIVERBENCH_CACHE", str(tmp_path / "cache"))
    kwargs = dict(phantom_cases=4, phantom_test_cases=2, val_fraction=0.25, **SMALL)
    plain, mixed = CTDataModule(**kwargs), CTDataModule(phantom_randomised=1.0, **kwargs)
    for dm in (plain, mixed):
        dm.setup("test")
    assert mixed.data_dir != plain.data_dir and mixed.data_dir.name.endswith("_rand1")
    looks = json.loads((mixed.data_dir / "phantom.json").read_text())["case_params"].values()
    assert all(p["appearance"]["scale"] == "hu" for p in looks)
    assert [r.image_path for r in mixed.test_records] == [r.image_path for r in plain.test_records]
    with pytest.raises(ValueError, match="phantom_randomised"):
        CTDataModule(phantom_randomised=2, **kwargs)
