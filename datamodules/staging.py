"""Datasets are written into a hidden folder beside the destination, then moved in: a failed or
interrupted writer leaves an existing dataset as it was, and never deletes a file it did not write.

`publish` moves the staged files in with `dataset.json` last (it is absent while files move, so an
interrupted move never looks like a complete dataset); `refuse_foreign` refuses a destination whose
case folders hold files this writer would not write (they may be the user's, or a mix of old cases).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from common.files import DataError

PARTIAL = ".partial-"  # temp folders `.<dst>.partial-<pid>` beside the destination
CASE_DIRS = ("imagesTr", "labelsTr")


def partial_dir(root: Path) -> Path:
    return root.parent / f".{root.name}{PARTIAL}{os.getpid()}"


def listing(folder: Path, n: int = 5) -> str:
    """'NOTES.txt, imagesTs/ and 3 more': what a refusal names."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def refuse_foreign(staged: Path, final: Path, kept=frozenset()) -> None:
    """DataError naming the case files in `final` that neither come from `staged` nor are `kept` cases."""
    for sub in CASE_DIRS:
        mine = {p.name for p in (staged / sub).iterdir()} if (staged / sub).is_dir() else set()
        other = sorted(p.name for p in (final / sub).glob("*.nii*")
                       if not p.name.startswith((".", "_")) and p.name not in mine and case_of(p.name) not in kept)
        if other:
            shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
            raise DataError(final / sub, f"holds case files that this command does not write ({shown}); "
                                         "move them away or write into a new folder")


def case_of(name: str) -> str:
    """`liver_3_0000.nii.gz` / `liver_3.nii.gz` -> `liver_3`."""
    stem = name.split(".nii")[0]
    return stem[: -len("_0000")] if stem.endswith("_0000") else stem


def publish(staged: Path, final: Path) -> Path:
    """Move every staged file into `final` (created by a rename when it does not exist), dataset.json
    last; files of `final` that are not staged stay untouched."""
    if not final.exists():
        os.replace(staged, final)
        return final
    (final / "dataset.json").unlink(missing_ok=True)
    for new in sorted(staged.rglob("*")):
        if new.is_file() and new.name != "dataset.json":
            target = final / new.relative_to(staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(new, target)
    os.replace(staged / "dataset.json", final / "dataset.json")
    shutil.rmtree(staged)
    return final


def os_error(exc: OSError, final) -> str:
    """`<path>: <problem>` for an I/O error while writing dataset `final`: a file of the staging
    folder (hidden, removed again) is named as `final`, any other file (an input) as itself."""
    name = exc.filename
    if name is None or PARTIAL in str(name) or Path(str(name)) == Path(final).parent:
        name = final
    return f"{name}: {exc.strerror or exc}"
