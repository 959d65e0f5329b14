"""wandb tracking: offline mode works with no network and no login; ``off`` never imports wandb."""

import subprocess
import sys

import pytest

from distillbook.core.tracking import Tracker


def test_off_does_not_import_wandb():
    code = ("import sys; from distillbook.core.tracking import Tracker; t = Tracker('off'); t.log({'x': 1}); "
            "t.finish(); print('wandb' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.slow
def test_offline_run_writes_locally_without_login(tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, so no login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracker = Tracker("offline", name="test", config={"lr": 0.1}, directory=tmp_path)
    for step in range(3):
        tracker.log({"loss": 1.0 / (step + 1), "step": step})
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    tracker.log_figure("curve", fig)
    tracker.summary({"verdict": "reproduced"})
    tracker.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb")), "the offline run file is missing"
    assert list(runs[0].glob("files/media/images/curve_*.png")), "the figure was not logged"


def test_fit_logs_every_evaluation_to_the_tracker():
    import torch

    from distillbook.core.training import fit

    class Recorder:
        def __init__(self):
            self.rows = []

        def log(self, metrics):
            self.rows.append(metrics)

    recorder = Recorder()
    model = torch.nn.Linear(2, 1)
    fit(model, lambda m, b: m(b).pow(2).mean(), lambda g: torch.randn(4, 2, generator=g), steps=6,
        optimizer=torch.optim.SGD(model.parameters(), 0.1), seed=0, eval_every=2,
        evaluate=lambda m: {"w": m.weight.abs().sum()}, tracker=recorder, desc="seed0/toy", progress=False)
    assert [r["seed0/toy/step"] for r in recorder.rows] == [2, 4, 6]
    assert all({"seed0/toy/loss", "seed0/toy/w"} <= set(r) for r in recorder.rows)


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match="tracking='maybe'"):
        Tracker("maybe")
