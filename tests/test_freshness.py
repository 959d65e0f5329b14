"""Freshness: a change to an imported module (or the notebook) marks results stale; an unrelated change does not."""

import json
import shutil

import pytest

from distillbook.core import provenance
from distillbook.core.paths import COMMITTED_RESULTS_DIR, NOTEBOOKS_DIR, PACKAGE_DIR
from distillbook.core.provenance import FRESH, STALE, check_fresh, notebook_hashes


@pytest.fixture(scope="module")
def chapter_modules():
    """The distillbook modules the foundations notebook's kernel imported, as its committed cpu run recorded them."""
    provenance_file = COMMITTED_RESULTS_DIR / "foundations" / "cpu" / "provenance.json"
    return json.loads(provenance_file.read_text())["modules"]


@pytest.fixture
def tree(tmp_path, monkeypatch, chapter_modules):
    """A copy of the library and notebook, with provenance pointing at it."""
    shutil.copytree(PACKAGE_DIR, tmp_path / "src" / "distillbook", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "notebooks").mkdir()
    notebook = tmp_path / "notebooks" / "foundations.ipynb"
    shutil.copy(NOTEBOOKS_DIR / "foundations.ipynb", notebook)
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    here = {rel: provenance.sha256_bytes((tmp_path / rel).read_bytes()) for rel in chapter_modules}
    record = {"notebook": notebook_hashes(notebook), "modules": here, "overrides": {}}
    return tmp_path, notebook, record


def test_the_chapter_imports_what_it_uses_and_not_the_tooling(chapter_modules):
    assert "src/distillbook/methods/kd.py" in chapter_modules
    assert "src/distillbook/core/training.py" in chapter_modules
    for tooling in ("site.py", "cli.py", "pipeline.py"):
        assert f"src/distillbook/core/{tooling}" not in chapter_modules


def test_untouched_is_fresh(tree):
    _, notebook, record = tree
    assert check_fresh(record, notebook) == (FRESH, "")


def test_imported_module_change_is_stale_and_named(tree):
    root, notebook, record = tree
    kd = root / "src" / "distillbook" / "methods" / "kd.py"
    kd.write_text(kd.read_text() + "\n# a change\n")
    state, reason = check_fresh(record, notebook)
    assert state == STALE and "src/distillbook/methods/kd.py" in reason


def test_unrelated_module_change_stays_fresh(tree):
    root, notebook, record = tree
    site = root / "src" / "distillbook" / "core" / "site.py"
    site.write_text(site.read_text() + "\n# a change\n")
    (root / "src" / "distillbook" / "brand_new.py").write_text("x = 1\n")
    assert check_fresh(record, notebook) == (FRESH, "")


def test_removed_module_is_stale(tree):
    root, notebook, record = tree
    (root / "src" / "distillbook" / "core" / "metrics.py").unlink()
    state, reason = check_fresh(record, notebook)
    assert state == STALE and "removed" in reason and "metrics.py" in reason


def _edit_cell(notebook, cell_type, text):
    nb = json.loads(notebook.read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == cell_type)
    cell["source"] = (cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])) + text
    notebook.write_text(json.dumps(nb))


def test_notebook_code_change_is_stale(tree):
    _, notebook, record = tree
    _edit_cell(notebook, "code", "\nprint('changed')")
    state, reason = check_fresh(record, notebook)
    assert state == STALE and "code cells" in reason


def test_notebook_text_change_is_stale_with_its_own_reason(tree):
    _, notebook, record = tree
    _edit_cell(notebook, "markdown", "\nMore prose.")
    state, reason = check_fresh(record, notebook)
    assert state == STALE and "text" in reason


def test_off_preset_parameters_are_stale(tree):
    _, notebook, record = tree
    state, reason = check_fresh({**record, "overrides": {"seeds": [0]}}, notebook)
    assert state == STALE and "seeds" in reason
