"""Inference on one scan: the Predictor, its resampling, `liverbench predict`, time per image."""
