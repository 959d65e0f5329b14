"""The training loop: determinism, and exact resume after an interruption or a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distillbook.core.training import fit
from resume_worker import train

HERE = Path(__file__).parent


def _final(path):
    return torch.load(path, weights_only=False)


def _same(a, b):
    assert a["history"] == b["history"]
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k


def test_same_seed_same_numbers(tmp_path):
    train(None, tmp_path / "a.pt")
    train(None, tmp_path / "b.pt")
    _same(_final(tmp_path / "a.pt"), _final(tmp_path / "b.pt"))


def test_resume_after_an_exception_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    train(None, tmp_path / "straight.pt")

    import resume_worker

    real_fit = resume_worker.fit
    calls = {"n": 0}

    def interrupted_fit(*args, **kwargs):
        evaluate = kwargs["evaluate"]

        def boom(m):
            calls["n"] += 1
            if calls["n"] == 4:  # the evaluation at step 80 runs before that step is saved
                raise KeyboardInterrupt
            return evaluate(m)

        return real_fit(*args, **{**kwargs, "evaluate": boom})

    monkeypatch.setattr(resume_worker, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "ckpt.pt", tmp_path / "never.pt")
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 70
    monkeypatch.setattr(resume_worker, "fit", real_fit)
    train(tmp_path / "ckpt.pt", tmp_path / "resumed.pt")
    _same(_final(tmp_path / "straight.pt"), _final(tmp_path / "resumed.pt"))


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    train(None, tmp_path / "straight.pt")
    ckpt = tmp_path / "ckpt.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(HERE / "resume_worker.py"), str(ckpt), str(tmp_path / "killed.pt"), "0.02"]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if ckpt.exists() and torch.load(ckpt, weights_only=False)["step"] >= 30:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=False)["step"]
    assert 30 <= killed_at < 120, "the run should have been killed mid-training"
    assert not (tmp_path / "killed.pt").exists()
    subprocess.run(cmd[:-1] + ["0"], env=env, check=True)
    _same(_final(tmp_path / "straight.pt"), _final(tmp_path / "killed.pt"))


def test_finished_checkpoint_returns_without_training(tmp_path):
    train(tmp_path / "ckpt.pt", tmp_path / "first.pt")
    before = (tmp_path / "ckpt.pt").stat().st_mtime_ns
    train(tmp_path / "ckpt.pt", tmp_path / "second.pt")
    assert (tmp_path / "ckpt.pt").stat().st_mtime_ns == before
    _same(_final(tmp_path / "first.pt"), _final(tmp_path / "second.pt"))


def test_checkpoint_for_other_steps_is_refused(tmp_path):
    model = torch.nn.Linear(2, 1)
    kw = dict(optimizer=torch.optim.SGD(model.parameters(), 0.1), seed=0, checkpoint=tmp_path / "c.pt", progress=False)
    batch = lambda g: torch.randn(4, 2, generator=g)  # noqa: E731
    fit(model, lambda m, b: m(b).pow(2).mean(), batch, steps=5, **kw)
    with pytest.raises(ValueError, match="steps=5, not 6"):
        fit(model, lambda m, b: m(b).pow(2).mean(), batch, steps=6, **kw)


def test_bad_arguments_are_named():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    with pytest.raises(ValueError, match="steps"):
        fit(model, lambda m, b: m(b).sum(), lambda g: torch.zeros(1, 2), steps=-1, optimizer=opt, seed=0)
    with pytest.raises(ValueError, match="eval_every"):
        fit(model, lambda m, b: m(b).sum(), lambda g: torch.zeros(1, 2), steps=1, optimizer=opt, seed=0, eval_every=0)


def test_non_finite_loss_stops_with_the_step():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(FloatingPointError, match="step 0"):
        fit(model, lambda m, b: m(b).sum() * float("nan"), lambda g: torch.zeros(1, 2), steps=3,
            optimizer=torch.optim.SGD(model.parameters(), 0.1), seed=0, progress=False)


def test_fit_result_reads_the_tail_and_its_drift():
    from distillbook.core.training import FitResult

    r = FitResult(history=[{"step": k, "acc": v} for k, v in enumerate([0.1, 0.5, 0.8, 0.9, 0.9, 0.9, 0.9])])
    assert r.final("acc") == pytest.approx(0.9)
    assert r.drift("acc") == pytest.approx(abs(0.9 - (0.5 + 0.8 + 0.9) / 3) / 0.9)
    assert r.final("acc", window=1) == pytest.approx(0.9)


def _line_fit(steps, checkpoint=None, seen=None):
    """A 1-d regression whose loss_fn and after_step record the step ``fit`` passes them."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    seen = [] if seen is None else seen

    def loss_fn(m, batch, step):
        seen.append(("loss", step))
        return ((m(batch) - 2 * batch) ** 2).mean()

    def after_step(m, step):
        seen.append(("after", step))

    fit(model, loss_fn, lambda g: torch.randn(8, 1, generator=g), steps=steps, seed=1, progress=False,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), after_step=after_step, checkpoint=checkpoint,
        checkpoint_every=3)
    return seen


def test_fit_passes_the_step_to_the_loss_and_after_step():
    seen = _line_fit(5)
    assert seen == [(kind, k) for k in range(5) for kind in ("loss", "after")]


def test_the_step_resumes_with_the_checkpoint(tmp_path):
    seen = []
    with pytest.raises(KeyboardInterrupt):
        def stop_at_4(m, batch, step):
            if step == 4:
                raise KeyboardInterrupt
            seen.append(step)
            return ((m(batch) - batch) ** 2).mean()
        model = torch.nn.Linear(1, 1)
        fit(model, stop_at_4, lambda g: torch.randn(8, 1, generator=g), steps=6, seed=1, progress=False,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1), checkpoint=tmp_path / "c.pt", checkpoint_every=3)
    assert seen == [0, 1, 2, 3]
    resumed = _line_fit(6, checkpoint=tmp_path / "c.pt")
    assert [k for kind, k in resumed if kind == "loss"] == [3, 4, 5]  # saved after step index 2


def test_a_loss_without_a_step_parameter_is_called_without_it():
    model = torch.nn.Linear(2, 1)
    fit(model, lambda m, b: m(b).pow(2).mean(), lambda g: torch.randn(4, 2, generator=g), steps=2, seed=0,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)


def _mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


@pytest.mark.parametrize("shared_input", [True, False])
def test_a_stack_trains_each_model_as_if_alone(shared_input):
    from distillbook.core.training import Stack

    n, steps = 3, 25

    def batch(g):
        x = torch.randn(n, 16, 3, generator=g)
        return x[0] if shared_input else x

    def target(x):
        return x.sum(-1, keepdim=True).sin()

    stack = Stack([_mlp(k) for k in range(n)], shared_input=shared_input)
    fit(stack, lambda m, x: ((m(x) - target(x)) ** 2).mean(dim=(-2, -1)).sum(), batch, steps=steps, seed=5,
        optimizer=torch.optim.Adam(stack.parameters(), lr=1e-2), progress=False)
    trained = stack.unstack([_mlp(100 + k) for k in range(n)])

    g = torch.Generator().manual_seed(5)
    batches = [batch(g) for _ in range(steps)]
    for k in range(n):
        alone = _mlp(k)
        opt = torch.optim.Adam(alone.parameters(), lr=1e-2)
        for x in batches:
            x_k = x if shared_input else x[k]
            loss = ((alone(x_k) - target(x_k)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        for a, b in zip(alone.parameters(), trained[k].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not torch.equal(next(alone.parameters()), next(_mlp(k).parameters()))  # it did train


def test_a_stack_refuses_models_of_different_shapes():
    from distillbook.core.training import Stack

    with pytest.raises(ValueError, match="one architecture"):
        Stack([torch.nn.Linear(2, 1), torch.nn.Linear(3, 1)])


def test_a_stack_keeps_frozen_parameters_frozen():
    from distillbook.core.training import Stack

    models = [_mlp(k) for k in range(2)]
    for m in models:
        m[0].requires_grad_(False)
    stack = Stack(models)
    trainable = {n for n, p in stack.named_parameters() if p.requires_grad}
    assert trainable == {"2__weight", "2__bias"}


def test_logged_extras_are_means_over_the_steps_that_reported_them():
    model = torch.nn.Linear(1, 1)

    def loss_fn(m, batch, step):
        extras = {"every": float(step)}
        if step % 2 == 0:  # a player that moves every other step
            extras["even"] = float(step)
        return m(batch).pow(2).mean(), extras

    result = fit(model, loss_fn, lambda g: torch.randn(4, 1, generator=g), steps=6, seed=0, eval_every=3,
                 optimizer=torch.optim.SGD(model.parameters(), lr=0.01), progress=False)
    assert result.column("every") == [1.0, 4.0] and result.column("even") == [1.0, 4.0]  # (0+2)/2, 4/1


@pytest.mark.parametrize("eval_every", [None, 25])
def test_the_loop_reads_no_value_between_logging_points(eval_every, tmp_path):
    """The host waits for the device only where a row is logged (or a checkpoint saved): 100 steps with an
    extra and a scheduler read as many device values per logged row as 1 step does (the device check
    counts reads of tensors on the run's device)."""
    from distillbook.core import devices

    def run(steps):
        torch.manual_seed(0)
        devices.stop_check()
        reads = devices.start_check()
        model = torch.nn.Linear(3, 1).to(torch.device("cpu"))  # the run's device (the string "cpu" is the host)
        opt = torch.optim.Adam(model.parameters(), 1e-2)

        def loss(m, b):
            value = m(b).pow(2).mean()
            return value, {"size": value.detach().sqrt()}

        try:
            result = fit(model, loss, lambda g: torch.randn(8, 3, generator=g), steps=steps, optimizer=opt,
                         seed=0, progress=False, eval_every=eval_every, checkpoint=tmp_path / f"{steps}.pt",
                         checkpoint_seconds=3600, scheduler=torch.optim.lr_scheduler.StepLR(opt, 10),
                         device="cpu")
        finally:
            devices.stop_check()
        return reads.reads, len(result.history)

    (short, short_rows), (long, long_rows) = run(1), run(100)
    assert short > 0, "the counter sees the reads at logging points"
    assert long == short * long_rows // short_rows


def test_a_checkpoint_is_saved_by_time(tmp_path, monkeypatch):
    from distillbook.core import training

    clock = iter(range(0, 10_000, 25))  # each call of the clock is 25 s later
    monkeypatch.setattr(training.time, "monotonic", lambda: next(clock))
    saved = []
    monkeypatch.setattr(training, "_save", lambda path, *a: saved.append(a[-3]))
    model = torch.nn.Linear(2, 1)
    fit(model, lambda m, b: m(b).pow(2).mean(), lambda g: torch.randn(4, 2, generator=g), steps=7, seed=0,
        optimizer=torch.optim.SGD(model.parameters(), 0.1), progress=False, checkpoint=tmp_path / "c.pt",
        checkpoint_seconds=60)
    assert saved == [3, 6, 7], "every 60 s of training (the clock reads 25 s per step) and at the end"


def test_a_dry_run_runs_a_few_steps_of_every_fit_and_logs_their_cost(tmp_path, monkeypatch):
    """Under ``DISTILLBOOK_DRY_RUN`` a fit runs its first steps only (logging each, checkpointing none) and logs
    its planned steps, seconds per step, and the FLOPs of one step: for a linear layer, 2 * batch * in * out
    forward, as many for the weight's gradient (the input needs none)."""
    from distillbook.core import pipeline, training

    log = tmp_path / "fits.jsonl"
    monkeypatch.setenv(training.DRY_RUN_ENV, f"4:{log}")
    model = torch.nn.Linear(8, 3, bias=False)
    result = fit(model, lambda m, b: m(b).pow(2).mean(), lambda g: torch.randn(16, 8, generator=g), steps=1000,
                 optimizer=torch.optim.SGD(model.parameters(), 0.1), seed=0, progress=False, eval_every=100,
                 evaluate=lambda m: {"w": m.weight.norm()}, checkpoint=tmp_path / "c.pt", desc="seed3/probe")
    assert result.steps == 4 and [row["step"] for row in result.history] == [1, 2, 3, 4]
    assert not (tmp_path / "c.pt").exists()
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["stage"] == "probe" and row["planned_steps"] == 1000 and row["steps_run"] == 4
    assert row["flops_per_step"] == 2 * (2 * 16 * 8 * 3)
    assert row["kernels_per_step"] > 0 and row["seconds_per_step"] > 0
    stages = pipeline.dry_run_stages([row, {**row, "fit": "seed4/probe"}])
    assert stages[0]["fits"] == 2 and stages[0]["planned_steps"] == 2000
    assert stages[0]["flops"] == 2000 * row["flops_per_step"]
    monkeypatch.setenv(training.DRY_RUN_ENV, "1:x")
    with pytest.raises(ValueError, match="DISTILLBOOK_DRY_RUN"):
        fit(model, lambda m, b: m(b).sum(), lambda g: torch.randn(2, 8, generator=g), steps=3,
            optimizer=torch.optim.SGD(model.parameters(), 0.1), seed=0, progress=False)


@pytest.mark.parametrize("kind", ["language", "image"])
def test_a_bf16_loss_agrees_with_the_fp32_one(kind):
    """``precision=bf16`` autocasts the losses: on the book's language and image models the bf16 loss is within
    2% of the float32 one (bfloat16 keeps 8 bits of mantissa), and a bf16 fit trains."""
    from distillbook.models.convnet import ConvNet
    from distillbook.models.lm import next_token_loss, tiny_gpt2

    torch.manual_seed(0)
    if kind == "language":
        model = tiny_gpt2(7, 32, 2)
        x = torch.randint(0, 6, (16, 12))

        def loss(m, b):
            return next_token_loss(m, b, 6, 6)
    else:
        model = ConvNet((1, 8, 8), 10, width=16, depth=2, norm="instance")
        x = (torch.rand(16, 64), torch.randint(0, 10, (16,)))

        def loss(m, b):
            return torch.nn.functional.cross_entropy(m(b[0]), b[1])
    full = loss(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = loss(model, x)
    assert half.dtype == torch.float32 or half.dtype == torch.bfloat16
    assert abs(float(half.detach()) - float(full.detach())) <= 0.02 * abs(float(full.detach()))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    result = fit(model, lambda m, b: loss(m, x), lambda g: None, steps=30, optimizer=opt, seed=0, progress=False,
                 eval_every=10, autocast=torch.bfloat16, device="cpu")
    assert result.history[-1]["loss"] < result.history[0]["loss"]
