"""Anatomy layer: sample a patient, choose the scan grid, paint the tissue map.

Random streams are split by purpose (anatomy, field of view, appearance), so the same seed
gives the same patient at any spacing and the T1 and T2 scans of one patient share anatomy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .body import paint_chest, paint_great_vessels, paint_spine, paint_trunk, sample_body
from .geometry import Grid
from .liver import (calibrate_liver, liver_landmarks, paint_gallbladder, paint_lesions, paint_liver,
                    paint_liver_vessels, sample_liver)
from .organs import paint_gi, paint_kidneys, paint_psoas, paint_renal_veins, paint_spleen, sample_kidneys
from .painter import Painter

CT_SLICES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
CT_SLICE_P = (0.1, 0.1, 0.1, 0.15, 0.2, 0.15, 0.2)
MAX_NATIVE_SLICES = 160


@dataclass
class Anatomy:
    tissue: np.ndarray  # uint8 tissue codes (X, Y, Z)
    grid: Grid
    affine: np.ndarray
    params: dict


def rngs(seed: int, purpose: str, extra: int = 0) -> np.random.Generator:
    purposes = {"anatomy": 0, "grid": 1, "appearance": 2}
    return np.random.default_rng([int(seed), purposes[purpose], int(extra)])


def choose_grid(rng, family: str, spacing, body, liver_top: float, liver_bottom: float, fov: str):
    """Scanner-like field of view. Native spacing is drawn per case (PHANTOM.md ranges); an
    explicit spacing resamples the same physical field of view."""
    width = 2 * body.A
    if family == "ct":
        fov_xy = float(np.clip(width * rng.uniform(1.0, 1.25), 307, 460))
        native = (fov_xy / 512, fov_xy / 512, float(rng.choice(CT_SLICES, p=CT_SLICE_P)))
        extent = min(rng.uniform(220, 380), MAX_NATIVE_SLICES * native[2])
    else:  # MR fields of view are tight, often cut the flanks, and are shorter front to back
        s = rng.uniform(1.4, 1.9)
        fov_xy = width * rng.uniform(0.85, 1.2)
        native = (s, s, rng.uniform(5, 9))
        extent = int(rng.integers(26, 51)) * native[2]
    top = liver_top + rng.uniform(20, 90)
    cut = rng.random()
    if fov == "full" or cut > 0.3:
        top = max(top, liver_top + 15)
        bottom = min(top - extent, liver_bottom - 20)
    elif cut < 0.15:  # scan starts inside the liver
        top = liver_top - rng.uniform(10, 0.35 * (liver_top - liver_bottom))
        bottom = top - extent
    else:  # scan stops inside the liver
        bottom = liver_bottom + rng.uniform(10, 0.35 * (liver_top - liver_bottom))
        top = max(top, bottom + 60)
    if (top - bottom) / native[2] > MAX_NATIVE_SLICES:  # long scans get thicker slices
        native = (native[0], native[1], (top - bottom) / MAX_NATIVE_SLICES)
    spacing = native if spacing is None else tuple(float(s) for s in spacing)
    yc = rng.uniform(-25, 0)
    fov_y = fov_xy if family == "ct" else fov_xy * rng.uniform(0.75, 1.0)
    grid = Grid.from_extent((-fov_xy / 2, yc - fov_y / 2, bottom), (fov_xy / 2, yc + fov_y / 2, top), spacing)
    info = {"fov_mm": [round(fov_xy, 1), round(fov_y, 1), round(top - bottom, 1)],
            "native_spacing": [round(float(s), 4) for s in native], "z_range": [round(bottom, 1), round(top, 1)]}
    return grid, info


def build_anatomy(seed: int, family: str = "ct", spacing=None, lesions: int = 6, fov: str = "random") -> Anatomy:
    """The tissue map of patient `seed` on its scan grid (`family` ct|mri sets the native grid)."""
    rng = rngs(seed, "anatomy")
    body = sample_body(rng)
    kidney_shapes = sample_kidneys(rng, body)
    liver = calibrate_liver(sample_liver(rng, body, kidney_shapes), body)
    liver_top, liver_bottom = float(liver.points[:, 2].max()), float(liver.points[:, 2].min())
    grid, fov_info = choose_grid(rngs(seed, "grid", 0 if family == "ct" else 1), family, spacing, body,
                                 liver_top, liver_bottom, fov)
    z_lo, z_hi = float(grid.zs[0]), float(grid.zs[-1])
    p = Painter(grid)
    paint_trunk(p, body, z_lo, z_hi)
    paint_spine(p, body, rng)
    vessels = paint_great_vessels(p, body, rng, z_lo, z_hi)
    paint_chest(p, body, rng)
    paint_psoas(p, body, rng)
    kidneys = paint_kidneys(p, kidney_shapes)
    paint_renal_veins(p, kidneys, float(vessels["ivc"][1][0]), body.y_spine)
    gallbladder = paint_gallbladder(p, liver, body, rng)
    paint_liver(p, liver, body)
    marks = liver_landmarks(liver, body)
    paint_liver_vessels(p, liver, marks, rng, ivc_top=vessels["ivc"][2])
    lesion_info = paint_lesions(p, liver, rngs(seed, "anatomy", 1), lesions)
    spleen = paint_spleen(p, body, rng)
    gi = paint_gi(p, body, rng, liver_bottom, spleen["centre"])
    offset = rng.uniform(-15, 15, 3)
    affine = grid.affine()
    affine[:3, 3] += np.round(offset, 2)
    params = {
        "seed": int(seed), "shape": list(grid.shape), "spacing": [round(s, 4) for s in grid.spacing],
        **fov_info,
        "body": {"width_mm": round(2 * body.A, 1), "depth_mm": round(body.B_ant + body.B_post, 1),
                 "subcutaneous_fat_mm": round(body.fat_lat, 1)},
        "liver": {"target_ml": round(liver.target_ml, 1), "scale": round(liver.scale, 3),
                  "craniocaudal_mm": round(liver_top - liver_bottom, 1)},
        "lesions": lesion_info, "kidneys": kidneys, "spleen": spleen, "gallbladder": gallbladder, "gi": gi,
    }
    return Anatomy(p.tissue, grid, affine, params)
