"""Staging folders of runs: a live run's folder is kept, a killed run's folder is removed by the next run."""

import os
import time

from distillbook.core import pipeline


def test_abandoned_staging_is_removed_and_live_staging_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "RUNS_DIR", tmp_path)
    staging = tmp_path / "staging"
    live, killed, unlocked_old, unlocked_new = (staging / name for name in ("live", "killed", "old", "new"))
    for folder in (live, killed, unlocked_old, unlocked_new):
        folder.mkdir(parents=True)
        (folder / "notebook.ipynb").write_text("{}")
    held = pipeline.hold_staging_lock(live)  # a run still going
    pipeline.hold_staging_lock(killed).close()  # a run that died: its lock was released with its process
    an_hour_ago = time.time() - 3600
    os.utime(unlocked_old, (an_hour_ago, an_hour_ago))  # made before locks existed, long gone
    try:
        removed = pipeline.remove_abandoned_staging()
        assert sorted(p.name for p in removed) == ["killed", "old"]
        assert live.exists() and unlocked_new.exists()  # a fresh folder may be a run about to take its lock
        assert not killed.exists() and not unlocked_old.exists()
    finally:
        held.close()
    assert [p.name for p in pipeline.remove_abandoned_staging()] == ["live"]  # once its run has ended


def test_no_staging_folder_is_fine(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "RUNS_DIR", tmp_path)
    assert pipeline.remove_abandoned_staging() == []


def test_runs_off_the_preset_leave_committed_results_alone():
    from distillbook.core.paths import COMMITTED_RESULTS_DIR, EXECUTED_DIR, RUNS_DIR

    book = pipeline.destinations("foundations", "cpu", {})
    assert book == (EXECUTED_DIR, COMMITTED_RESULTS_DIR)
    experiment = pipeline.destinations("foundations", "cpu", {"seeds": [0]})
    assert all(RUNS_DIR / "experiments" in p.parents for p in experiment)
    assert pipeline.destinations("foundations", "cpu", {"seeds": [0]}, replace=True) == book
    assert pipeline.destinations("foundations", "cpu", {"device": "cuda:1", "workers": 1}) == book  # run settings
    assert pipeline.destinations("foundations", "smoke", {"seeds": [0]}) == pipeline.destinations("foundations", "smoke", {})
    assert pipeline.destinations("foundations", "cpu", {"seeds": [0]}, output_dir=RUNS_DIR / "x")[0] == RUNS_DIR / "x"
