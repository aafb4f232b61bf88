"""The convergence rule, the same for every variant (preset section `convergence:`): a run has
converged when it has at least `min_points` validation points and the best validation Dice of the last
`window` of them (a third by default, at least `min_window` points: noise must not end a run that one
bad point made look flat) beats the best before them by less than `min_delta`. `first_min_points`, when
set, replaces `min_points` in the first phase only: early in a run the curve is steep and noisy, and a short
flat stretch there is not the end of learning at that rate. With
`lr_drops: N`, the first N plateaus each multiply the learning rate by `lr_factor` and start a new phase
(the rule then looks only at the points since the drop), as reduce-on-plateau does: a stall at a high
learning rate is not mistaken for the end of learning. A run has converged when the rule holds in its
last phase after all N drops. `drop_by: f` makes the next drop at f x the trainer's max_steps when no
plateau has made it by then: a run that learns slowly but steadily still gets its low-rate phase (and so a
plateau) within the cap. With `stop: true` the run ends there; the trainer's max_steps / max_time stays the cap.
Plain Python: the planner and the report use it without importing Lightning."""
from __future__ import annotations

import math

STILL_IMPROVING_MARGIN = 0.002  # the last check beats every earlier one by at least this much
CONVERGENCE_DEFAULTS = {"stop": False, "min_points": 5, "first_min_points": None, "window": 1 / 3, "min_window": 1,
                        "min_delta": 0.005, "lr_drops": 0, "lr_factor": 0.1, "drop_by": None}


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
    first = rule["first_min_points"]
    if first is not None and not (isinstance(first, int) and not isinstance(first, bool) and first >= rule["min_points"]):
        raise ValueError(f"convergence.first_min_points must be null or an integer >= min_points "
                         f"({rule['min_points']}), got {first!r}")
    if not (isinstance(rule["min_window"], int) and 1 <= rule["min_window"] < rule["min_points"]):
        raise ValueError(f"convergence.min_window must be an integer in [1, min_points), got {rule['min_window']!r}")
    if not (isinstance(rule["window"], (int, float)) and 0 < rule["window"] < 1):
        raise ValueError(f"convergence.window must be a fraction in (0, 1), got {rule['window']!r}")
    if not (isinstance(rule["min_delta"], (int, float)) and rule["min_delta"] >= 0):
        raise ValueError(f"convergence.min_delta must be >= 0, got {rule['min_delta']!r}")
    if not (isinstance(rule["lr_drops"], int) and not isinstance(rule["lr_drops"], bool) and rule["lr_drops"] >= 0):
        raise ValueError(f"convergence.lr_drops must be an integer >= 0, got {rule['lr_drops']!r}")
    if not (isinstance(rule["lr_factor"], (int, float)) and 0 < rule["lr_factor"] < 1):
        raise ValueError(f"convergence.lr_factor must be a fraction in (0, 1), got {rule['lr_factor']!r}")
    by = rule["drop_by"]
    if by is not None and not (isinstance(by, (int, float)) and not isinstance(by, bool) and 0 < by < 1):
        raise ValueError(f"convergence.drop_by must be a fraction of max_steps in (0, 1) or null, got {by!r}")
    if by is not None and not rule["lr_drops"]:
        raise ValueError("convergence.drop_by needs lr_drops >= 1 (it sets when a drop is made at the latest)")
    return rule


def describe_rule(rule: dict) -> str:
    """The rule in one sentence, for the leaderboard."""
    drops = rule.get("lr_drops", 0)
    first = rule.get("first_min_points")
    points = (f"{rule['min_points']}" if not first or first == rule["min_points"]
              else f"{first} (first phase; later phases {rule['min_points']})")
    text = (f"at least {points} validation points after the learning-rate warm-up and the best validation Dice of the last "
            f"{rule['window']:.0%} of them{_at_least(rule['min_window'])} beats the best before by less than {rule['min_delta']:g}")
    if drops:
        first_plateaus = f"the first {drops} plateaus multiply" if drops > 1 else "the first plateau multiplies"
        text = (f"plateau = {text}; {first_plateaus} the learning rate "
                f"by {rule['lr_factor']:g} and the rule restarts from there; converged = a plateau after "
                f"{'all ' if drops > 1 else ''}{drops} drop{'s' if drops > 1 else ''}")
        if rule.get("drop_by"):
            text += (f"; a drop that no plateau has made by {rule['drop_by']:.0%} of the step cap is made there "
                     f"(a slow but steady learner)")
    else:
        text = f"converged = {text}"
    return text + ("; the run stops there" if rule["stop"] else "; the run goes on to its cap")


def _at_least(points: int) -> str:
    return f" (at least {points} points)" if points > 1 else ""


def plateaued(curve: list[float], rule: dict, first_phase: bool = False) -> bool:
    """`convergence_rule`'s test on one phase's validation Dice curve (points evenly spaced in steps);
    `first_phase`: the curve is the run's first phase (`first_min_points` applies)."""
    n = len(curve)
    if n < min_points(rule, first_phase):
        return False
    tail = max(rule.get("min_window", 1), math.ceil(n * rule["window"]))
    return max(curve[n - tail:]) < max(curve[:n - tail]) + rule["min_delta"]


def min_points(rule: dict, first_phase: bool) -> int:
    """The validation points a phase needs before it can plateau."""
    first = rule.get("first_min_points")
    return first if first_phase and first else rule["min_points"]


def converged(curve: list[float], drops_at: list[int], rule: dict, first: int = 0) -> bool:
    """The rule on a whole run: every learning-rate drop taken (`drops_at`: index of the first point of
    each new phase; `first`: of the first phase, after the warm-up) and a plateau in the last phase."""
    start = drops_at[-1] if drops_at else first
    return len(drops_at) >= rule.get("lr_drops", 0) and plateaued(curve[start:], rule, first_phase=not drops_at)


def still_improving(curve: list[float]) -> bool:
    """True when the last validation Dice is the best by `STILL_IMPROVING_MARGIN` (still rising)."""
    return len(curve) >= 2 and curve[-1] >= max(curve[:-1]) + STILL_IMPROVING_MARGIN
