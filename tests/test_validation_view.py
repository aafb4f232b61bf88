"""The fixed, cheap validation view: liver bounding box + margin, every k-th slice, consistent affine."""
from __future__ import annotations

import numpy as np
import pytest

from datamodules.datasets import Volume, VolumeDataset


def _volume() -> Volume:
    image = np.arange(40 * 30 * 20, dtype=np.float32).reshape(40, 30, 20)
    label = np.zeros((40, 30, 20), np.uint8)
    label[10:20, 5:9, 6:12] = 1
    affine = np.diag([3.0, 3.0, 6.0, 1.0])
    affine[:3, 3] = [-50, 10, 100]
    return Volume("c", image, label, affine)


def test_whole_volume_without_view():
    item = VolumeDataset([_volume()])[0]
    assert item["image"].shape == (1, 40, 30, 20) and np.allclose(item["image"].affine.numpy(), _volume().affine)


def test_crop_to_liver_box_plus_margin_and_stride_keep_world_coordinates():
    vol = _volume()
    item = VolumeDataset([vol], margin_mm=6.0, slice_stride=2)[0]
    # margin 6 mm = 2 voxels in x, y (3 mm) and 1 slice in z (6 mm); z then every 2nd slice
    assert item["image"].shape == (1, 14, 8, 4)
    assert np.array_equal(item["image"][0].numpy(), vol.image[8:22, 3:11, 5:13:2])
    assert item["label"][0].sum() == vol.label[8:22, 3:11, 5:13:2].sum()
    affine = item["image"].affine.numpy()
    # voxel (0, 0, 1) of the view is voxel (8, 3, 7) of the volume, in the same place in space
    assert np.allclose(affine @ [0, 0, 1, 1], vol.affine @ [8, 3, 7, 1])


def test_margin_is_clipped_at_the_border_and_an_empty_label_keeps_the_volume():
    vol = _volume()
    assert VolumeDataset([vol], margin_mm=1000.0)[0]["image"].shape == (1, 40, 30, 20)
    empty = Volume("e", vol.image, np.zeros_like(vol.label), vol.affine)
    assert VolumeDataset([empty], margin_mm=6.0)[0]["image"].shape == (1, 40, 30, 20)


def test_bad_view_settings_are_refused():
    from datamodules import CTDataModule

    with pytest.raises(ValueError, match="val_slice_stride"):
        CTDataModule(val_slice_stride=0)
    with pytest.raises(ValueError, match="val_margin_mm"):
        CTDataModule(val_margin_mm=-1)
