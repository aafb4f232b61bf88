"""Training-recipe switches that the cpu preset uses: normalisation layer and learning-rate schedule."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from models import create_model
from models.blocks import NORMS


@pytest.mark.parametrize("name", ["unet2d", "unet3d"])
def test_norm_switch_builds_that_layer(name):
    inst = create_model(name)  # default: instance norm
    batch = create_model(name, norm="batch")
    kinds = lambda m: {type(x).__name__ for x in m.net.modules() if "Norm" in type(x).__name__}
    assert kinds(inst) == {"InstanceNorm2d" if name == "unet2d" else "InstanceNorm3d"}
    assert kinds(batch) == {"BatchNorm2d" if name == "unet2d" else "BatchNorm3d"}
    assert inst.hparams.norm == "instance" and set(NORMS) == {"instance", "batch"}
    with pytest.raises(ValueError, match="norm"):
        create_model(name, norm="group")


def test_instance_norm_handles_inputs_smaller_than_the_bottleneck():
    """Instance norm needs more than one voxel per channel at the bottleneck: tiny inputs are padded."""
    model = create_model("unet2d").train()
    out = model(torch.randn(2, 1, 5, 7))
    assert out.shape == (2, 2, 5, 7) and torch.isfinite(out).all()


def _lrs(schedule: str, steps: int = 20) -> list[float]:
    torch.manual_seed(0)
    model = create_model("unet2d", features=4, depth=2, lr=1e-2, lr_schedule=schedule)
    seen: list[float] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    x = torch.randn(16, 1, 16, 16)
    y = (x > 0).float()

    class Dicts(torch.utils.data.Dataset):  # the module trains on {"image", "label"} batches
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"image": x[i], "label": y[i]}

    loader = DataLoader(Dicts(), batch_size=2)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                        limit_val_batches=0)
    trainer.fit(model, loader)
    return seen


def test_onecycle_warms_up_then_decays_within_max_steps():
    constant = _lrs("constant")
    assert constant == [pytest.approx(1e-2)] * 20
    cycle = _lrs("onecycle")
    peak = max(cycle)
    assert len(cycle) == 20 and peak == pytest.approx(1e-2, rel=0.05)
    assert cycle[0] < 0.1 * peak and cycle[-1] < 0.2 * peak  # starts low, ends low: the whole budget is one cycle
    assert cycle.index(peak) <= 2
    with pytest.raises(ValueError, match="lr_schedule"):
        create_model("unet2d", lr_schedule="step")


def test_warmup_ramps_over_a_tenth_of_the_steps_then_holds():
    """The cpu preset's schedule: the convergence rule, not the step count, lowers the rate later."""
    warm = _lrs("warmup")
    assert warm[:2] == pytest.approx([5e-3, 1e-2])  # 2 warm-up steps of 20, linear
    assert warm[2:] == [pytest.approx(1e-2)] * 18
