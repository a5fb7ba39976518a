"""Reproducible image-classification pipeline: stages run as `python -m pipeline.<stage>`."""
