"""Dataset-distillation pieces: BN statistics matching, herding, label storage, shifts, and claim wiring."""

import numpy as np
import pytest
import torch

from distillbook.chapters import dataset_distillation as dd
from distillbook.losses.bn_statistics import BNStatistics
from distillbook.results import Run
from distillbook.testbeds import digits


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
    idx = dd.herding(split, 5)
    assert torch.bincount(split.y[idx], minlength=10).tolist() == [5] * 10
    rng = torch.Generator().manual_seed(0)
    for label in range(10):
        members = split.x[split.y == label]
        herd_gap = (split.x[idx[split.y[idx] == label]].mean(0) - members.mean(0)).norm()
        random_gaps = [(members[torch.randperm(len(members), generator=rng)[:5]].mean(0) - members.mean(0)).norm()
                       for _ in range(20)]
        assert herd_gap < np.median(random_gaps)


def test_label_bytes_and_class_major_order():
    assert dd.label_bytes(100, "hard", 300) == 100
    assert dd.label_bytes(100, "static", 300) == 100 * 10 * 4
    assert dd.label_bytes(100, "dynamic", 300) == 300 * 100 * 10 * 4
    split = digits.load(0).train
    order = dd._class_major(split, digits.labelled_subset(split, 2, 0), 2)
    assert split.y[order].tolist() == [c for c in range(10) for _ in range(2)]


def test_shift_rolls_whole_images():
    x = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 64)
    out = dd.shift(x, torch.Generator().manual_seed(3), 1)
    assert out.shape == x.shape
    assert sorted(out[0].tolist()) == sorted(x[0].tolist())  # a roll permutes pixels
    assert torch.equal(dd.shift(x, torch.Generator(), 0), x)


def test_claims_read_the_right_arms(scratch):
    params = dd.Params.for_profile("smoke", seeds=[0, 1, 2, 3])  # ipcs [1, 2]
    run = Run("dataset-distillation", params)
    for s in run.seeds:
        e = 0.001 * s
        values = {"random": (0.60, 0.80), "mtt": (0.70, 0.75), "ast": (0.75, 0.74), "sre2l": (0.5, 0.90),
                  "infer": (0.6, 0.85)}
        run.record(s, **{f"acc_{m}_ipc{ipc}": v[i] + e for m, v in values.items() for i, ipc in enumerate((1, 2))})
    verdicts = {r["id"]: r["verdict"] for r in dd.evaluate_claims(run)}
    assert verdicts == {
        "mtt-beats-random-ipc1": "reproduced",
        "mtt-beats-random-ipc2": "not reproduced",
        "smooth-experts-help-ipc1": "reproduced",
        "smooth-experts-help-ipc2": "not reproduced",
        "infer-static-beats-sre2l-dynamic-ipc2": "not reproduced",
    }


def test_infer_shares_one_compensator_per_slot_across_classes(scratch):
    params = dd.Params.for_profile("smoke", seeds=[0, 1, 2])
    run = Run("dataset-distillation", params)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                  torch.nn.Linear(8, 10))
    teacher(torch.rand(50, 64))
    teacher.eval()
    ipc = 3
    anchors = torch.rand(10 * ipc, 64)
    y = torch.arange(10).repeat_interleave(ipc)
    out = dd.synthesise(run, [teacher], anchors, y, shared_per_slot=True)
    delta = (out - anchors).reshape(10, ipc, 64)
    assert torch.allclose(delta, delta[:1].expand_as(delta))  # the same u_j for every class c
    assert not torch.allclose(delta[0, 0], delta[0, 1])  # and a different one per slot j
    free = dd.synthesise(run, [teacher], anchors, y, shared_per_slot=False) - anchors
    assert not torch.allclose(free.reshape(10, ipc, 64), free.reshape(10, ipc, 64)[:1].expand(10, ipc, 64))
