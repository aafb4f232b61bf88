"""LightningDataModules for liver segmentation: `LiverDataModule` and one per modality.

Cases are split by patient, preprocessed once (MONAI, config in `dm.preprocessing`) and cached;
training draws a fixed number of random 2D slices or 3D patches per epoch, validation and test
yield whole volumes so evaluation is per patient in 3D.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
from monai.data import DataLoader

from common.files import DataError
from datamodules.datasets import (PatchDataset, SliceDataset, VolumeCache, VolumeDataset, cached_json,
                                  default_cache_root, file_key)
from datamodules.grid import ras_spacing
from datamodules.readers import CaseRecord, check_headers, dataset_modality, load_case, read_dataset
from datamodules.splits import load_split, save_split, split_patients
from datamodules.transforms import (PRESETS, build_augmentation, fit_fingerprint, foreground_sample,
                                    preprocessing_config)
from datamodules.volumes import read_geometry

DEFAULT_PATCH = {("cpu", 2): (128, 128), ("cpu", 3): (64, 64, 64),
                 ("gpu", 2): (256, 256), ("gpu", 3): (128, 128, 64)}
# Default phantom: rendered directly at the cpu preset's resolution (MRI with realistic thick
# slices), so generation takes seconds; other presets get the native (fine) phantom.
PHANTOM_SPACING = {("cpu", "ct"): (3.0, 3.0, 3.0), ("cpu", "mri"): (3.0, 3.0, 6.0)}
PHANTOM_CASES = {"ct": 20, "mri": 10}  # patients; MRI writes a T1 and a T2 case per patient
TEST_PHANTOM_PREFIX, TEST_PHANTOM_SEED_OFFSET = "phantomtest", 1000  # held-out test phantom: own ids and seed


class LiverDataModule(L.LightningDataModule):
    """Dataset folder (nnU-Net raw / MSD layout) -> patient-level splits -> cached preprocessed
    volumes -> 2D slice or 3D patch training batches and whole-volume val/test batches.

    Args:
        data_dir: dataset folder; None = the phantom of `modality`, generated once into the cache.
        modality: "ct" or "mri" (selects intensity normalisation).
        dims: 2 (axial slices) or 3 (patches).
        preset: "cpu" (3 mm isotropic), "gpu" (1.5 mm in-plane) or "median" (dataset median spacing).
        target_spacing: explicit (x, y, z) spacing in mm, overrides the preset.
        advanced_preprocessing: fingerprint-based CT / foreground z-score MRI normalisation, body crop.
        augmentation: False/"none", True/"paper" (rotation, flip, scaling) or "nnunet" (full set).
        batch_size: training batch size (val/test are always 1 whole volume).
        patch_size: training crop size, (H, W) or (D, H, W); None = preset default.
        samples_per_epoch: training samples per epoch (so budgets are counted in steps).
        liver_oversample: probability that a sample is drawn around liver.
        val_margin_mm: validation during training sees each validation volume cropped to its liver's
            bounding box plus this margin (None: whole volumes); val_slice_stride: and, for 2D models,
            every k-th axial slice. Cheap, fixed validation points for the learning curve (test: whole).
        num_workers: DataLoader workers (0 measured fastest on 2 cores; see docs/data.md).
        cache: "memory" or "disk" (memory-mapped `.npy` under `$LIVERBENCH_CACHE/preprocessed`).
        seed: training-sample order and augmentation (the runner passes the run's seed).
        split_seed: the patient split's shuffle, separate from `seed` so every seed and variant is
            tested on the same patients.
        val_fraction, test_fraction: patient fractions; num_folds/fold: k-fold after the test hold-out.
        split_file: JSON split to load if it exists, else where to save the new split.
        liver_labels: label values that count as liver; None = those named in dataset.json
            (liver, lesion, tumour), or every label > 0 when it declares no labels.
        phantom_cases: patients in the default phantom (None: 20 CT / 10 MRI patients = 20 cases).
        phantom_spacing: its voxel spacing (None: 3 mm CT, 3x3x6 mm MRI for preset cpu, else native).
        phantom_seed: the phantom's seed (fixed, so `seed` varies training, not the data).
        phantom_test_cases: default phantom only: test on this many patients of a separate phantom
            (its own seed and case ids, generated once), and split `phantom_cases` into train/val only.
            None: the test patients are `test_fraction` of `phantom_cases`.
        phantom_randomised: share of the training phantom's scans rendered SynthSeg-style (a random
            intensity per tissue, in the modality's scale; docs/phantom.md); the test phantom stays realistic.
    """

    def __init__(self, data_dir: str | None = None, modality: str = "ct", dims: int = 2, preset: str = "cpu",
                 target_spacing: list[float] | None = None, advanced_preprocessing: bool = False,
                 augmentation: bool | str = False, batch_size: int = 16, patch_size: list[int] | None = None,
                 samples_per_epoch: int = 256, liver_oversample: float = 0.5, val_margin_mm: float | None = None,
                 val_slice_stride: int = 1, num_workers: int = 0,
                 cache: str = "memory", seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 num_folds: int | None = None, fold: int = 0, split_file: str | None = None,
                 liver_labels: list[int] | None = None, phantom_cases: int | None = None,
                 phantom_spacing: list[float] | None = None, phantom_seed: int = 0,
                 phantom_test_cases: int | None = None, phantom_randomised: float = 0.0, split_seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        if modality not in ("ct", "mri"):
            raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
        if val_margin_mm is not None and val_margin_mm < 0 or val_slice_stride < 1:
            raise ValueError(f"val_margin_mm must be >= 0 (or None) and val_slice_stride >= 1, "
                             f"got {val_margin_mm} and {val_slice_stride}")
        if not 0 <= phantom_randomised <= 1:
            raise ValueError(f"phantom_randomised must be a share in [0, 1], got {phantom_randomised!r}")
        if cache not in ("memory", "disk"):
            raise ValueError(f"cache must be 'memory' or 'disk', got {cache!r}")
        build_augmentation(dims, augmentation)  # fail now on an unknown recipe, not in setup()
        self.modality, self.dims, self.preset = modality, dims, preset
        self.patch_size = tuple(patch_size) if patch_size else DEFAULT_PATCH[("gpu" if preset == "gpu" else "cpu", dims)]
        if len(self.patch_size) != dims:
            raise ValueError(f"patch_size {self.patch_size} must have {dims} values for dims={dims}")
        self.liver_labels = list(liver_labels) if liver_labels is not None else None
        self.data_dir: Path | None = Path(data_dir) if data_dir is not None else None
        self.records: list[CaseRecord] = []
        self.split: dict[str, list[str]] = {}
        self.preprocessing: dict[str, Any] = {}
        self._restored: dict[str, Any] = {}
        self._cache: VolumeCache | None = None
        self._volumes: dict[str, list] = {}
        self._train_dataset = None
        self._test_cases: list[str] | None = None

    # ---- data location ------------------------------------------------------------------
    def _phantom(self, cases: int, seed: int, prefix: str, randomised_share: float = 0.0) -> Path:
        from datamodules.phantom import phantom_cache_dir, write_phantom_dataset

        hp = self.hparams
        spacing = tuple(hp.phantom_spacing) if hp.phantom_spacing else PHANTOM_SPACING.get((self.preset, self.modality))
        out = Path(phantom_cache_dir(self.modality, cases, seed, spacing, prefix, randomised_share))
        if not (out / "dataset.json").is_file():  # written last: marks a complete dataset
            write_phantom_dataset(out, modality=self.modality, cases=cases, seed=seed, spacing=spacing, prefix=prefix,
                                  randomised_share=randomised_share)
        return out

    def _phantom_dir(self) -> Path:
        hp = self.hparams
        return self._phantom(hp.phantom_cases or PHANTOM_CASES[self.modality], hp.phantom_seed, "phantom",
                             hp.phantom_randomised)

    def _test_phantom_dir(self) -> Path | None:
        """The held-out test phantom (`phantom_test_cases`), or None when testing on a split."""
        hp = self.hparams
        if hp.data_dir is not None or not hp.phantom_test_cases:
            return None
        return self._phantom(hp.phantom_test_cases, hp.phantom_seed + TEST_PHANTOM_SEED_OFFSET, TEST_PHANTOM_PREFIX)

    def prepare_data(self) -> None:
        if self.hparams.data_dir is None:
            self._phantom_dir()
            self._test_phantom_dir()

    # ---- split and preprocessing config -------------------------------------------------
    def _prepare(self) -> None:
        if self.records:
            return
        hp = self.hparams
        self.data_dir = Path(hp.data_dir) if hp.data_dir is not None else self._phantom_dir()
        declared = dataset_modality(self.data_dir)
        if declared is not None and declared != self.modality:
            warnings.warn(f"{self.data_dir}: dataset.json declares {declared!r}, using modality {self.modality!r}")
        self.records = read_dataset(self.data_dir, self.liver_labels)
        test_dir = self._test_phantom_dir()
        if test_dir is not None:
            test_records = read_dataset(test_dir, self.liver_labels)
            self._test_cases = [r.case for r in test_records]
            self.records += test_records
        if self.liver_labels is None and self.records[0].liver_labels is not None:
            self.liver_labels = list(self.records[0].liver_labels)  # named in dataset.json
        self.split = self._restored.get("split") or self._make_split()
        # every split before training (train and validation are decoded then too), the test split's
        # files read to their end: a truncated test scan must not be found after training
        check_headers(self.records, whole=self.split.get("test", []))
        self.preprocessing = self._restored.get("preprocessing") or self._fit_config()
        self._cache = VolumeCache(self.preprocessing, self.liver_labels, hp.cache)

    def _make_split(self) -> dict[str, list[str]]:
        hp = self.hparams
        if hp.split_file and Path(hp.split_file).is_file():
            return load_split(hp.split_file, self.records)
        if self._test_cases is None:
            split = split_patients(self.records, hp.val_fraction, hp.test_fraction, hp.split_seed, hp.num_folds, hp.fold)
        else:  # train/val from the training phantom; the test phantom is the test split
            held_out = set(self._test_cases)
            training = [r for r in self.records if r.case not in held_out]
            split = split_patients(training, hp.val_fraction, 0.0, hp.split_seed, hp.num_folds, hp.fold)
            split["test"] = sorted(held_out)
        if hp.split_file:
            save_split(hp.split_file, split)
        return split

    def _fit_config(self) -> dict[str, Any]:
        """Fingerprint from the training split only (no test statistics leak into preprocessing)."""
        hp = self.hparams
        train = self.split_records("train")
        need_intensity = hp.advanced_preprocessing and self.modality == "ct"

        def compute():
            samples = (foreground_sample(c.image, c.mask, seed=i)
                       for i, c in enumerate(load_case(r, self.liver_labels) for r in train)) if need_intensity else ()
            spacings = [ras_spacing(g.affine, g.spacing) for g in (read_geometry(r.image_path) for r in train)]
            return fit_fingerprint(spacings, samples)

        key = "fingerprint-" + file_key("ras-spacing", self.liver_labels, need_intensity,
                                        *[p for r in train for p in (Path(r.image_path), Path(r.label_path))])
        root = default_cache_root() / "preprocessed" if hp.cache == "disk" else None
        fingerprint = cached_json(root, key, compute)
        return preprocessing_config(self.modality, hp.preset, hp.target_spacing, hp.advanced_preprocessing,
                                    fingerprint)

    def split_records(self, name: str) -> list[CaseRecord]:
        by_case = {r.case: r for r in self.records}
        return [by_case[c] for c in self.split.get(name, [])]

    @property
    def test_records(self) -> list[CaseRecord]:
        self._prepare()
        return self.split_records("test")

    def test_set_info(self) -> dict:
        """result.json `test_set`: which patients every variant and seed is tested on."""
        self._prepare()
        test = self.split_records("test")
        fixed = self._test_cases is not None
        return {"name": self._test_phantom_dir().name if fixed else str(self.data_dir),
                "n_patients": len({r.patient for r in test}), "n_cases": len(test),
                "split_seed": None if fixed else self.hparams.split_seed, "fixed": True}

    # ---- volumes and datasets -----------------------------------------------------------
    def volumes(self, name: str) -> list:
        """Preprocessed volumes of one split (computed once, then served from the cache)."""
        self._prepare()
        if name not in self._volumes:
            self._volumes[name] = [self._cache.get(r) for r in self.split_records(name)]
        return self._volumes[name]

    def setup(self, stage: str | None = None) -> None:
        self._prepare()
        names = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for name in names.get(stage, ("train", "val", "test")):
            self.volumes(name)

    def train_dataset(self):
        if self._train_dataset is None:
            hp = self.hparams
            cls = SliceDataset if self.dims == 2 else PatchDataset
            augment = build_augmentation(self.dims, hp.augmentation)
            self._train_dataset = cls(self.volumes("train"), self.patch_size, hp.samples_per_epoch,
                                      hp.liver_oversample, augment, seed=hp.seed)
        return self._train_dataset

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), self.hparams.batch_size, shuffle=False)

    def _eval_loader(self, name: str, **view) -> DataLoader:
        if not self.split.get(name):
            self._prepare()
        if not self.split.get(name):
            raise DataError(self.data_dir, f"the {name!r} split is empty (set {name}_fraction > 0)")
        return DataLoader(VolumeDataset(self.volumes(name), **view), batch_size=1, shuffle=False, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        hp = self.hparams
        return self._eval_loader("val", margin_mm=hp.val_margin_mm,
                                 slice_stride=hp.val_slice_stride if self.dims == 2 else 1)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    # ---- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._prepare()
        return {"preprocessing": self.preprocessing, "split": self.split,
                "data_dir": str(self.data_dir) if self.data_dir else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Reuse a checkpoint's split and preprocessing (re-preprocess if they differ from ours)."""
        self._restored = {k: state_dict[k] for k in ("preprocessing", "split") if state_dict.get(k)}
        if self.records and (self._restored.get("preprocessing", self.preprocessing) != self.preprocessing
                             or self._restored.get("split", self.split) != self.split):
            self.records, self._volumes, self._train_dataset = [], {}, None


class CTDataModule(LiverDataModule):
    """`LiverDataModule` for CT (liver-window or fingerprint normalisation); default data: CT phantom."""

    def __init__(self, **kwargs: Any):
        if kwargs.pop("modality", None) not in (None, "ct"):
            raise ValueError("CTDataModule is for modality 'ct'; use LiverDataModule for others")
        super().__init__(modality="ct", **kwargs)


class MRIDataModule(LiverDataModule):
    """`LiverDataModule` for MRI (per-image z-score); default data: MRI phantom (T1 and T2 per patient)."""

    def __init__(self, **kwargs: Any):
        if kwargs.pop("modality", None) not in (None, "mri"):
            raise ValueError("MRIDataModule is for modality 'mri'; use LiverDataModule for others")
        super().__init__(modality="mri", **kwargs)


__all__ = ["LiverDataModule", "CTDataModule", "MRIDataModule"]
