"""Where things live in the repository.

``DISTILLBOOK_ROOT`` overrides the repository root (the library is installed
editable, so the default is the checkout this file sits in).
``DISTILLBOOK_RESULTS_ROOT`` redirects results, which tests and smoke runs use
to keep the committed ``results/`` untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = Path(os.environ.get("DISTILLBOOK_ROOT", PACKAGE_DIR.parents[1])).resolve()
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
EXECUTED_DIR = BOOK_DIR / "chapters"
RUNS_DIR = REPO_ROOT / "runs"  # git-ignored scratch: checkpoints, wandb, smoke outputs
COMMITTED_RESULTS_DIR = REPO_ROOT / "results"


def results_root(profile: str) -> Path:
    """Root under which ``<chapter>/<profile>/`` results are written.

    Smoke runs prove that a notebook runs; their numbers are not the book's,
    so they go to scratch unless ``DISTILLBOOK_RESULTS_ROOT`` says otherwise.
    """
    env = os.environ.get("DISTILLBOOK_RESULTS_ROOT")
    if env:
        return Path(env).resolve()
    return RUNS_DIR / "smoke-results" if profile == "smoke" else COMMITTED_RESULTS_DIR


def checkpoints_dir(chapter: str, profile: str) -> Path:
    env = os.environ.get("DISTILLBOOK_CHECKPOINT_ROOT")
    base = Path(env) if env else RUNS_DIR / "checkpoints"
    return base / chapter / profile
