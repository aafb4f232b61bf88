"""The `liverbench` command: a thin dispatcher to each subcommand's own `main(argv)`.

Subcommands are imported lazily so `liverbench --help` and light commands stay fast.
"""
from __future__ import annotations

import importlib
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


def _usage() -> str:
    lines = ["usage: liverbench <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `liverbench <command> --help` for a command's options."]
    return "\n".join(lines)


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
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
    result = _load(target)(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
