"""Trajectory matching: the meta-gradient through the torch.func unroll, checked two other ways."""

import pytest
import torch
import torch.nn.functional as F

from distillbook.methods.dataset_distillation import (expert_trajectory, matching_loss, path_length, snapshot,
                                                     trajectory_matching_step, unroll)


def _setup(steps=3):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    x_real = torch.randn(60, 6, dtype=torch.float64)
    y_real = (x_real[:, 0] > 0).long() + (x_real[:, 1] > 0).long()
    trajectory = expert_trajectory(model, x_real, y_real, epochs=4, lr=0.2, batch_size=20, seed=1)
    x_syn = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    y_syn = torch.arange(3).repeat(2)
    syn_lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)

    def loss(xs, lr):
        return trajectory_matching_step(model, trajectory, 1, 2, xs, y_syn, lr, steps)

    return model, trajectory, x_syn, y_syn, syn_lr, loss


def test_meta_gradient_matches_central_finite_differences():
    _, _, x_syn, _, syn_lr, loss = _setup()
    gx, glr = torch.autograd.grad(loss(x_syn, syn_lr), (x_syn, syn_lr))
    eps = 1e-6
    for i, j in [(0, 0), (2, 3), (5, 5)]:
        bump = torch.zeros_like(x_syn)
        bump[i, j] = eps
        with torch.no_grad():
            fd = (loss(x_syn + bump, syn_lr) - loss(x_syn - bump, syn_lr)) / (2 * eps)
        assert gx[i, j].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-9)
    with torch.no_grad():
        fd_lr = (loss(x_syn, syn_lr + eps) - loss(x_syn, syn_lr - eps)) / (2 * eps)
    assert glr.item() == pytest.approx(fd_lr.item(), rel=1e-5)


def test_meta_gradient_matches_a_hand_written_autograd_unroll():
    model, trajectory, x_syn, y_syn, syn_lr, loss = _setup()
    gx, glr = torch.autograd.grad(loss(x_syn, syn_lr), (x_syn, syn_lr))

    # The same three SGD steps with module parameters and create_graph=True, no torch.func.
    names = [n for n, _ in model.named_parameters()]
    params = [trajectory[1][n].clone().requires_grad_(True) for n in names]

    def forward(ps, x):
        h = torch.tanh(x @ ps[0].T + ps[1])
        return h @ ps[2].T + ps[3]

    for _ in range(3):
        grads = torch.autograd.grad(F.cross_entropy(forward(params, x_syn), y_syn), params, create_graph=True)
        params = [p - syn_lr * g for p, g in zip(params, grads)]
    end = dict(zip(names, params))
    by_hand = matching_loss(end, trajectory[1], trajectory[3])
    gx2, glr2 = torch.autograd.grad(by_hand, (x_syn, syn_lr))
    torch.testing.assert_close(gx, gx2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(glr, glr2, rtol=1e-10, atol=1e-12)


def test_no_steps_means_no_gradient_and_the_loss_is_one():
    _, _, x_syn, _, syn_lr, _ = _setup()
    _, _, _, _, _, loss0 = _setup(steps=0)
    value = loss0(x_syn, syn_lr)
    assert value.item() == pytest.approx(1.0)  # theta_hat_0 = theta*_t: the whole expert segment is still ahead
    assert not value.requires_grad, "with no steps the loss cannot depend on the synthetic data"


def test_matching_loss_is_zero_at_the_target():
    model, trajectory, *_ = _setup()
    assert matching_loss(trajectory[3], trajectory[1], trajectory[3]).item() == 0.0
    with pytest.raises(ValueError, match="did not move"):
        matching_loss(trajectory[1], trajectory[1], trajectory[1])
    with pytest.raises(ValueError, match="start_epoch"):
        trajectory_matching_step(model, trajectory, 3, 2, torch.zeros(1, 6), torch.zeros(1, dtype=torch.long),
                                 torch.tensor(0.1), 1)


def test_expert_trajectories_are_seeded_and_the_penalty_smooths_them():
    def train(penalty, seed=0):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        x = torch.randn(90, 6, generator=torch.Generator().manual_seed(2))
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
        traj = expert_trajectory(model, x, y, epochs=6, lr=0.3, batch_size=30, seed=seed, gradient_penalty=penalty)
        xr = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
        return traj, gx.norm(dim=1).mean().item()

    plain, plain_norm = train(0.0)
    again, _ = train(0.0)
    assert len(plain) == 7
    assert all(torch.equal(a[k], b[k]) for a, b in zip(plain, again) for k in a)
    smooth, smooth_norm = train(1.0)
    assert not torch.equal(plain[-1]["0.weight"], smooth[-1]["0.weight"])
    assert smooth_norm < plain_norm  # flatter loss around the data
    assert path_length(smooth) < path_length(plain)  # and a shorter path in parameter space


def test_experts_trained_by_fit_follow_the_hand_written_epoch_loop():
    """``fit`` owns the expert's loop: a fresh random order per epoch from the data generator (the last batch of
    an epoch smaller), the ramp's scale for the step's epoch, and a checkpoint at every epoch's end, the same
    numbers as the loop written out."""
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(2))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    epochs, lr, batch, penalty, scales = 3, 0.3, 16, 0.5, (0.5, 0.75)

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(7)
    by_hand = [snapshot(net)]
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            xb = x[idx].clone().requires_grad_(True)
            ce = F.cross_entropy(net(xb), y[idx])
            (gx,) = torch.autograd.grad(ce * len(idx), xb, create_graph=True)
            loss = (scales[epoch] if epoch < len(scales) else 1.0) * ce + penalty * gx.pow(2).sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        by_hand.append(snapshot(net))

    trajectory = expert_trajectory(model(), x, y, epochs=epochs, lr=lr, batch_size=batch, seed=7,
                                   gradient_penalty=penalty, loss_scales=scales)
    assert len(trajectory) == epochs + 1
    for ours, theirs in zip(trajectory, by_hand):
        for k in theirs:
            torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=0)


def test_snapshot_is_detached():
    model = torch.nn.Linear(2, 2)
    snap = snapshot(model)
    assert all(not t.requires_grad for t in snap.values())
    with pytest.raises(ValueError, match="steps"):
        unroll(model, snap, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.tensor(0.1), -1)


def _tiny_matching(iterations, **kwargs):
    from functools import partial

    from distillbook.core.training import fit
    from distillbook.methods.dataset_distillation import match_trajectories

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    x, y = torch.randn(30, 6), torch.randint(0, 3, (30,))
    trajectory = expert_trajectory(model, x, y, epochs=3, lr=0.1, batch_size=10, seed=0)
    fit_ = kwargs.pop("fit", partial(fit, seed=0, progress=False, eval_every=2))
    return match_trajectories(model, [trajectory], x[:6].clone(), y[:6], fit=fit_, iterations=iterations,
                              expert_span=1, max_start_epoch=1, syn_steps=2, syn_lr_init=0.05, image_lr=0.01,
                              **kwargs)


def test_cosine_decay_anneals_the_matching_rates_to_zero():
    """``cosine_decay`` changes the path (annealed rates), and the images still move under it."""
    plain, _ = _tiny_matching(6)
    decayed, _ = _tiny_matching(6, cosine_decay=True)
    start, _ = _tiny_matching(0)
    assert not torch.allclose(decayed.images, start.images)
    assert not torch.allclose(decayed.images, plain.images)  # a different (annealed) path


def test_probe_sees_the_iterations_done_and_survives_a_resume(tmp_path):
    """The probe runs at every log with the number of iterations finished (gradients enabled, so it may train on
    the set); a run stopped and resumed from its checkpoint keeps the rows probed before the stop."""
    from functools import partial

    from distillbook.core.training import fit

    seen = []

    def probe(m, done):
        assert torch.is_grad_enabled()
        seen.append(done)
        return {"probe": float(done)}

    def fit_(model, loss_fn, next_batch, stop_after=None, **kw):
        def stop(model, step):
            if step == stop_after:
                raise KeyboardInterrupt
        return fit(model, loss_fn, next_batch, seed=0, progress=False, eval_every=2, checkpoint=tmp_path / "m.pt",
                   checkpoint_every=2, after_step=stop if stop_after is not None else None, **kw)

    _, whole = _tiny_matching(8, probe=probe, fit=partial(fit, seed=0, progress=False, eval_every=2))
    assert seen == [2, 4, 6, 8] and whole.column("probe") == [2.0, 4.0, 6.0, 8.0]
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        _tiny_matching(8, probe=probe, fit=partial(fit_, stop_after=4))
    seen.clear()
    synthetic, resumed = _tiny_matching(8, probe=probe, fit=fit_)
    assert seen == [6, 8] and resumed.column("probe") == [2.0, 4.0, 6.0, 8.0]
