"""Experiment tracking through wandb, behind the ``tracking`` parameter.

``off`` (default) logs nothing and never imports wandb. ``offline`` writes a
wandb run under ``runs/wandb`` with no network and no login (sync it later
with ``wandb sync``). ``online`` needs a wandb login. The config is the
chapter's parameters; ``fit`` logs per-step metrics, chapters log finals and
figures.
"""

from __future__ import annotations

import os
from typing import Any

from distillbook.core.paths import RUNS_DIR

MODES = ("off", "offline", "online")


class Tracker:
    """A thin wrapper so that chapters call ``log``/``log_figure`` unconditionally."""

    def __init__(self, mode: str = "off", *, project: str = "distillbook", name: str | None = None,
                 config: dict[str, Any] | None = None, group: str | None = None, directory: os.PathLike | None = None):
        if mode not in MODES:
            raise ValueError(f"tracking={mode!r}; allowed: {', '.join(MODES)}")
        self.mode = mode
        self.run = None
        if mode == "off":
            return
        import wandb

        directory = os.fspath(directory or RUNS_DIR / "wandb")
        os.makedirs(directory, exist_ok=True)
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
        self.run = wandb.init(project=project, name=name, group=group, config=config or {}, mode=mode,
                              dir=directory, settings=settings, reinit="create_new")

    def log(self, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(dict(metrics))

    def log_figure(self, name: str, figure) -> None:
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Image(figure)})

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
