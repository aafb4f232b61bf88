"""The leaderboard's figures (Pareto front, bootstrap rank blobs, Dice vs time with CI bars).

Written byte-for-byte reproducibly: fixed size and dpi, no software/date metadata in the PNG, atomically."""
from __future__ import annotations

import math
from pathlib import Path

from benchmark.report.ranking import MODALITY_NAMES, by_rank
from common.files import atomic_path

PNG_METADATA = {"Software": None}  # matplotlib writes no timestamp into PNGs; drop its version string too


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, out: Path) -> None:
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata=PNG_METADATA)
    _pyplot().close(fig)


def pareto_plot(order, labels, groups, modalities, out: Path) -> None:
    """Mean Dice vs end-to-end time per volume, one panel per modality, Pareto front highlighted."""
    from benchmark.report.stats import pareto_front

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(modalities), figsize=(6 * len(modalities), 4.5), squeeze=False)
    for ax, m in zip(axes[0], modalities):
        pts = [(labels[v], groups[(v, m)]) for v in order if (v, m) in groups]
        pts = [(n, g["volume_ms"][0], g["dice"][0]) for n, g in pts]  # runs without end-to-end time are left out
        pts = [p for p in pts if not (math.isnan(p[1]) or math.isnan(p[2]))]
        front = pareto_front([p[1] for p in pts], [p[2] for p in pts])
        for (name, t, d), on in zip(pts, front):
            ax.scatter(t / 1000, d, s=70 if on else 40, c="tab:red" if on else "tab:blue", zorder=3)
            ax.annotate(name, (t / 1000, d), textcoords="offset points", xytext=(5, 4), fontsize=8)
        line = sorted((t / 1000, d) for (_, t, d), on in zip(pts, front) if on)
        if line:
            ax.plot(*zip(*line), "--", c="tab:red", label="Pareto front", zorder=2)
            ax.legend(loc="lower right")
        times = [p[1] for p in pts]
        if times and min(times) > 0 and max(times) / min(times) > 20:
            ax.set_xscale("log")
        ax.set(title=MODALITY_NAMES.get(m, m), xlabel="time per volume, end-to-end (s)", ylabel="Dice (mean over seeds)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, out)


def rank_plot(rankings, out: Path) -> bool:
    """Blob plot (after challengeR): per variant, a disc at each bootstrap rank with area ∝ its frequency,
    a black × at the median bootstrap rank and a black line over the 95% rank interval; a red dot at the
    rank on the full test set. False (nothing written) when nothing is ranked."""
    panels = [r for r in rankings if r.keys]
    if not panels:
        return False
    plt = _pyplot()
    width = max(4.0, 1.1 * max(len(r.keys) for r in panels) + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.8), squeeze=False)
    for ax, r in zip(axes[0], panels):
        keys = by_rank(r)
        for x, k in enumerate(keys):
            for rank, f in enumerate(r.freq[k], start=1):
                if f > 0:
                    ax.scatter(x, rank, s=600 * f, c="tab:blue", alpha=0.6, edgecolors="none", zorder=2)
            ax.plot([x, x], r.rank_interval[k], c="black", lw=1, zorder=3)
            ax.scatter(x, r.median_rank[k], marker="x", c="black", s=40, zorder=4)
            ax.scatter(x, r.rank[k], marker="o", c="tab:red", s=12, zorder=5)
        ax.set_xticks(range(len(keys)), [r.labels[k] for k in keys], rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(1, len(keys) + 1))
        ax.set_ylim(len(keys) + 0.6, 0.4)
        ax.set_xlim(-0.6, len(keys) - 0.4)
        ax.set(title=f"{r.name}: rank over bootstrap samples", ylabel="rank (1 = best DSC)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, out)
    return True


def dice_time_figure(points: list[dict]):
    """Mean Dice with its bootstrap CI against time per volume, one panel per modality (for W&B)."""
    plt = _pyplot()
    mods = list(dict.fromkeys(p["modality"] for p in points))
    fig, axes = plt.subplots(1, max(1, len(mods)), figsize=(6 * max(1, len(mods)), 4.5), squeeze=False)
    for ax, m in zip(axes[0], mods):
        for p in (p for p in points if p["modality"] == m):
            t = p["volume_ms"] / 1000
            ax.errorbar(t, p["dice"], yerr=[[p["dice"] - p["ci_low"]], [p["ci_high"] - p["dice"]]],
                        fmt="o", capsize=4, c="tab:red" if p["significant"] else "tab:blue")
            ax.annotate(p["label"], (t, p["dice"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set(title=MODALITY_NAMES.get(m, m), xlabel="time per volume, end-to-end (s)",
               ylabel="DSC, 95% bootstrap CI over patients")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def learning_curve_plot(order, labels, runs_by: dict, modalities, out: Path) -> bool:
    """Validation Dice against optimiser steps (left) and training seconds (right), one row per modality,
    one colour per variant, a line per seed; a ring marks each run's last validation, a triangle each
    point where the convergence rule had lowered the learning rate. False (nothing written) when no run
    recorded a curve."""
    rows = [(m, [(v, r.get("budget", "curve")) for v in order for r in runs_by.get((v, m), [])]) for m in modalities]
    rows = [(m, [(v, c) for v, c in curves if isinstance(c, list) and c]) for m, curves in rows]
    rows = [(m, curves) for m, curves in rows if curves]
    if not rows:
        return False
    plt = _pyplot()
    colours = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(order)}
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 4.2 * len(rows)), squeeze=False)
    for (m, curves), (by_step, by_time) in zip(rows, axes):
        named = set()
        for v, curve in curves:
            x_steps = [p.get("step", math.nan) for p in curve]
            x_secs = [p.get("seconds", math.nan) for p in curve]
            dice = [p.get("val_dice", math.nan) for p in curve]
            lrs = [p.get("lr") for p in curve]
            dropped = [i for i in range(1, len(curve)) if lrs[i] and lrs[i - 1] and lrs[i] < 0.99 * lrs[i - 1]]
            label = None if v in named else labels[v]
            named.add(v)
            for ax, x in ((by_step, x_steps), (by_time, x_secs)):
                ax.plot(x, dice, c=colours[v], lw=1.2, label=label if ax is by_step else None)
                ax.scatter(x[-1:], dice[-1:], s=25, facecolors="none", edgecolors=[colours[v]], zorder=3)
                ax.scatter([x[i] for i in dropped], [dice[i] for i in dropped], s=30, marker="v", c=[colours[v]],
                           zorder=3)
        name = MODALITY_NAMES.get(m, m)
        by_step.set(title=f"{name}: validation Dice vs steps", xlabel="optimiser steps", ylabel="val/dice_grid")
        by_time.set(title=f"{name}: validation Dice vs seconds", xlabel="training seconds (validation included)")
        by_step.legend(fontsize=7, loc="lower right")
        for ax in (by_step, by_time):
            ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, out)
    return True
