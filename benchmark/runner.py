"""`liverbench run`: every suite entry x modality x seed: fit -> test -> timing -> one record.

Runs are sequential, each in its own folder (see `benchmark.records`). Finished runs are skipped,
killed runs restart clean, a failing run is recorded and the suite goes on.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

from benchmark import records as rec
from benchmark.plan import RUNNER_ONLY, RunSpec, build_config, load_preset, load_suite, model_name, plan_runs
from rich.console import Console

from benchmark.progress import StepProgress, SuiteProgress, failures, summary_table
from benchmark.metrics import SURFACE_CONVENTION, case_metrics, summarise
from datamodules.files import DataError, atomic_write_json


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liverbench run", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="paper", help="paper | smoke | path to a suite YAML (default: paper)")
    p.add_argument("--data", default="phantom",
                   help="phantom (generated, default) | DIR in nnU-Net raw layout | ct=DIR,mri=DIR")
    p.add_argument("--modalities", default="ct,mri", help="comma list of ct, mri (default: ct,mri)")
    p.add_argument("--seeds", default="0", help="comma list of integer seeds (default: 0)")
    p.add_argument("--preset", default="cpu", help="cpu | gpu | path to a preset YAML (default: cpu)")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--wandb", default=None, choices=["disabled", "offline", "online"],
                   help="W&B mode (default: online with an API key, else offline; WANDB_MODE is honoured)")
    p.add_argument("--project", default=os.environ.get("WANDB_PROJECT", "liverbench"), help="W&B project")
    p.add_argument("--resume", action="store_true",
                   help="also retry runs recorded as failed (finished runs are always skipped)")
    p.add_argument("--report", action="store_true", help="refresh OUT/leaderboard.md after the suite")
    p.add_argument("--strict", action="store_true", help="exit 1 if any run failed (default: only if all failed)")
    return p.parse_args(argv)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = " ".join(["liverbench", "run", *argv])
    try:
        suite = load_suite(args.suite)
        preset = load_preset(args.preset)
        seeds = [int(s) for s in _csv(args.seeds)]
        runs = plan_runs(suite, preset, _csv(args.modalities), seeds, args.data, args.out)
    except ValueError as exc:  # DataError included: names the file and the problem
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from benchmark.wandb_logging import log_suite_summary, resolve_mode, sync_hint

    mode = resolve_mode(args.wandb)
    results: list[dict] = []
    interrupted = False
    with SuiteProgress(len(runs)) as progress, interruptible():
        progress.log(f"suite {suite['name']}: {len(runs)} runs, preset {preset['name']}, W&B {mode}, out {args.out}")
        for spec in runs:
            previous = rec.read_result(spec.folder)
            if previous and (previous.get("status") == "ok" or not args.resume):
                progress.log(f"skip {spec.name}: already {previous.get('status')}"
                             + ("" if previous.get("status") == "ok" else " (use --resume to retry)"))
                results.append(previous)
                progress.finish_run()
                continue
            try:
                results.append(execute_run(spec, mode, args.project, progress, command))
            except KeyboardInterrupt:
                interrupted = True
                progress.log(f"interrupted during {spec.name}; finished results are kept, "
                             "re-run the same command to continue")
                break
            progress.finish_run()
            if _STOP.is_set():  # Ctrl-C after the run's record was written: stop before the next
                interrupted = True
                progress.log("interrupted; finished results are kept, re-run the same command to continue")
                break
    console = Console(stderr=False, width=max(Console().width, 130))
    console.print(summary_table(results, title=f"LiverBench: suite {suite['name']} ({args.out})"))
    for line in failures(results):
        console.print(f"[red]failed[/red] {line}", highlight=False)
    suite_dir = Path(args.out) / suite["name"]
    if not interrupted:
        try:
            log_suite_summary(mode, args.project, suite["name"], results, suite_dir)
        except Exception as exc:  # W&B trouble must not lose the benchmark
            warnings.warn(f"W&B summary run failed: {exc}")
        if args.report:
            from benchmark import report

            report.main(["--results", str(args.out), "--out", str(Path(args.out) / "leaderboard.md")])
    if mode == "offline":
        console.print(sync_hint(args.out), highlight=False)
    if interrupted:
        return 130
    ok = [r.get("status") == "ok" for r in results]
    return 0 if (all(ok) if args.strict else any(ok)) else 1


def execute_run(spec: RunSpec, mode: str, project: str, progress: SuiteProgress, command: str = "") -> dict:
    """One run, start to record. Exceptions become a `failed` record; Ctrl-C propagates."""
    from benchmark.wandb_logging import abort_run, log_result, make_logger, validation_overlays

    folder = rec.prepare_run_dir(spec.folder)
    record = {"status": None, "error": None, "suite": spec.suite, "variant": spec.variant,
              "label": spec.label, "model": None, "modality": spec.modality, "seed": spec.seed,
              "preset": spec.preset_name, "data": spec.data, "config": None, "metrics": None,
              "timing": None, "params": None, "flops": None, "device": None,
              "versions": rec.package_versions(), "git_commit": rec.git_commit(), "command": command,
              "started": rec.now()}
    logger, per_case, overlays = None, [], []
    durations = record["durations"] = {}  # wall-clock seconds per stage, for budgeting
    started = time.perf_counter()
    try:
        config = build_config(spec, folder)
        record["config"] = config
        record["model"] = model_name(config["model"]["class_path"])
        logger = make_logger(mode, project, spec.suite, record, folder)
        progress.start_run(spec.name, config["trainer"].get("max_steps"))
        callbacks = [StepProgress(progress)] + ([validation_overlays()] if logger is not None else [])
        model, datamodule, trainer = instantiate(config, logger, callbacks, folder)
        record["model"] = getattr(model, "model_name", None) or record["model"]
        clock = time.perf_counter()
        fit(trainer, model, datamodule)
        durations["fit_s"] = time.perf_counter() - clock
        record["checkpoint"] = ensure_checkpoint(trainer, folder / "model.ckpt")
        if not (folder / "split.json").is_file():
            atomic_write_json(folder / "split.json", datamodule.split)
        module, preprocessing = load_best(folder / "model.ckpt")
        progress.set_run_stage("test")
        clock = time.perf_counter()
        largest = bool(config["evaluation"]["largest_component"])
        per_case, overlays = evaluate(module, preprocessing, datamodule.test_records,
                                      getattr(datamodule, "liver_labels", None), log_images=logger is not None,
                                      largest_component=largest)
        record["postprocessing"] = {"largest_component": largest}
        rec.write_per_case(folder, per_case)
        record["metrics"] = {k: v for k, v in summarise(per_case).items() if k != "convention"}
        record["metrics_convention"] = SURFACE_CONVENTION
        durations["test_s"] = time.perf_counter() - clock
        progress.set_run_stage("timing")
        clock = time.perf_counter()
        record.update(measure(module, preprocessing, config, spec.modality, datamodule.test_records))
        durations["timing_s"] = time.perf_counter() - clock
        record["preprocessing"] = preprocessing
        stop_if_interrupted()
        record["status"] = "ok"
    except KeyboardInterrupt:
        abort_run(logger)
        raise
    except Exception as exc:  # recorded; the suite goes on
        record.update(rec.failure_fields(exc))
        progress.log(f"[red]{spec.name} failed[/red]: {record['error'].splitlines()[0][:200]}")
    record["finished"] = rec.now()
    durations["total_s"] = time.perf_counter() - started
    try:
        if record["status"] == "ok":
            log_result(logger, record, per_case, overlays)
        else:
            abort_run(logger)
    except Exception as exc:
        warnings.warn(f"W&B logging failed for {spec.name}: {exc}")
    rec.write_result(folder, record)  # last: marks the run as finished
    return record


def instantiate(config: dict, logger, callbacks: list, folder: Path):
    """Model, DataModule and Trainer through `liverbench fit`'s LightningCLI (runner and CLI cannot
    drift); then the run's W&B logger, progress callback and checkpoint location are attached."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from benchmark.lightning_cli import LiverBenchCLI, user_error

    errors = io.StringIO()
    try:  # the CLI prints usage and exits on a bad config: turn that into this run's error
        with contextlib.redirect_stderr(errors), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            cli = LiverBenchCLI(args={k: v for k, v in config.items() if k not in RUNNER_ONLY}, run=False)
    except SystemExit:
        message = errors.getvalue()
        message = message[message.find("error:"):] if "error:" in message else message
        raise ValueError(f"invalid run config: {message.strip()}") from None
    except Exception as exc:  # record the user's problem (bad data, no weights), not jsonargparse's wrapper
        cause = user_error(exc)
        if cause is None or cause is exc:
            raise
        raise cause from exc
    trainer = cli.trainer
    if logger is not None:
        trainer.logger = logger
    checkpoints = trainer.checkpoint_callbacks
    if not checkpoints:
        checkpoints = [ModelCheckpoint(monitor="val/dice", mode="max")]
        trainer.callbacks.append(checkpoints[0])
    for cb in checkpoints:  # the CLI's best-by-val/dice checkpoint, saved as OUT/.../model.ckpt
        cb.dirpath, cb.filename, cb.save_last, cb.save_top_k = str(folder), "model", False, 1
    trainer.callbacks[:0] = callbacks
    return cli.model, cli.datamodule, trainer


_STOP = threading.Event()  # set by Ctrl-C even where Python swallows the KeyboardInterrupt


def _on_sigint(signum, frame):
    """Ctrl-C: remember it, then interrupt. A KeyboardInterrupt raised inside a finaliser (`__del__`
    during garbage collection) is printed and ignored by Python; the flag still stops the suite."""
    _STOP.set()
    raise KeyboardInterrupt


def stop_if_interrupted() -> None:
    if _STOP.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible():
    """Install the suite's Ctrl-C handler for the duration of `liverbench run` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _STOP.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def fit(trainer, model, datamodule) -> None:
    """`trainer.fit`; Lightning turns Ctrl-C into `sys.exit(1)` (and ignores further Ctrl-C):
    give the suite its KeyboardInterrupt back so it stops cleanly."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            trainer.fit(model, datamodule=datamodule)
    except SystemExit as exc:
        if trainer.interrupted:
            _STOP.set()
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, _on_sigint)
            raise KeyboardInterrupt from exc
        raise
    stop_if_interrupted()


def ensure_checkpoint(trainer, path: Path) -> dict:
    """`model.ckpt` is the best by val/dice; if validation never ran, the final weights."""
    callback = trainer.checkpoint_callback
    if path.is_file():
        score = callback.best_model_score if callback is not None else None
        return {"path": path.name, "selected_by": "val/dice", "val_dice": float(score) if score is not None else None}
    trainer.save_checkpoint(path)
    return {"path": path.name, "selected_by": "last step (no validation ran)", "val_dice": None}


def load_best(path: Path):
    from models import load_module

    module, preprocessing = load_module(path)
    return module.eval(), preprocessing


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
        rows.append({"case": record.case, "patient": record.patient, **case_metrics(pred > 0, case.mask, case.spacing, largest_component=largest_component)})
        if log_images and len(overlays) < n_images:
            overlays.append(overlay_image(case.image, pred > 0, case.mask, record.case))
    if not rows:
        raise ValueError("the test split is empty: nothing to evaluate")
    return rows, overlays


def _timing_input(timing: dict, modality: str, test_records) -> tuple[Path, str]:
    """The volume timed end to end: a reference phantom of a fixed size (so numbers compare across
    datasets, e.g. CT 512x512x100 at 0.8 mm; made once into the cache) or the first test case."""
    ref = (timing.get("reference") or {}).get(modality)
    if timing.get("volume", "reference") != "reference" or not ref:
        return Path(test_records[0].image_path), "first test case"
    import nibabel as nib
    import numpy as np

    from datamodules.datasets import default_cache_root
    from datamodules.files import atomic_save_nifti
    from datamodules.phantom import generate_case

    shape, spacing, seed = [int(v) for v in ref["shape"]], [float(v) for v in ref["spacing"]], int(ref.get("seed", 1000))
    tag = "x".join(map(str, shape)) + "_" + "x".join(f"{v:g}" for v in spacing)
    path = default_cache_root() / "timing" / f"{modality}_{tag}_seed{seed}.nii.gz"
    label = f"reference phantom {tag} mm"
    if path.is_file():
        return path, label
    case = generate_case(seed, "ct" if modality == "ct" else "t1", spacing=spacing)
    image = case.image
    for axis, size in enumerate(shape):  # centre crop / pad to the exact reference shape
        have = image.shape[axis]
        if have > size:
            start = (have - size) // 2
            image = np.take(image, range(start, start + size), axis=axis)
        elif have < size:
            pad = [(0, 0)] * 3
            pad[axis] = ((size - have) // 2, size - have - (size - have) // 2)
            image = np.pad(image, pad, mode="constant", constant_values=image.min())
    atomic_save_nifti(nib.Nifti1Image(np.ascontiguousarray(image), case.affine), path)
    return path, label


def measure(module, preprocessing: dict, config: dict, modality: str, test_records) -> dict:
    """Time per volume end to end (Predictor on a file) and model-only, per slice (2D), FLOPs."""
    import torch

    from benchmark import timing as T
    from benchmark.inference import Predictor
    from datamodules.transforms import build_preprocessing

    t = config.get("timing") or {}
    accelerator = config["trainer"].get("accelerator", "cpu")
    device = "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"
    precision, warmup, repeats = t.get("precision", "fp32"), int(t.get("warmup", 1)), int(t.get("repeats", 3))
    path, what = _timing_input(t, modality, test_records)
    module = module.to(device).eval()
    predictor = Predictor(module, preprocessing, device=device)
    preprocessed = build_preprocessing(preprocessing, keys=("image",))({"image": str(path)})["image"]

    def end_to_end():
        with T.autocast_context(device, precision):
            return predictor.predict_file(path)

    with T.track_peak_memory(device) as mem:
        e2e = T.time_callable(end_to_end, device=device, warmup=warmup, repeats=repeats)
    model = T.time_model(module, tuple(preprocessed.shape[1:]), device=device, precision=precision,
                         warmup=warmup, repeats=repeats, flops=bool(t.get("flops", True)))
    import nibabel as nib

    input_shape = list(nib.load(str(path)).shape)
    timing = {
        "volume_ms": e2e["median_ms"], "volume_ms_iqr": e2e["iqr_ms"], "volume_ms_min": e2e["min_ms"],
        "model_volume_ms": model["model_volume_ms"], "model_volume_ms_iqr": model["model_volume_ms_iqr"],
        "slice_ms": model["slice_ms"], "slice_ms_iqr": model["slice_ms_iqr"], "device": e2e["device"],
        "precision": precision, "batch_size": 1, "peak_memory_mb": max(mem["peak_memory_mb"], model["peak_memory_mb"]),
        "repeats": repeats, "warmup": warmup, "input": what, "input_path": str(path),
        "input_shape": input_shape, "preprocessed_shape": list(preprocessed.shape[1:]),
        "threads": torch.get_num_threads(),
    }
    return {"timing": timing, "params": model["params"], "flops": model.get("flops"), "device": e2e["device"]}
