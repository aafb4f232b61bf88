"""Test stage: per-case metrics on the held-out patients, in 3D, in each file's original geometry."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.run import records as rec
from benchmark.scoring.metrics import case_metrics, summarise, SURFACE_CONVENTION
from common.files import DataError

POSTPROCESSING_KEYS = ("largest_component", "opening_mm")  # result.json `postprocessing` = `metrics.postprocess` args


@dataclass
class SplitScores:
    """What the test stage returns: result.json `metrics` and how they were made, and the rows and
    overlay images the trackers get."""

    metrics: dict  # means over the test patients (`summarise`, without its convention text)
    evaluation: dict  # {largest_component, [opening_mm,] precision, channels_last}: how test/external masks were made
    per_case: list[dict]
    overlays: list
    convention: str = SURFACE_CONVENTION  # result.json `metrics_convention`

    @property
    def postprocessing(self) -> dict:
        return {k: self.evaluation[k] for k in POSTPROCESSING_KEYS if k in self.evaluation}


def score_test_split(module, preprocessing: dict, datamodule, config: dict, folder: Path,
                     log_images: bool = False) -> SplitScores:
    """Score the test split and write `per_case.csv`."""
    settings = evaluation_settings(config, module)
    per_case, overlays = evaluate(module, preprocessing, datamodule.test_records,
                                  getattr(datamodule, "liver_labels", None), log_images=log_images, **settings)
    rec.write_per_case(folder, per_case)
    metrics = {k: v for k, v in summarise(per_case).items() if k != "convention"}
    return SplitScores(metrics, settings, per_case, overlays)


def evaluation_settings(config: dict, module) -> dict:
    """The preset's `evaluation:` resolved for where the module is, as result.json `evaluation` records it:
    `precision` (`auto`: bf16 on a CPU with AVX-512 BF16/AMX or a bf16 GPU, else fp32) and `channels_last`
    (`auto` is channels-last on a CPU, also in fp32: the same network pass as the timing stage's);
    `opening_mm` only when set, so records of runs without it stay as they were."""
    from benchmark.inference.predictor import default_channels_last, resolve_precision

    evaluation = config["evaluation"]
    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else "cpu"
    requested = evaluation.get("precision", "fp32")
    opening = {"opening_mm": float(evaluation["opening_mm"])} if evaluation.get("opening_mm") else {}
    return {"largest_component": bool(evaluation["largest_component"]), **opening,
            "precision": resolve_precision(requested, device),
            "channels_last": default_channels_last(requested, device)}


def evaluate(module, preprocessing: dict, test_records, liver_labels=None, log_images=False, n_images=3,
             largest_component=False, opening_mm=0.0, precision="fp32", channels_last: bool | None = None):
    """Per-case metrics on the held-out patients, in 3D, in each file's original geometry
    (after the recipe's post-processing: `largest_component`, `opening_mm`); `precision` and
    `channels_last` of the network (see `benchmark.inference.predictor.Predictor`)."""
    from benchmark.inference.predictor import Predictor
    from benchmark.scoring.postprocessing import postprocess
    from benchmark.tracking.overlays import overlay_image
    from datamodules.readers import load_case

    predictor = Predictor(module, preprocessing, precision=precision, channels_last=channels_last)
    rows, overlays = [], []
    for record in test_records:
        case = load_case(record, liver_labels)
        pred, _ = predictor.predict_file(record.image_path)
        if pred.shape != case.mask.shape:
            raise DataError(record.image_path, f"prediction shape {pred.shape} != label shape {case.mask.shape}")
        scored = postprocess(pred > 0, case.spacing, largest_component, opening_mm)  # what is scored is shown
        rows.append({"case": record.case, "patient": record.patient, **case_metrics(scored, case.mask, case.spacing)})
        if log_images and len(overlays) < n_images:
            overlays.append(overlay_image(case.image, scored, case.mask, record.case))
    if not rows:
        raise ValueError("the test split is empty: nothing to evaluate")
    return rows, overlays
