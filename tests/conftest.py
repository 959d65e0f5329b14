import os
import re
import sys
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # see distillbook.core.runtime: 2 threads per process collapse on shared 2-core machines


@pytest.fixture(autouse=True)
def _no_run_left_behind():
    """A test that opens a Run (smoke: the device check on) leaves neither the check nor its device to the next."""
    yield
    from distillbook.core import devices

    devices.stop_check()
    devices.set_run_device(None)
    devices.set_run_precision("fp32")


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Redirect results and checkpoints to a temp folder, so tests never touch the committed ones."""
    monkeypatch.setenv("DISTILLBOOK_RESULTS_ROOT", str(tmp_path / "results"))
    monkeypatch.setenv("DISTILLBOOK_CHECKPOINT_ROOT", str(tmp_path / "checkpoints"))
    return tmp_path


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# Signs of the machine a page was executed on: absolute paths under the usual roots (POSIX, macOS, Windows) and
# library paths, plus this machine's own checkout, interpreter prefix, home and temp folders wherever they are.
_MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|tmp|home|Users|mnt|opt|srv|scratch|private|var/folders)/"
                           r"|\b[A-Za-z]:\\(?:Users|Windows|Program Files)\\|site-packages|dist-packages")
# Warnings of the runtime (not of a chapter) that must not reach a page.
_RUNTIME_WARNINGS = ("TqdmWarning", "IProgress not found", "without encryption")


def _machine_prefixes() -> list[str]:
    from distillbook.core.paths import REPO_ROOT

    found = {str(REPO_ROOT), sys.prefix, sys.base_prefix, str(Path.home()), tempfile.gettempdir()}
    return sorted(p.rstrip("/\\") + "/" for p in found if len(p.rstrip("/\\")) > 1)


def _page_strings(node, where: str):
    """Every string of a notebook with where it sits, less base64 image data (whose text is arbitrary)."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, list):
        if node and all(isinstance(x, str) for x in node):  # nbformat's multi-line strings
            yield where, "".join(node)
        else:
            for i, item in enumerate(node):
                yield from _page_strings(item, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            if where.endswith(".data") and key.startswith(("image/", "application/pdf")) and key != "image/svg+xml":
                continue
            yield from _page_strings(value, f"{where}.{key}")


def page_problems(notebook: dict) -> list[str]:
    """What on an executed notebook names the machine it ran on, or is a runtime warning: ``where: excerpt``."""
    prefixes = _machine_prefixes()
    problems = []
    for where, text in _page_strings(notebook, "notebook"):
        hits = [m.start() for m in _MACHINE_PATH.finditer(text)] + [text.find(p) for p in prefixes if p in text]
        hits += [text.find(w) for w in _RUNTIME_WARNINGS if w in text]
        if hits:
            at = min(hits)
            problems.append(f"{where}: {text[max(0, at - 40):at + 100]!r}")
    return problems
