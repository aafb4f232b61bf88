"""Voxel grids: the one "same grid" tolerance and check, axis orientation, and putting a mask on an
image's grid. A grid is a `Volume` or a `(shape, affine)` pair."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.files import DataError
from datamodules.volumes import Volume

GRID_ATOL_MM = 1e-3  # the one "same grid" tolerance: max |affine difference| in mm (header round-off)


def _grid(v) -> tuple[tuple[int, ...], np.ndarray]:
    if isinstance(v, Volume):
        return tuple(v.shape), np.asarray(v.affine, float)
    shape, affine = v
    return tuple(int(s) for s in shape), np.asarray(affine, float)


def same_grid(a, b) -> bool:
    """True when two volumes (or `(shape, affine)` pairs) share one voxel grid within GRID_ATOL_MM."""
    (sa, aa), (sb, ab) = _grid(a), _grid(b)
    return sa == sb and bool(np.allclose(aa, ab, rtol=0.0, atol=GRID_ATOL_MM))


def check_same_grid(a, b, path: str | Path, other: str | Path, what: str = "") -> None:
    """Raise `DataError` naming `path` (volume `a`) when it is not on `other`'s grid (`b`):
    the one geometry check. `what` prefixes the message ("label ", "mask ")."""
    (sa, aa), (sb, ab) = _grid(a), _grid(b)
    if sa != sb:
        raise DataError(path, f"{what}shape {sa} differs from {other} shape {sb}")
    if not same_grid(a, b) and _same_voxels(sa, aa, ab) and orientation(aa) != orientation(ab):
        raise DataError(path, f"{what}axes are flipped: stored {orientation(aa)}, {other} is {orientation(ab)} "
                              f"(the same voxels in space, in another order); save it in {orientation(ab)} order")
    if not same_grid(a, b):
        raise DataError(path, f"{what}affine differs from the affine of {other} by up to "
                              f"{np.abs(aa - ab).max():.3g} mm (tolerance {GRID_ATOL_MM} mm):\n"
                              f"{np.round(aa, 4)}\nvs\n{np.round(ab, 4)}")


def _same_voxels(shape, a: np.ndarray, b: np.ndarray) -> bool:
    """Two affines of one shape whose grids cover the same points (corners and voxel sizes agree):
    only the storage order of the axes differs (a flip, e.g. LPS vs RAS)."""
    corners = np.array(np.meshgrid(*[(0, s - 1) for s in shape], indexing="ij")).reshape(3, -1)

    def world(affine):
        pts = (affine[:3, :3] @ corners).T + affine[:3, 3]
        return pts[np.lexsort(np.round(pts, 2).T[::-1])]

    return bool(np.allclose(np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0), atol=GRID_ATOL_MM)
                and np.allclose(world(a), world(b), atol=GRID_ATOL_MM))


def orientation(affine: np.ndarray) -> str:
    """Axis codes of an affine, e.g. "RAS" or "LPS"."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(np.asarray(affine)))


def ras_spacing(affine: np.ndarray, spacing) -> tuple[float, ...]:
    """Voxel spacing in RAS axis order (x, y, z), the order `Spacingd` sees after `Orientationd("RAS")`:
    a sagittal or coronal file stores its axes in another order."""
    import nibabel as nib

    axes = nib.io_orientation(np.asarray(affine))[:, 0].astype(int)
    out = [0.0, 0.0, 0.0]
    for file_axis, ras_axis in enumerate(axes):
        out[ras_axis] = float(spacing[file_axis])
    return tuple(out)


def align_to_grid(data: np.ndarray, affine: np.ndarray, ref_shape, ref_affine, path) -> np.ndarray:
    """Reorder axes/flips of `data` so it lies on the reference grid; refuse a different grid."""
    import nibabel.orientations as nio

    transform = nio.ornt_transform(nio.io_orientation(affine), nio.io_orientation(ref_affine))
    out = nio.apply_orientation(data, transform)
    new_affine = affine @ nio.inv_ornt_aff(transform, data.shape)
    if tuple(out.shape) != tuple(ref_shape):
        raise DataError(path, f"mask shape {tuple(out.shape)} (after reorientation) does not match the "
                              f"image shape {tuple(ref_shape)}")
    if not same_grid((out.shape, new_affine), (ref_shape, ref_affine)):
        raise DataError(path, "mask geometry (affine) does not match the image: max difference "
                              f"{np.abs(new_affine - np.asarray(ref_affine)).max():.3g} mm (tolerance {GRID_ATOL_MM} mm)")
    return np.ascontiguousarray(out)
