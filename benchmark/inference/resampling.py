"""The voxel-grid arithmetic of `benchmark.inference.predictor`: re-orientation (nibabel's transforms, also on
torch tensors), MONAI `Spacingd`'s output grid, a separable linear resampling that runs on numpy arrays
(the CPU) or torch tensors (on their device, e.g. a GPU) with the same float32 operations, and the
body crop box."""
from __future__ import annotations

import numpy as np
import torch


def orientation_transform(affine: np.ndarray, axcodes: str) -> np.ndarray:
    """nibabel's (axis, flip) transform from the file's axes to `axcodes` (as MONAI Orientationd)."""
    import nibabel.orientations as nio

    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(axcodes))


def orientation_back(affine: np.ndarray, axcodes: str) -> np.ndarray:
    """The transform that undoes `orientation_transform(affine, axcodes)`."""
    import nibabel.orientations as nio

    return nio.ornt_transform(nio.axcodes2ornt(axcodes), nio.io_orientation(affine))


def crop_box(mask: torch.Tensor, margin: int) -> tuple[slice, ...]:
    """Bounding box of a boolean (X, Y, Z) tensor plus `margin` voxels, inside the array (as MONAI
    CropForegroundd with allow_smaller); the whole array when the mask is empty."""
    box = []
    for axis in range(mask.ndim):
        hit = torch.nonzero(mask.any(dim=[a for a in range(mask.ndim) if a != axis])).flatten()
        if hit.numel() == 0:
            return tuple(slice(0, n) for n in mask.shape)
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def is_identity(ornt: np.ndarray) -> bool:
    return bool(np.array_equal(ornt[:, 0], np.arange(3)) and np.all(ornt[:, 1] == 1))


def spacing_grid(shape, spacing, target) -> tuple[list[int], list[float]]:
    """MONAI `Spacingd`'s output grid (`compute_shape_offset`, scale_extent off): size
    round((n - 1) * s / t + 1) per axis, output voxel j at input voxel j * t / s."""
    if any(not float(t) > 0 for t in target):  # e.g. the gpu preset's unresolved 0 ("keep the slice spacing")
        raise ValueError(f"target spacing must be three positive mm values, got {list(target)}")
    size = [max(1, int(np.round((n - 1) * s / t + 1.0))) for n, s, t in zip(shape, spacing, target)]
    return size, [float(t) / float(s) for s, t in zip(spacing, target)]


def _permute(a, perm):
    return a.permute(*perm) if isinstance(a, torch.Tensor) else a.transpose(perm)


def _memory_view(a):
    """`a` with its axes in memory order (C-contiguous view of a Fortran array) and that order."""
    strides = a.stride() if isinstance(a, torch.Tensor) else a.strides
    perm = sorted(range(a.ndim), key=lambda k: (-strides[k], k))
    return _permute(a, perm), perm


def _restore(p, perm: list[int]):
    return _permute(p, [int(i) for i in np.argsort(perm)])


def apply_orientation(a, ornt: np.ndarray):
    """nibabel's `apply_orientation` (flips, then a transpose), also for a torch tensor on its device."""
    if not isinstance(a, torch.Tensor):
        import nibabel.orientations as nio

        return nio.apply_orientation(a, ornt)
    flips = [axis for axis, flip in enumerate(ornt[:, 1]) if flip == -1]
    return _permute(a.flip(flips) if flips else a, [int(i) for i in np.argsort(ornt[:, 0])])


def linear_taps(n: int, m: int, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For m output voxels at input positions j * step (clipped to the n input voxels): the input voxel
    below and above each one and the weight of the one above (float32, in [0, 1))."""
    pos = np.clip(np.arange(m) * step, 0, n - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def voxels_read(n: int, m: int, step: float) -> np.ndarray:
    """The input voxels (sorted indices) that `resample_linear` gives a nonzero weight along one axis: going
    back from a fine grid to thicker scan slices it reads only the grid slices next to the scan's own."""
    lo, hi, w = linear_taps(n, m, step)
    return np.union1d(lo, hi[w > 0])


def resample_linear(a, size, steps):
    """Linear interpolation of an (X, Y, Z) float32 array on MONAI `Spacingd`'s grid (output voxel
    j at input position j * step, border padding): one separable gather + lerp per axis, in memory
    order, largest reduction first, so it costs a few passes over the input instead of a
    per-voxel interpolation. The memory layout is kept. `a` is a numpy array or a torch tensor
    (then on its own device, e.g. a GPU, with the same float32 operations, so the same values)."""
    p, perm = _memory_view(a)
    for k in sorted(range(3), key=lambda k: (-steps[perm[k]], -k)):
        n, m, step = p.shape[k], int(size[perm[k]]), float(steps[perm[k]])
        if m == n and step == 1.0:
            continue
        lo, hi, w = linear_taps(n, m, step)
        w = w.reshape([-1 if i == k else 1 for i in range(3)])
        if isinstance(p, torch.Tensor):
            lo, hi, w = (torch.from_numpy(v).to(p.device) for v in (lo, hi, w))
            low, high = p.index_select(k, lo), p.index_select(k, hi)
        else:
            low, high = np.take(p, lo, axis=k), np.take(p, hi, axis=k)
        high -= low
        high *= w
        low += high
        p = low
    return _restore(p, perm)
