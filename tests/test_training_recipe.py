"""Training-recipe switches: normalisation layer, learning-rate schedule, weight average, compiled training steps."""
from __future__ import annotations

import shutil

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


def _lrs(schedule: str, steps: int = 20, **kwargs) -> list[float]:
    torch.manual_seed(0)
    model = create_model("unet2d", features=4, depth=2, lr=1e-2, lr_schedule=schedule, **kwargs)
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


def test_fixed_warmup_steps_do_not_depend_on_the_cap():
    """`warmup_steps` fixes the warm-up, so a run that converges before the cap takes the same steps
    whatever the cap; the default (None) stays a tenth of the trainer's length."""
    short, long = _lrs("warmup", 20, warmup_steps=4), _lrs("warmup", 40, warmup_steps=4)
    assert short[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2]) and long[:20] == short
    assert _lrs("warmup", 40)[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])  # 10 % of 40
    cycle = _lrs("onecycle", 20, warmup_steps=6)
    assert cycle.index(max(cycle)) == 5 and short.index(max(short)) == 3  # the 6th (4th) step reaches the peak
    with pytest.raises(ValueError, match="warmup_steps"):
        create_model("unet2d", lr_schedule="warmup", warmup_steps=0)
    with pytest.raises(ValueError, match="warmup_steps 20 must be shorter"):
        _lrs("warmup", 20, warmup_steps=20)


@pytest.mark.parametrize("name,shape", [("unet2d", (2, 1, 32, 32)), ("unet3d", (1, 1, 16, 16, 16))])
def test_deep_supervision_outputs_lower_resolutions_in_training_only(name, shape):
    torch.manual_seed(0)
    model = create_model(name, features=4, depth=3, deep_supervision=2, loss="dice_ce").train()
    x = torch.randn(*shape)
    outs = model(x)
    assert [tuple(o.shape[2:]) for o in outs] == [shape[2:], tuple(s // 2 for s in shape[2:]),
                                                  tuple(s // 4 for s in shape[2:])]
    label = (x > 0).float()
    loss = model.compute_loss(outs, label)
    # MONAI's weights 1, 1/2, 1/4 on nearest-downsampled labels
    expected = sum(w * model._single_loss(o.float(), torch.nn.functional.interpolate(label, size=o.shape[2:],
                                                                                      mode="nearest-exact"))
                   for w, o in zip((1.0, 0.5, 0.25), outs))
    assert torch.allclose(loss, expected) and loss > model.compute_loss(outs[0], label)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (shape[0], 2, *shape[2:])
    # the heads are part of the weights, so a checkpoint restores them; inference never uses them
    assert any(k.startswith("net.aux_heads.1.") for k in model.state_dict())
    with pytest.raises(ValueError, match="deep_supervision"):
        create_model(name, depth=3, deep_supervision=3)


def test_deep_supervision_crops_padded_outputs_in_proportion():
    """A training input that is not a multiple of 2**depth is padded; every output comes back cropped."""
    model = create_model("unet2d", features=4, depth=2, deep_supervision=1).train()
    outs = model(torch.randn(1, 1, 13, 18))
    assert [tuple(o.shape[2:]) for o in outs] == [(13, 18), (7, 9)]


def test_deep_supervision_trains_and_lowers_its_loss():
    """A short real fit: the deeply supervised loss goes down; the CE loss supervises every level too."""
    for loss in ("dice_ce", "ce"):
        torch.manual_seed(0)
        model = create_model("unet2d", features=4, depth=2, deep_supervision=1, lr=1e-2, loss=loss)
        x = torch.randn(8, 1, 16, 16)
        y = (x > 0.3).float()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(30):
            opt.zero_grad()
            value = model.compute_loss(model(x), y)
            value.backward()
            opt.step()
            losses.append(float(value.detach()))
        assert losses[-1] < 0.5 * losses[0], (loss, losses[0], losses[-1])


def test_ema_decay_ends_training_on_the_moving_average_of_the_weights():
    """`ema_decay`: after a real fit the module holds decay * average + (1 - decay) * weights, updated after
    every optimizer step from the first step's weights; without it, the last step's weights."""
    x = torch.randn(8, 1, 16, 16)
    batches = [{"image": x[i:i + 2], "label": (x[i:i + 2] > 0).float()} for i in range(0, 8, 2)]
    for decay in (0.9, None):
        torch.manual_seed(0)
        model = create_model("unet2d", features=4, depth=2, lr=1e-2, ema_decay=decay)
        after_steps: list[dict] = []

        class Record(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                after_steps.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})

        trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                            limit_val_batches=0)
        trainer.fit(model, DataLoader(batches, batch_size=None))
        expected = dict(after_steps[0])
        for weights in after_steps[1:]:
            if decay is None:
                expected = weights
                continue
            expected = {k: decay * expected[k] + (1 - decay) * w if w.is_floating_point() else w
                        for k, w in weights.items()}
        final = model.net.state_dict()
        assert all(torch.allclose(final[k], expected[k], atol=1e-6) for k in expected), decay
        assert not all(torch.equal(final[k], after_steps[-1][k]) for k in expected) or decay is None
    with pytest.raises(ValueError, match="ema_decay"):
        create_model("unet2d", ema_decay=1.0)


def test_compile_training_compiles_the_training_forward_only_and_copies_start_without_it():
    """`compile_training`: the training forward goes through `torch.compile` of the module's own network (same
    parameters and state-dict keys); eval mode stays eager; a copy (the weight average's) and a pickled module
    carry no compiled graph of the original."""
    import copy
    import pickle

    from torch._dynamo.eval_frame import OptimizedModule

    plain = create_model("unet2d", features=4, depth=2)
    assert plain.train_net is plain.net
    model = create_model("unet2d", features=4, depth=2, compile_training=True)
    assert list(model.state_dict()) == list(plain.state_dict())
    model.train()
    compiled = model.train_net
    assert isinstance(compiled, OptimizedModule) and compiled._orig_mod is model.net and model.train_net is compiled
    assert not any(isinstance(m, OptimizedModule) for m in model.modules())  # the cache is no submodule
    model.eval()
    assert not isinstance(model.eval_net, OptimizedModule)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not twin.__dict__.get("_train_net_cache")
        assert twin.train_net._orig_mod is twin.net and twin.net is not model.net


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="torch.compile on a CPU needs a C++ compiler")
def test_compile_training_trains_to_the_same_weights_as_eager():
    """A real fit (6 steps, with the weight average): the compiled training steps end on the eager run's averaged
    weights up to float rounding."""
    x = torch.randn(8, 1, 16, 16)
    batches = [{"image": x[i:i + 2], "label": (x[i:i + 2] > 0).float()} for i in range(0, 8, 2)]
    weights = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = create_model("unet2d", features=4, depth=2, lr=1e-2, ema_decay=0.9, compile_training=compiled)
        L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0).fit(model, DataLoader(batches, batch_size=None))
        assert bool(model.__dict__.get("_train_net_cache")) == compiled  # the compiled graph did the steps
        weights[compiled] = model.net.state_dict()
    torch.manual_seed(0)
    first = create_model("unet2d", features=4, depth=2)  # the start: the weights moved, so the comparison says something
    assert any(not torch.allclose(weights[True][k], first.net.state_dict()[k]) for k in weights[True] if "weight" in k)
    for k, w in weights[False].items():
        torch.testing.assert_close(weights[True][k], w, rtol=1e-4, atol=1e-5)


def test_a_preset_can_add_lightning_callbacks_and_the_run_records_them(tmp_path):
    """`trainer.callbacks` in a preset (here Lightning's EMA of the weights) reach the Trainer; result.json
    records them as the preset wrote them, and the kept checkpoint holds the averaged weights."""
    import json

    from benchmark.run.runner import main
    from models import load_module

    (tmp_path / "tiny.yaml").write_text(
        "model:\n  class_path: models.unet2d.UNet2D\n  init_args: {features: 4, depth: 2}\n"
        "data:\n  class_path: datamodules.CTDataModule\n  init_args: {dims: 2}\n")
    (tmp_path / "s.yaml").write_text("name: s\nbudget: smoke\nentries:\n  - {variant: tiny, label: Tiny, config: tiny.yaml}\n")
    (tmp_path / "p.yaml").write_text(
        "name: p\nsmoke:\n  dims:\n    2:\n      trainer:\n        max_steps: 3\n        val_check_interval: 3\n"
        "        callbacks:\n          - class_path: lightning.pytorch.callbacks.EMAWeightAveraging\n"
        "            init_args: {decay: 0.5}\n")
    out = tmp_path / "out"
    assert main(["--suite", str(tmp_path / "s.yaml"), "--preset", str(tmp_path / "p.yaml"), "--modalities", "ct",
                 "--out", str(out), "--wandb", "disabled"]) == 0
    folder = out / "s" / "tiny__ct__seed0"
    record = json.loads((folder / "result.json").read_text())
    assert record["status"] == "ok", record.get("error")
    callbacks = record["config"]["trainer"]["callbacks"]
    assert callbacks == [{"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.5}}]
    checkpoint = torch.load(folder / "model.ckpt", weights_only=True, map_location="cpu")
    assert "current_model_state" in checkpoint  # written by the EMA callback: state_dict is the average
    averaged = checkpoint["state_dict"]
    assert any(not torch.equal(averaged[k], v) for k, v in checkpoint["current_model_state"].items()
               if k in averaged and v.is_floating_point())
    module, _ = load_module(folder / "model.ckpt")
    key = next(k for k in averaged if k.endswith("weight") and averaged[k].dim() > 1)
    assert torch.equal(module.state_dict()[key], averaged[key])
