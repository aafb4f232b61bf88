"""Paint tissues into the label map in priority order.

Structures are painted from the most to the least important; by default a structure may only
take voxels that still hold fat (the cavity filler), so earlier organs win overlaps and organs
indent each other (the kidney dents the liver, the liver dents the stomach) instead of merging.
"""
from __future__ import annotations

import numpy as np

from .geometry import F32, Grid, tube_windows
from .tissues import T

EMPTY = (T.FAT,)


def _lut(codes) -> np.ndarray:
    lut = np.zeros(256, bool)
    lut[[int(c) for c in codes]] = True
    return lut


class Painter:
    def __init__(self, grid: Grid):
        self.grid = grid
        self.tissue = np.zeros(grid.shape, np.uint8)

    def paint(self, sl, mask, code, only=EMPTY):
        """Set `code` where `mask` holds and the voxel is one of `only` (None: anywhere)."""
        view = self.tissue[sl]
        mask = np.broadcast_to(mask, view.shape)
        if only is not None:
            mask = mask & _lut(only)[view]
        if np.ndim(code) == 0:
            view[mask] = code
        else:
            view[mask] = np.broadcast_to(code, view.shape)[mask]

    def shape(self, lo, hi, level_fn, code, only=EMPTY):
        """Paint where `level_fn(X, Y, Z)` (a boolean mask) holds inside the box [lo, hi]."""
        win = self.grid.window(lo, hi)
        if win is None:
            return
        sl, X, Y, Z = win
        self.paint(sl, level_fn(X, Y, Z), code, only)

    def tube(self, points, radii, code, wall: float = 0.0, wall_code=None, only=EMPTY, lumen_fn=None):
        """A tapered polyline tube; optional wall; `lumen_fn(X, Y, Z)` may return per-voxel codes."""
        only = tuple(only) if only is not None else None
        for sl, margin, (X, Y, Z) in tube_windows(self.grid, points, radii):
            if wall > 0 and wall_code is not None:
                self.paint(sl, margin > 0, wall_code, only)
                lumen_only = None if only is None else only + (wall_code,)
            else:
                lumen_only = only
            inner = margin > F32(wall)
            if not inner.any():
                continue
            codes = code if lumen_fn is None else lumen_fn(X, Y, Z)
            self.paint(sl, inner, codes, lumen_only)

    def count(self, codes) -> int:
        return int(_lut(codes)[self.tissue].sum())
