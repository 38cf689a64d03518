"""Prediction and the streaming raster annotation pipeline."""
