"""The liver: a warped two-lobe shape under the right dome, its vessels, lesions and gallbladder.

Shape = smooth union of a large right-lobe superquadric and a tapered left lobe crossing the
midline, displaced by a smooth random field, cut by the diaphragm above, by a visceral surface
sloping up towards the left below, and by the abdominal wall. Its size is calibrated on a
5 mm grid to a sampled target volume, so every case lands in the adult range.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .body import Body, diaphragm_z, section_level
from .geometry import F32, Bumps, Grid, ellipsoid_level, rotation, smooth_curve, to_local
from .organs import kidney_level
from .painter import Painter
from .tissues import LIVER_TISSUES, T


@dataclass
class LiverShape:
    right_c: np.ndarray
    right_axes: np.ndarray
    left_c: np.ndarray
    left_axes: np.ndarray
    rot: np.ndarray
    bumps: Bumps
    bottom: float  # lowest point of the visceral surface (right lobe tip)
    x_tip: float
    target_ml: float
    scale: float = 1.0
    exclude: list = field(default_factory=list)  # kidneys: the liver is dented around them
    points: np.ndarray = field(default=None, repr=False)  # coarse inside points (after calibration)

    def box(self, margin=12.0):
        return self.points.min(0) - margin, self.points.max(0) + margin


def sample_liver(rng, body: Body, exclude=()) -> LiverShape:
    ac, bca, bcp = body.cavity
    az = rng.uniform(75, 100)
    right_c = np.array([ac - rng.uniform(62, 80), -rng.uniform(0, 20), -az * rng.uniform(0.75, 0.9)])
    right_axes = np.array([rng.uniform(66, 82), rng.uniform(80, 100), az])
    # the left lobe lies in front of the stomach; how far it reaches to the left varies a lot between
    # people (tip from just left of the midline to the left abdominal wall)
    left_c = np.array([-rng.uniform(-10, 25), bca * rng.uniform(0.25, 0.45), -rng.uniform(30, 50)])
    left_axes = np.array([rng.uniform(50, 90), rng.uniform(35, 55), rng.uniform(24, 36)])
    rot = rotation(rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-10, 10))
    lo, hi = right_c - right_axes, right_c + right_axes
    bumps = Bumps.random(rng, lo, hi, k=5, sigma=(35, 60), amp=9.0)
    bottom = right_c[2] - az * rng.uniform(0.85, 1.0)
    return LiverShape(right_c, right_axes, left_c, left_axes, rot, bumps, bottom,
                      x_tip=right_c[0] + right_axes[0] * 0.3, target_ml=rng.uniform(1150, 1950),
                      exclude=list(exclude))


def _smin(a, b, k=F32(0.35)):
    h = np.clip(F32(0.5) + F32(0.5) * (b - a) / k, 0, 1)
    return b + (a - b) * h - k * h * (F32(1) - h)


def liver_inside(ls: LiverShape, body: Body, X, Y, Z, scale: float):
    """Boolean liver mask on broadcast coordinates."""
    Xw, Yw, Zw = ls.bumps.displace(X, Y, Z)
    qx, qy, qz = to_local(Xw, Yw, Zw, ls.right_c, ls.rot)
    fr = ellipsoid_level(qx, qy, qz, ls.right_axes * scale, power=2.1)
    lx, ly, lz = to_local(Xw, Yw, Zw, ls.left_c, ls.rot)
    ax, ay, az = (F32(a * scale) for a in ls.left_axes)
    taper = F32(1) + F32(0.9) * np.clip(-lx / ax, 0, 1)  # thinner towards the left tip
    fl = (lx / ax) ** 2 + ((ly / ay) ** 2 + (lz / az) ** 2) * taper**2
    inside = _smin(fr, fl) < 1
    # visceral (inferior) surface: lowest at the right lobe tip, rising medially and backwards
    d = F32(ls.x_tip) - Xw  # signed: the surface bottoms out ~45 mm lateral of x_tip
    visceral = F32(ls.bottom) + F32(0.2) * d + F32(0.0022) * d * d \
        + F32(0.004) * (Yw - F32(ls.right_c[1] + 20)) ** 2
    inside &= Zw > visceral
    inside &= Z < diaphragm_z(body, X, Y) - F32(2)
    ac, bca, bcp = body.cavity
    inside &= section_level(X, Y, ac - 2, bca - 2, bcp - 2, body.power) < 1
    # stays in front of the spine, aorta and back muscles near the midline
    inside &= (X / F32(58)) ** 2 + ((Y - F32(body.y_spine - 25)) / F32(52)) ** 2 > 1
    for k in ls.exclude:  # the kidney and the retroperitoneum behind it
        inside &= kidney_level(k, X, Y, Z)[3] > F32(1.1)
        back = {**k, "centre": k["centre"] + np.array([0.0, -30.0, 5.0]), "axes": k["axes"] * 1.15}
        inside &= kidney_level(back, X, Y, Z)[3] > F32(1)
    return inside


def calibrate_liver(ls: LiverShape, body: Body, step: float = 5.0) -> LiverShape:
    """Scale the lobes so the volume on a coarse grid matches the sampled target."""
    ac, bca, bcp = body.cavity
    grid = Grid.from_extent((-ac, -bcp, -280), (ac, bca, 10), (step, step, step))
    sl, X, Y, Z = grid.window((-ac, -bcp, -280), (ac, bca, 10))
    vol = lambda s: float(liver_inside(ls, body, X, Y, Z, s).sum()) * step**3 / 1000
    target = ls.target_ml + 60  # gallbladder, IVC and kidney dents come off later
    s0, v0 = 1.0, vol(1.0)
    s1 = float(np.clip((target / max(v0, 1.0)) ** (1 / 3), 0.6, 1.4))
    for _ in range(4):
        v1 = vol(s1)
        if abs(v1 - target) < 0.02 * target or v1 == v0:
            break
        s0, v0, s1 = s1, v1, float(np.clip(s1 + (target - v1) * (s1 - s0) / (v1 - v0), 0.6, 1.4))
    ls.scale = s1
    m = liver_inside(ls, body, X, Y, Z, s1)
    ix, iy, iz = np.nonzero(m)
    ls.points = np.stack([grid.xs[ix], grid.ys[iy], grid.zs[iz]], 1).astype(float)
    return ls


def paint_liver(p: Painter, ls: LiverShape, body: Body):
    lo, hi = ls.box()
    p.shape(lo, hi, lambda X, Y, Z: liver_inside(ls, body, X, Y, Z, ls.scale), T.LIVER)


def _nearest(points, target):
    return points[np.argmin(((points - np.asarray(target)) ** 2).sum(1))]


def _pick(rng, points, cond):
    cand = points[cond(points)]
    cand = cand if len(cand) else points
    return cand[rng.integers(len(cand))]


def liver_landmarks(ls: LiverShape, body: Body) -> dict:
    pts = ls.points
    hilum = _nearest(pts, (ls.right_c[0] - 55, body.y_spine + 60, ls.bottom + 45))
    return {"hilum": hilum, "ivc_entry": _nearest(pts, (20, body.y_spine + 40, -40))}


def paint_gallbladder(p: Painter, ls: LiverShape, body: Body, rng) -> dict:
    """Pear-shaped fluid sac in the fossa on the visceral surface (painted before the liver)."""
    pts = ls.points
    x0 = ls.right_c[0] - rng.uniform(25, 45)
    sel = pts[(np.abs(pts[:, 0] - x0) < 15) & (pts[:, 1] > 0.25 * body.cavity[1])]
    sel = sel if len(sel) else pts
    neck = sel[np.argmin(sel[:, 2])] + np.array([-5, -15, 30])
    axis = np.array([rng.uniform(-5, 15), rng.uniform(15, 30), -rng.uniform(40, 60)])
    length, radius = rng.uniform(35, 50), rng.uniform(13, 19)
    c = neck + axis / np.linalg.norm(axis) * length * 0.6
    rot = _frame(axis)
    lo, hi = c - length - 5, c + length + 5

    def gb(X, Y, Z):
        qx, qy, qz = to_local(X, Y, Z, c, rot)
        r = F32(radius) * (F32(0.8) + F32(0.2) * np.clip(qz / F32(length), -1, 1))
        return (qx / r) ** 2 + (qy / r) ** 2 + (qz / F32(length)) ** 2 < 1

    p.shape(lo, hi, gb, T.GALLBLADDER, only=(T.FAT,))
    return {"centre": c.round(1).tolist(), "length_mm": round(2 * length, 1)}


def _frame(axis):
    """Rotation whose third column is `axis` (normalised)."""
    z = np.asarray(axis, float) / np.linalg.norm(axis)
    x = np.cross(z, [0.0, 1.0, 0.0] if abs(z[1]) < 0.9 else [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], 1)


def paint_liver_vessels(p: Painter, ls: LiverShape, marks: dict, rng, ivc_top) -> None:
    """Portal tree from the hilum and three hepatic veins converging on the IVC (label: liver)."""
    pts = ls.points
    only = (T.LIVER,)
    hilum = marks["hilum"]
    right = _pick(rng, pts, lambda q: (q[:, 0] > ls.right_c[0] - 10) & (np.abs(q[:, 2] - ls.right_c[2]) < 30))
    left = _pick(rng, pts, lambda q: (q[:, 0] < -10) & (q[:, 0] > -40))
    r0 = rng.uniform(5, 7)
    twigs = rng.spawn(1)[0]  # the finer branches: a separate stream, so the rest of the patient is unchanged
    for trunk_end, side in ((right, 1), (left, -1)):
        trunk = smooth_curve(rng, [hilum, trunk_end], 4)
        p.tube(trunk, [r0, r0 * 0.7, r0 * 0.55], T.PORTAL_VEIN, only=only)
        for _ in range(rng.integers(2, 5)):
            tip = _pick(rng, pts, lambda q: side * (q[:, 0] - hilum[0] + side * 10) > 0)
            branch = smooth_curve(rng, [trunk_end, tip], 5)
            p.tube(branch, [r0 * 0.5, r0 * 0.38, r0 * 0.28], T.PORTAL_VEIN, only=only)
            _paint_twigs(p, twigs, pts, branch, r0 * 0.45, T.PORTAL_VEIN)
    top = np.asarray(ivc_top, float)
    for target in ((ls.right_c[0] + 50, -10, ls.right_c[2]), (ls.right_c[0] - 40, 40, -60), (-50, 40, -30)):
        tip = _nearest(pts, target)
        rv = rng.uniform(4, 6)
        vein = smooth_curve(rng, [top, tip], 5)
        p.tube(vein, [rv, rv * 0.6, rv * 0.35], T.HEPATIC_VEIN, only=only)
        _paint_twigs(p, twigs, pts, vein, rv * 0.5, T.HEPATIC_VEIN)


def _paint_twigs(p: Painter, rng, pts, parent, radius, code, n=(4, 9), reach=50.0):
    """Side branches from points along a vessel to nearby liver points: real livers show dense trees."""
    for _ in range(rng.integers(*n)):
        start = parent[rng.integers(len(parent) // 3, len(parent))]
        near = pts[np.linalg.norm(pts - start, axis=1) < reach]
        if len(near) < 2:
            continue
        tip = near[rng.integers(len(near))]
        p.tube(smooth_curve(rng, [start, tip], 3), [radius, radius * 0.85, radius * 0.7], code, only=(T.LIVER,))


LESION_KINDS = (T.LESION_HYPO, T.LESION_HYPER, T.LESION_CYST)


def paint_lesions(p: Painter, ls: LiverShape, rng, max_lesions: int) -> list[dict]:
    """0..max_lesions ellipsoids of 5-60 mm inside the liver (never outside it)."""
    n = int(rng.integers(0, max_lesions + 1)) if max_lesions > 0 else 0
    out = []
    for _ in range(n):
        diam = float(np.exp(rng.uniform(np.log(5), np.log(60))))
        c = ls.points[rng.integers(len(ls.points))] + rng.normal(0, 3, 3)
        axes = diam / 2 * rng.uniform(0.8, 1.2, 3)
        rot = rotation(*rng.uniform(-90, 90, 3))
        kind = LESION_KINDS[rng.choice(3, p=[0.6, 0.2, 0.2])]
        rim = rng.uniform(-0.15, 0.15)

        def lesion(X, Y, Z, c=c, axes=axes, rot=rot, rim=rim):
            qx, qy, qz = to_local(X, Y, Z, c, rot)
            lev = ellipsoid_level(qx, qy, qz, axes)
            wobble = F32(rim) * np.sin(qx * F32(0.3)) * np.cos(qy * F32(0.25))
            return lev + wobble < 1

        p.shape(c - axes.max() - 3, c + axes.max() + 3, lesion, kind, only=LIVER_TISSUES)
        out.append({"centre": c.round(1).tolist(), "diameter_mm": round(diam, 1), "kind": kind.name.lower()})
    return out
