"""`pretrained: synthetic`: a ResNet-34 encoder pre-trained offline on the phantom's tissue task.

The whole ResNet-U-Net is trained for a few hundred steps to segment every tissue group of
rendered phantom patients (datamodules/phantom/tissue_task.py); only the encoder is kept. The
result is cached once per config under `$LIVERBENCH_CACHE/pretrain-synthetic/<hash>/`
(`encoder.pt`, and `config.json` with the hash and the weights' sha256); the hash covers the
config, the phantom's GENERATOR_VERSION and PRETRAIN_VERSION. Built under a lock into a temp
folder renamed into place, so parallel shard processes build it once and never see half of it.
`liverbench pretrain` builds it explicitly; `ResNetUNet(pretrained="synthetic")` builds or loads it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.files import DataError, atomic_write_json

PRETRAIN_VERSION = "1"
# the cpu default: a few minutes on a 2-core CPU (measured: docs/models.md)
DEFAULTS = {"patients": 6, "spacing": 3.0, "steps": 200, "batch_size": 8, "patch": 64, "lr": 1e-3,
            "seed": 0, "phantom_seed": 7919}
WEIGHTS, CONFIG = "encoder.pt", "config.json"
WAIT_S = float(os.environ.get("LIVERBENCH_PRETRAIN_WAIT", 1800))  # longest wait for another builder


def resolve_config(overrides: dict | None = None) -> dict:
    unknown = set(overrides or {}) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown synthetic pretraining key(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **(overrides or {})}
    for key in ("patients", "steps", "batch_size", "patch", "seed", "phantom_seed"):
        cfg[key] = int(cfg[key])
    cfg["spacing"], cfg["lr"] = float(cfg["spacing"]), float(cfg["lr"])
    if min(cfg["patients"], cfg["steps"], cfg["batch_size"]) < 1 or cfg["patch"] % 32:
        raise ValueError(f"synthetic pretraining needs patients, steps, batch_size >= 1 and patch a multiple of 32: {cfg}")
    return cfg


def config_hash(cfg: dict) -> str:
    from datamodules.phantom import GENERATOR_VERSION

    key = {"config": cfg, "generator_version": GENERATOR_VERSION, "pretrain_version": PRETRAIN_VERSION}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    """`$LIVERBENCH_CACHE/pretrain-synthetic` (default ~/.cache/liverbench), beside the phantom cache."""
    return Path(os.environ.get("LIVERBENCH_CACHE") or Path.home() / ".cache" / "liverbench") / "pretrain-synthetic"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def train_encoder(cfg: dict, log=print) -> dict[str, torch.Tensor]:
    """Train the ResNet-U-Net on the tissue task; the encoder's state dict. Same cfg -> same weights."""
    from datamodules.phantom.tissue_task import N_CLASSES, build_volumes
    from models.resnet_unet_net import ResNetUNetNet

    rng = np.random.default_rng([cfg["seed"], 1])
    t0 = time.perf_counter()
    volumes = build_volumes(cfg["patients"], cfg["phantom_seed"], cfg["spacing"])
    log(f"pretrain: {len(volumes)} phantom scans in {time.perf_counter() - t0:.0f} s; training {cfg['steps']} steps")
    with torch.random.fork_rng(devices=[]):  # the caller's random state is the same built or cached
        torch.manual_seed(cfg["seed"])
        return _train(ResNetUNetNet(1, N_CLASSES, dropout=0.0).train(), volumes, cfg, rng, log)


def _train(net, volumes, cfg: dict, rng, log) -> dict[str, torch.Tensor]:
    import torch.nn.functional as F

    from datamodules.phantom.tissue_task import sample_batch

    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    start = time.perf_counter()
    for step in range(cfg["steps"]):
        image, label = sample_batch(volumes, cfg["batch_size"], cfg["patch"], rng)
        loss = F.cross_entropy(net(torch.from_numpy(image)), torch.from_numpy(label))
        if not torch.isfinite(loss):
            raise RuntimeError(f"synthetic pretraining: non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg["steps"] - 1:  # with the time: the cost is in docs/models.md
            log(f"pretrain: step {step + 1}/{cfg['steps']} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    return {k: v.detach().clone() for k, v in net.encoder.state_dict().items()}


def _build(folder: Path, cfg: dict, digest: str, log) -> None:
    """Train and write `folder` atomically: a temp folder beside it, renamed into place."""
    started = time.perf_counter()
    state = train_encoder(cfg, log)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=folder.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like the phantom cache
    try:
        torch.save(state, tmp / WEIGHTS)
        atomic_write_json(tmp / CONFIG, {"hash": digest, "config": cfg, "weights": WEIGHTS,
                                         "weights_sha256": _sha256(tmp / WEIGHTS),
                                         "generator_version": _generator_version(),
                                         "pretrain_version": PRETRAIN_VERSION,
                                         "seconds": round(time.perf_counter() - started, 1),
                                         "threads": torch.get_num_threads()})
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _generator_version() -> str:
    from datamodules.phantom import GENERATOR_VERSION

    return GENERATOR_VERSION


def load_cached(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(encoder state dict, config.json) of a built folder; a wrong hash or corrupt file is a DataError."""
    meta_path, weights = folder / CONFIG, folder / WEIGHTS
    try:
        meta = json.loads(meta_path.read_text())
        cfg, digest = meta["config"], meta["hash"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(meta_path, f"unreadable synthetic pretraining record ({err}); delete {folder} to rebuild") from None
    if config_hash(cfg) != digest or folder.name != digest:
        raise DataError(meta_path, f"hash mismatch: folder {folder.name}, recorded {digest}, config hashes to "
                                   f"{config_hash(cfg)}; delete {folder} to rebuild")
    if not weights.is_file() or _sha256(weights) != meta.get("weights_sha256"):
        raise DataError(weights, f"missing or corrupt (sha256 differs from {meta_path}); delete {folder} to rebuild")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise DataError(weights, f"not a readable state dict ({type(err).__name__}: {err})") from None
    return state, meta


def ensure_encoder(overrides: dict | None = None, root: Path | None = None, log=print) -> tuple[Path, bool]:
    """The cached folder for this config, building it if missing -> (folder, built now?); read it with
    `load_cached`. One process builds (under `<root>/<hash>.lock`); the others wait for the folder."""
    from common.locks import FileLock, LockHeld

    cfg = resolve_config(overrides)
    digest = config_hash(cfg)
    root = Path(root) if root is not None else cache_root()
    folder = root / digest
    root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + WAIT_S
    while not folder.is_dir():
        try:
            lock = FileLock(root / f"{digest}.lock", "liverbench pretrain", kind="pretrain").acquire()
        except LockHeld as held:
            if time.monotonic() > deadline:
                raise DataError(folder, f"still being built by another process after {WAIT_S:.0f} s ({held.problem})") from None
            time.sleep(1.0)
            continue
        try:
            if not folder.is_dir():  # built by another process between our check and the lock
                for stale in root.glob(f".{digest}.*"):  # a killed build's temp folder
                    shutil.rmtree(stale, ignore_errors=True)
                log(f"pretrain: building the synthetic ResNet-34 encoder {digest} in {root}")
                _build(folder, cfg, digest, log)
                return folder, True
        finally:
            lock.release()
    return folder, False


def main(argv: list[str] | None = None) -> int:
    """`liverbench pretrain`: build (or find) the synthetic encoder and print where it is."""
    ap = argparse.ArgumentParser(prog="liverbench pretrain", description=__doc__.split("\n\n")[0])
    for key, value in DEFAULTS.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    ap.add_argument("--out", help="cache folder (default $LIVERBENCH_CACHE/pretrain-synthetic)")
    a = ap.parse_args(argv)
    overrides = {k: getattr(a, k) for k in DEFAULTS}
    try:
        folder, built = ensure_encoder(overrides, Path(a.out) if a.out else None,
                                       log=lambda m: print(m, file=sys.stderr, flush=True))
        meta = load_cached(folder)[1]
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'built' if built else 'found'} {folder / WEIGHTS} (hash {meta['hash']}, {meta['seconds']} s to build)")
    return 0
