"""Data: phantom generator, dataset readers/converters, MONAI transforms, LightningDataModules."""
