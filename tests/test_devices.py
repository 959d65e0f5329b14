"""The device check plays the run's device on the CPU and raises where CUDA would; fit refuses a model left
behind."""

import numpy as np
import pytest
import torch

from distillbook.core import devices
from distillbook.core.devices import DeviceMismatch
from distillbook.core.training import fit

CPU = torch.device("cpu")


@pytest.fixture
def check():
    devices.stop_check()
    mode = devices.start_check()
    yield mode
    devices.stop_check()


def test_a_model_left_on_the_host_fails_at_its_first_device_input(check):
    model = torch.nn.Linear(4, 2)
    x = torch.randn(8, 4).to(CPU)
    with pytest.raises(DeviceMismatch, match=r"host tensor of shape \(2, 4\)"):
        model(x)
    model.to(CPU)
    assert model(x).shape == (8, 2)


def test_moved_tensors_and_their_results_are_on_the_device(check):
    host = torch.arange(6.0)
    moved = host.to(CPU)
    assert moved is not host, "a move copies, as on a GPU"
    assert check.on_host(host) and not check.on_host(moved)
    assert not check.on_host(moved * 2 + torch.ones(6, device=CPU))
    assert check.on_host(host * 2), "host ops stay on the host"
    assert check.on_host(moved.cpu()) and not check.on_host(moved), ".cpu() copies back, the original stays"
    assert not check.on_host(torch.zeros(3, device=CPU)) and check.on_host(torch.zeros(3))
    assert not check.on_host(torch.as_tensor(host, device=CPU))
    assert check.on_host(torch.ones(6).to(host.device)) and not check.on_host(host.to(moved.device))
    assert check.on_host(moved.to("cpu")) and check.on_host(torch.zeros(2, device="cpu")), '"cpu" names the host'


def test_what_cuda_allows_is_allowed(check):
    dev = torch.randn(5, 3).to(CPU)
    assert (dev * torch.tensor(2.0)).shape == (5, 3), "0-dim host tensors mix with device tensors"
    assert dev[torch.tensor([0, 2])].shape == (2, 3), "host index tensors index device tensors"
    dev[torch.tensor([1])] = 0.0
    dev.copy_(torch.zeros(5, 3))
    assert dev.sum().item() == pytest.approx(float(dev.sum()))


def test_numpy_of_a_device_tensor_raises(check):
    dev = torch.ones(3).to(CPU)
    with pytest.raises(DeviceMismatch, match="cpu"):
        dev.numpy()
    with pytest.raises(DeviceMismatch):
        np.asarray(dev)
    assert dev.cpu().numpy().sum() == 3.0


def test_a_whole_training_step_on_the_device_passes(check):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).to(CPU)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(3):  # gradients and optimiser state are made outside the check: they count as on the device
        loss = model(torch.randn(4, 3).to(CPU)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_fit_refuses_a_model_not_on_the_run_device(check):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    with pytest.raises(DeviceMismatch, match="parameter 'weight' is on the host"):
        fit(model, lambda m, b: m(b).pow(2).mean(), lambda g: torch.randn(4, 2, generator=g), steps=2,
            optimizer=opt, seed=0, progress=False, device=CPU)
    fit(model.to(CPU), lambda m, b: m(b).pow(2).mean(), lambda g: torch.randn(4, 2, generator=g), steps=2,
        optimizer=opt, seed=0, progress=False, device=CPU)


def test_fit_trains_on_the_run_device_by_default():
    devices.set_run_device(torch.device("meta"))
    try:
        with pytest.raises(DeviceMismatch, match="not on the run's device meta"):
            fit(torch.nn.Linear(2, 1), lambda m, b: m(b).sum(), lambda g: torch.zeros(1, 2), steps=1,
                optimizer=torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), 0.1), seed=0, progress=False)
    finally:
        devices.set_run_device(None)


def test_the_check_is_on_for_cpu_smoke_runs_only(monkeypatch):
    monkeypatch.delenv(devices.ENV, raising=False)
    assert devices.enabled_for("smoke", CPU) and not devices.enabled_for("cpu", CPU)
    monkeypatch.setenv(devices.ENV, "1")
    assert devices.enabled_for("cpu", CPU)
    monkeypatch.setenv(devices.ENV, "0")
    assert not devices.enabled_for("smoke", CPU)
    monkeypatch.setenv(devices.ENV, "yes")
    with pytest.raises(ValueError, match=devices.ENV):
        devices.enabled_for("smoke", CPU)


def test_the_run_precision_sets_tf32_and_autocast():
    try:
        devices.set_run_precision("tf32")
        assert torch.backends.cuda.matmul.allow_tf32 and devices.run_autocast() is None
        devices.set_run_precision("bf16")
        assert not torch.backends.cuda.matmul.allow_tf32 and devices.run_autocast() is torch.bfloat16
        with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16"):
            devices.set_run_precision("fp16")
    finally:
        devices.set_run_precision("fp32")
    assert not torch.backends.cudnn.allow_tf32 and devices.run_autocast() is None


def test_what_the_review_found(check):
    """Module.to("cpu") keeps a model on the host; a host ``.device`` names the host however often it is read;
    only 0-dim host tensors mix with device ones, and no device result goes into a host tensor in place; a model
    the check did not see made (loaded) must be moved before fit trains it."""
    model = torch.nn.Linear(3, 2).to(CPU).to("cpu")
    model(torch.randn(4, 3))  # all on the host: fine, as on a GPU box
    host = torch.ones(3)
    d = host.device
    for _ in range(5000):
        _ = host.device
    torch.zeros(3, device=d) + host
    dev = torch.ones(3).to(CPU)
    with pytest.raises(DeviceMismatch):
        dev + torch.tensor([1.0])
    acc = torch.zeros(())
    with pytest.raises(DeviceMismatch):
        acc += dev.sum()
    assert dev.numpy(force=True).sum() == 3.0
    loaded = torch.nn.Linear(2, 1)
    loaded.weight.data, loaded.bias.data = torch.from_numpy(np.ones((1, 2), np.float32)), torch.from_numpy(np.zeros(1, np.float32))
    with pytest.raises(DeviceMismatch, match="parameter 'weight'"):
        fit(loaded, lambda m, b: m(b).sum(), lambda g: torch.zeros(1, 2), steps=1, device=CPU, seed=0,
            optimizer=torch.optim.SGD(loaded.parameters(), 0.1), progress=False)
