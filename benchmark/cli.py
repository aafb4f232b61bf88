"""The `liverbench` command: a thin dispatcher to each subcommand's own `main(argv)`.

Subcommands are imported lazily so `liverbench --help` and light commands stay fast.
"""
from __future__ import annotations

import importlib
import os
import sys

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("benchmark.run.runner:main", "train, test and time every suite entry x modality x seed"),
    "report": ("benchmark.report:main", "turn result records into leaderboard.md"),
    "evaluate": ("benchmark.scoring.evaluate:main", "score a folder of NIfTI predictions against ground truth"),
    "predict": ("benchmark.inference.predict:main", "segment a scan with a checkpoint (or LightningCLI predict with --config)"),
    "crossval": ("benchmark.run.crossval:main", "k-fold cross-validation by patient of one entry on a real dataset"),
    "external-eval": ("benchmark.scoring.external_eval:main", "score a checkpoint on a real dataset (per case + mean)"),
    "pretrain": ("models.synthetic_pretrain:main", "pre-train the ResNet-34 encoder on the phantom (pretrained: synthetic)"),
    "models": ("models.registry:main", "list registered models with parameter counts"),
    "data": ("datamodules.commands:main", "phantom | inspect | convert | download | devset"),
    "fit": ("benchmark.run.lightning_cli:main", "LightningCLI: train one model (--config ...)"),
    "validate": ("benchmark.run.lightning_cli:main", "LightningCLI: validate one model"),
    "test": ("benchmark.run.lightning_cli:main", "LightningCLI: test one model"),
}


# Commands that, run as a process, end without the interpreter's teardown once their output is written and
# flushed: unloading torch's modules and libraries took 0.2-0.9 s of a 3.8-4.2 s `liverbench predict`.
FAST_EXIT = frozenset({"predict"})


def _usage() -> str:
    lines = ["usage: liverbench <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `liverbench <command> --help` for a command's options."]
    return "\n".join(lines)


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _target(name: str, rest: list[str]) -> str:
    """The `module:function` that runs `liverbench <name> <rest>`."""
    if name == "predict" and any(a == "--config" or a.startswith("--config=") for a in rest):
        return "benchmark.run.lightning_cli:main"  # LightningCLI's own predict subcommand
    return COMMANDS[name][0]


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code (`argv` None: `sys.argv[1:]`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"liverbench: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target = _target(name, rest)
    if target == "benchmark.run.lightning_cli:main":
        rest = [name, *rest]
    try:
        return int(_load(target)(rest) or 0)
    except OSError as exc:  # the backstop: an I/O condition is never a traceback, in any command
        print(f"error: {exc.filename or name}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def console() -> None:
    """The `liverbench` executable and `python -m benchmark`: `main`, then the process ends. Commands in
    `FAST_EXIT` end it through `os._exit` (not the LightningCLI predict: its loggers need the normal exit)."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv and argv[0] in FAST_EXIT and _target(argv[0], argv[1:]) == COMMANDS[argv[0]][0]:
        exit_now(code)
    sys.exit(code)


def exit_now(code: int) -> None:
    """Flush what the command printed and logged, then end the process without tearing the interpreter
    down (every file the command wrote is already closed: masks are written atomically)."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":
    console()
