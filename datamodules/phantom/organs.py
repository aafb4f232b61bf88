"""Neighbours that make the liver a segmentation problem: spleen (liver-like intensity),
kidneys, gallbladder, stomach, duodenum, pancreas, colon, small bowel, psoas and veins."""
from __future__ import annotations

import numpy as np

from .body import Body, section_level
from .geometry import F32, Bumps, Grid, ellipsoid_level, rotation, smooth_curve, to_local
from .painter import Painter
from .tissues import T


def _scaled_to_volume(axes, target_ml, fill=1.0):
    """Scale ellipsoid half axes so 4/3 pi abc * fill equals the target volume."""
    v = 4 / 3 * np.pi * np.prod(axes) / 1000 * fill
    return np.asarray(axes) * (target_ml / v) ** (1 / 3)


def sample_kidneys(rng, body: Body) -> list[dict]:
    """Both kidneys (right lower), hilum facing forwards and medially, upper pole leaning in."""
    ac, _, _ = body.cavity
    z_right = -rng.uniform(115, 140)
    out = []
    for side, z in ((1, z_right), (-1, z_right + rng.uniform(10, 25))):
        c = np.array([side * rng.uniform(55, 72) * ac / 130, body.y_spine + rng.uniform(8, 25), z])
        target = rng.uniform(125, 175)
        axes = _scaled_to_volume([rng.uniform(24, 29), rng.uniform(26, 31), rng.uniform(50, 58)], target, 0.88)
        rot = rotation(rng.uniform(-8, 8), side * rng.uniform(-18, -8), side * rng.uniform(-40, -25))
        out.append({"side": side, "centre": c, "axes": axes, "rot": rot, "lobes": rng.uniform(0.18, 0.26),
                    "target_ml": target})
    return out


def kidney_level(k: dict, X, Y, Z):
    qx, qy, qz = to_local(X, Y, Z, k["centre"], k["rot"])
    return qx * F32(k["side"]), qy, qz, ellipsoid_level(qx, qy, qz, k["axes"])


def paint_kidneys(p: Painter, kidneys: list[dict]) -> list[dict]:
    out = []
    for k in kidneys:
        c, axes = k["centre"], k["axes"]
        win = p.grid.window(c - axes.max() - 2, c + axes.max() + 2)
        if win is not None:
            sl, X, Y, Z = win
            qx, qy, qz, lev = kidney_level(k, X, Y, Z)  # local +x points laterally
            sinus = ellipsoid_level(qx + F32(axes[0] * 0.7), qy, qz, axes * [0.45, 0.32, 0.42])
            pelvis = ellipsoid_level(qx + F32(axes[0] * 0.55), qy, qz, axes * [0.25, 0.18, 0.22])
            nl = F32(k["lobes"])
            lobes = np.sin(qz * nl) * np.sin(qy * nl + F32(1)) > -0.2
            codes = np.full(lev.shape, T.KIDNEY_CORTEX, np.uint8)
            codes[(lev < 0.55) & lobes] = T.KIDNEY_MEDULLA
            codes[sinus < 1] = T.FAT
            codes[pelvis < 1] = T.URINE
            p.paint(sl, lev < 1, codes, only=(T.FAT,))
        out.append({"side": "right" if k["side"] > 0 else "left", "centre": c.round(1).tolist(),
                    "target_ml": round(float(k["target_ml"]), 1)})
    return out


def paint_spleen(p: Painter, body: Body, rng) -> dict:
    """Crescent against the left posterolateral ribs, concave hilum facing medially."""
    ac, bca, bcp = body.cavity
    c = np.array([-(ac - rng.uniform(30, 42)), -bcp * rng.uniform(0.25, 0.45), body.dome_left - rng.uniform(45, 70)])
    target = rng.uniform(150, 290)
    axes = _scaled_to_volume([rng.uniform(24, 30), rng.uniform(55, 70), rng.uniform(45, 60)], target, 0.8)
    rot = rotation(rng.uniform(-10, 10), rng.uniform(-15, 5), 225 + rng.uniform(-15, 15))
    bumps = Bumps.random(rng, c - axes, c + axes, k=3, sigma=(25, 40), amp=5.0)

    def spleen_at(scale):
        def inside(X, Y, Z):
            qx, qy, qz = to_local(*bumps.displace(X, Y, Z), c, rot)
            ax = axes * scale
            outer = ellipsoid_level(qx, qy, qz, ax, power=2.2)
            hilum = ellipsoid_level(qx + F32(ax[0] * 1.35), qy, qz, ax * [1.0, 0.55, 0.6])
            return (outer < 1) & (hilum > 1) & (section_level(X, Y, ac - 2, bca, bcp - 2, body.power) < 1)
        return inside

    # one calibration step on a 4 mm grid so the volume lands near the sampled target
    r = axes.max() * 1.4 + 12
    coarse = Grid.from_extent(c - r, c + r, (4.0, 4.0, 4.0))
    _, X, Y, Z = coarse.window(c - r, c + r)
    vol = float(spleen_at(1.0)(X, Y, Z).sum()) * 0.064
    scale = float(np.clip((target / max(vol, 1.0)) ** (1 / 3), 0.7, 1.4))
    p.shape(c - r, c + r, spleen_at(scale), T.SPLEEN)
    return {"centre": c.round(1).tolist(), "target_ml": round(target, 1)}


def _gi_contents(rng, gas_level: float, fluid=T.GI_FLUID, stool: float = 0.0):
    """Lumen filler: gas rises anteriorly (patient supine) above `gas_level`; optional stool."""
    seed = int(rng.integers(2**31))

    def fill(X, Y, Z):
        shape = np.broadcast_shapes(X.shape, Y.shape, Z.shape)
        codes = np.full(shape, fluid, np.uint8)
        if stool > 0:
            r = np.random.default_rng(seed).random(shape, dtype=np.float32)
            codes[:] = T.STOOL
            codes[r < stool] = T.GAS
        codes[np.broadcast_to(Y > F32(gas_level), shape)] = T.GAS
        return codes

    return fill


def paint_gi(p: Painter, body: Body, rng, liver_bottom: float, spleen_c) -> dict:
    """Stomach, duodenum, pancreas (+ splenic/portal/mesenteric veins), colon, small bowel."""
    ac, bca, bcp = body.cavity
    ys = body.y_spine
    k = rng.uniform(0.65, 1.15)  # distension
    stomach = smooth_curve(rng, [[-(ac - 55), -0.1 * bcp, body.dome_left - 35], [-(ac - 70), 0.3 * bca, -75],
                                 [-40, 0.5 * bca, -105], [10, 0.55 * bca, -110], [35, 0.4 * bca, -100]], 5)
    r_st = np.array([40, 38, 34, 31, 28, 24, 20, 16, 12]) * k
    gas_st = bca * rng.uniform(0.2, 0.7)
    p.tube(stomach, r_st, T.GI_FLUID, wall=4, wall_code=T.GI_WALL, lumen_fn=_gi_contents(rng, gas_st))
    duo = smooth_curve(rng, [stomach[-1], [58, 0.15 * bca, -115], [55, ys + 55, -150], [10, ys + 50, -170],
                             [-25, ys + 55, -150]], 4)
    p.tube(duo, rng.uniform(10, 14), T.GI_FLUID, wall=2.5, wall_code=T.GI_WALL,
           lumen_fn=_gi_contents(rng, bca * rng.uniform(0.1, 0.5)))
    # veins behind the pancreas, then the pancreas
    confl = np.array([10, ys + 50, -120])
    p.tube(smooth_curve(rng, [confl, [-40, ys + 45, -105], list(np.asarray(spleen_c) + [25, 20, -10])], 4),
           4.5, T.VEIN)
    p.tube(smooth_curve(rng, [confl, [15, ys + 60, -180], [20, ys + 70, -260]], 6), 5, T.VEIN)
    panc = smooth_curve(rng, [[42, ys + 60, -140], [12, ys + 72, -122], [-30, ys + 62, -108],
                              [np.asarray(spleen_c)[0] + 30, ys + 40, -90]], 4)
    p.tube(panc, [16, 14, 12, 11, 10, 9, 8], T.PANCREAS)
    # colon: ascending (right), transverse (front, below the liver), descending (left)
    rc = rng.uniform(18, 27)
    tz = min(liver_bottom, -150) - rng.uniform(10, 40)
    colon = smooth_curve(rng, [[ac - 45, -0.1 * bcp, -360], [ac - 40, -0.2 * bcp, -240],
                               [ac - 55, 0.1 * bca, liver_bottom - 10], [0, 0.6 * bca, tz],
                               [-(ac - 45), 0.0, -110], [-(ac - 35), -0.3 * bcp, -230],
                               [-(ac - 45), -0.1 * bcp, -360]], 8, subdivide=3)
    p.tube(colon, rc, T.STOOL, wall=2.5, wall_code=T.GI_WALL,
           lumen_fn=_gi_contents(rng, bca * rng.uniform(0.0, 0.5), stool=rng.uniform(0.1, 0.3)))
    _paint_small_bowel(p, body, rng, top=min(liver_bottom, tz) - 5)
    for _ in range(30):  # small mesenteric vessels in the fat
        a = np.array([rng.uniform(-60, 60), ys + rng.uniform(40, 90), rng.uniform(-330, -130)])
        r = rng.uniform(1.5, 3)
        p.tube(smooth_curve(rng, [a, a + rng.normal(0, 40, 3)], 5), [r, r * 0.7, r * 0.5], T.VEIN)
    return {"stomach_distension": round(k, 2), "colon_radius_mm": round(rc, 1)}


def _paint_small_bowel(p: Painter, body: Body, rng, top: float):
    """Loops where two smooth random fields are both near zero: curved tubes that fill the
    lower abdomen between the colon frame, with enhancing walls and fluid content."""
    ac, bca, bcp = body.cavity
    win = p.grid.window((-(ac - 40), body.y_spine + 15, -400), (ac - 40, bca - 5, top))
    if win is None:
        return
    sl, X, Y, Z = win
    fields = []
    for _ in range(2):
        f = F32(0)
        for _ in range(6):
            d = rng.normal(size=3)
            kvec = d / np.linalg.norm(d) * 2 * np.pi / rng.uniform(45, 70)
            f = f + np.sin(F32(kvec[0]) * X + F32(kvec[1]) * Y + F32(kvec[2]) * Z + F32(rng.uniform(0, 6.3)))
        fields.append(f * F32(1 / (2 * np.pi / 57 * np.sqrt(3))))  # about 1 unit per mm
    r2 = fields[0] ** 2 + fields[1] ** 2
    yc, hy = 0.5 * (body.y_spine + 15 + bca - 5), 0.5 * (bca - body.y_spine - 20)
    envelope = (X / F32(ac - 35)) ** 2 + ((Y - F32(yc)) / F32(hy)) ** 2  # round edges, not a box
    r2 = r2 + F32(400) * np.maximum(envelope - F32(0.85), F32(0))
    radius = rng.uniform(9, 13)
    p.paint(sl, r2 < F32(radius**2), T.GI_WALL)
    p.paint(sl, r2 < F32((radius - 2.5) ** 2), T.GI_FLUID, only=(T.GI_WALL,))


def paint_psoas(p: Painter, body: Body, rng):
    ys = body.y_spine
    for side in (-1, 1):
        pts = [[side * 25, ys + 5, -110], [side * 42, ys + 8, -250], [side * 60, ys + 25, -360]]
        p.tube(pts, [5, 20, 26], T.MUSCLE)


def paint_renal_veins(p: Painter, kidneys, ivc_x: float, ys: float):
    for kd in kidneys:
        c = np.asarray(kd["centre"])
        p.tube([c + [-np.sign(c[0]) * 20, 15, 0], [ivc_x, ys + 35, c[2] + 5]], 4.5, T.VEIN)
