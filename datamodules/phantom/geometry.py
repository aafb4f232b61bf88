"""Millimetre-space geometry for the phantom: the voxel grid, rotations, smooth warps, shapes.

Every shape is evaluated only inside its own bounding box (`Grid.window`) with broadcast 1-D
coordinate vectors, so a structure costs what its box costs and no full-volume coordinate
arrays are ever built. Coordinates are RAS millimetres in the body frame of `body.py`;
all arrays are float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32


@dataclass
class Grid:
    """Voxel centres along each RAS axis (mm, increasing; float32 for painting) plus the exact
    float64 spacing and first-voxel position used for the affine."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray
    spacing: tuple = (1.0, 1.0, 1.0)
    origin: tuple = (0.0, 0.0, 0.0)

    @classmethod
    def from_extent(cls, lo, hi, spacing) -> "Grid":
        axes, origin = [], []
        for a, b, s in zip(lo, hi, spacing):
            n = max(1, int(round((b - a) / s)))
            first = 0.5 * (a + b) - (n - 1) / 2.0 * s
            origin.append(round(first, 4))
            axes.append((origin[-1] + np.arange(n) * s).astype(F32))
        return cls(*axes, spacing=tuple(float(s) for s in spacing), origin=tuple(origin))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.xs), len(self.ys), len(self.zs))

    @property
    def voxel_ml(self) -> float:
        sx, sy, sz = self.spacing
        return sx * sy * sz / 1000.0

    def affine(self) -> np.ndarray:
        """RAS affine: diagonal spacing, translation = centre of voxel (0, 0, 0)."""
        aff = np.eye(4)
        aff[:3, :3] = np.diag(self.spacing)
        aff[:3, 3] = self.origin
        return aff

    def window(self, lo, hi):
        """Slices and broadcast coordinates (X (n,1,1), Y (1,m,1), Z (1,1,k)) of the box [lo, hi].

        Returns None when the box misses the grid."""
        sl, cs = [], []
        for axis, (a, b) in enumerate(zip(lo, hi)):
            v = (self.xs, self.ys, self.zs)[axis]
            i0, i1 = np.searchsorted(v, a), np.searchsorted(v, b, side="right")
            if i1 <= i0:
                return None
            sl.append(slice(int(i0), int(i1)))
            shape = [1, 1, 1]
            shape[axis] = i1 - i0
            cs.append(v[i0:i1].reshape(shape))
        return tuple(sl), cs[0], cs[1], cs[2]


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z."""
    ax, ay, az = np.radians([rx, ry, rz])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rxm = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rym = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rzm = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rzm @ rym @ rxm


def to_local(X, Y, Z, centre, rot=None):
    """Coordinates relative to `centre` in the frame of `rot` (columns = local axes)."""
    dx, dy, dz = X - F32(centre[0]), Y - F32(centre[1]), Z - F32(centre[2])
    if rot is None:
        return dx, dy, dz
    r = rot.astype(F32)
    return (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
            r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)


def ellipsoid_level(qx, qy, qz, axes, power: float = 2.0):
    """Superquadric level: < 1 inside. `power` 2 = ellipsoid, larger = boxier."""
    ax, ay, az = (F32(a) for a in axes)
    if power == 2.0:
        return (qx / ax) ** 2 + (qy / ay) ** 2 + (qz / az) ** 2
    p = F32(power)
    return np.abs(qx / ax) ** p + np.abs(qy / ay) ** p + np.abs(qz / az) ** p


@dataclass
class Bumps:
    """Smooth random displacement field: a sum of separable Gaussian bumps (mm)."""

    centres: np.ndarray  # (K, 3)
    sigmas: np.ndarray  # (K,)
    amps: np.ndarray  # (K, 3)

    @classmethod
    def random(cls, rng, lo, hi, k: int, sigma: tuple, amp: float) -> "Bumps":
        centres = rng.uniform(lo, hi, size=(k, 3))
        sigmas = rng.uniform(*sigma, size=k)
        amps = rng.normal(0.0, amp, size=(k, 3))
        return cls(centres, sigmas, amps)

    def displace(self, X, Y, Z):
        """Warped coordinates p + d(p)."""
        dx = dy = dz = F32(0)
        for c, s, a in zip(self.centres, self.sigmas, self.amps):
            w = F32(-0.5 / s**2)
            g = np.exp(w * (X - F32(c[0])) ** 2) * np.exp(w * (Y - F32(c[1])) ** 2) * np.exp(w * (Z - F32(c[2])) ** 2)
            dx, dy, dz = dx + F32(a[0]) * g, dy + F32(a[1]) * g, dz + F32(a[2]) * g
        return X + dx, Y + dy, Z + dz


def segment_distance(X, Y, Z, a, b):
    """Distance from each point to segment a-b and the position t in [0, 1] along it."""
    a, b = np.asarray(a, F32), np.asarray(b, F32)
    d = b - a
    dd = F32(max(float(d @ d), 1e-6))
    px, py, pz = X - a[0], Y - a[1], Z - a[2]
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / dd, 0, 1)
    dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
    return dist, t


def tube_windows(grid: Grid, points, radii, pad: float = 0.0):
    """Yield (slices, inside-distance-margin) per segment of a tapered polyline tube.

    The margin is radius(t) - distance, positive inside; callers threshold it for wall/lumen."""
    points = np.asarray(points, float)
    radii = np.broadcast_to(np.asarray(radii, float), (len(points),))
    for i in range(len(points) - 1):
        a, b, ra, rb = points[i], points[i + 1], radii[i], radii[i + 1]
        r = max(ra, rb) + pad
        win = grid.window(np.minimum(a, b) - r, np.maximum(a, b) + r)
        if win is None:
            continue
        sl, X, Y, Z = win
        dist, t = segment_distance(X, Y, Z, a, b)
        yield sl, (F32(ra) + t * F32(rb - ra)) - dist, (X, Y, Z)


def smooth_curve(rng, points, jitter: float, subdivide: int = 2):
    """Points with random jitter, linearly subdivided so tubes bend gently."""
    pts = np.asarray(points, float) + rng.normal(0, jitter, size=(len(points), 3))
    out = [pts[0]]
    for a, b in zip(pts[:-1], pts[1:]):
        for k in range(1, subdivide + 1):
            out.append(a + (b - a) * k / subdivide)
    return np.array(out)
