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

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "models.md"]  # both show the worked example


def _example_blocks(doc: Path = DOCS[0], every: bool = False) -> dict:
    """The fenced blocks of the 'Adding a model' section, by language (first of each, or all)."""
    section = doc.read_text().split("## Adding a model", 1)[1].split("\n## ", 1)[0]
    blocks: dict = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        blocks.setdefault(lang, []).append(body)
    return blocks if every else {lang: bodies[0] for lang, bodies in blocks.items()}


def test_readme_and_docs_show_the_same_code():
    readme, docs = (_example_blocks(doc) for doc in DOCS)
    assert readme["text"].split() == docs["text"].split()
    code = [[line for line in b["python"].splitlines() if line.strip() and not line.strip().startswith('"')]
            for b in (readme, docs)]
    assert code[0] == [line for line in code[1] if line in code[0]]  # docs/models.md only adds docstring lines


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The documented file, saved as `tiny_fcn.py` in a folder on sys.path and imported."""
    models.list_models()  # the built-ins registered first, so the copy below holds them even when this test runs alone
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
    assert documented == line.split(), "README.md shows the real `liverbench models` line"


def test_example_runs_from_a_suite_config(example, tmp_path):
    config = tmp_path / "tiny_fcn.yaml"
    config.write_text(_example_blocks()["yaml"])
    args = ["--config", str(config), "--trainer.fast_dev_run=true", "--data.init_args.phantom_cases=3",
            "--data.init_args.batch_size=2", "--data.init_args.samples_per_epoch=4",
            "--data.init_args.patch_size=[64,64]", f"--trainer.default_root_dir={tmp_path}"]
    assert liverbench(["fit", *args]) == 0
    assert liverbench(["test", *args]) == 0


def test_example_runs_in_a_suite(example, tmp_path):
    """The README's suite file, with the runner's smoke budget: the new model is benchmarked and scored."""
    import json

    import yaml

    from benchmark.run import runner

    config_yaml, suite_yaml = _example_blocks(every=True)["yaml"][:2]
    (tmp_path / "my_suite").mkdir()
    (tmp_path / "my_suite" / "tiny_fcn.yaml").write_text(config_yaml)
    suite = yaml.safe_load(suite_yaml)
    suite["budget"] = "smoke"  # a few steps on a tiny phantom instead of the cpu preset's budget
    (tmp_path / "my_suite.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "results"
    assert runner.main(["--suite", str(tmp_path / "my_suite.yaml"), "--modalities", "ct", "--out", str(out),
                        "--wandb", "disabled"]) == 0
    record = json.loads((out / "my_suite" / "tiny_fcn__ct__seed0" / "result.json").read_text())
    assert record["status"] == "ok" and record["model"] == "tiny_fcn" and 0 <= record["metrics"]["dice"] <= 1
