"""Dataset-distillation pieces: BN statistics matching, herding, label storage, shifts, and claim wiring."""

from functools import partial

import numpy as np
import pytest
import torch

from distillbook.chapters import dataset_distillation as dd
from distillbook.chapters.dataset_distillation import experiment
from distillbook.chapters.dataset_distillation.claims import ACC_MARGIN
from distillbook.core.results import Run
from distillbook.core.training import fit
from distillbook.methods.dataset_distillation import (BNStatistics, augmented_soft_labels, expert_trajectory, herding,
                                                      random_shift, shift_offsets, soft_labels, synthesise, unroll)
from distillbook.models.convnet import ConvNet
from distillbook.testbeds import digits, shapes


def _interruptible_fit(checkpoint=None, stop_after=None):
    """``fit`` with a checkpoint every 2 steps that raises KeyboardInterrupt after step ``stop_after`` (a kill)."""
    def stop(model, step):
        if step == stop_after:
            raise KeyboardInterrupt

    def fit_(model, loss_fn, next_batch, **kw):
        return fit(model, loss_fn, next_batch, seed=0, progress=False, checkpoint=checkpoint, checkpoint_every=2,
                   after_step=stop if stop_after is not None else None, **kw)

    return fit_


def test_bn_hook_statistics_match_the_layer_running_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4, momentum=1.0), torch.nn.ReLU(),
                              torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3, momentum=1.0))
    hooks = BNStatistics(net)
    x = torch.randn(32, 5)
    net.train()
    net(x)  # momentum 1: the running statistics become this batch's (variance unbiased)
    n = len(x)
    for (mean, var), layer in zip(hooks.batch_stats, hooks.layers):
        torch.testing.assert_close(mean, layer.running_mean)
        torch.testing.assert_close(var * n / (n - 1), layer.running_var)
    hooks.remove()

    # L_BN on the batch that set the running statistics of a single layer: the means agree exactly, and only
    # the biased/unbiased variance gap is left, ||v (1 - n / (n - 1))||.
    single = torch.nn.BatchNorm1d(5, momentum=1.0)
    hooks = BNStatistics(single)
    single.train()
    single(x)
    hooks.batch_stats = []
    single.eval()
    single(x)
    v = x.var(dim=0, unbiased=False)
    assert hooks.loss().item() == pytest.approx(torch.norm(v - v * n / (n - 1)).item(), rel=1e-5)
    hooks.remove()
    with pytest.raises(ValueError, match="no BatchNorm"):
        BNStatistics(torch.nn.Linear(2, 2))


def test_herding_picks_images_whose_mean_tracks_the_class_mean():
    split = digits.load(0).train
    idx = herding(split, 5, 10)
    assert torch.bincount(split.y[idx], minlength=10).tolist() == [5] * 10
    rng = torch.Generator().manual_seed(0)
    for label in range(10):
        members = split.x[split.y == label]
        herd_gap = (split.x[idx[split.y[idx] == label]].mean(0) - members.mean(0)).norm()
        random_gaps = [(members[torch.randperm(len(members), generator=rng)[:5]].mean(0) - members.mean(0)).norm()
                       for _ in range(20)]
        assert herd_gap < np.median(random_gaps)


def test_label_bytes_and_class_major_order():
    assert experiment.label_bytes(100, "hard", 300, 10) == 100
    assert experiment.label_bytes(100, "static", 300, 10) == 100 * 10 * 4
    assert experiment.label_bytes(100, "dynamic", 300, 50) == 300 * 100 * 50 * 4
    assert experiment.label_bytes(100, "per_view", 300, 10, 9) == 9 * 100 * 10 * 4
    split = digits.load(0).train
    order = experiment._class_major(split, digits.labelled_subset(split, 2, 0), 2, 10)
    assert split.y[order].tolist() == [c for c in range(10) for _ in range(2)]


def test_shift_rolls_whole_images():
    x = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 64)
    out = random_shift(x, torch.Generator().manual_seed(3), 1, (1, 8, 8))
    assert out.shape == x.shape
    assert sorted(out[0].tolist()) == sorted(x[0].tolist())  # a roll permutes pixels
    assert torch.equal(random_shift(x, torch.Generator(), 0, (1, 8, 8)), x)
    rgb = torch.rand(3, 3 * 8 * 8)
    moved = random_shift(rgb, torch.Generator().manual_seed(1), 2, (3, 8, 8)).reshape(3, 3, 8, 8)
    original = rgb.reshape(3, 3, 8, 8)
    for i in range(3):  # every channel rolled by the same (dy, dx)
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(moved[i], torch.roll(original[i], (dy, dx), dims=(1, 2)))]
        assert matches


N_EVALS = 8  # evaluations per made-up test-accuracy curve (the claims need >= 2 windows of 3)
ARMS = ("random", "mtt", "ast", "mtt_augmented_experts", "sre2l", "sre2l_static", "infer", "infer_dynamic",
        "infer_unshifted_labels")


def _noise(seed: int, arm: str, ipc: int) -> float:
    """Small, deterministic, different per seed, arm and IPC (so that no difference is the same in every seed)."""
    return float(np.random.default_rng([seed, ARMS.index(arm), ipc]).uniform(0.0, 0.004))


def _curve(level: float, rising: bool, e: float) -> list[float]:
    if rising:  # still climbing 2 points per evaluation: the tail moves by ~7% against the window before
        return list(level + e - 0.02 * np.arange(N_EVALS)[::-1])
    return [level - 0.3, level - 0.1] + [level + e] * (N_EVALS - 2)


# accuracy levels at IPC (1, 2) per arm; "rising" arms are still climbing (not converged)
_UP = {"random": (0.60, 0.70), "mtt": (0.70, 0.80), "ast": (0.76, 0.86), "mtt_augmented_experts": (0.50, 0.60),
       "sre2l": (0.60, 0.70), "sre2l_static": (0.55, 0.65), "infer": (0.70, 0.80), "infer_dynamic": (0.75, 0.85),
       "infer_unshifted_labels": (0.60, 0.70)}
_DOWN = {"random": (0.70, 0.80), "mtt": (0.60, 0.70), "ast": (0.55, 0.64), "mtt_augmented_experts": (0.70, 0.80),
         "sre2l": (0.80, 0.90), "sre2l_static": (0.80, 0.90), "infer": (0.70, 0.80), "infer_dynamic": (0.65, 0.75),
         "infer_unshifted_labels": (0.80, 0.90)}
DD_VARIANTS = {
    "reproduced": dict(levels=_UP, rising=()),
    "not reproduced": dict(levels=_DOWN, rising=()),
    "inconclusive": dict(levels=_UP, rising=("mtt", "ast", "mtt_augmented_experts", "infer", "infer_dynamic")),
}
CLAIM_IDS = ["mtt-beats-random-ipc1", "mtt-beats-random-ipc2", "smooth-experts-help-ipc1", "smooth-experts-help-ipc2",
             "infer-static-beats-sre2l-dynamic-ipc2", "infer-dynamic-labels-help-ipc2",
             "infer-images-beat-sre2l-images-static-ipc2", "infer-images-beat-sre2l-images-ipc2"]


def _settled_matching(drift: float = 0.001, synthesis_drift: float = 0.001) -> dict[str, float]:
    return {**{f"match_loss_drift_{m}_ipc{ipc}": drift for m in ("mtt", "ast", "mtt_augmented_experts")
               for ipc in (1, 2)},
            **{f"synthesis_loss_drift_{m}_ipc2": synthesis_drift for m in ("sre2l", "infer")}}


def test_convergence_is_read_from_the_evaluation_curves_not_the_distillation_losses(scratch):
    """A matching or synthesis loss still moving (noisy, annealed) does not decide a verdict: the claims read the
    evaluation nets' accuracy curves, and the losses' drifts go to the health table."""
    spec = DD_VARIANTS["reproduced"]
    params = dd.Params.for_profile("smoke", seeds=[0, 1, 2, 3])
    run = Run("dataset-distillation", params)
    for s in run.seeds:
        run.record(s, **{f"curve_{m}_ipc{ipc}": _curve(v[i], False, _noise(s, m, ipc))
                         for m, v in spec["levels"].items() for i, ipc in enumerate((1, 2))},
                   **_settled_matching(0.15, synthesis_drift=0.15))  # flat evaluation curves, moving losses
    verdicts = {r["id"]: (r["verdict"], r["reason"]) for r in dd.evaluate_claims(run)}
    assert verdicts["mtt-beats-random-ipc2"] == ("reproduced", None)
    assert verdicts["infer-images-beat-sre2l-images-ipc2"] == ("reproduced", None)


@pytest.mark.parametrize("variant", DD_VARIANTS)
def test_claims_reach_every_verdict(scratch, variant):
    spec = DD_VARIANTS[variant]
    params = dd.Params.for_profile("smoke", seeds=[0, 1, 2, 3])  # ipcs [1, 2]
    run = Run("dataset-distillation", params)
    for s in run.seeds:
        run.record(s, **{f"curve_{m}_ipc{ipc}": _curve(v[i], m in spec["rising"], _noise(s, m, ipc))
                         for m, v in spec["levels"].items() for i, ipc in enumerate((1, 2))}, **_settled_matching())
    results = dd.evaluate_claims(run)
    assert [r["id"] for r in results] == CLAIM_IDS
    assert {r["id"]: r["verdict"] for r in results} == {r["id"]: variant for r in results}
    if variant == "inconclusive":
        assert {r["reason"] for r in results} == {"not converged"}
    ids = {r["id"] for r in results}
    for r in results:
        assert r["margin"] == ACC_MARGIN and "500 fixed test images" in r["rationale"]
        assert r["explanation"]
        assert r["diagnosis"] is None or r["diagnosis"] in ids or r["diagnosis"].startswith(
            ("match_loss_", "expert_path", "acc_", "probe_acc_", "teacher_shifted_acc_"))


def test_claims_saturate_when_both_arms_are_perfect(scratch):
    params = dd.Params.for_profile("smoke", seeds=[0, 1, 2])
    run = Run("dataset-distillation", params)
    for s in run.seeds:
        top = [0.9] + [1.0] * (N_EVALS - 2) + [1.0 - 0.002 * (s % 2)]
        run.record(s, **{f"curve_{m}_ipc{ipc}": top if m in ("mtt", "random") else _curve(0.7, False, _noise(s, m, ipc))
                         for m in ARMS for ipc in (1, 2)}, **_settled_matching())
    r = dd.evaluate_claims(run)[0]
    assert (r["verdict"], r["reason"]) == ("inconclusive", "saturated")


def test_evaluation_curve_ends_at_the_reported_accuracy(scratch):
    """The test-accuracy curve the claims read is the picked nets' mean, and its last point is their final score;
    a set given its own learned rate trains at that rate alone."""
    params = dd.Params.for_profile("smoke", seeds=[0], eval_nets=1, eval_lrs=[0.1, 0.05], eval_steps=24)
    run = Run("dataset-distillation", params)
    data = dd.build_bed(run).data(0)
    x, y = data.train.x[:20], data.train.y[:20]
    acc, lr, curve = experiment.evaluate_set(run, data, x, y, 0)
    assert lr in (0.1, 0.05) and len(curve) == 24 // experiment.eval_every(params) == experiment.EVALUATIONS
    assert curve[-1] == pytest.approx(acc)
    assert experiment.evaluate_set(run, data, x, y, 0, lrs=(0.0731,))[1] == 0.0731


def test_unroll_shift_is_the_evaluation_shift_and_passes_gradients():
    """The unroll's augmentation is the evaluation's: the same generator state gives the same shifted images, and
    the meta-gradient reaches the images through the gather."""
    x = torch.rand(6, 64, requires_grad=True)
    a = random_shift(x, torch.Generator().manual_seed(4), 1, (1, 8, 8))
    for i in range(6):  # each image is one of the nine rolls of itself
        assert any(torch.equal(a[i], torch.roll(x[i].reshape(8, 8), (dy, dx), (0, 1)).flatten())
                   for dy, dx in shift_offsets(1))
    seen = []

    def augment(xb, generator):
        out = random_shift(xb, generator, 1, (1, 8, 8))
        seen.append(out)
        return out

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    start = {k: v.detach() for k, v in model.named_parameters()}
    y = torch.arange(6) % 3
    end = unroll(model, start, x, y, torch.tensor(0.1), 2, generator=torch.Generator().manual_seed(4), augment=augment)
    torch.testing.assert_close(seen[0], a, rtol=0, atol=0)  # first step: the evaluation's draw for that state
    assert not torch.equal(seen[0], seen[1])  # a fresh draw per step
    (gx,) = torch.autograd.grad(sum(v.sum() for v in end.values()), x)
    assert gx.abs().sum() > 0
    # the gradient through a shift is the gradient shifted back: d/dx_i sum(w_i * roll(x_i, s_i)) = roll(w_i, -s_i)
    w, xs = torch.rand(6, 64), torch.rand(6, 64, requires_grad=True)
    out = random_shift(xs, torch.Generator().manual_seed(9), 1, (1, 8, 8))
    (g,) = torch.autograd.grad((w * out).sum(), xs)
    for i in range(6):
        (dy, dx), = [(dy, dx) for dy, dx in shift_offsets(1)
                     if torch.equal(out[i], torch.roll(xs[i].reshape(8, 8), (dy, dx), (0, 1)).flatten())]
        torch.testing.assert_close(g[i], torch.roll(w[i].reshape(8, 8), (-dy, -dx), (0, 1)).flatten())


def test_static_labels_are_the_dynamic_labels_averaged_over_the_shifts():
    """The static label an evaluation net trains on is the mean, over every shift it can draw, of the dynamic label
    it would get for that shifted view."""
    teachers = [_bn_teacher(0), _bn_teacher(1, width=6)]
    x = torch.rand(5, 64)
    static = augmented_soft_labels(teachers, x, 4.0, 1, (1, 8, 8))
    views = [soft_labels(teachers, torch.roll(x.reshape(5, 1, 8, 8), (dy, dx), (2, 3)).reshape(5, 64), 4.0)
             for dy, dx in shift_offsets(1)]
    torch.testing.assert_close(static, torch.stack(views).mean(0))
    torch.testing.assert_close(static.sum(1), torch.ones(5))
    # the evaluation's relabelling of a random draw is one of those views, image by image
    shifted = random_shift(x, torch.Generator().manual_seed(2), 1, (1, 8, 8))
    dynamic = soft_labels(teachers, shifted, 4.0)
    for i in range(5):
        assert any(torch.allclose(dynamic[i], v[i]) for v in views)
    assert torch.equal(augmented_soft_labels(teachers, x, 4.0, 0, (1, 8, 8)), soft_labels(teachers, x, 4.0))


def _bn_teacher(seed: int, width: int = 8) -> torch.nn.Module:
    torch.manual_seed(seed)
    teacher = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.BatchNorm1d(width), torch.nn.ReLU(),
                                  torch.nn.Linear(width, 10))
    teacher(torch.rand(50, 64))
    return teacher.eval()


def test_infer_shares_one_compensator_per_slot_across_classes():
    params = dd.Params.for_profile("smoke", seeds=[0, 1, 2])
    teacher = _bn_teacher(0)
    ipc = 3
    anchors = torch.rand(10 * ipc, 64)
    y = torch.arange(10).repeat_interleave(ipc)

    def synthesised(shared_per_slot):
        return synthesise([teacher], anchors, y, 10, shared_per_slot=shared_per_slot, steps=params.synthesis_steps,
                          lr=params.synthesis_lr, bn_weight=params.bn_weight, fit=partial(fit, seed=0, progress=False))

    out = synthesised(True)
    delta = (out - anchors).reshape(10, ipc, 64)
    assert torch.allclose(delta, delta[:1].expand_as(delta), atol=1e-6)  # the same u_j for every class c (up to rounding)
    assert not torch.allclose(delta[0, 0], delta[0, 1])  # and a different one per slot j
    free = synthesised(False) - anchors
    assert not torch.allclose(free.reshape(10, ipc, 64), free.reshape(10, ipc, 64)[:1].expand(10, ipc, 64))


def test_synthesis_resumes_from_a_checkpoint_with_the_teacher_of_its_step(tmp_path):
    """``fit`` owns the step: a synthesis stopped after 3 of 7 steps and resumed from its checkpoint cycles the
    teachers from where it stopped (k = step mod K) and ends on the images of an uninterrupted run; the
    finished checkpoint alone gives them back (the images live in the model's state)."""
    teachers = [_bn_teacher(0), _bn_teacher(1, width=6)]
    start, y = torch.rand(20, 64), torch.arange(10).repeat_interleave(2)

    def synthesised(checkpoint=None, stop_after=None):
        return synthesise(teachers, start, y, 10, shared_per_slot=True, steps=7, lr=0.05, bn_weight=0.01,
                          fit=_interruptible_fit(checkpoint, stop_after))

    whole = synthesised()
    with pytest.raises(KeyboardInterrupt):
        synthesised(tmp_path / "s.pt", stop_after=2)  # checkpointed after step index 1 (2 steps done)
    torch.testing.assert_close(synthesised(tmp_path / "s.pt"), whole, rtol=0, atol=0)
    torch.testing.assert_close(synthesised(tmp_path / "s.pt"), whole, rtol=0, atol=0)
    one_teacher = synthesise(teachers[:1], start, y, 10, shared_per_slot=True, steps=7, lr=0.05, bn_weight=0.01,
                             fit=partial(fit, seed=0, progress=False))
    assert not torch.allclose(one_teacher, whole)  # the second teacher took part


def test_shapes_test_bed_is_seeded_balanced_and_captioned():
    a = shapes.load(0, size=16, train_per_class=3, val_per_class=1, test_per_class=2)
    b = shapes.load(0, size=16, train_per_class=3, val_per_class=1, test_per_class=2)
    c = shapes.load(1, size=16, train_per_class=3, val_per_class=1, test_per_class=2)
    assert a.n_classes == 50 and a.image_shape == (3, 16, 16) and a.train.x.shape == (150, 768)
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    assert torch.equal(a.test.x, c.test.x)  # the test images do not depend on the seed
    assert torch.bincount(a.train.y).tolist() == [3] * 50
    assert 0 <= a.train.x.min() and a.train.x.max() <= 1
    assert a.attributes.caption(0) == "a red square on the left"
    with pytest.raises(ValueError, match="colours"):
        shapes.Attributes(colours=("red", "mauve"))


def test_shapes_are_separable_by_a_small_convnet():
    """A class must be learnable from its pixels: a ConvNet beats chance by far within a few hundred steps."""
    data = shapes.load(0, size=16, attributes=shapes.Attributes(colours=("red", "blue"), positions=("left",)),
                       train_per_class=30, test_per_class=20)
    torch.manual_seed(0)
    net = ConvNet(data.image_shape, data.n_classes, width=16, depth=2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(net(data.train.x), data.train.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (net(data.test.x).argmax(1) == data.test.y).float().mean().item()
    assert accuracy > 0.8  # chance is 0.1


def test_convnet_norms_and_batchnorm_statistics():
    net = ConvNet((3, 16, 16), 5, width=8, depth=2, norm="batch")
    assert net(torch.rand(4, 3 * 16 * 16)).shape == (4, 5)
    hooks = BNStatistics(net)
    net(torch.rand(6, 3 * 16 * 16))
    assert len(hooks.batch_stats) == 2 and hooks.batch_stats[0][0].shape == (8,)
    with pytest.raises(ValueError, match="norm"):
        ConvNet((3, 16, 16), 5, norm="layer")
    with pytest.raises(ValueError, match="depth"):
        ConvNet((3, 8, 8), 5, depth=4)


def test_clipped_loss_scales_the_first_epochs_like_a_smaller_rate():
    """With plain SGD, multiplying the loss by s is a step of rate s * lr: AST's ramp, epoch by epoch."""
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))

    def path(lr, scales):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 3)
        return expert_trajectory(model, x, y, epochs=2, lr=lr, batch_size=40, seed=1, loss_scales=scales)

    ramped, slow = path(0.1, [0.5]), path(0.05, [])
    for name in ramped[1]:
        torch.testing.assert_close(ramped[1][name], slow[1][name])
    assert not torch.allclose(ramped[2]["weight"], slow[2]["weight"])  # epoch 2 runs at the full rate


def test_chapter_runs_on_shapes_with_convnets(scratch):
    """The gpu profile's path (shapes, ConvNets, BatchNorm ConvNet teachers), at a toy size on the CPU."""
    params = dd.Params.for_profile("smoke", seeds=[0], dataset="shapes", shapes_classes=10, shapes_per_class=10,
                                   architecture="convnet", hidden=[8], teacher_hiddens=[[8], [8, 8]], ipcs=[1],
                                   synthesis_steps=12)  # two teachers: 6 synthesis-loss logs
    run = Run("dataset-distillation", params)
    shown = dd.run_seed(run, 0, dd.build_bed(run))
    assert shown["mtt-ipc1"].shape == (10, 3 * 32 * 32)
    assert 0 <= run.per_seed[0]["acc_infer_ipc1"] <= 1
    assert run.per_seed[0]["bytes_infer_ipc1"] == 10 * 10 * 4


def test_synthesis_sees_a_fresh_shift_every_step_and_resumes_with_it(tmp_path):
    """With ``augment``, every synthesis step shows the teacher a fresh random view (drawn from ``fit``'s generator:
    an interrupted run resumed from its checkpoint ends on the same images), and the images differ from a
    synthesis without it."""
    teachers = [_bn_teacher(0)]
    start, y = torch.rand(20, 64), torch.arange(10).repeat_interleave(2)
    views = []

    def augment(x, gen):
        out = random_shift(x, gen, 1, (1, 8, 8))
        views.append(out.detach().clone())
        return out

    def synthesised(checkpoint=None, stop_after=None, **kwargs):
        return synthesise(teachers, start, y, 10, shared_per_slot=False, steps=6, lr=0.05, bn_weight=1.0,
                          fit=_interruptible_fit(checkpoint, stop_after), **kwargs)

    whole = synthesised(augment=augment, cosine_decay=True)
    assert len(views) == 6 and not torch.allclose(views[0] - views[1], torch.zeros_like(views[0]))
    assert not torch.allclose(whole, synthesised(cosine_decay=True))
    with pytest.raises(KeyboardInterrupt):
        synthesised(tmp_path / "s.pt", stop_after=2, augment=augment, cosine_decay=True)
    torch.testing.assert_close(synthesised(tmp_path / "s.pt", augment=augment, cosine_decay=True), whole,
                               rtol=0, atol=0)
