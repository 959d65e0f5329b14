"""The foundations chapter's pieces against references: the stacked objective, input jitter, repeated splits."""

import pytest
import torch
import torch.nn.functional as F

from distillbook.chapters.foundations.experiment import stacked_objective
from distillbook.methods.kd import distillation_objective
from distillbook.testbeds import digits


def test_stacked_objective_is_each_students_own_objective():
    """Student k's term is Hinton's objective (soft arm), its arg-max control, or plain CE (labels only)."""
    g = torch.Generator().manual_seed(0)
    k, n, c, alpha = 3, 16, 10, 0.3
    z_t, z_l = torch.randn(k, n, c, generator=g), torch.randn(k, n, c, generator=g)
    v, y = torch.randn(k, n, c, generator=g) * 4, torch.randint(0, c, (k, n), generator=g)
    t = 4.0
    targets = torch.stack([F.softmax(v[0] / t, -1), F.one_hot(v[1].argmax(-1), c).float(), F.softmax(v[2], -1)])
    temperature, weights = torch.tensor([t, 1.0, 1.0]), torch.tensor([alpha, alpha, 0.0])
    terms = [distillation_objective(z_t[0], v[0], z_l[0], y[0], t, alpha),
             alpha * F.cross_entropy(z_t[1], v[1].argmax(-1)) + (1 - alpha) * F.cross_entropy(z_l[1], y[1]),
             F.cross_entropy(z_l[2], y[2])]
    got = stacked_objective(z_t, targets, temperature, z_l, y, weights)
    assert got.item() == pytest.approx(sum(terms).item(), rel=1e-5)
    # and the gradient of the sum gives each student exactly its own gradient
    z = z_t.clone().requires_grad_(True)
    stacked_objective(z, targets, temperature, z_l, y, weights).backward()
    z0 = z_t[0].clone().requires_grad_(True)
    distillation_objective(z0, v[0], z_l[0], y[0], t, alpha).backward()
    torch.testing.assert_close(z.grad[0], z0.grad)


def test_jitter_shifts_each_image_by_at_most_the_shift_with_zero_fill():
    x = torch.rand(64, 64)
    out = digits.jitter(x, torch.Generator().manual_seed(1), max_shift=1)
    images, shifted = x.reshape(-1, 8, 8), out.reshape(-1, 8, 8)
    padded = F.pad(images, (1, 1, 1, 1))
    crops = torch.stack([padded[:, dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)], 1)
    match = (crops == shifted[:, None]).flatten(2).all(-1)
    assert match.any(1).all(), "every output is one of the nine zero-filled shifts of its input"
    assert match[:, [0, 1, 2, 3, 5, 6, 7, 8]].any(), "some images actually move"
    assert torch.equal(digits.jitter(x, torch.Generator().manual_seed(1), max_shift=0), x)
    torch.testing.assert_close(digits.jitter(x, torch.Generator().manual_seed(1)), out)


def test_repeated_splits_redraw_the_test_set_and_keep_splits_disjoint():
    fixed, redrawn = digits.load(0), digits.load(0, test_seed=5)
    assert torch.equal(fixed.test.x, digits.load(3).test.x), "the default test split is the same for every seed"
    assert not torch.equal(fixed.test.x, redrawn.test.x)
    assert len(redrawn.test) == digits.TEST_SIZE
    all_y = torch.cat([redrawn.train.y, redrawn.val.y, redrawn.test.y])
    assert len(all_y) == 1797
    expected = digits.TEST_SIZE * torch.bincount(all_y) / len(all_y)
    counts = torch.bincount(redrawn.test.y, minlength=digits.N_CLASSES)
    assert ((counts - expected).abs() <= 1).all(), "stratified: each digit in proportion"


def test_a_students_training_does_not_depend_on_the_other_arms_of_its_stack(scratch):
    """Every arm draws its batches from the same random numbers and gets only its own gradient, so an arm
    trains the same alone, twice in one stack, or beside different arms (the paired comparison the claims read)."""
    from distillbook.chapters import foundations
    from distillbook.chapters.foundations.experiment import Arm, train_students
    from distillbook.core.results import Run
    from distillbook.models.mlp import predict_logits

    params = foundations.Params.for_profile("smoke", seeds=[0], wide_steps=30)
    run = Run("foundations", params)
    data = digits.load(0, test_seed=0)
    few = data.train.subset(digits.labelled_subset(data.train, 2, 0))
    v = torch.randn(len(data.train), digits.N_CLASSES, generator=torch.Generator().manual_seed(0))
    soft = Arm("soft", data.train, data.train, v, 4.0)
    alone, _, _ = train_students(run, data, 0, "alone", [soft], [8], 30)
    twice, curves, _ = train_students(run, data, 0, "twice", [soft, Arm("soft_copy", data.train, data.train, v, 4.0)],
                                      [8], 30)
    mixed, _, _ = train_students(run, data, 0, "mixed", [Arm("few", few), soft,
                                                         Arm("few_unlabelled", few, data.train, v)], [8], 30)
    out = [predict_logits(m, data.test.x) for m in (alone[0], twice[0], twice[1], mixed[1])]
    for other in out[1:]:
        torch.testing.assert_close(other, out[0], rtol=1e-4, atol=1e-4)
    assert curves["soft"] == curves["soft_copy"]
