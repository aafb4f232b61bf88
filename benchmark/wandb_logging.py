"""Weights & Biases for the runner: one W&B run per result record, one summary run per suite.

Runs use Lightning's `WandbLogger` (so training curves come for free), `group` = suite,
`job_type` = modality, tags = model and variant. The mode is online only when asked for *and* a
key is available, offline by default (synced later with `wandb sync`), or disabled.
"""
from __future__ import annotations

import math
import netrc
import os
import warnings
from pathlib import Path

import numpy as np

from benchmark.metrics import METRICS

MODES = ("disabled", "offline", "online")
SUMMARY_KEYS = {  # W&B summary key -> (record section, key); metric keys from the metric schema
    **{m.wandb_key: ("metrics", m.name) for m in METRICS},
    "time/volume_ms": ("timing", "volume_ms"), "time/slice_ms": ("timing", "slice_ms"),
    "time/model_volume_ms": ("timing", "model_volume_ms"), "params": (None, "params"),
    "flops": (None, "flops"), "budget/converged": ("budget", "converged"), "budget/steps": ("budget", "steps"),
    "budget/stop_reason": ("budget", "stop_reason"),
}
LEADERBOARD_COLUMNS = ["variant", "model", "modality", "seed", *(m.name for m in METRICS if m.name != "failed"),
                       "volume_ms", "slice_ms", "params", "flops", "converged", "stop_reason", "status"]


def has_api_key() -> bool:
    """A key in the environment or from `wandb login` (stored in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        auth = netrc.netrc(path)
        host = (os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].rstrip("/")
        return auth.authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(requested: str | None = None) -> str:
    """`--wandb` flag, else `WANDB_MODE`, else online with a key and offline without one."""
    mode = (requested or os.environ.get("WANDB_MODE") or "").lower()
    if mode in ("", "auto"):
        return "online" if has_api_key() else "offline"
    if mode == "dryrun":
        mode = "offline"
    if mode not in MODES:
        raise ValueError(f"--wandb must be one of {', '.join(MODES)}, got {requested!r}")
    if mode == "online" and not has_api_key():
        warnings.warn("W&B online mode asked for but no API key (WANDB_API_KEY or `wandb login`): "
                      "logging offline instead", stacklevel=2)
        return "offline"
    return mode


def make_logger(mode: str, project: str, suite: str, record: dict, save_dir: str | os.PathLike):
    """A `WandbLogger` for one run, or None when W&B is disabled.

    `offline=True` is passed explicitly: WandbLogger(offline=...) wins over `WANDB_MODE`.
    """
    if mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger

    name = f"{record['variant']}__{record['modality']}__seed{record['seed']}"
    return WandbLogger(
        project=project, name=name, group=suite, job_type=record["modality"],
        tags=[str(record["model"]), str(record["variant"])], config=_config(record),
        save_dir=str(save_dir), offline=(mode == "offline"), log_model=False, reinit="finish_previous",
        settings=_quiet(),
    )


def _quiet():
    """No per-run banner and summary printout: the runner prints its own table."""
    import wandb

    return wandb.Settings(quiet=True)


def _config(record: dict) -> dict:
    keys = ("suite", "variant", "model", "modality", "seed", "preset", "data", "config")
    return {k: record.get(k) for k in keys}


EXTERNAL_KEYS = ("dice", "jaccard", "precision", "recall", "hd95", "assd", "global_dice")


def summary_values(record: dict) -> dict:
    """Flat W&B summary of a record; the external set's means go under `external/<metric>`."""
    out = {}
    for key, (section, name) in SUMMARY_KEYS.items():
        value = (record.get(section) or {}).get(name) if section else record.get(name)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[key] = value
    ext = record.get("external") or {}
    if ext.get("metrics"):
        out.update({f"external/{k}": ext["metrics"][k] for k in EXTERNAL_KEYS
                    if ext["metrics"].get(k) is not None and not math.isnan(ext["metrics"][k])})
        out.update({"external/n": ext["n"], "external/failed": ext["failed"], "external/set": ext["name"]})
    return out


def overlay_image(image: np.ndarray, pred: np.ndarray, gt: np.ndarray, caption: str):
    """A `wandb.Image` of the axial slice with most liver, prediction and ground truth as masks."""
    import wandb

    z = int(np.argmax(gt.reshape(-1, gt.shape[-1]).sum(0))) if gt.any() else gt.shape[-1] // 2
    sl = image[..., z].astype(np.float32)
    lo, hi = np.percentile(sl, [1, 99])
    gray = (np.clip((sl - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    # Arrays are (X, Y) in RAS order; show with anterior up and patient's right on the left.
    view = lambda a: np.ascontiguousarray(np.flipud(np.asarray(a).T))  # noqa: E731
    labels = {1: "liver"}
    return wandb.Image(view(gray), caption=f"{caption} (z={z})", masks={
        "prediction": {"mask_data": view(pred[..., z].astype(np.uint8)), "class_labels": labels},
        "ground_truth": {"mask_data": view(gt[..., z].astype(np.uint8)), "class_labels": labels},
    })


def validation_overlays(n_images: int = 2):
    """A Lightning callback: after training, the first `n_images` validation volumes' prediction and
    ground truth as `val/overlays` in the run's W&B logger (what the trained model does, at a glance)."""
    import torch
    from lightning.pytorch.callbacks import Callback

    from models.base import plain_tensor

    class ValidationOverlays(Callback):
        def on_fit_end(self, trainer, pl_module):
            logger, dm = trainer.logger, trainer.datamodule
            if logger is None or dm is None or not trainer.is_global_zero:
                return
            images, training = [], pl_module.training
            pl_module.eval()
            with torch.no_grad():
                for i, batch in enumerate(dm.val_dataloader()):
                    if i >= n_images:
                        break
                    image = plain_tensor(batch["image"]).to(pl_module.device)
                    pred = pl_module.predict_volume(image).argmax(1)[0].cpu().numpy()
                    gt = plain_tensor(batch["label"])[0, 0].numpy() > 0.5
                    images.append(overlay_image(image[0, 0].cpu().numpy(), pred, gt, str(batch["case"][0])))
            pl_module.train(training)
            if images:
                logger.experiment.log({"val/overlays": images})

    return ValidationOverlays()


def _table(rows: list[dict]):
    import wandb

    columns = list(rows[0].keys())
    return wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])


def log_result(logger, record: dict, per_case: list[dict], overlays: list | None = None,
               external_rows: list[dict] | None = None) -> None:
    """Summary keys, the per-case tables (test split, external set) and overlays for one finished
    run; then close the run."""
    if logger is None:
        return
    run = logger.experiment
    if record.get("transfer"):  # known once the model is built, after the run started
        run.config.update({"transfer": record["transfer"]}, allow_val_change=True)
    if per_case:
        run.log({"test/per_case": _table(per_case)})
    if external_rows:
        run.log({"external/per_case": _table(external_rows)})
    if overlays:
        run.log({"test/overlays": overlays})
    for key, value in summary_values(record).items():
        run.summary[key] = value
    run.summary["status"] = record.get("status")
    run.finish(exit_code=0 if record.get("status") == "ok" else 1)


def abort_run(logger) -> None:
    """Close a W&B run whose training raised, so the next run starts a fresh one."""
    if logger is not None and getattr(logger, "_experiment", None) is not None:
        logger.experiment.finish(exit_code=1)


def leaderboard_rows(records: list[dict]) -> list[list]:
    rows = []
    for r in records:
        budget = {k: (r.get("budget") or {}).get(k) for k in ("converged", "stop_reason")}
        flat = {**(r.get("metrics") or {}), **(r.get("timing") or {}), **budget, **r}
        rows.append([flat.get(c) for c in LEADERBOARD_COLUMNS])
    return rows


RANK_COLUMNS = ["modality", "variant", "label", "seeds", "n_cases", "dice", "ci_low", "ci_high", "rank", "mean_rank", "median_rank",
                "rank_ci_low", "rank_ci_high",
                "p_beats_baseline", "mean_diff", "p", "p_holm", "significant", "seed_std", "volume_ms", "converged"]
TIME_COLUMNS = ["modality", "variant", "label", "volume_ms", "dice", "ci_low", "ci_high", "significant"]


def _cells(row: dict, columns: list[str]) -> list:
    """Table cells; NaN (no test for the baseline, one seed) becomes None, a missing W&B value."""
    return [None if isinstance(row.get(c), float) and math.isnan(row[c]) else row.get(c) for c in columns]


def log_suite_summary(mode: str, project: str, suite: str, records: list[dict], save_dir: str | os.PathLike,
                      rank_rows: list[dict] | None = None) -> None:
    """One extra run per suite: the leaderboard table, an accuracy-vs-time scatter and, from `liverbench
    report` (`rank_rows`: `benchmark.report.ranking.rows`), the ranking table (bootstrap rank frequencies,
    P(beats baseline), raw and Holm p) and Dice vs time with CI bars, as an image and a table."""
    if mode == "disabled" or not records:
        return
    import wandb

    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, group=suite, job_type="summary", name=f"{suite}__summary",
                     tags=["summary"], dir=str(save_dir), mode=mode, reinit="finish_previous",
                     config={"suite": suite, "runs": len(records)}, settings=_quiet())
    table = wandb.Table(columns=LEADERBOARD_COLUMNS, data=leaderboard_rows(records))
    ok = [r for r in records if r.get("status") == "ok" and (r.get("timing") or {}).get("volume_ms")]
    scatter = wandb.Table(columns=["label", "modality", "volume_ms", "dice"], data=[
        [r["variant"], r["modality"], r["timing"]["volume_ms"], (r.get("metrics") or {}).get("dice")] for r in ok])
    logged = {"leaderboard": table,
              "accuracy_vs_time": wandb.plot.scatter(scatter, "volume_ms", "dice",
                                                     title=f"{suite}: Dice vs time per volume (ms)")}
    if rank_rows:
        n_ranks = max(int(k.split("_")[1]) for row in rank_rows for k in row if k.startswith("rank_") and k.endswith("_pct"))
        columns = RANK_COLUMNS + [f"rank_{i}_pct" for i in range(1, n_ranks + 1)]
        logged["ranking"] = wandb.Table(columns=columns, data=[_cells(row, columns) for row in rank_rows])
        timed = [row for row in rank_rows if not math.isnan(row["volume_ms"]) and not math.isnan(row["ci_low"])]
        if timed:
            from benchmark.report.plots import _pyplot, dice_time_figure

            fig = dice_time_figure(timed)
            logged["dice_vs_time"] = wandb.Image(fig, caption=f"{suite}: mean DSC, 95% bootstrap CI over patients, "
                                                               "vs time per volume; red: differs from the baseline (Holm)")
            _pyplot().close(fig)
            logged["dice_vs_time_table"] = wandb.Table(columns=TIME_COLUMNS, data=[_cells(r, TIME_COLUMNS) for r in timed])
    run.log(logged)
    run.finish()


def sync_hint(out_dir: str | os.PathLike) -> str:
    return (f"W&B runs were logged offline; upload them with:\n"
            f"  wandb sync {Path(out_dir)}/*/*/wandb/offline-run-* {Path(out_dir)}/*/wandb/offline-run-*")
