"""On a GPU box only (skipped without CUDA): the book's strict determinism holds on CUDA for the renderer and a
whole sds-3d-gradients seed, and CUDA agrees with the CPU. CI has no GPU; run ``pytest tests/test_cuda.py`` on one
before trusting a gpu profile's numbers."""

import copy
import shutil

import pytest
import torch

from distillbook.core.runtime import deterministic_algorithms
from distillbook.testbeds import voxel3d as v3

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_renderer_runs_deterministically_on_cuda_and_matches_the_cpu():
    """Strict mode raises on an op without a deterministic CUDA kernel (grid_sample's and cumsum's backward did);
    the gather renderer's image and gradients equal the CPU's to float rounding."""
    deterministic_algorithms()
    torch.manual_seed(0)
    grid = v3.VoxelGrid(16)
    with torch.no_grad():
        grid.density.normal_()
        grid.colour.normal_()
    cams = v3.turntable(8)
    out = {}
    for device in ("cpu", "cuda", "cuda"):
        g = copy.deepcopy(grid).to(device)
        image = g.render(cams, 16, 24)
        image.square().sum().backward()
        out.setdefault(device, []).append((image.detach().cpu(), g.density.grad.cpu(), g.colour.grad.cpu()))
    first, second = out["cuda"]
    for a, b in zip(first, second):
        assert torch.equal(a, b)  # run to run: bit for bit
    for a, b in zip(out["cpu"][0], first):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_an_sds_seed_gives_the_same_numbers_twice_on_cuda(scratch):
    """Every arm of sds-3d-gradients (smoke sizes) on CUDA, twice from scratch: identical metrics."""
    from distillbook.chapters import sds_3d_gradients as chapter
    from distillbook.core.paths import checkpoints_dir
    from distillbook.core.results import Run

    def once():
        run = Run("sds-3d-gradients", chapter.Params.for_profile("smoke", seeds=[0], device="cuda", workers=1))
        chapter.run_seed(run, 0, chapter.build_bed(run))
        shutil.rmtree(checkpoints_dir("sds-3d-gradients", "smoke"), ignore_errors=True)
        return run.per_seed[0]

    assert once() == once()
