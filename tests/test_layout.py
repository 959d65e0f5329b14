"""The README's map of the library is generated from the code and up to date; every method is where it says."""

import importlib

from distillbook.core import layout


def test_every_methods_module_declares_its_methods_and_they_exist():
    rows = layout.methods_rows()  # raises on a module without METHODS or a name it lacks
    assert len(rows) >= len(layout.method_modules())
    for module in layout.method_modules():
        entries = importlib.import_module(f"distillbook.methods.{module}").METHODS
        assert all(callable(getattr(importlib.import_module(f"distillbook.methods.{module}"), a)) for a, _ in entries.values())


def test_the_readme_layout_is_up_to_date():
    assert layout.update_readme(check=True), "README's layout section is stale: run `python -m distillbook layout`"


def test_chapters_using_reads_imports():
    assert "sds-3d-gradients" in layout.chapters_using("score_distillation")
