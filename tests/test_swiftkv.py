"""SwiftKV's layer-by-layer forward against the stock Llama, and its prefill FLOPs."""

import pytest
import torch

from distillbook.methods import swiftkv


@pytest.fixture(scope="module", params=[None, 1], ids=["mha", "gqa"])
def model(request):
    torch.manual_seed(0)
    net = swiftkv.tiny_llama(vocab_size=20, d_model=32, n_layer=4, n_head=2, n_kv_head=request.param)
    return net.eval()


def test_all_layers_reproduce_the_model(model):
    ids = torch.randint(0, 20, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(ids).logits
        for n_prompt in (1, 7, 12):
            out = swiftkv.forward(model, ids, n_prompt, k=4)
            torch.testing.assert_close(out, reference[:, n_prompt - 1:], rtol=1e-5, atol=1e-5)


def test_skipping_only_the_last_layer_is_exact_and_earlier_skips_are_not(model):
    """With k = L - 1 the last layer's KV input is h_{L-1} itself; with k < L - 1 the rewiring changes the logits."""
    ids = torch.randint(0, 20, (3, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model(ids).logits[:, 7:]
        torch.testing.assert_close(swiftkv.forward(model, ids, 8, k=3), reference, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(swiftkv.forward(model, ids, 8, k=1), reference, atol=1e-3)


def test_prefill_flops_rise_with_k(model):
    ids = torch.randint(0, 20, (1, 96), generator=torch.Generator().manual_seed(3))
    flops = [swiftkv.prefill_flops(model, ids, k) for k in range(5)]
    assert all(a < b for a, b in zip(flops, flops[1:]))
    # k = 2 of 4 layers: about half the layer compute, plus the KV projections of the skipped layers
    assert 0.45 < flops[2] / flops[4] < 0.65


def test_bad_arguments(model):
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="k must be"):
        swiftkv.forward(model, ids, 2, k=5)
    with pytest.raises(ValueError, match="n_prompt"):
        swiftkv.forward(model, ids, 0, k=2)


def test_local_layers_see_only_their_own_position(model):
    """With every layer local, a token's logits cannot depend on the tokens before it."""
    ids = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(4))
    changed = ids.clone()
    changed[:, :5] = (changed[:, :5] + 1) % 20
    with torch.no_grad():
        a = swiftkv.forward(model, ids, 1, k=4, local_layers=4)
        b = swiftkv.forward(model, changed, 1, k=4, local_layers=4)
        torch.testing.assert_close(a[:, 5:], b[:, 5:])
        mixed = swiftkv.forward(model, changed, 1, k=4, local_layers=2)
        assert not torch.allclose(swiftkv.forward(model, ids, 1, k=4, local_layers=2)[:, 5:], mixed[:, 5:])
        # with local early layers, skipping only the last layer is still exact, skipping from k = 2 is not
        full = swiftkv.forward(model, ids, 1, k=4, local_layers=2)[:, 5:]
        torch.testing.assert_close(swiftkv.forward(model, ids, 6, k=3, local_layers=2), full, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(swiftkv.forward(model, ids, 6, k=2, local_layers=2), full, atol=1e-3)
    with pytest.raises(ValueError, match="local_layers"):
        swiftkv.forward(model, ids, 1, k=4, local_layers=5)


def test_unfreeze_later_qkv_leaves_only_the_later_layers_projections_trainable(model):
    student = swiftkv.tiny_llama(vocab_size=20, d_model=32, n_layer=4, n_head=2)
    trainable = swiftkv.unfreeze_later_qkv(student, 1)
    names = sorted(n for n, q in student.named_parameters() if q.requires_grad)
    assert names == sorted(f"model.layers.{i}.self_attn.{w}_proj.weight" for i in (1, 2, 3) for w in "qkv")
    assert {id(q) for q in trainable} == {id(q) for q in student.parameters() if q.requires_grad}


def test_distillation_loss_is_t_squared_kl_summed_over_positions():
    gen = torch.Generator().manual_seed(6)
    student = torch.randn(3, 5, 7, generator=gen, requires_grad=True)
    teacher = torch.randn(3, 5, 7, generator=gen, requires_grad=True)
    T = 2.0
    log_p, log_q = torch.log_softmax(teacher / T, -1), torch.log_softmax(student / T, -1)
    # T^2 sum over positions of KL(p_T || q_T), mean over the 3 strings
    expected = T * T * (log_p.exp() * (log_p - log_q)).sum((-1, -2)).mean()
    loss = swiftkv.distillation_loss(student, teacher, temperature=T)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert teacher.grad is None
    assert swiftkv.distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
