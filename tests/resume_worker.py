"""Trains a tiny model with checkpoints; run as a script by test_training.py (which may kill it)."""

import sys
import time

import torch

from distillbook.core.training import fit


def train(checkpoint, out, steps=120, slow=0.0):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))
    y = x.sum(dim=1, keepdim=True)

    def batch(gen):
        if slow:
            time.sleep(slow)
        i = torch.randint(0, 256, (32,), generator=gen)
        return x[i], y[i]

    result = fit(model, lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]), batch, steps=steps,
                 optimizer=torch.optim.Adam(model.parameters(), 1e-2), seed=7, eval_every=20,
                 evaluate=lambda m: {"mse": torch.nn.functional.mse_loss(m(x), y)},
                 checkpoint=checkpoint, checkpoint_every=10, progress=False)
    torch.save({"state": model.state_dict(), "history": result.history}, out)


if __name__ == "__main__":
    train(sys.argv[1], sys.argv[2], slow=float(sys.argv[3]))
