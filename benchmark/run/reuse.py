"""When a finished run may be reused: its stored config must equal the config that would run now.

`liverbench run` skips a run whose result.json is `ok` only if `config_changes` is empty; otherwise
the old result belongs to another experiment (an edited entry, another preset layer, other data)
and must not reach the leaderboard under the new recipe. docs/runner.md lists the fields.
"""
from __future__ import annotations

import json

# Parts of the stored config that do not change the experiment: derived summaries of the other keys,
# and paths that only say where the results folder is (moving it must not re-run everything).
DERIVED = ("overrides", "budget_limit")
LOCATION = (("trainer", "default_root_dir"), ("data", "init_args", "split_file"), ("model", "init_args", "init_from"))


def comparable(config: dict) -> dict:
    """The run config as JSON stores it, without the derived and location-only keys."""
    from benchmark.run.overrides import derive_from_data
    from benchmark.run.records import json_safe

    out = json.loads(json.dumps(json_safe(config), default=str))
    if isinstance(out.get("model"), dict) and isinstance(out.get("data"), dict):
        derive_from_data(out)  # older records leave roi_size unset: their modules took the patch size at setup
    for key in DERIVED:
        out.pop(key, None)
    for path in LOCATION:
        node = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def config_changes(record: dict, spec, limit: int = 3) -> list[str]:
    """`key: old -> new` for each counted config value that differs between a finished record and
    what `spec` would run now (at most `limit`, then `... N more`); [] when the run may be reused."""
    from benchmark.run.run_config import build_config

    old = comparable(record.get("config") or {})
    new = comparable(build_config(spec, spec.folder))
    changes = [f"{key}: {_short(a)} -> {_short(b)}" for key, a, b in _diff(old, new)]
    if len(changes) > limit:
        changes = changes[:limit] + [f"... {len(changes) - limit} more"]
    return changes


def _diff(old, new, prefix: str = ""):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            yield from _diff(old.get(key, _MISSING), new.get(key, _MISSING), f"{prefix}{key}.")
    elif old != new:
        yield prefix.rstrip("."), old, new


class _Missing:
    def __repr__(self) -> str:
        return "(unset)"


_MISSING = _Missing()


def _short(value) -> str:
    text = repr(value) if isinstance(value, _Missing) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
