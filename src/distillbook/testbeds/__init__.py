"""Data generators shared across chapters (see the introduction's test-bed table)."""
