"""Every written chapter executes end to end at ``smoke`` through papermill and yields well-formed results; the CLI."""

import json
import subprocess
import sys

import pytest

from conftest import page_problems
from distillbook.core import catalog, pipeline
from distillbook.core.claims import VERDICTS
from distillbook.core.provenance import notebook_hashes
from distillbook.core.results import load_results

WRITTEN = [c.id for c in catalog.written_chapters()]


def error_outputs(notebook: dict) -> list[str]:
    """Error outputs and tracebacks anywhere in an executed notebook."""
    found = []
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text", "")
            text = text if isinstance(text, str) else "".join(text)
            if out.get("output_type") == "error" or "Traceback (most recent call last)" in text:
                found.append(out.get("ename", text[:200]))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("chapter", WRITTEN)
def test_notebook_runs_at_smoke(chapter, scratch):
    out = pipeline.run_chapter(chapter, "smoke", output_dir=scratch / "executed", results_root=scratch / "results")
    executed = json.loads((scratch / "executed" / f"{chapter}.ipynb").read_text())
    assert error_outputs(executed) == []
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "hide-cell" in injected[0]["metadata"]["tags"]
    assert any(o.get("data", {}).get("image/png") for c in executed["cells"] for o in c.get("outputs", [])), "no figure"
    assert page_problems(executed) == [], "the page shows the machine it ran on (see test_clean_pages)"
    assert executed["metadata"]["papermill"]["input_path"] == f"notebooks/{chapter}.ipynb"

    results = load_results(chapter, "smoke")
    assert results is not None, "the notebook wrote no results"
    claims = results["claims"]
    assert claims, "a chapter states at least one claim"
    for c in claims:
        for key in ("id", "paper", "statement", "paper_value", "measured", "verdict"):
            assert key in c, key
        assert c["verdict"] in VERDICTS
        assert c["paper"] is None or 1 <= c["paper"] <= len(catalog.papers())
        assert {"mean", "std", "per_seed"} <= set(c["measured"])
        assert len(c["measured"]["per_seed"]) == len(results["metrics"]["seeds"])
    prov = results["provenance"]
    assert prov["profile"] == "smoke" and prov["overrides"] == {}
    assert prov["notebook"] == notebook_hashes(catalog.chapter(chapter).notebook)
    assert any(f"chapters/{chapter.replace('-', '_')}/" in m for m in prov["modules"])
    assert out["wall_seconds"] < 120, "smoke runs take seconds"
    assert executed["metadata"]["distillbook"] == {"run_id": prov["run_id"], "profile": "smoke"}
    from distillbook.core.paths import RUNS_DIR

    assert not (RUNS_DIR / "staging" / prov["run_id"]).exists(), "this run's staging is cleaned up"


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "distillbook", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_rejects_bad_input_before_any_compute(tmp_path):
    """Bad input fails in validation: no staging folder is made, so no kernel was started (checked by structure,
    not by wall time, which a loaded machine stretches)."""
    from distillbook.core.paths import RUNS_DIR

    staging = RUNS_DIR / "staging"
    before = set(staging.glob("*")) if staging.exists() else set()
    bad = _cli("run", "foundations", "--profile", "smoke", "-p", "temprature=[1,2]")
    assert bad.returncode == 2 and "temprature" in bad.stderr and "allowed" in bad.stderr
    bad = _cli("run", "foundations", "--profile", "smoke", "-p", "alpha=2")
    assert bad.returncode == 2 and "'alpha'" in bad.stderr
    bad = _cli("run", "no-such-chapter", "--profile", "smoke")
    assert bad.returncode == 2 and "unknown chapter 'no-such-chapter'" in bad.stderr
    bad = _cli("run", "foundations", "--profile", "huge")
    assert bad.returncode == 2 and "unknown profile 'huge'" in bad.stderr
    bad = _cli("run", "foundations", "--profile", "smoke", "-p", "profile=gpu")
    assert bad.returncode == 2 and "'profile' is chosen by the profile argument" in bad.stderr
    bad = _cli("run", "foundations", "--profile", "smoke", "-p", "device=cuda:7")
    assert bad.returncode == 2 and "device='cuda:7'" in bad.stderr
    bad = _cli("run", "feature-kd", "--profile", "smoke")
    assert bad.returncode == 2 and "planned" in bad.stderr
    after = set(staging.glob("*")) if staging.exists() else set()
    assert after <= before, "validation must not start a run"


def test_cli_list_and_status_json():
    listed = _cli("list")
    assert listed.returncode == 0
    assert all(c.id in listed.stdout for c in catalog.CHAPTERS)
    status = _cli("status", "--json")
    assert status.returncode == 0
    rows = json.loads(status.stdout)
    assert {(r["chapter"], r["profile"]) for r in rows} >= {(c, "cpu") for c in WRITTEN}
    for r in rows:
        assert {"chapter", "profile", "state", "reason", "wall_seconds", "claims"} <= set(r)
        assert r["state"] in ("fresh", "stale", "missing")


def test_override_parsing():
    from distillbook.core.cli import _parse_overrides

    assert _parse_overrides(["seeds=[0,1]", "lr=1e-3", "device=cuda:1", "flag=true", "tracking=off", "t=1:30"]) == {
        "seeds": [0, 1], "lr": 0.001, "device": "cuda:1", "flag": True, "tracking": "off", "t": "1:30"}
    with pytest.raises(ValueError, match="key=value"):
        _parse_overrides(["seeds"])
