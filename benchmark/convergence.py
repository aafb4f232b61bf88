"""The convergence rule, the same for every variant (preset section `convergence:`): a run has
converged when it has at least `min_points` validation points and the best validation Dice of the last
`window` of them (a third by default) beats the best before them by less than `min_delta`. With
`stop: true` the run ends as soon as the rule holds; the trainer's max_steps / max_time stays the cap.
Plain Python: the planner and the report use it without importing Lightning."""
from __future__ import annotations

import math

STILL_IMPROVING_MARGIN = 0.002  # the last check beats every earlier one by at least this much
CONVERGENCE_DEFAULTS = {"stop": False, "min_points": 5, "window": 1 / 3, "min_delta": 0.005}


def convergence_rule(settings: dict | None) -> dict:
    """The preset's `convergence:` over the defaults, checked (a typo must not change the experiment)."""
    rule = {**CONVERGENCE_DEFAULTS, **(settings or {})}
    unknown = set(rule) - set(CONVERGENCE_DEFAULTS)
    if unknown:
        raise ValueError(f"convergence: unknown keys {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(CONVERGENCE_DEFAULTS)})")
    if not isinstance(rule["stop"], bool):
        raise ValueError(f"convergence.stop must be true or false, got {rule['stop']!r}")
    if not (isinstance(rule["min_points"], int) and rule["min_points"] >= 2):
        raise ValueError(f"convergence.min_points must be an integer >= 2, got {rule['min_points']!r}")
    if not (isinstance(rule["window"], (int, float)) and 0 < rule["window"] < 1):
        raise ValueError(f"convergence.window must be a fraction in (0, 1), got {rule['window']!r}")
    if not (isinstance(rule["min_delta"], (int, float)) and rule["min_delta"] >= 0):
        raise ValueError(f"convergence.min_delta must be >= 0, got {rule['min_delta']!r}")
    return rule


def describe_rule(rule: dict) -> str:
    """The rule in one sentence, for the leaderboard."""
    return (f"converged = at least {rule['min_points']} validation points and the best validation Dice of the last "
            f"{rule['window']:.0%} of them beats the best before by less than {rule['min_delta']:g}"
            + ("; the run stops there" if rule["stop"] else "; the run goes on to its cap"))


def plateaued(curve: list[float], rule: dict) -> bool:
    """`convergence_rule`'s test on a validation Dice curve (points evenly spaced in steps)."""
    n = len(curve)
    if n < rule["min_points"]:
        return False
    tail = max(1, math.ceil(n * rule["window"]))
    return max(curve[n - tail:]) < max(curve[:n - tail]) + rule["min_delta"]


def still_improving(curve: list[float]) -> bool:
    """True when the last validation Dice is the best by `STILL_IMPROVING_MARGIN` (still rising)."""
    return len(curve) >= 2 and curve[-1] >= max(curve[:-1]) + STILL_IMPROVING_MARGIN
