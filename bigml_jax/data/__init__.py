"""Datasets: offline TFDS builders and grain pipelines."""
