"""Shared pieces of every converter: the nnU-Net raw writer, liver binarisation, file discovery."""
from __future__ import annotations

import gzip
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from common.files import DataError, atomic_path, atomic_write_json
from datamodules.grid import GRID_ATOL_MM, align_to_grid, same_grid
from datamodules.labels import check_labels, liver_mask
from datamodules.staging import CASE_DIRS, listing, partial_dir, publish, refuse_foreign
from datamodules.volumes import Volume, read_geometry, read_volume, write_mask, write_volume

CHANNEL = {"ct": "CT", "mri": "MRI", "mr": "MRI"}


def natural_key(path: str | Path) -> list:
    """Sort key: 'img2' before 'img10' (CHAOS slice order is the natural order of file names)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", Path(path).name)]


def visible(paths: Iterable[Path]) -> list[Path]:
    """Drop macOS `._*` resource forks and hidden files (the MSD tar contains them)."""
    return [p for p in paths if not p.name.startswith((".", "_"))]


def binarize(label: np.ndarray, liver_labels: list[int] | None, path) -> np.ndarray:
    """Label map → uint8 0/1 liver mask; refuses an empty result (wrong labels or empty file)."""
    label = check_labels(label, path)
    mask = liver_mask(label, liver_labels)
    if not mask.any():
        found = np.unique(label)[:20].tolist()
        raise DataError(path, f"no liver voxels (liver labels {liver_labels or '>0'}, values found {found})")
    return mask.astype(np.uint8)


class DatasetWriter:
    """Writes `imagesTr/<case>_0000.nii.gz`, `labelsTr/<case>.nii.gz` and `dataset.json` into a
    temp folder beside `root`; `finish` moves them into `root`. A conversion that fails half-way
    leaves an existing dataset untouched, and nothing that looks like a dataset in a new folder.

    Into an existing folder the writer updates only its own files: the case files it writes and
    `dataset.json`. Anything else there (notes, `imagesTs/`, predictions) is never touched; a
    folder that holds files but no dataset of this name, or case files that this conversion would
    not write, is refused, naming the folder and that content (docs/data.md).

    `append=True` on an existing dataset of the same channel adds cases to it (the `dicom`
    format converts one series per call)."""

    def __init__(self, root: str | Path, channel: str, name: str = "LiverBench", append: bool = False):
        self.final = Path(root)
        self.channel = CHANNEL.get(channel.lower(), channel)
        self.name = name
        self.append = append
        self.cases: list[str] = []
        self.patients: dict[str, str] = {}
        self.extra: dict = {}
        meta = self.final / "dataset.json"
        self.root = partial_dir(self.final)
        if self.root.exists():
            shutil.rmtree(self.root)
        if meta.is_file():
            old = _read_meta(meta)
            if append:
                old_channel = old.get("channel_names", {}).get("0")
                if old_channel != self.channel:
                    raise DataError(meta, f"existing dataset is {old_channel}, cannot add a {self.channel} case")
                self.cases = sorted(p.name[: -len(".nii.gz")] for p in visible((self.final / "labelsTr").glob("*.nii.gz")))
                self.patients = dict(old.get("patient_ids", {}))
            elif old.get("name") != name:
                raise DataError(self.final, f"already holds dataset {old.get('name')!r}; convert into an empty folder")
        elif self.final.is_dir() and any(self.final.iterdir()):
            raise DataError(self.final, f"folder is not empty and holds no converted dataset ({listing(self.final)}); "
                                        "convert into an empty or new folder")
        for sub in CASE_DIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def image_path(self, case: str) -> Path:
        return self.root / "imagesTr" / f"{case}_0000.nii.gz"

    def label_path(self, case: str) -> Path:
        return self.root / "labelsTr" / f"{case}.nii.gz"

    def add(self, case: str, image: Volume | str | Path, mask: np.ndarray, patient: str | None = None) -> None:
        """`image`: a `Volume` or a NIfTI path (copied byte-exact, gzipped if needed). The label gets
        the image's affine and qform/sform codes, so readers see identical geometry."""
        if isinstance(image, (str, Path)):
            like = read_geometry(image)
        else:
            like = image
        if tuple(mask.shape) != tuple(like.shape):
            raise DataError(self.image_path(case), f"mask shape {mask.shape} != image shape {like.shape}")
        if isinstance(image, (str, Path)):
            copy_nifti(Path(image), self.image_path(case))
        else:
            write_volume(self.image_path(case), image.array, image)
        write_mask(self.label_path(case), mask, like)
        if case not in self.cases:
            self.cases.append(case)
        if patient is not None:
            self.patients[case] = patient

    def finish(self, **extra) -> Path:
        """Write `dataset.json`, move the new files into the dataset folder; returns that folder."""
        if not self.cases:
            raise DataError(self.root, "no cases were converted")
        meta = {
            "name": self.name,
            "channel_names": {"0": self.channel},
            "labels": {"background": 0, "liver": 1},
            "numTraining": len(self.cases),
            "file_ending": ".nii.gz",
            **self.extra,
            **extra,
        }
        if self.patients and any(self.patients.get(c, c) != c for c in self.cases):
            meta["patient_ids"] = {c: self.patients.get(c, c) for c in sorted(self.cases)}
        atomic_write_json(self.root / "dataset.json", meta)
        if self.final.exists():
            refuse_foreign(self.root, self.final, set(self.cases) if self.append else set())
        return publish(self.root, self.final)

    def abort(self) -> None:
        """Remove the temp folder of a failed conversion."""
        shutil.rmtree(self.root, ignore_errors=True)


def _read_meta(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not readable JSON ({exc})") from None


def copy_nifti(src: Path, dst: Path) -> None:
    """Copy a NIfTI as `.nii.gz` without decoding it (gzip of a `.nii` is a valid `.nii.gz`)."""
    with atomic_path(dst, suffix=".nii.gz") as tmp:
        if src.name.endswith(".gz"):
            shutil.copyfile(src, tmp)
        else:
            with open(src, "rb") as fin, gzip.open(tmp, "wb", compresslevel=6) as fout:
                shutil.copyfileobj(fin, fout, length=1 << 20)


def load_label_on_image(label_path: Path, image_path: Path) -> np.ndarray:
    """A label volume checked against its image (shape; the one grid tolerance after reorientation)."""
    img = read_geometry(image_path)
    lab = read_volume(label_path, nan="error")
    if lab.shape == img.shape and not same_grid(lab, img):
        # LiTS: some segmentation headers lack the image's orientation; trust voxel order
        # when the shapes agree and the voxel sizes match.
        if np.allclose(lab.spacing, img.spacing, rtol=0, atol=GRID_ATOL_MM):
            warnings.warn(f"{label_path}: affine differs from {image_path.name}; using voxel order "
                          "(same shape and voxel size)", stacklevel=2)
            return np.asarray(lab.array)
    return align_to_grid(np.asarray(lab.array), lab.affine, img.shape, img.affine, label_path)
