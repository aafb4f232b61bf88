"""The worked "Adding a model" example of docs/models.md really works: registered, listed, runnable."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

import models
from benchmark.cli import main as liverbench
from models import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def _example_blocks() -> dict[str, str]:
    """The fenced blocks of the 'Adding a model' section, by language (first of each)."""
    section = DOC.read_text().split("## Adding a model", 1)[1]
    blocks: dict[str, str] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        blocks.setdefault(lang, body)
    return blocks


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The documented file, saved as `tiny_fcn.py` in a folder on sys.path and imported."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    (tmp_path / "tiny_fcn.py").write_text(_example_blocks()["python"])
    monkeypatch.syspath_prepend(str(tmp_path))
    import tiny_fcn

    yield tiny_fcn
    sys.modules.pop("tiny_fcn", None)


def test_example_registers_and_appears_in_liverbench_models(example, capsys):
    assert "tiny_fcn" in models.list_models()
    model = models.create_model("tiny_fcn")
    assert isinstance(model, example.TinyFCN) and model.spatial_dims == 2
    assert model(torch.zeros(2, 1, 17, 9)).shape == (2, 2, 17, 9)

    assert liverbench(["models"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny_fcn "))
    params = sum(p.numel() for p in model.parameters())
    assert line.split() == ["tiny_fcn", "2D", f"{params:,}", "tiny_fcn.TinyFCN"]
    documented = _example_blocks()["text"].split()
    assert documented == line.split(), "docs/models.md shows the real `liverbench models` line"


def test_example_runs_from_a_suite_config(example, tmp_path):
    config = tmp_path / "tiny_fcn.yaml"
    config.write_text(_example_blocks()["yaml"])
    args = ["--config", str(config), "--trainer.fast_dev_run=true", "--data.init_args.phantom_cases=3",
            "--data.init_args.batch_size=2", "--data.init_args.samples_per_epoch=4",
            "--data.init_args.patch_size=[64,64]", f"--trainer.default_root_dir={tmp_path}"]
    assert liverbench(["fit", *args]) == 0
    assert liverbench(["test", *args]) == 0
