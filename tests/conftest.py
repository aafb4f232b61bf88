"""Shared fixtures. Tests run offline (W&B) and with a per-session cache folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """Keep the phantom cache, W&B and torch hub inside pytest's temp folder."""
    root = tmp_path_factory.mktemp("env")
    old = {k: os.environ.get(k) for k in ("LIVERBENCH_CACHE", "WANDB_MODE", "WANDB_DIR", "TORCH_HOME")}
    os.environ["LIVERBENCH_CACHE"] = str(root / "cache")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ["WANDB_DIR"] = str(root / "wandb")
    os.environ["TORCH_HOME"] = str(root / "torch")
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def real_data() -> Path:
    """The real CT/MR samples beside the checkout; skip when they are absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real samples not found at {REAL_DATA}")
    return REAL_DATA
