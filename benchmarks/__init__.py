"""Reproducible performance runs: each prints a ratio against a baseline measured beside it."""
