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

from benchmark.tracking.content import SUMMARY_COLUMNS, cell, ranking_table, run_params, summary_table, summary_values
from benchmark.tracking.overlays import Overlay

MODES = ("disabled", "offline", "online")
LEADERBOARD_COLUMNS = [c for c, _ in SUMMARY_COLUMNS]


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
        tags=[str(record["model"]), str(record["variant"])], config=run_params(record),
        save_dir=str(save_dir), offline=(mode == "offline"), log_model=False, reinit="finish_previous",
        settings=_quiet(),
    )


def _quiet():
    """No per-run banner and summary printout: the runner prints its own table."""
    import wandb

    return wandb.Settings(quiet=True)


def to_wandb(overlay: Overlay):
    """A `wandb.Image` of an overlay's slice with the prediction and ground truth as toggleable masks."""
    import wandb

    labels = {1: "liver"}
    return wandb.Image(overlay.gray, caption=overlay.caption, masks={
        "prediction": {"mask_data": overlay.pred.astype(np.uint8), "class_labels": labels},
        "ground_truth": {"mask_data": overlay.gt.astype(np.uint8), "class_labels": labels},
    })


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
        run.log({"test/overlays": [to_wandb(o) if isinstance(o, Overlay) else o for o in overlays]})
    for key, value in summary_values(record).items():
        run.summary[key] = value
    run.summary["status"] = record.get("status")
    run.finish(exit_code=0 if record.get("status") == "ok" else 1)


def abort_run(logger) -> None:
    """Close a W&B run whose training raised, so the next run starts a fresh one."""
    if logger is not None and getattr(logger, "_experiment", None) is not None:
        logger.experiment.finish(exit_code=1)


def leaderboard_rows(records: list[dict]) -> list[list]:
    return summary_table(records)[1]


TIME_COLUMNS = ["modality", "variant", "label", "volume_ms", "dice", "ci_low", "ci_high", "significant"]


def _cells(row: dict, columns: list[str]) -> list:
    return [cell(row.get(c)) for c in columns]


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
    table = wandb.Table(*summary_table(records))
    ok = [r for r in records if r.get("status") == "ok" and (r.get("timing") or {}).get("volume_ms")]
    scatter = wandb.Table(columns=["label", "modality", "volume_ms", "dice"], data=[
        [r["variant"], r["modality"], r["timing"]["volume_ms"], (r.get("metrics") or {}).get("dice")] for r in ok])
    logged = {"leaderboard": table,
              "accuracy_vs_time": wandb.plot.scatter(scatter, "volume_ms", "dice",
                                                     title=f"{suite}: Dice vs time per volume (ms)")}
    if rank_rows:
        logged["ranking"] = wandb.Table(*ranking_table(rank_rows))
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
