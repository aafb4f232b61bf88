"""Test stage: per-case metrics on the held-out patients, in 3D, in each file's original geometry."""
from __future__ import annotations

from pathlib import Path

from benchmark import records as rec
from benchmark.metrics import SURFACE_CONVENTION, case_metrics, summarise
from datamodules.files import DataError


def score_test_split(module, preprocessing: dict, datamodule, config: dict, folder: Path, record: dict,
               log_images: bool = False):
    """Score the test split, write `per_case.csv`, fill `record["metrics"]`; returns (rows, overlays)."""
    largest = bool(config["evaluation"]["largest_component"])
    per_case, overlays = evaluate(module, preprocessing, datamodule.test_records,
                                  getattr(datamodule, "liver_labels", None), log_images=log_images,
                                  largest_component=largest)
    record["postprocessing"] = {"largest_component": largest}
    rec.write_per_case(folder, per_case)
    record["metrics"] = {k: v for k, v in summarise(per_case).items() if k != "convention"}
    record["metrics_convention"] = SURFACE_CONVENTION
    return per_case, overlays


def evaluate(module, preprocessing: dict, test_records, liver_labels=None, log_images=False, n_images=3,
             largest_component=False):
    """Per-case metrics on the held-out patients, in 3D, in each file's original geometry
    (optionally after keeping only the prediction's largest connected component)."""
    from benchmark.inference import Predictor
    from benchmark.wandb_logging import overlay_image
    from datamodules.readers import load_case

    predictor = Predictor(module, preprocessing)
    rows, overlays = [], []
    for record in test_records:
        case = load_case(record, liver_labels)
        pred, _ = predictor.predict_file(record.image_path)
        if pred.shape != case.mask.shape:
            raise DataError(record.image_path, f"prediction shape {pred.shape} != label shape {case.mask.shape}")
        rows.append({"case": record.case, "patient": record.patient,
                     **case_metrics(pred > 0, case.mask, case.spacing, largest_component=largest_component)})
        if log_images and len(overlays) < n_images:
            overlays.append(overlay_image(case.image, pred > 0, case.mask, record.case))
    if not rows:
        raise ValueError("the test split is empty: nothing to evaluate")
    return rows, overlays
