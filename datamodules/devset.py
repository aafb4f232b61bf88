"""`liverbench data devset`: the real development sets (nnU-Net raw layout) from the shared samples.

A DEVELOPMENT set for measuring how phantom-trained models do on real scans (`run --external`,
`liverbench external-eval`), never training data. Built with the project's own converters:

- `OUT/ct`:  CHAOS CT patient 3 (`data convert --format chaos`, DICOM extracted to a temp folder)
             + the TotalSegmentator CT sample (its labels are that model's output).
- `OUT/mri`: the six CHAOS T2-SPIR patients + the TotalSegmentator MR sample.

Both sets use TotalSegmentator's label numbering (1 spleen, 2 right kidney, 3 left kidney,
4 gallbladder, 5 liver, other values named `totalsegmentator_<N>`), so one dataset.json names
every case's labels: CHAOS masks are renumbered into it (CT liver 1 -> 5; T2 liver 1 -> 5,
kidneys stay 2/3, spleen 4 -> 1). Each set is written to a temp folder and moved into place.
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from common.files import DataError

DEFAULT_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
TS_NAMES = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver"}
LIVER = 5
CHAOS_T2_TO_TS = {0: 0, 1: 5, 2: 2, 3: 3, 4: 1}  # chaos_t2/dataset.json: liver, kidneys, spleen
TS = {"ct": ("totalsegmentator/example_ct_sm.nii.gz", "totalsegmentator/example_seg.nii.gz", "totalseg_ct"),
      "mri": ("totalsegmentator/example_mr_sm.nii.gz", "totalsegmentator/example_seg_mr.nii.gz", "totalseg_mr")}


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataError(path, "real sample not found (pass --real DIR / make devset REAL=DIR)")
    return path


def _relabel(label: np.ndarray, mapping: dict[int, int], path: Path) -> np.ndarray:
    values = set(np.unique(label).tolist())
    unknown = sorted(values - set(mapping))
    if unknown:
        raise DataError(path, f"unexpected label values {unknown} (expected {sorted(mapping)})")
    lut = np.zeros(max(mapping) + 1, np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[label.astype(np.int64)]


def _chaos_ct(real: Path, tmp: Path):
    """(image path, liver mask) of CHAOS CT patient 3 through `data convert --format chaos`."""
    import nibabel as nib

    from datamodules.convert import convert

    patient = _need(real / "chaos_ct_3" / "Train_Sets" / "CT" / "3")
    src = tmp / "chaos" / "Train_Sets" / "CT" / "3"
    src.mkdir(parents=True)
    with tarfile.open(_need(patient / "DICOM_anon.tar.xz")) as tar:
        tar.extractall(src, filter="data")
    if not (src / "DICOM_anon").is_dir():
        raise DataError(patient / "DICOM_anon.tar.xz", "expected the archive to hold DICOM_anon/")
    (src / "Ground").symlink_to(_need(patient / "Ground"), target_is_directory=True)
    out = convert("chaos", tmp / "chaos", tmp / "chaos_nnunet", modality="ct")
    image = out / "imagesTr" / "chaos_ct_3_0000.nii.gz"
    return image, np.asarray(nib.load(str(out / "labelsTr" / "chaos_ct_3.nii.gz")).dataobj)


def _ts_case(real: Path, modality: str):
    """(image path, multi-organ label on the image grid, case name) of a TotalSegmentator sample."""
    from datamodules.convert.dataset_writer import load_label_on_image

    image, label, case = TS[modality]
    image, label = _need(real / image), _need(real / label)
    return image, load_label_on_image(label, image).astype(np.uint8), case


def _labels(values: set[int]) -> dict[str, int]:
    """nnU-Net labels (consecutive values) in TotalSegmentator's numbering."""
    top = max(values | set(TS_NAMES))
    return {"background": 0, **{TS_NAMES.get(v, f"totalsegmentator_{v}"): v for v in range(1, top + 1)}}


def _write(out: Path, modality: str, cases: list, source: str) -> Path:
    """Write cases [(case, image path, label array)] as OUT/<modality> (DatasetWriter: staged, then
    moved in; only its own files are replaced)."""
    from datamodules.convert.dataset_writer import DatasetWriter

    writer = DatasetWriter(out / modality, modality, name=f"LiverBench_devset_{modality}")
    values: set[int] = set()
    for case, image, label in cases:
        if not (label == LIVER).any():
            raise DataError(image, f"no liver voxels (label {LIVER}) after renumbering")
        writer.add(case, image, label)
        values |= set(np.unique(label).tolist()) - {0}
    return writer.finish(labels=_labels(values), source=source, liver_label=LIVER,
                         description="development set for measuring transfer to real scans; never training data")


def build_devset(real: str | Path = DEFAULT_REAL, out: str | Path = "data/devset",
                 modalities: tuple[str, ...] = ("ct", "mri")) -> dict[str, Path]:
    """Write OUT/ct and OUT/mri from the shared real samples; returns {modality: folder}."""
    import nibabel as nib

    from datamodules.readers import read_dataset

    real, out = _need(Path(real).expanduser().resolve()), Path(out)
    built: dict[str, Path] = {}
    if "ct" in modalities:
        with tempfile.TemporaryDirectory(prefix="liverbench-devset-") as tmp:
            image, mask = _chaos_ct(real, Path(tmp))
            cases = [("chaos_ct_3", image, _relabel(mask, {0: 0, 1: LIVER}, image))]
            ts_image, ts_label, ts_case = _ts_case(real, "ct")
            cases.append((ts_case, ts_image, ts_label))
            built["ct"] = _write(out, "ct", cases, "CHAOS CT patient 3 (manual) + TotalSegmentator CT sample "
                                                   "(model output)")
    if "mri" in modalities:
        cases = []
        for record in read_dataset(_need(real / "chaos_t2")):
            label = np.asarray(nib.load(str(record.label_path)).dataobj)
            cases.append((record.case, record.image_path, _relabel(label, CHAOS_T2_TO_TS, record.label_path)))
        ts_image, ts_label, ts_case = _ts_case(real, "mri")
        cases.append((ts_case, ts_image, ts_label))
        built["mri"] = _write(out, "mri", cases, "CHAOS T2-SPIR patients 01 02 03 05 08 10 (manual) + "
                                                 "TotalSegmentator MR sample (model output)")
    return built


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="liverbench data devset", description=__doc__.splitlines()[0])
    p.add_argument("--real", default=str(DEFAULT_REAL), help=f"the shared real samples (default: {DEFAULT_REAL})")
    p.add_argument("--out", default="data/devset", help="output folder; writes OUT/ct and OUT/mri")
    p.add_argument("--modalities", default="ct,mri", help="comma list of ct, mri (default: ct,mri)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    if not modalities or set(modalities) - {"ct", "mri"}:
        p.error(f"--modalities must be a comma list of ct, mri, got {args.modalities!r}")
    try:
        built = build_devset(args.real, args.out, modalities)
    except DataError as exc:
        print(f"error: {exc.path}: {exc.problem}", file=sys.stderr)
        return 2
    for modality, folder in built.items():
        n = len(list((folder / "labelsTr").glob("*.nii.gz")))
        print(f"{modality}: {n} cases -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
