import os

import pytest
import torch

torch.set_num_threads(1)  # see distillbook.runtime: 2 threads per process collapse on shared 2-core machines


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Redirect results and checkpoints to a temp folder, so tests never touch the committed ones."""
    monkeypatch.setenv("DISTILLBOOK_RESULTS_ROOT", str(tmp_path / "results"))
    monkeypatch.setenv("DISTILLBOOK_CHECKPOINT_ROOT", str(tmp_path / "checkpoints"))
    return tmp_path


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
