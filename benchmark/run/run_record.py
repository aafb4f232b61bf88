"""`RunRecord`: every field of a run's result.json, typed, in the order the file lists them.

The runner assembles one from what its stages returned (`benchmark.run.stages.record.assemble_record`);
readers of older result.json files get one with `RunRecord.from_dict`. A field a run never reached
(it failed before the stage that sets it), or that an older version did not write, is `ABSENT`: it is
left out of `to_dict()`, so a record read from disk is written back with the same keys.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, fields


class Absent(enum.Enum):
    """Marks a field that is not in the record (never `None`: null is a value result.json holds).
    An enum member: one object, kept by copy and pickle, so `value is ABSENT` always works."""

    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT = Absent.ABSENT


@dataclass(kw_only=True)
class RunRecord:
    """One run of one suite entry x modality x seed; `status` says whether it finished."""

    # Fields every record has from the start (null until their stage fills them).
    status: str | None = None  # "ok" or "failed"; None only while the run is still going
    error: str | None = None  # a failed run's "<Exception>: <message>" ("error: <path>: <problem>" for disk errors)
    suite: str  # the suite's name
    entry: int  # the entry's position in the suite: the report's row order
    variant: str  # the entry's id, e.g. unet_baseline
    label: str  # the entry's display name, e.g. "U-Net Baseline"
    model: str | None = None  # registry name of the model (the built module's own name once it exists)
    modality: str  # "ct" or "mri"
    seed: int  # the run seed (initialisation, sampling, augmentation)
    preset: str  # name of the preset whose budget the run used (cpu, gpu, ...)
    data: str  # "phantom" or the dataset folder
    config: dict | None = None  # the full run config, exactly what `liverbench fit` would take
    metrics: dict | None = None  # test split means over patients (benchmark.scoring.metrics.summarise)
    external: dict | None = None  # scores on the real set of `--external`; null without one
    timing: dict | None = None  # per-volume time end to end and model-only (benchmark.run.stages.time_per_image)
    params: int | None = None  # trainable parameters of the model
    flops: int | None = None  # FLOPs of one volume's prediction; null when not counted
    device: str | None = None  # what the timing ran on, e.g. "AMD EPYC (2 cores)"
    test_set: dict | None = None  # which patients were tested (same for every variant and seed)
    budget: dict | None = None  # steps, samples, seconds, learning curve, why the fit stopped
    overrides: list | None = None  # every config value that differs from the entry's own config, and why
    versions: dict  # python and package versions
    git_commit: str | None  # HEAD of the checkout, "+dirty" with local changes; null outside git
    command: str  # the `liverbench run ...` command line

    # Where the run ran; absent when `execute_run` is called outside a suite invocation.
    shard: str | None | Absent = ABSENT  # "K/N" of `--shard`, null for a plain run
    host: str | Absent = ABSENT  # host name of the process that recorded the run
    pid: int | Absent = ABSENT  # its process id

    started: str  # ISO 8601 UTC, milliseconds
    durations: dict  # wall-clock seconds per stage: fit_s, test_s, external_s, timing_s, total_s

    # Fields their stage adds (absent from a run that failed before it), in the order they are reached.
    transfer: dict | Absent = ABSENT  # where pretrained weights came from: {source, detail}
    checkpoint: dict | Absent = ABSENT  # how model.ckpt was selected, and its validation Dice
    world_size: int | Absent = ABSENT  # DDP processes that trained
    postprocessing: dict | Absent = ABSENT  # {largest_component, opening_mm}: the recipe switch used in scoring
    evaluation: dict | Absent = ABSENT  # how test and external predictions were made: LCC, precision
    metrics_convention: str | Absent = ABSENT  # how surface distances are defined (benchmark.scoring.metrics)
    preprocessing: dict | Absent = ABSENT  # the checkpoint's preprocessing config (ok runs only)
    traceback: str | Absent = ABSENT  # the failure's Python traceback (failed runs only)
    finished: str | Absent = ABSENT  # ISO 8601 UTC; set when the record is written

    def to_dict(self) -> dict:
        """The result.json content (before `records.json_safe`): present fields, in file order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not ABSENT}

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        """A record read from disk; keys it lacks (older versions, early failures) become `ABSENT`."""
        names = field_names()
        unknown = [key for key in data if key not in names]
        if unknown:
            raise ValueError(f"not a run record: unknown fields {unknown}")
        return cls(**{name: data.get(name, ABSENT) for name in names})


def field_names() -> list[str]:
    """Every result.json key, in the order a finished run's file lists them."""
    return [f.name for f in fields(RunRecord)]
