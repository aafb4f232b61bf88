"""2.5D input: each axial slice with its neighbours as extra channels, for numpy arrays and torch tensors.

One definition for training samples, validation views and inference, so a 2D model sees the same
neighbourhood everywhere it runs."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def with_slice_context(volume, context: int, slices: Sequence[int] | None = None):
    """(..., C, X, Y, Z) -> (..., C * (2 * context + 1), X, Y, len(slices)): every slice of `slices` (default
    all) with the `context` slices below and above it along the last axis as channels, channel-major (all
    offsets of channel 0, then of channel 1, ...), offsets -context..+context; past either end of the volume
    the edge slice repeats. `context` 0 returns the input (its slices)."""
    depth = volume.shape[-1]
    z = np.arange(depth) if slices is None else np.asarray(slices, dtype=np.int64)
    if z.size and (z.min() < 0 or z.max() >= depth):
        raise IndexError(f"slices {z.min()}..{z.max()} outside a volume of {depth} slices")
    offsets = np.arange(-int(context), int(context) + 1)
    index = np.clip(z[None, :] + offsets[:, None], 0, depth - 1)  # (offsets, slices)
    if not isinstance(volume, np.ndarray):  # a torch tensor (kept free of a torch import here)
        import torch

        index = torch.as_tensor(index, device=volume.device)
        stacked = volume[..., index]  # (..., C, X, Y, offsets, slices)
        stacked = stacked.movedim(-2, -4)
    else:
        stacked = np.moveaxis(volume[..., index], -2, -4)
    # (..., C, offsets, X, Y, slices) -> (..., C * offsets, X, Y, slices)
    return stacked.reshape(*stacked.shape[:-5], -1, *stacked.shape[-3:])
