"""`liverbench data <subcommand>`: dispatch to each data tool's own `main(argv)`."""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "phantom": ("datamodules.phantom:main", "generate the embedded CT/MRI abdominal phantom"),
    "inspect": ("datamodules.inspect:main", "per-case shape, spacing, orientation, labels, liver ml"),
    "convert": ("datamodules.convert:main", "convert msd|lits|chaos|amos|dicom to the nnU-Net raw layout"),
    "download": ("datamodules.download:main", "download, verify and convert msd-liver|chaos"),
    "devset": ("datamodules.devset:main", "build the real development sets (CT, MRI) from the shared samples"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        out = sys.stdout if not argv or argv[0] in ("-h", "--help") else sys.stderr
        print("usage: liverbench data {" + ",".join(SUBCOMMANDS) + "} [options]\n", file=out)
        for name, (_, help_) in SUBCOMMANDS.items():
            print(f"  {name:<9} {help_}", file=out)
        return 0 if out is sys.stdout else 2
    module, func = SUBCOMMANDS[argv[0]][0].split(":")
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
