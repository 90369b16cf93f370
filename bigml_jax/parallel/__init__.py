"""Meshes, shardings and multi-host helpers."""
