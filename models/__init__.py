"""Models: registry, the shared SegmentationModule, one file per architecture."""
