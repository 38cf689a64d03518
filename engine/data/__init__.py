"""Raster reading and tiling, band specs and training datasets."""
