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


def test_status_check_fails_on_stale_cpu_and_warns_on_stale_gpu(monkeypatch, capsys):
    from distillbook.core import cli

    rows = [{"chapter": "foundations", "profile": "cpu", "state": "fresh", "reason": "", "wall_seconds": 1.0,
             "claims": {}},
            {"chapter": "foundations", "profile": "gpu", "state": "stale", "reason": "src/x.py changed",
             "wall_seconds": 1.0, "claims": {}}]
    monkeypatch.setattr(pipeline, "status", lambda: rows)
    assert cli.main(["status", "--check"]) == 0
    assert "warning: foundations gpu results are stale: src/x.py changed" in capsys.readouterr().err
    rows[0].update(state="stale", reason="src/y.py changed")
    assert cli.main(["status", "--check"]) == 1
    assert "error: foundations cpu results are stale" in capsys.readouterr().err


def test_a_page_showing_another_profile_is_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "EXECUTED_DIR", tmp_path)
    (tmp_path / "foundations-gpu.ipynb").write_text(json.dumps({"metadata": {"distillbook": {"profile": "cpu",
                                                                                               "run_id": "r"}}}))
    state, reason = pipeline._check_executed("foundations", "gpu", {"run_id": "r"})
    assert state == "stale" and "shows the cpu profile" in reason
    assert pipeline._check_executed("foundations", "cpu", {"run_id": "r"})[1].startswith("no executed notebook")
