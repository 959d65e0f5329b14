"""Provenance of a run and the freshness of committed results.

A run records the sha256 of its source notebook (code cells, and all cells)
and of every ``distillbook`` module its kernel imported. Results are *fresh*
while those hashes still match the working tree and the run used its
profile's preset parameters; otherwise *stale*, with the reason naming what
changed. A change to a module the chapter never imported leaves it fresh.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from distillbook.core.paths import PACKAGE_DIR, REPO_ROOT

FRESH, STALE, MISSING = "fresh", "stale", "missing"
TRACKED_PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "pydantic", "transformers", "tokenizers", "diffusers",
                    "matplotlib", "seaborn", "papermill", "wandb")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def notebook_hashes(path: Path) -> dict[str, str]:
    """sha256 of the notebook's code-cell sources, and of all cell sources and types."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    code, everything = [], []
    for cell in nb["cells"]:
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        everything.append(f"{cell['cell_type']}\n{src}")
        if cell["cell_type"] == "code":
            code.append(src)
    sep = "\n\x1e\n"
    return {"code_cells": sha256_bytes(sep.join(code).encode()), "all_cells": sha256_bytes(sep.join(everything).encode())}


def imported_modules() -> dict[str, str]:
    """``{path relative to the repo: sha256}`` of every distillbook module now in ``sys.modules``."""
    out = {}
    for name, module in list(sys.modules.items()):
        if name != "distillbook" and not name.startswith("distillbook."):
            continue
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if PACKAGE_DIR not in path.parents:
            continue
        out[_rel(path)] = sha256_bytes(path.read_bytes())
    return dict(sorted(out.items()))


def _rel(path: Path) -> str:
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def check_fresh(provenance: dict, notebook: Path) -> tuple[str, str]:
    """``(state, reason)`` of results whose provenance is ``provenance``."""
    if not notebook.exists():
        return STALE, f"source notebook {_rel(notebook)} is gone"
    now = notebook_hashes(notebook)
    if now["code_cells"] != provenance["notebook"]["code_cells"]:
        return STALE, f"code cells of {_rel(notebook)} changed"
    changed, removed = [], []
    for rel, digest in provenance["modules"].items():
        path = REPO_ROOT / rel
        if not path.exists():
            removed.append(rel)
        elif sha256_bytes(path.read_bytes()) != digest:
            changed.append(rel)
    if removed:
        return STALE, "imported module(s) removed: " + ", ".join(removed)
    if changed:
        return STALE, "imported module(s) changed: " + ", ".join(changed)
    if provenance.get("overrides"):
        return STALE, f"ran with parameters off the profile preset: {provenance['overrides']}"
    if now["all_cells"] != provenance["notebook"]["all_cells"]:
        return STALE, f"text of {_rel(notebook)} changed (rerun to refresh the page)"
    return FRESH, ""
