"""Atomic writes, the Run's result files, and the digits test bed."""

import json

import pytest
import torch

from distillbook.core.claims import Claim
from distillbook.core.pipeline import params_class
from distillbook.core import results as results_module
from distillbook.core.results import RESULT_FILES, Run, atomic_write_json, load_results
from distillbook.testbeds import digits


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "claims.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"bad": float("nan")})  # allow_nan=False fails mid-serialisation
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["claims.json"], "no temp file is left behind"


def test_run_writes_metrics_claims_and_provenance(scratch):
    params = params_class("foundations").for_profile("smoke", seeds=[0, 1, 2])
    run = Run("foundations", params)
    for s in run.seeds:
        run.record(s, acc=0.5 + 0.1 * s, curve=[s, s + 1])
    claim = Claim("c", None, "acc above a quarter", a="acc", statistic="value", region=(">", 0.25), margin=0.0,
                  rationale="chance level is 0.25")
    run.finish([claim.evaluate(run.values("acc"))])
    out = load_results("foundations", "smoke")
    assert set(out) == {f.removesuffix(".json") for f in RESULT_FILES}
    assert out["metrics"]["aggregate"]["acc"]["mean"] == pytest.approx(0.6)
    assert out["metrics"]["aggregate"]["curve"]["mean"] == pytest.approx([1.0, 2.0])
    prov = out["provenance"]
    for key in ("git_commit", "parameters", "packages", "device", "wall_seconds", "peak_memory_mb", "notebook", "modules"):
        assert key in prov
    assert prov["overrides"] == {"seeds": [0, 1, 2]}
    assert "src/distillbook/core/results.py" in prov["modules"]
    assert out["claims"][0]["verdict"] == "reproduced"


def _finished_run(acc_offset: float) -> dict:
    run = Run("foundations", params_class("foundations").for_profile("smoke", seeds=[0, 1, 2]))
    for s in run.seeds:
        run.record(s, acc=acc_offset + 0.1 * s)
    claim = Claim("c", None, "acc above a quarter", a="acc", statistic="value", region=(">", 0.25), margin=0.0,
                  rationale="chance level is 0.25")
    return run.finish([claim.evaluate(run.values("acc"))])


def test_a_failed_write_leaves_the_previous_results_whole(scratch, monkeypatch):
    first = _finished_run(0.5)
    before = {f: (results_module.results_dir("foundations", "smoke") / f).read_text() for f in RESULT_FILES}
    real = results_module.atomic_write_json

    def fail_on_claims(path, obj):
        if path.name == "claims.json":
            raise OSError("disk full")
        real(path, obj)

    monkeypatch.setattr(results_module, "atomic_write_json", fail_on_claims)
    with pytest.raises(OSError, match="disk full"):
        _finished_run(0.1)
    folder = results_module.results_dir("foundations", "smoke")
    assert {f: (folder / f).read_text() for f in RESULT_FILES} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["smoke"], "no staging folder is left behind"
    assert load_results("foundations", "smoke")["provenance"]["run_id"] == first["run_id"]


def test_a_library_change_during_the_run_is_refused(scratch, monkeypatch):
    run = Run("foundations", params_class("foundations").for_profile("smoke", seeds=[0, 1, 2]))
    monkeypatch.setattr(results_module, "imported_modules", lambda: {**run.code, "src/distillbook/methods/kd.py": "edited"})
    with pytest.raises(RuntimeError, match="changed while the run was going: src/distillbook/methods/kd.py"):
        run.finish([])
    assert load_results("foundations", "smoke") is None


def test_checkpoint_key_follows_parameters_and_code(scratch):
    params = params_class("foundations").for_profile("smoke")
    a, b = Run("foundations", params), Run("foundations", params)
    assert a.checkpoint("teacher", 0) == b.checkpoint("teacher", 0)
    c = Run("foundations", params_class("foundations").for_profile("smoke", alpha=0.3))
    assert c.checkpoint("teacher", 0) != a.checkpoint("teacher", 0)
    b.code = {**b.code, "src/distillbook/methods/kd.py": "edited"}
    assert b.checkpoint("teacher", 0) != a.checkpoint("teacher", 0)


def test_run_refuses_claims_without_verdict_and_unknown_seeds(scratch):
    run = Run("foundations", params_class("foundations").for_profile("smoke"))
    with pytest.raises(KeyError, match="seed 99"):
        run.record(99, acc=1.0)
    with pytest.raises(ValueError, match="verdict"):
        run.finish([{"id": "typed-in", "verdict": "reproduced!"}])
    assert load_results("foundations", "smoke") is None


def test_unknown_chapter_is_refused():
    with pytest.raises(ValueError, match="chapter='nope'"):
        Run("nope", params_class("foundations").for_profile("smoke"))


def test_digits_splits_are_disjoint_and_seeded():
    a, b = digits.load(0), digits.load(1)
    assert len(a.test) == digits.TEST_SIZE and len(a.val) == 200 and len(a.train) == 1797 - 700
    assert torch.equal(a.test.x, b.test.x), "the test split is the same for every seed"
    assert not torch.equal(a.val.x, b.val.x)
    idx = digits.labelled_subset(a.train, 5, seed=3)
    assert torch.bincount(a.train.y[idx], minlength=10).tolist() == [5] * 10
    assert torch.equal(idx, digits.labelled_subset(a.train, 5, seed=3))
    assert (a.train.without_class(3).y != 3).all()
    with pytest.raises(ValueError, match="per_class=500"):
        digits.labelled_subset(a.train, 500, seed=0)


def test_health_table_and_diagnosis_links(scratch):
    run = Run("foundations", params_class("foundations").for_profile("smoke", seeds=[0, 1, 2]))
    for s in run.seeds:
        run.record(s, teacher_sw=0.17 + 0.01 * s, oracle_sw=0.108, floor_sw=0.096 + 0.001 * s, acc=0.5 + 0.1 * s)
    run.health("teacher (50 steps)", "sliced Wasserstein to data", "teacher_sw", lower_is_better=True,
               references={"exact-score oracle": "oracle_sw", "data vs data": "floor_sw"})
    table = run.health_markdown()
    assert "teacher (50 steps)" in table and "0.18 ± 0.01" in table and "0.108 ± 0" in table
    claim = Claim("c", None, "acc above 0.9", a="acc", statistic="value", region=(">", 0.9), margin=0.0,
                  rationale="made up", explanation="too few steps", diagnosis="no-such-metric")
    with pytest.raises(ValueError, match="diagnosis 'no-such-metric'"):
        run.finish([claim.evaluate(run.values("acc"))])
    ok = Claim("c", None, "acc above 0.9", a="acc", statistic="value", region=(">", 0.9), margin=0.0,
               rationale="made up", explanation="the teacher is far from the oracle", diagnosis="teacher_sw")
    run.finish([ok.evaluate(run.values("acc"))])
    out = load_results("foundations", "smoke")
    assert out["metrics"]["health"][0]["references"]["data vs data"]["mean"] == pytest.approx(0.097)
    assert out["claims"][0]["diagnosis_status"] == "tested by teacher_sw"
