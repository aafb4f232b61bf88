"""Preprocessed-volume cache and torch datasets over it: 2D slices and 3D patches for training,
whole volumes for validation/test.

Each case is preprocessed once and kept in memory or on disk. The disk cache stores plain
`.npy` files under a key covering the preprocessing config and the source files (path, size,
mtime) and memory-maps them on load.

Training datasets read from numpy arrays that live in the main process (or are memory-mapped
from the disk cache), so forked DataLoader workers share them instead of copying them, and no
epoch ever decodes or resamples a NIfTI file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Randomizable

from common.files import umask_mode
from datamodules.readers import CaseRecord, load_case
from datamodules.transforms import build_preprocessing


@dataclass
class Volume:
    """A preprocessed case: `image` float32 (X,Y,Z), `label` uint8 0/1 (X,Y,Z), RAS `affine`."""

    case: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    liver_voxels: np.ndarray = field(init=False, repr=False)  # flat indices, for oversampling
    pad_value: float = field(init=False, repr=False)  # background value for crops past the border

    def __post_init__(self):
        self.liver_voxels = np.flatnonzero(np.asarray(self.label).reshape(-1))
        self.pad_value = float(np.min(self.image))  # once: not a full-volume scan per training sample

    def liver_slices(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.label).any(axis=(0, 1)))


def default_cache_root() -> Path:
    return Path(os.environ.get("LIVERBENCH_CACHE", Path.home() / ".cache" / "liverbench"))


def file_key(*parts: Any) -> str:
    """Stable hash of JSON-able parts; source files contribute path, size and mtime."""
    def norm(p):
        if isinstance(p, Path):
            st = p.stat()
            return [str(p.resolve()), st.st_size, st.st_mtime_ns]
        return p
    blob = json.dumps([norm(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def preprocess_case(record: CaseRecord, pipeline: Callable, liver_labels: Sequence[int] | None) -> Volume:
    """Decode + validate one case (`load_case`), then run the array-input preprocessing on it."""
    loaded = load_case(record, liver_labels)
    affine = torch.as_tensor(loaded.affine, dtype=torch.float64)
    out = pipeline({"image": MetaTensor(np.asarray(loaded.image, dtype=np.float32)[None], affine=affine),
                    "label": MetaTensor(loaded.mask[None].astype(np.float32), affine=affine)})
    return Volume(record.case, out["image"].numpy()[0].astype(np.float32, copy=False),
                  (out["label"].numpy()[0] > 0.5).astype(np.uint8), out["image"].affine.numpy().astype(np.float64))


class VolumeCache:
    """`get(record)` -> preprocessed `Volume`, computed once per (config, source files)."""

    def __init__(self, config: dict[str, Any], liver_labels: Sequence[int] | None, mode: str = "memory",
                 root: str | Path | None = None):
        if mode not in ("memory", "disk"):
            raise ValueError(f"cache must be 'memory' or 'disk', got {mode!r}")
        self.config, self.liver_labels, self.mode = config, liver_labels, mode
        self.root = Path(root) if root is not None else default_cache_root() / "preprocessed"
        self._memory: dict[str, Volume] = {}
        self._pipeline = build_preprocessing(config, keys=("image", "label"), load=False)

    def _key(self, record: CaseRecord) -> str:
        return file_key(self.config, self.liver_labels, Path(record.image_path), Path(record.label_path))

    def get(self, record: CaseRecord) -> Volume:
        key = self._key(record)
        if key in self._memory:
            return self._memory[key]
        folder = self.root / f"{record.case}-{key}"
        if self.mode == "disk" and (folder / "done").is_file():
            vol = Volume(record.case, np.load(folder / "image.npy", mmap_mode="r"),
                         np.load(folder / "label.npy", mmap_mode="r"), np.load(folder / "affine.npy"))
        else:
            vol = preprocess_case(record, self._pipeline, self.liver_labels)
            if self.mode == "disk":
                self._write(folder, vol)
        self._memory[key] = vol
        return vol

    def _write(self, folder: Path, vol: Volume) -> None:
        """Write into a temporary folder and rename it, so readers never see half a case."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            os.chmod(tmp, umask_mode(0o777))  # mkdtemp's 0700 would hide a shared cache
            np.save(tmp / "image.npy", vol.image)
            np.save(tmp / "label.npy", vol.label)
            np.save(tmp / "affine.npy", vol.affine)
            (tmp / "done").write_text(vol.case)
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (folder / "done").is_file():
                raise


def cached_json(root: Path | None, key: str, compute: Callable[[], Any]) -> Any:
    """Memoise a JSON-able result (the dataset fingerprint) on disk when `root` is given."""
    if root is None:
        return compute()
    path = Path(root) / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from common.files import atomic_write_json

    value = compute()
    atomic_write_json(path, value)
    return value


def crop_window(array: np.ndarray, center: Sequence[int], size: Sequence[int], pad_value: float) -> np.ndarray:
    """`size` window of `array` centred at `center`, padded with `pad_value` where it leaves the array."""
    out = np.full(tuple(size), pad_value, dtype=array.dtype)
    src, dst = [], []
    for c, s, n in zip(center, size, array.shape):
        start = int(c) - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _random_center(rng: np.random.RandomState, shape: Sequence[int], size: Sequence[int]) -> list[int]:
    """Uniform centre such that the window stays inside the array when it fits."""
    out = []
    for n, s in zip(shape, size):
        lo, hi = (s // 2, n - (s - s // 2)) if n >= s else (n // 2, n // 2)
        out.append(int(rng.randint(lo, hi + 1)))
    return out


@contextlib.contextmanager
def _single_thread():
    """Per-sample transforms on small tensors run ~10x faster on one thread than on a busy
    2-core pool (measured: RandAffined 128x128, 31 ms -> 2 ms); workers already use one."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _TrainDataset(Randomizable, torch.utils.data.Dataset):
    """A fixed number of random samples per epoch (benchmark budgets are in steps)."""

    def __init__(self, volumes: list[Volume], patch_size: Sequence[int], samples_per_epoch: int,
                 liver_oversample: float, augment: Compose | None, seed: int = 0):
        if not volumes:
            raise ValueError("no training volumes")
        self.volumes, self.patch_size = volumes, tuple(int(s) for s in patch_size)
        self.samples_per_epoch, self.liver_oversample = int(samples_per_epoch), float(liver_oversample)
        self.augment = augment
        Randomizable.set_random_state(self, seed)
        if augment is not None:
            augment.set_random_state(seed + 1)

    def set_random_state(self, seed=None, state=None):
        """Also reseed the augmentation: MONAI's `worker_init_fn` reseeds only this dataset (the
        first Randomizable it finds), so without this every worker would draw the same augmentations."""
        super().set_random_state(seed, state)
        if self.augment is not None:
            self.augment.set_random_state(seed=int(self.R.randint(2**31 - 1)))
        return self

    def __len__(self) -> int:
        return self.samples_per_epoch

    def randomize(self, data=None) -> None:  # sampling happens in `_sample`
        pass

    def _finish(self, image: np.ndarray, label: np.ndarray) -> dict[str, torch.Tensor]:
        sample = {"image": torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)),
                  "label": torch.from_numpy(np.ascontiguousarray(label[None], dtype=np.float32))}
        if self.augment is not None and self.augment.transforms:
            with _single_thread():
                sample = self.augment(sample)
        return {k: torch.as_tensor(v.as_tensor() if isinstance(v, MetaTensor) else v, dtype=torch.float32)
                for k, v in sample.items()}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self._finish(*self._sample())


class SliceDataset(_TrainDataset):
    """Axial (last-axis) slices, liver-containing slices drawn with probability `liver_oversample`."""

    def __init__(self, volumes, patch_size, samples_per_epoch, liver_oversample=0.5, augment=None, seed=0):
        super().__init__(volumes, patch_size, samples_per_epoch, liver_oversample, augment, seed)
        self.all_slices = np.array([(v, z) for v, vol in enumerate(volumes) for z in range(vol.image.shape[2])])
        liver = [(v, z) for v, vol in enumerate(volumes) for z in vol.liver_slices()]
        self.liver_slices = np.array(liver) if liver else self.all_slices

    def _sample(self):
        use_liver = self.R.rand() < self.liver_oversample
        pool = self.liver_slices if use_liver else self.all_slices
        v, z = pool[self.R.randint(len(pool))]
        vol = self.volumes[v]
        image, label = vol.image[:, :, z], vol.label[:, :, z]
        ys, xs = (np.nonzero(label) if use_liver else ((), ()))
        if len(ys):  # centre on a liver pixel so the crop contains liver
            i = self.R.randint(len(ys))
            center = [ys[i], xs[i]]
        else:
            center = _random_center(self.R, image.shape, self.patch_size)
        return crop_window(image, center, self.patch_size, float(image.min())), \
            crop_window(label, center, self.patch_size, 0)


class PatchDataset(_TrainDataset):
    """3D patches; the centre is a liver voxel with probability `liver_oversample` (nnU-Net uses 1/3)."""

    def _sample(self):
        vol = self.volumes[self.R.randint(len(self.volumes))]
        if self.R.rand() < self.liver_oversample and len(vol.liver_voxels):
            center = np.unravel_index(vol.liver_voxels[self.R.randint(len(vol.liver_voxels))], vol.label.shape)
        else:
            center = _random_center(self.R, vol.image.shape, self.patch_size)
        return crop_window(vol.image, center, self.patch_size, vol.pad_value), \
            crop_window(vol.label, center, self.patch_size, 0)


class VolumeDataset(torch.utils.data.Dataset):
    """Preprocessed volumes with their affine, for per-patient 3D evaluation: whole, or (validation during
    training) a fixed view of each: the liver's bounding box plus `margin_mm`, every `slice_stride`-th axial
    slice. The view is the same at every validation, so the curve compares like with like at a fraction of
    the cost; the test split is always scored on whole volumes in their original geometry."""

    def __init__(self, volumes: list[Volume], margin_mm: float | None = None, slice_stride: int = 1):
        self.volumes = volumes
        self.margin_mm, self.slice_stride = margin_mm, int(slice_stride)

    def __len__(self) -> int:
        return len(self.volumes)

    def _view(self, vol: Volume) -> tuple[tuple[slice, ...], np.ndarray]:
        """Index and affine of the validation view (the whole volume when no margin and no stride)."""
        box = [slice(0, n) for n in vol.label.shape]
        if self.margin_mm is not None and vol.liver_voxels.size:
            spacing = np.linalg.norm(np.asarray(vol.affine)[:3, :3], axis=0)
            coords = np.unravel_index(vol.liver_voxels, vol.label.shape)
            for axis, (c, n) in enumerate(zip(coords, vol.label.shape)):
                pad = int(np.ceil(self.margin_mm / spacing[axis]))
                box[axis] = slice(max(int(c.min()) - pad, 0), min(int(c.max()) + 1 + pad, n))
        box[2] = slice(box[2].start, box[2].stop, self.slice_stride)
        affine = np.array(vol.affine, dtype=np.float64)
        affine[:3, 3] += affine[:3, :3] @ [b.start for b in box]
        affine[:3, 2] *= self.slice_stride
        return tuple(box), affine

    def __getitem__(self, index: int) -> dict:
        vol = self.volumes[index]
        box, affine = self._view(vol)
        affine = torch.as_tensor(affine, dtype=torch.float64)
        return {"image": MetaTensor(np.array(vol.image[box], dtype=np.float32)[None], affine=affine),
                "label": MetaTensor(np.array(vol.label[box], dtype=np.float32)[None], affine=affine),
                "case": vol.case}
