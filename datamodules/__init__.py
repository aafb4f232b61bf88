"""Data: phantom generator, dataset readers/converters, MONAI transforms, LightningDataModules."""
from __future__ import annotations

__all__ = ["LiverDataModule", "CTDataModule", "MRIDataModule"]


def __getattr__(name: str):
    """Lazy: `import datamodules` stays light; the DataModules pull in Lightning and MONAI."""
    if name in __all__:
        from datamodules import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
