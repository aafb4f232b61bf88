"""Trunk, skeleton, diaphragm, lungs, heart and the great vessels.

Body frame (mm, RAS): x to the patient's right, y anterior, z superior; the trunk is centred
on x = y = 0 and z = 0 is the apex of the right diaphragm dome (top of the liver).
The trunk cross-section does not change along z, so it is computed once in 2-D.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import F32, smooth_curve
from .painter import Painter
from .tissues import T


@dataclass
class Body:
    A: float  # half width of the trunk
    B_ant: float  # anterior / posterior half depth
    B_post: float
    power: float  # superquadric exponent of the cross-section
    fat_lat: float
    fat_ant: float
    fat_post: float
    wall: float  # muscle wall thickness
    y_spine: float  # centre of the vertebral body
    dome_left: float  # left dome apex below the right one (mm, negative)
    dome_r: float  # dome radii of curvature
    dome_l: float
    dome_x_r: float
    dome_x_l: float
    dome_y: float
    sag: float
    vert_period: float
    vert_phase: float
    rib_slope: float
    rib_phase: float
    table_gap: float

    @property
    def cavity(self) -> tuple[float, float, float]:
        """Half axes of the abdominal cavity: lateral, anterior, posterior."""
        return (self.A - self.fat_lat - self.wall, self.B_ant - self.fat_ant - self.wall,
                self.B_post - self.fat_post - self.wall)


def sample_body(rng) -> Body:
    A = rng.uniform(150, 190)
    fat_lat = rng.uniform(8, 20) + (A - 150) * rng.uniform(0, 0.5)  # bigger patients carry more fat
    body = Body(
        A=A, B_ant=A * rng.uniform(0.7, 0.82), B_post=A * rng.uniform(0.58, 0.68),
        power=rng.uniform(2.1, 2.7), fat_lat=fat_lat, fat_ant=fat_lat * rng.uniform(0.8, 1.3),
        fat_post=rng.uniform(8, 25), wall=rng.uniform(9, 15), y_spine=0.0,
        dome_left=-rng.uniform(10, 25), dome_r=rng.uniform(50, 75), dome_l=rng.uniform(50, 75),
        dome_x_r=0.0, dome_x_l=0.0, dome_y=rng.uniform(80, 110), sag=rng.uniform(0, 6), vert_period=rng.uniform(28, 34), vert_phase=rng.uniform(0, 34),
        rib_slope=rng.uniform(45, 60), rib_phase=rng.uniform(0, 30), table_gap=rng.uniform(5, 30),
    )
    ac, _, _ = body.cavity
    body.y_spine = -body.B_post + body.fat_post + rng.uniform(58, 70)
    body.dome_x_r = ac * rng.uniform(0.35, 0.55)
    body.dome_x_l = -ac * rng.uniform(0.4, 0.6)
    return body


def section_level(X, Y, half_x, half_ant, half_post, power):
    """Superquadric trunk cross-section level (< 1 inside), flatter at the back."""
    hy = np.where(Y > 0, F32(half_ant), F32(half_post))
    return np.abs(X / F32(half_x)) ** F32(power) + np.abs(Y / hy) ** F32(power)


def diaphragm_z(body: Body, X, Y):
    """Height of the diaphragm: right dome (apex z = 0) higher than the left, a shallow central
    sag under the heart, dropping laterally and into the deep posterior recesses."""
    xr, xl = F32(body.dome_x_r), F32(body.dome_x_l)
    t = np.clip((X - xl) / (xr - xl), 0, 1)
    height = F32(body.dome_left) * (F32(1) - t * t * (F32(3) - F32(2) * t)) - F32(body.sag) * F32(4) * t * (F32(1) - t)
    lateral = np.maximum(X - xr, F32(0)) ** 2 / F32(2 * body.dome_r) \
        + np.minimum(X - xl, F32(0)) ** 2 / F32(2 * body.dome_l)
    ay = np.where(Y > -10, F32(0.8), F32(1.0))  # high in front (costal margin), deep recess behind
    dy = (Y + F32(10)) * ay
    return height - lateral - dy * dy / F32(2 * body.dome_y) - F32(0.6) * np.maximum(F32(0), -Y - F32(20))


def paint_trunk(p: Painter, body: Body, lo_z: float, hi_z: float):
    """Table, skin/subcutaneous fat, muscle wall, cavity fat, ribs, spine, back muscles."""
    g = p.grid
    X2, Y2 = g.xs[:, None], g.ys[None, :]
    ac, bca, bcp = body.cavity
    outer = section_level(X2, Y2, body.A, body.B_ant, body.B_post, body.power) < 1
    muscle = section_level(X2, Y2, body.A - body.fat_lat, body.B_ant - body.fat_ant,
                           body.B_post - body.fat_post, body.power) < 1
    cavity = section_level(X2, Y2, ac, bca, bcp, body.power) < 1
    table_top = -body.B_post - body.table_gap
    table = (Y2 < table_top) & (Y2 > table_top - 12) & (np.abs(X2) < 220)
    t = p.tissue
    t[table] = T.TABLE
    t[outer] = T.SUBCUT_FAT
    t[muscle] = T.MUSCLE
    t[cavity] = T.FAT
    _paint_ribs(p, body, X2, Y2, lo_z, hi_z)


def _paint_ribs(p: Painter, body: Body, X2, Y2, lo_z, hi_z):
    """Ribs run around the trunk inside the muscle wall, descending towards the front."""
    ac, bca, bcp = body.cavity
    inner = section_level(X2, Y2, ac + 1, bca + 1, bcp + 1, body.power) >= 1
    outer = section_level(X2, Y2, ac + 9, bca + 9, bcp + 9, body.power) < 1
    core = (section_level(X2, Y2, ac + 3, bca + 3, bcp + 3, body.power) >= 1) & (
        section_level(X2, Y2, ac + 7, bca + 7, bcp + 7, body.power) < 1)
    phi = np.arctan2(Y2 / F32(bca), X2 / F32(ac))  # 0 right, +pi/2 front, -pi/2 back
    from_back = np.abs(np.abs(phi + F32(np.pi / 2)) - F32(0))
    from_back = np.minimum(from_back, F32(2 * np.pi) - from_back)
    band = inner & outer & (from_back > 0.25) & (from_back < 2.55)
    if not band.any():
        return
    ix, iy = np.nonzero(band)
    fb = from_back[ix, iy]
    # irregular spacing and a left/right offset, as in a slightly rotated real rib cage
    shift = (F32(body.rib_slope) * fb + F32(4) * np.sin(F32(2) * fb + F32(body.rib_phase))
             + np.where(X2[ix, 0] > 0, F32(0), F32(body.rib_phase % 7)))[:, None]
    Z = p.grid.zs[None, :]
    u = np.mod(Z + shift - F32(body.rib_phase), F32(27.0))
    rib = (u < 8) & (Z > F32(-190.0) + shift) & (Z + shift < 150)  # floating ribs end high
    cort = rib & ~(core[ix, iy][:, None] & (u > 2) & (u < 6))
    front = (from_back[ix, iy] > 2.2)[:, None]
    sub = p.tissue[ix, iy, :]
    ok = (sub == T.MUSCLE) | (sub == T.FAT)
    sub[rib & ok & front] = T.CARTILAGE
    sub[rib & ok & ~front] = T.BONE_CANCELLOUS
    sub[cort & ok & ~front] = T.BONE_CORTICAL
    p.tissue[ix, iy, :] = sub


def paint_spine(p: Painter, body: Body, rng):
    """Vertebral bodies with discs, canal, posterior arch, transverse processes, back muscles."""
    ys = body.y_spine
    ax, ay = rng.uniform(19, 24), rng.uniform(15, 18)
    yc = ys - ay - 11  # spinal canal centre

    def vertebra(X, Y, Z):
        return (X / F32(ax)) ** 2 + ((Y - F32(ys)) / F32(ay)) ** 2

    big = 400.0
    lo, hi = (-ax - 45, yc - 55, -big), (ax + 45, ys + ay + 2, big)
    win = p.grid.window(lo, hi)
    if win is None:
        return
    sl, X, Y, Z = win
    u = np.mod(Z - F32(body.vert_phase), F32(body.vert_period))
    disc = u < F32(8)
    mid = (u > 12) & (u < body.vert_period - 4)
    lev = vertebra(X, Y, Z)
    ok = (T.FAT, T.MUSCLE)
    p.paint(sl, (lev < 1) & disc, T.DISC, ok)
    p.paint(sl, (lev < 0.78), T.BONE_CANCELLOUS, ok)
    p.paint(sl, (lev < 1), T.BONE_CORTICAL, ok)
    r2 = (X**2 + (Y - F32(yc)) ** 2)
    p.paint(sl, r2 < 81, T.CSF, ok)
    arch = (r2 < 16**2) | ((np.abs(X) < 4) & (Y < yc) & (Y > yc - 48) & ~disc)
    arch = arch | ((np.abs(Y - F32(yc + 2)) < 4) & (np.abs(X) < ax + 12) & mid)
    p.paint(sl, arch & ~disc, T.BONE_CORTICAL, ok)
    # paraspinal muscles fill the back beside the arch
    for side in (-1, 1):
        cx, cy = side * rng.uniform(30, 38), yc - rng.uniform(18, 26)
        sx, sy = rng.uniform(26, 32), rng.uniform(24, 30)
        p.paint(sl, ((X - F32(cx)) / F32(sx)) ** 2 + ((Y - F32(cy)) / F32(sy)) ** 2 < 1, T.MUSCLE, (T.FAT,))


def paint_chest(p: Painter, body: Body, rng):
    """Heart above the central diaphragm, then the diaphragm muscle and the lungs."""
    ac, bca, bcp = body.cavity
    centre = (-rng.uniform(10, 35), bca * rng.uniform(0.25, 0.4), rng.uniform(25, 45))
    axes = (rng.uniform(60, 75), rng.uniform(48, 58), rng.uniform(50, 62))
    lo, hi = np.subtract(centre, axes), np.add(centre, axes)

    def heart(X, Y, Z):
        lev = ((X - F32(centre[0])) / F32(axes[0])) ** 2 + ((Y - F32(centre[1])) / F32(axes[1])) ** 2 \
            + ((Z - F32(centre[2])) / F32(axes[2])) ** 2
        return lev, Z > diaphragm_z(body, X, Y)

    win = p.grid.window(lo, hi)
    if win is not None:
        sl, X, Y, Z = win
        lev, above = heart(X, Y, Z)
        p.paint(sl, (lev < 0.72) & above, T.HEART)
        p.paint(sl, (lev < 1) & above, T.MUSCLE)
    win = p.grid.window((-ac, -bcp, -250), (ac, bca, 400))
    if win is None:
        return
    sl, X, Y, Z = win
    zd = diaphragm_z(body, X, Y)
    p.paint(sl, Z > zd + F32(5), T.LUNG)
    p.paint(sl, Z > zd, T.MUSCLE)
    for side in (-1, 1):  # pulmonary vessels fanning out from each hilum
        hilum = np.array([side * rng.uniform(50, 70), rng.uniform(-20, 10), rng.uniform(90, 120)])
        for _ in range(14):
            tip = hilum + [side * rng.uniform(10, 90), rng.uniform(-70, 60), -rng.uniform(40, 160)]
            r = rng.uniform(2.5, 5)
            p.tube(smooth_curve(rng, [hilum, tip], 6), [r, r * 0.6, r * 0.3], T.HEART, only=(T.LUNG,))


def paint_great_vessels(p: Painter, body: Body, rng, z_lo: float, z_hi: float) -> dict:
    """Aorta (with iliac bifurcation) and IVC in front of the spine; returns their centrelines."""
    ys = body.y_spine
    ax = -rng.uniform(12, 25)
    ay = ys + rng.uniform(26, 32)
    r_ao = rng.uniform(10, 13)
    z_bif = -rng.uniform(190, 230)
    aorta = np.array([[ax, ay, z_hi + 50], [ax + 3, ay - 4, 40], [ax, ay, -100], [ax + 5, ay + 3, z_bif]])
    p.tube(aorta, r_ao, T.AORTA, only=(T.FAT, T.MUSCLE, T.LUNG))
    for side in (-1, 1):
        iliac = [[ax + 5, ay + 3, z_bif + 5], [ax + 5 + side * 50, ay, z_lo - 60]]
        p.tube(iliac, r_ao * 0.6, T.AORTA)
    ix = rng.uniform(15, 30)
    iy = ys + rng.uniform(26, 34)
    ivc = np.array([[ix, iy, z_lo - 60], [ix, iy, -60], [ix - 4, iy + 8, -10], [ix - 12, iy + 25, 30],
                    [ix - 20, iy + 45, 60]])
    r_ivc = rng.uniform(10, 13)
    p.tube(ivc, r_ivc, T.IVC, only=(T.FAT, T.MUSCLE, T.LUNG))
    return {"aorta": aorta, "ivc": ivc, "r_aorta": r_ao, "r_ivc": r_ivc}
