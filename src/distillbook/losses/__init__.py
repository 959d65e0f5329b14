"""Losses, one module per family of methods."""
