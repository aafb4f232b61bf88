"""The convergence rule on synthetic learning curves, its checks, and the callback that stops a fit."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.run.convergence import converged, CONVERGENCE_DEFAULTS, convergence_rule, describe_rule, plateaued

RULE = convergence_rule({})


def saturating(n: int, rate: float, top: float = 0.95) -> list[float]:
    return [top * (1 - math.exp(-rate * (i + 1))) for i in range(n)]


def test_a_plateau_converges_and_a_rising_curve_does_not():
    assert plateaued([0.5, 0.8, 0.9, 0.93, 0.931, 0.932], RULE)  # last third gains 0.002 < 0.005
    assert not plateaued([0.5, 0.6, 0.7, 0.8, 0.85, 0.9], RULE)  # still rising: last third gains 0.1
    assert not plateaued(saturating(9, 0.2), RULE)  # slow saturation, not there yet
    assert plateaued(saturating(30, 0.5), RULE)


def test_too_few_points_never_converge():
    flat = [0.9] * 4
    assert not plateaued(flat, RULE) and plateaued(flat + [0.9], RULE)
    assert not plateaued([], RULE)


def test_a_falling_curve_has_converged():
    """Overfitting: the best was earlier; the checkpoint keeps it, training longer cannot help."""
    assert plateaued([0.6, 0.9, 0.88, 0.85, 0.84, 0.83], RULE)


def test_noisy_plateau_converges_once_its_spread_is_covered_but_a_noisy_rise_does_not():
    rng = np.random.default_rng(0)
    noisy_flat = list(0.9 + rng.normal(0, 0.01, 60))
    # with enough points the earlier part holds a noise peak as high as the later part's
    assert any(plateaued(noisy_flat[:n], RULE) for n in range(5, 60))
    assert plateaued(noisy_flat, RULE)
    noisy_rise = list(np.linspace(0.5, 0.9, 30) + rng.normal(0, 0.005, 30))
    assert not plateaued(noisy_rise, RULE)


def test_window_and_delta_are_the_rule():
    curve = [0.5, 0.8, 0.9, 0.91, 0.915, 0.92]  # last third (2 points) gains 0.01 over 0.91
    assert not plateaued(curve, RULE)
    assert plateaued(curve, convergence_rule({"min_delta": 0.02}))
    # last half (3 points: 0.91, 0.915, 0.92) vs best before (0.9): gains 0.02
    assert not plateaued(curve, convergence_rule({"window": 0.5, "min_delta": 0.015}))


@pytest.mark.parametrize("bad, message", [({"stpo": True}, "unknown keys stpo"), ({"stop": "yes"}, "stop"),
                                          ({"min_points": 1}, "min_points"), ({"window": 1.5}, "window"),
                                          ({"min_delta": -1}, "min_delta"), ({"lr_drops": -1}, "lr_drops"),
                                          ({"lr_drops": 1.5}, "lr_drops"), ({"lr_factor": 1.0}, "lr_factor"),
                                          ({"min_window": 5}, "min_window"), ({"min_window": 0}, "min_window"),
                                          ({"lr_drops": 1, "drop_by": 1.0}, "drop_by must be a fraction"),
                                          ({"drop_by": 0.6}, "drop_by needs lr_drops"),
                                          ({"min_points": 6, "first_min_points": 5}, "first_min_points"),
                                          ({"first_min_points": True}, "first_min_points")])
def test_bad_rules_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        convergence_rule(bad)


def test_the_rule_reads_as_a_sentence():
    text = describe_rule(convergence_rule({"stop": True}))
    assert "at least 5 validation points" in text and "33%" in text and "0.005" in text and "stops" in text
    assert set(CONVERGENCE_DEFAULTS) == set(RULE)


def test_min_window_keeps_one_noisy_dip_from_ending_a_rising_run():
    """Measured (CHAOS T2 fold, 2026-12-04): a rise with one bad point looked flat over a 2-point window."""
    noisy_rise = [0.40, 0.61, 0.61, 0.64, 0.55, 0.64]
    assert plateaued(noisy_rise, convergence_rule({"min_points": 6}))
    strict = convergence_rule({"min_points": 6, "min_window": 4})
    assert not plateaued(noisy_rise, strict) and not plateaued(noisy_rise + [0.67], strict)
    assert plateaued(noisy_rise + [0.67, 0.66, 0.66, 0.665, 0.668], strict)
    assert "(at least 4 points)" in describe_rule(strict)


def test_with_drops_a_run_converges_only_on_a_plateau_after_every_drop():
    rule = convergence_rule({"lr_drops": 2})
    stall = [0.5, 0.55, 0.56, 0.56, 0.56, 0.56]
    assert plateaued(stall, rule) and not converged(stall, [], rule)
    after_two = stall + [0.8, 0.85, 0.86, 0.86, 0.86, 0.86] + [0.9, 0.9, 0.9, 0.9, 0.9]
    assert not converged(after_two, [6], rule)  # one drop taken of two
    assert converged(after_two, [6, 12], rule)  # the last phase (0.9 x 5) is flat
    assert not converged(after_two[:15], [6, 12], rule)  # only 3 points since the second drop
    text = describe_rule(rule)
    assert "first 2 plateaus multiply the learning rate by 0.1" in text and "after all 2 drops" in text
    assert "the first plateau multiplies the learning rate by 0.1" in describe_rule(convergence_rule({"lr_drops": 1}))


# Measured (3D CNN + Augmentation CT, b9638d2, cpu preset, 2026-12-05): validation Dice every 50 steps from step 350,
# the first point after the 300-step warm-up, to 700, where the first plateau dropped the learning rate; the
# run then rose at 0.1x the rate to 0.929 at the 5000-step cap and never plateaued again.
EARLY_3D_AUGMENTATION_CT = [0.736178, 0.750527, 0.76247, 0.776431, 0.774228, 0.780562, 0.764255, 0.770613]
CPU_RULE = {"min_points": 6, "window": 0.3333, "min_window": 4, "min_delta": 0.005, "lr_drops": 1}


def test_first_min_points_keeps_an_early_noisy_stretch_from_ending_the_first_phase():
    """The recorded curve met the cpu rule after 8 points (the last 4 beat the best before by 0.004): a noisy
    stretch of a steep curve, not the end of learning at that rate. 10 points in the first phase wait."""
    early = EARLY_3D_AUGMENTATION_CT
    assert plateaued(early, convergence_rule(CPU_RULE), first_phase=True)
    patient = convergence_rule({**CPU_RULE, "first_min_points": 10})
    assert not plateaued(early, patient, first_phase=True)
    assert not plateaued(early + [0.79], patient, first_phase=True)
    assert plateaued(early + [0.78, 0.779], patient, first_phase=True)  # a real stall still ends it at 10
    # later phases keep min_points: 6 points after the drop are enough there
    assert plateaued([0.8] * 6, patient) and not plateaued([0.8] * 5, patient)
    assert not plateaued([0.8] * 9, patient, first_phase=True)
    assert converged([0.5] * 3 + [0.8] * 6, [3], patient) and not converged([0.8] * 9, [], patient)
    assert "at least 10 (first phase; later phases 6) validation points" in describe_rule(patient)
    assert "at least 6 validation points" in describe_rule(convergence_rule(CPU_RULE))


def test_the_cpu_preset_needs_ten_points_in_its_first_phase():
    from benchmark.run.plan import load_preset

    rule = convergence_rule(load_preset("cpu")["convergence"])
    assert rule["first_min_points"] == 10 and rule["min_points"] == 6
    assert not plateaued(EARLY_3D_AUGMENTATION_CT, rule, first_phase=True)


def _trainer_with_curve(values: list[float], rule: dict, lr_schedule: str = "constant", warmup_steps: int = 0):
    """A real Lightning fit whose validation Dice follows `values` (a tiny module, a few steps)."""
    import lightning as L
    import torch

    from benchmark.run.stages.budget import budget_record, ValidationCurve
    from models.base import MONITOR

    class Scripted(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.save_hyperparameters({"lr_schedule": lr_schedule})
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.checks = 0

        def training_step(self, batch, i):
            return (self.w - 1).pow(2).sum()

        def validation_step(self, batch, i):
            self.log(MONITOR, values[min(self.checks, len(values) - 1)])

        def on_validation_epoch_end(self):
            self.checks += 1

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            if not warmup_steps:
                return opt
            warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup_steps))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": warm, "interval": "step"}}

    data = torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1)
    curve = ValidationCurve(rule)
    trainer = L.Trainer(max_steps=4 * len(values), val_check_interval=4, limit_val_batches=1, max_epochs=-1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[curve])
    trainer.fit(Scripted(), data, data)
    return budget_record(trainer, 1, 1.0, {"steps": trainer.max_steps}, curve)


def test_the_callback_stops_on_the_plateau_and_records_the_curve():
    record = _trainer_with_curve([0.3, 0.6, 0.8, 0.81, 0.811, 0.8112, 0.5, 0.5], convergence_rule({"stop": True}))
    assert record["stop_reason"] == "plateau" and record["converged"] is True
    assert record["steps"] == 24 and [p["step"] for p in record["curve"]] == [4, 8, 12, 16, 20, 24]
    assert record["val_dice"] == pytest.approx([0.3, 0.6, 0.8, 0.81, 0.811, 0.8112])
    assert all(p["seconds"] >= 0 for p in record["curve"]) and record["rule"]["stop"] is True
    # what the curve cost: each validation's seconds, and their sum
    assert all(p["val_seconds"] >= 0 for p in record["curve"])
    assert record["validation_seconds"] == pytest.approx(sum(p["val_seconds"] for p in record["curve"]), abs=0.05)


def test_without_stop_the_run_reaches_its_cap_and_says_whether_it_converged():
    rising = [0.1 * i for i in range(1, 10)]
    record = _trainer_with_curve(rising, convergence_rule({"stop": False}))
    assert record["stop_reason"] == "max_steps" and record["converged"] is False and record["still_improving"]


def test_the_callback_drops_the_learning_rate_on_each_plateau_then_stops():
    """A stall at the first learning rate is not the end: x0.1 and a new phase; the stop comes on the
    plateau after the last drop, and the curve records the learning rate of every point."""
    stall, after = [0.5, 0.52, 0.52, 0.52, 0.52], [0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85]
    record = _trainer_with_curve(stall + after + [0.2] * 4, convergence_rule({"stop": True, "lr_drops": 1}))
    assert record["stop_reason"] == "plateau" and record["converged"] is True
    assert record["lr_drops_at_step"] == [20] and record["steps"] == 40
    assert [p["lr"] for p in record["curve"]] == pytest.approx([0.1] * 5 + [0.01] * 5)


def test_the_callback_applies_first_min_points_to_the_first_phase_only():
    flat = [0.5] * 8
    record = _trainer_with_curve(flat + [0.8] * 8, convergence_rule({"stop": True, "lr_drops": 1, "first_min_points": 8}))
    # first phase: 8 flat points (drop at step 32); second phase: 5 points (min_points) after it
    assert record["lr_drops_at_step"] == [32] and record["steps"] == 52 and record["converged"] is True


def test_a_cap_before_the_last_drop_is_not_converged():
    record = _trainer_with_curve([0.5] * 7, convergence_rule({"stop": True, "lr_drops": 2}))
    assert record["stop_reason"] == "max_steps" and record["converged"] is False
    assert len(record["lr_drops_at_step"]) == 1


def test_drops_refuse_a_schedule_that_would_undo_them():
    with pytest.raises(ValueError, match="lr_drops needs model.lr_schedule"):
        _trainer_with_curve([0.5] * 3, convergence_rule({"lr_drops": 1}), lr_schedule="onecycle")


def test_drop_by_refuses_a_trainer_without_a_step_cap():
    import lightning as L
    import torch

    from benchmark.run.stages.budget import ValidationCurve

    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="drop_by is a fraction of trainer.max_steps"):
        ValidationCurve(convergence_rule({"lr_drops": 1, "drop_by": 0.5})).on_train_start(trainer, torch.nn.Linear(1, 1))


def test_a_stall_during_the_warm_up_is_not_a_plateau():
    """Measured (U-Net + Augmentation MRI, 2026-12-04): the first drop came at 400 steps, right after the
    300-step warm-up, from points taken while the rate was still rising. Those points no longer count: the
    first phase starts where the rate stopped rising (validation every 4 steps, warm-up 24 steps)."""
    record = _trainer_with_curve([0.5] * 20, convergence_rule({"stop": True}), warmup_steps=24)
    assert record["stop_reason"] == "plateau" and record["converged"] is True
    assert record["steps"] == 44  # 5 points from step 28 on; without the warm-up rule: 20
    assert _trainer_with_curve([0.5] * 20, convergence_rule({"stop": True}))["steps"] == 20  # no warm-up


def test_a_steady_learner_gets_its_drop_at_drop_by_and_converges_within_the_cap():
    """Measured (3D CNN + Augmentation MRI, 2026-12-04): validation Dice rose by a little more than the plateau
    margin in every window and reached the 5000-step cap before the rule's first drop. With `drop_by`, the drop is
    made at that fraction of the cap (0.4 x 56 steps -> the point at step 24) and the low-rate phase plateaus."""
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6] + [0.7] * 8
    rule = {"stop": True, "lr_drops": 1}
    record = _trainer_with_curve(values, convergence_rule({**rule, "drop_by": 0.4}))
    assert record["lr_drops_at_step"] == [24] and record["lr_drop_reasons"] == ["drop_by"]
    assert record["stop_reason"] == "plateau" and record["converged"] is True and record["steps"] == 44
    assert [p["lr"] for p in record["curve"]] == pytest.approx([0.1] * 6 + [0.01] * 5)
    without = _trainer_with_curve(values, convergence_rule(rule))  # the plateau's drop comes too late
    assert without["lr_drops_at_step"] == [44] and without["lr_drop_reasons"] == ["plateau"]
    assert without["stop_reason"] == "max_steps" and without["converged"] is False
    assert "made there" in describe_rule(convergence_rule({**rule, "drop_by": 0.6})) and "60%" in describe_rule(
        convergence_rule({**rule, "drop_by": 0.6}))
