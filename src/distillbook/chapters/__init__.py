"""One module per chapter: its parameters (with profile presets), experiments, claims and figures."""
