"""Registry: decorator, duplicates, entry points of installed distributions, `liverbench models`."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

import models
from benchmark.cli import main as liverbench
from models import registry
from models.base import SegmentationModule


@pytest.fixture
def isolated_registry(monkeypatch):
    """Changes to the registry made by a test vanish after it."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_ENTRY_POINTS_SEEN", set(registry._ENTRY_POINTS_SEEN))


def test_builtin_models_are_registered():
    names = models.list_models()
    assert {"unet2d", "unet3d", "resnet_unet", "dynunet", "segresnet", "attention_unet", "swin_unetr"} <= set(names)
    assert names == sorted(names)
    assert models.get_model_class("unet3d").spatial_dims == 3
    assert models.create_model("unet2d", features=4, depth=2).hparams.features == 4


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown model 'unet9d'; registered models: .*unet2d"):
        models.create_model("unet9d")


def test_duplicate_name_raises(isolated_registry):
    @models.register_model("dup_net")
    class First(SegmentationModule):
        def build_network(self):
            return nn.Conv2d(1, 2, 1)

    with pytest.raises(ValueError, match="'dup_net' is already registered by .*First"):
        @models.register_model("dup_net")
        class Second(SegmentationModule):
            def build_network(self):
                return nn.Conv2d(1, 2, 1)

    with pytest.raises(TypeError, match="needs a SegmentationModule subclass"):
        models.register_model("not_a_module")(nn.Conv2d)
    assert models.get_model_class("dup_net") is First and First.model_name == "dup_net"


def _write_distribution(root, dist: str, package: str, entry_points: str, source: str) -> None:
    (root / package).mkdir()
    (root / package / "__init__.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_entry_points_register_third_party_models(tmp_path, monkeypatch, isolated_registry):
    """An installed distribution (dist-info on sys.path) adds models without touching LiverBench."""
    _write_distribution(tmp_path, "lb_plugin", "lb_plugin", """\
        [liverbench.models]
        lb_plugin_module = lb_plugin
        plugin_by_class = lb_plugin:PlainNet
        """, """\
        from torch import nn
        from models import SegmentationModule, register_model

        @register_model("plugin_decorated")
        class DecoratedNet(SegmentationModule):
            def build_network(self):
                return nn.Conv2d(self.hparams.in_channels, self.hparams.num_classes, 3, padding=1)

        class PlainNet(SegmentationModule):
            spatial_dims = 3
            def build_network(self):
                return nn.Conv3d(self.hparams.in_channels, self.hparams.num_classes, 1)
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = models.list_models()
    assert "plugin_decorated" in names and "plugin_by_class" in names
    net = models.create_model("plugin_by_class")
    assert net.spatial_dims == 3 and net(torch.zeros(1, 1, 4, 4, 4)).shape == (1, 2, 4, 4, 4)


def test_broken_plugin_warns_and_the_rest_still_works(tmp_path, monkeypatch, isolated_registry):
    _write_distribution(tmp_path, "lb_broken", "lb_broken", "[liverbench.models]\nbroken = lb_broken\n",
                        "raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="entry point 'broken' .* failed to load: missing dependency xyz"):
        names = models.list_models()
    assert "unet2d" in names


def test_liverbench_models_prints_the_registry(capsys):
    assert liverbench(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(models.list_models())
    unet2d = models.create_model("unet2d")
    assert rows["unet2d"]["params"] == sum(p.numel() for p in unet2d.parameters())
    assert rows["unet2d"]["dims"] == 2 and rows["unet3d"]["dims"] == 3
    assert rows["unet2d"]["class_path"] == "models.unet2d.UNet2D"

    assert liverbench(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "dims", "params", "class_path"]
    unet_line = next(line for line in lines if line.startswith("unet2d "))
    assert unet_line.split()[:3] == ["unet2d", "2D", f"{rows['unet2d']['params']:,}"]
