"""Committed results: every written chapter's cpu results are fresh, with an executed notebook beside them."""

import json

import pytest

from distillbook.core import catalog, pipeline
from distillbook.core.paths import EXECUTED_DIR
from test_notebooks import error_outputs


@pytest.mark.parametrize("chapter", [c.id for c in catalog.written_chapters()])
def test_committed_cpu_results_are_fresh(chapter):
    row = next(r for r in pipeline.status(("cpu",)) if r["chapter"] == chapter)
    assert row["state"] == "fresh", (f"{chapter}: cpu results are {row['state']} ({row['reason']}); "
                                     f"rerun `make run CHAPTER={chapter} PROFILE=cpu` and commit results/ and book/")
    assert sum(row["claims"].values()) > 0


@pytest.mark.parametrize("chapter", [c.id for c in catalog.written_chapters()])
def test_executed_notebook_is_committed_and_clean(chapter):
    path = EXECUTED_DIR / f"{chapter}.ipynb"
    assert path.exists(), f"{path} is missing: run the chapter at cpu"
    assert error_outputs(json.loads(path.read_text())) == []
