"""The `liverbench` command: a thin dispatcher to each subcommand's own `main(argv)`.

Subcommands are imported lazily so `liverbench --help` and light commands stay fast.
"""
from __future__ import annotations

import importlib
import os
import sys

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("benchmark.runner:main", "train, test and time every suite entry x modality x seed"),
    "report": ("benchmark.report:main", "turn result records into leaderboard.md"),
    "evaluate": ("benchmark.evaluate:main", "score a folder of NIfTI predictions against ground truth"),
    "predict": ("benchmark.predict:main", "segment a scan with a checkpoint (or LightningCLI predict with --config)"),
    "external-eval": ("benchmark.external_eval:main", "score a checkpoint on a real dataset (per case + mean)"),
    "pretrain": ("models.synthetic_pretrain:main", "pre-train the ResNet-34 encoder on the phantom (pretrained: synthetic)"),
    "models": ("models.registry:main", "list registered models with parameter counts"),
    "data": ("datamodules.cli:main", "phantom | inspect | convert | download | devset"),
    "fit": ("benchmark.lightning_cli:main", "LightningCLI: train one model (--config ...)"),
    "validate": ("benchmark.lightning_cli:main", "LightningCLI: validate one model"),
    "test": ("benchmark.lightning_cli:main", "LightningCLI: test one model"),
}


# Commands that, run as a process, end without the interpreter's teardown once their output is written and
# flushed: unloading torch's modules and libraries took 0.6-0.9 s of a 4.2 s `liverbench predict`.
FAST_EXIT = frozenset({"predict"})


def _usage() -> str:
    lines = ["usage: liverbench <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `liverbench <command> --help` for a command's options."]
    return "\n".join(lines)


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    """`argv=None`: the `liverbench` process itself (the console script, `python -m benchmark`); commands in
    `FAST_EXIT` then leave through `os._exit`. Called with a list (tests, other code), it only returns."""
    as_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"liverbench: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target = COMMANDS[name][0]
    if name == "predict" and any(a == "--config" or a.startswith("--config=") for a in rest):
        target = "benchmark.lightning_cli:main"  # LightningCLI's own predict subcommand
    if target == "benchmark.lightning_cli:main":
        rest = [name, *rest]
    code = int(_load(target)(rest) or 0)
    if as_process and name in FAST_EXIT and target == COMMANDS[name][0]:  # not LightningCLI (loggers, atexit)
        exit_now(code)
    return code


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
    sys.exit(main())
