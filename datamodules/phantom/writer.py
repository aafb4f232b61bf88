"""Cases and datasets: `generate_case`, `write_phantom_dataset`, `phantom_cache_dir`."""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from common.files import DataError, atomic_write_json

from .. import volumes
from ..staging import listing, partial_dir, publish, refuse_foreign
from .anatomy import Anatomy, build_anatomy, rngs
from .appearance import CT_PHASES, MR_VARIANTS, render_ct, render_mri, render_randomised
from .tissues import label_lut

GENERATOR_VERSION = "4"
MODALITIES = ("ct", "t1", "t2")
SEQUENCE_CODES = {"ct": 0, "t1": 1, "t2": 2}
LABELS = {"background": 0, "liver": 1, "lesion": 2}
DEFAULT_KNOBS = {"phase": "random", "noise": 1.0, "lesions": 6, "fov": "random", "bias": 1.0, "randomised": False,
                 "randomised_share": 0.0, "mr_variant": "random"}
MR_VARIANT_NAMES = tuple(v for family in MR_VARIANTS.values() for v in family)


@dataclass
class PhantomCase:
    image: np.ndarray  # int16 (X, Y, Z): HU for CT, arbitrary units for MRI
    label: np.ndarray  # uint8 (X, Y, Z): 0 background, 1 liver, 2 lesion
    affine: np.ndarray  # 4x4 RAS
    params: dict
    tissue: np.ndarray | None = field(default=None, repr=False)  # internal tissue codes


def _check_knobs(modality, spacing, phase, noise, lesions, fov):
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if phase not in ("random", *CT_PHASES):
        raise ValueError(f"phase must be 'random' or one of {CT_PHASES}, got {phase!r}")
    if fov not in ("random", "full"):
        raise ValueError(f"fov must be 'random' or 'full', got {fov!r}")
    if noise < 0 or lesions < 0:
        raise ValueError("noise and lesions must be >= 0")
    if spacing is not None and (len(spacing) != 3 or min(spacing) <= 0):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing!r}")


def normalise_spacing(spacing):
    """None, one number or three numbers (mm) -> None or a 3-tuple of floats."""
    if spacing is None:
        return None
    if np.isscalar(spacing):
        spacing = [spacing]
    spacing = [float(s) for s in spacing]
    if len(spacing) == 1:
        spacing = spacing * 3
    return tuple(spacing)


def render(anatomy: Anatomy, seed: int, modality: str, phase="random", noise=1.0, bias=1.0,
           randomised=False, mr_variant="random", hu: bool = False) -> PhantomCase:
    """Appearance for one scan of an existing anatomy (the T1 and T2 of a patient share it).
    `hu`: a randomised CT scan keeps the CT scale (HU), as in a CT dataset's randomised share."""
    rng = rngs(seed, "appearance", SEQUENCE_CODES[modality] + (10 if randomised else 0))
    native = anatomy.params.get("native_spacing")
    if randomised:
        image, look = render_randomised(rng, anatomy.tissue, anatomy.grid, noise, hu=hu and modality == "ct")
    elif modality == "ct":
        image, look = render_ct(rng, anatomy.tissue, anatomy.grid, phase, noise, native)
    else:
        variant = mr_variant if mr_variant in MR_VARIANTS[modality] else "random"
        image, look = render_mri(rng, anatomy.tissue, anatomy.grid, modality, noise, bias, variant, native)
    label = label_lut()[anatomy.tissue]
    params = {**anatomy.params, "modality": modality, "appearance": look,
              "liver_ml": round(float((label > 0).sum()) * anatomy.grid.voxel_ml, 1),
              "lesion_ml": round(float((label == 2).sum()) * anatomy.grid.voxel_ml, 1)}
    return PhantomCase(image, label, anatomy.affine.copy(), params, anatomy.tissue)


def generate_case(seed: int, modality: str = "ct", spacing=None, *, phase: str = "random", noise: float = 1.0,
                  lesions: int = 6, fov: str = "random", bias: float = 1.0, randomised: bool = False,
                  mr_variant: str = "random") -> PhantomCase:
    """One phantom scan. Same seed -> same patient (for any modality and spacing)."""
    spacing = normalise_spacing(spacing)
    _check_knobs(modality, spacing, phase, noise, lesions, fov)
    anatomy = build_anatomy(seed, "ct" if modality == "ct" else "mri", spacing, lesions, fov)
    if mr_variant != "random" and mr_variant not in MR_VARIANTS.get(modality, ()):
        raise ValueError(f"mr_variant for {modality} must be 'random' or one of {MR_VARIANTS.get(modality, ())}, "
                         f"got {mr_variant!r}")
    return render(anatomy, seed, modality, phase, noise, bias, randomised, mr_variant)


def in_randomised_share(seed: int, modality: str, share: float) -> bool:
    """Whether one scan of a dataset with a randomised share is rendered randomised: drawn from
    the case seed alone, so a case's look does not depend on the share of the others."""
    if share <= 0:
        return False
    draw = np.random.default_rng([int(seed), 3, SEQUENCE_CODES[modality]]).random()
    return bool(draw < share)


def case_seed(seed: int, index: int) -> int:
    """Independent per-case seed derived from the dataset seed."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def save_case(case: PhantomCase, out_dir: Path, name: str):
    out_dir = Path(out_dir)
    img = nib.Nifti1Image(case.image, case.affine)
    lab = nib.Nifti1Image(case.label, case.affine)
    for im in (img, lab):
        im.header.set_xyzt_units("mm", "sec")
        im.set_qform(case.affine, code=1)
        im.set_sform(case.affine, code=1)
    volumes.save_nifti(img, out_dir / "imagesTr" / f"{name}_0000.nii.gz")
    volumes.save_nifti(lab, out_dir / "labelsTr" / f"{name}.nii.gz")


def write_phantom_dataset(out_dir, modality: str = "ct", cases: int = 20, seed: int = 0, spacing=None,
                          sequences=("t1", "t2"), progress=None, prefix: str = "phantom", **knobs) -> Path:
    """Write `cases` patients in the nnU-Net raw layout (+ dataset.json, phantom.json).

    MRI: each patient gives `<pid>_t1` and `<pid>_t2` sharing anatomy. dataset.json is written
    last, so its presence marks a complete dataset. `prefix` starts every patient id
    (`<prefix>_<modality>_000`), so a held-out test phantom never shares a case id with training."""
    out_dir = Path(out_dir)
    if modality not in ("ct", "mri"):
        raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
    if cases < 1:
        raise ValueError("cases must be >= 1")
    if isinstance(sequences, str):
        sequences = tuple(s.strip() for s in sequences.split(",") if s.strip())
    if modality == "mri" and (not sequences or set(sequences) - {"t1", "t2"}):
        raise ValueError(f"sequences must be a subset of t1,t2, got {sequences!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(out_dir, "output path exists and is not a folder")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", prefix):
        raise ValueError(f"prefix must be letters and digits, got {prefix!r}")
    spacing = normalise_spacing(spacing)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "phantom.json").is_file():
        raise DataError(out_dir, f"folder is not empty and holds no phantom ({listing(out_dir)}); "
                                 "write into an empty or new folder")
    unknown = set(knobs) - set(DEFAULT_KNOBS)
    if unknown:
        raise TypeError(f"unknown phantom knob(s) {sorted(unknown)}; known: {sorted(DEFAULT_KNOBS)}")
    k = {**DEFAULT_KNOBS, **knobs}
    if k["mr_variant"] not in ("random", *MR_VARIANT_NAMES):
        raise ValueError(f"mr_variant must be 'random' or one of {MR_VARIANT_NAMES}, got {k['mr_variant']!r}")
    _check_knobs("ct", spacing, k["phase"], k["noise"], k["lesions"], k["fov"])
    if not 0 <= k["randomised_share"] <= 1:
        raise ValueError(f"randomised_share must be in [0, 1], got {k['randomised_share']!r}")
    if k["randomised"] and k["randomised_share"]:
        raise ValueError("randomised (every scan, unit scale) and randomised_share (a share of the scans, in the "
                         "modality's scale) exclude each other")
    final, out_dir = out_dir, partial_dir(out_dir)  # staged beside it, moved in at the end
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        _write_cases(out_dir, modality, cases, seed, spacing, sequences, progress, prefix, k)
        if final.exists():
            refuse_foreign(out_dir, final)
        return publish(out_dir, final)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _write_cases(out_dir: Path, modality: str, cases: int, seed: int, spacing, sequences, progress, prefix: str,
                 k: dict) -> None:
    """Every case, then phantom.json and dataset.json, into `out_dir` (the staging folder)."""
    records, patient_ids = {}, {}
    for i in range(cases):
        cs = case_seed(seed, i)
        anatomy = build_anatomy(cs, "ct" if modality == "ct" else "mri", spacing, k["lesions"], k["fov"])
        scans = ["ct"] if modality == "ct" else list(sequences)
        pid = f"{prefix}_{modality}_{i:03d}"
        for scan in scans:
            randomised = k["randomised"] or in_randomised_share(cs, scan, k["randomised_share"])
            case = render(anatomy, cs, scan, k["phase"], k["noise"], k["bias"], randomised, k["mr_variant"],
                          hu=not k["randomised"])
            name = pid if modality == "ct" else f"{pid}_{scan}"
            save_case(case, out_dir, name)
            patient_ids[name] = pid
            records[name] = {"patient": pid, "case_seed": cs, **case.params}
            if progress:
                progress(name)
    channel = "CT" if modality == "ct" and not k["randomised"] else "MRI"
    meta = {"generator": "liverbench.phantom", "version": GENERATOR_VERSION, "modality": modality,
            "seed": seed, "cases": cases, "spacing": spacing, "prefix": prefix,
            "knobs": {**k, "sequences": list(sequences) if modality == "mri" else None},
            "case_params": records}
    atomic_write_json(out_dir / "phantom.json", meta)
    dataset = {"name": f"LiverBenchPhantom_{modality.upper()}", "channel_names": {"0": channel},
               "labels": LABELS, "numTraining": len(records), "file_ending": ".nii.gz",
               "patient_ids": patient_ids,
               "description": f"LiverBench phantom v{GENERATOR_VERSION}, seed {seed}"}
    atomic_write_json(out_dir / "dataset.json", dataset)


def phantom_cache_dir(modality: str, cases: int, seed: int = 0, spacing=None, prefix: str = "phantom",
                      randomised_share: float = 0.0) -> Path:
    """Cache folder for a default phantom: $LIVERBENCH_CACHE (default ~/.cache/liverbench)."""
    root = Path(os.environ.get("LIVERBENCH_CACHE") or Path.home() / ".cache" / "liverbench")
    spacing = normalise_spacing(spacing)
    tag = "native" if spacing is None else "x".join(f"{s:g}" for s in spacing)
    name = f"{modality}_n{cases}_seed{seed}_{tag}" + (f"_rand{randomised_share:g}" if randomised_share else "")
    return root / f"phantom-v{GENERATOR_VERSION}" / (name if prefix == "phantom" else f"{prefix}_{name}")
