"""The ``voxel3d`` test bed: analytic 3-D scenes, orbit cameras, and a differentiable volume renderer.

Scenes live in the cube [-1, 1]^3 as fields of density and colour: primitives {cube, sphere, cylinder,
cone} in a few colours, and two *Janus probes* whose front differs from their back: a "head" (a sphere
with two dark eyes on its +x side) and a cube whose +x face is red. The front is +x: azimuth 0 looks at it.

Rendering is emission-absorption volume rendering along camera rays, the same for analytic scenes (ground
truth) and for a learnable voxel grid (the 3-D representation the score-distillation chapters optimise):

    alpha_i = 1 - exp(-sigma_i delta),  T_i = prod_{j<i} (1 - alpha_j),  C = sum_i T_i alpha_i c_i + T_N c_bg.

The grid is sampled trilinearly by gathering its 8 neighbouring voxels, and transmittance is the exponential of
a cumulative sum taken as a triangular matrix product: unlike ``F.grid_sample`` and ``torch.cumprod``, both have
deterministic CUDA backward passes, so the book's strict determinism holds on a GPU. Renders are differentiable
in every voxel; the tests check those gradients by finite differences and the lookup against ``F.grid_sample``. Cameras are drawn with a front bias (a share of views
within +-45 degrees of azimuth 0), so that a 2-D prior trained on them prefers front views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# pink is a pastel (chroma 0.3): its truth leaves room to over-saturate, which red's (0.8 of 1) does not
COLOURS = {"red": (0.9, 0.15, 0.1), "green": (0.15, 0.75, 0.25), "blue": (0.15, 0.3, 0.9), "yellow": (0.95, 0.85, 0.15),
           "pink": (0.95, 0.65, 0.75)}
PRIMITIVES = ("cube", "sphere", "cylinder", "cone")
PROBES = ("head", "red-front-cube")
OPAQUE = 40.0  # density inside an analytic shape (per unit length)


@dataclass(frozen=True)
class Cameras:
    """Orbit cameras looking at the origin: azimuth and elevation in radians, shared radius and field of view."""

    azimuth: torch.Tensor
    elevation: torch.Tensor
    radius: float = 3.0
    fov: float = math.radians(40)

    def __len__(self) -> int:
        return len(self.azimuth)

    def rays(self, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and unit directions, each (n, resolution, resolution, 3); pixel (0, 0) is top-left."""
        az, el = self.azimuth.double().cpu(), self.elevation.double().cpu()  # rays are built on the CPU
        eye = self.radius * torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)  # (n, 3)
        forward = -eye / eye.norm(dim=-1, keepdim=True)
        up_world = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(forward)
        right = torch.linalg.cross(forward, up_world)
        right = right / right.norm(dim=-1, keepdim=True)
        up = torch.linalg.cross(right, forward)
        half = math.tan(self.fov / 2)
        u = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution * 2 - 1
        px, py = torch.meshgrid(u * half, -u * half, indexing="xy")   # (res, res): x to the right, y up
        directions = (forward[:, None, None] + px[None, ..., None] * right[:, None, None]
                      + py[None, ..., None] * up[:, None, None])
        directions = directions / directions.norm(dim=-1, keepdim=True)
        return eye[:, None, None].expand_as(directions), directions


def orbit(n: int, generator: torch.Generator, front_share: float = 0.5, max_elevation: float = math.radians(30)) -> Cameras:
    """``n`` cameras: ``front_share`` of azimuths uniform in [-45, 45] degrees, the rest uniform on the circle;
    elevations uniform in [0, ``max_elevation``]."""
    if not 0 <= front_share <= 1:
        raise ValueError(f"front_share must be in [0, 1], got {front_share}")
    front = torch.rand(n, generator=generator) < front_share
    azimuth = torch.where(front, (torch.rand(n, generator=generator) * 2 - 1) * math.pi / 4,
                          (torch.rand(n, generator=generator) * 2 - 1) * math.pi)
    return Cameras(azimuth, torch.rand(n, generator=generator) * max_elevation)


def turntable(n: int, elevation: float = math.radians(15)) -> Cameras:
    """``n`` azimuths evenly around the object, starting at the front."""
    return Cameras(torch.arange(n) * 2 * math.pi / n, torch.full((n,), elevation))


def scene_field(name: str, colour: str = "blue"):
    """``field(points (..., 3)) -> (density (...), rgb (..., 3))`` of a primitive or a Janus probe."""
    if name not in PRIMITIVES + PROBES:
        raise ValueError(f"scene {name!r}; allowed: {', '.join(PRIMITIVES + PROBES)}")
    if colour not in COLOURS:
        raise ValueError(f"colour {colour!r}; allowed: {', '.join(COLOURS)}")
    base_cpu = torch.tensor(COLOURS[colour], dtype=torch.float64)

    def field(p: torch.Tensor):
        x, y, z = p.unbind(-1)
        radial = (x ** 2 + y ** 2).sqrt()
        if name in ("cube", "red-front-cube"):
            inside = p.abs().amax(-1) <= 0.55
        elif name in ("sphere", "head"):
            inside = p.norm(dim=-1) <= 0.65
        elif name == "cylinder":
            inside = (radial <= 0.5) & (z.abs() <= 0.6)
        else:  # cone, apex up
            inside = (z >= -0.6) & (z <= 0.6) & (radial <= 0.5 * (0.6 - z) / 1.2)
        base = base_cpu.to(p.device)
        rgb = base.expand(*p.shape[:-1], 3).clone()
        if name == "red-front-cube":
            rgb[x >= 0.35] = torch.tensor(COLOURS["red"], dtype=torch.float64, device=p.device)  # a slab 24^3 resolves
        if name == "head":
            for side in (-0.25, 0.25):  # two dark eyes on the +x side
                eye = ((p - torch.tensor([0.55, side, 0.15], dtype=torch.float64, device=p.device)).norm(dim=-1) <= 0.16)
                rgb[eye] = 0.05
        return OPAQUE * inside.double(), rgb

    return field


def _composite(density: torch.Tensor, rgb: torch.Tensor, delta: float, background: float) -> torch.Tensor:
    """Emission-absorption compositing along the last sample axis: density (..., S), rgb (..., S, 3) -> (..., 3)."""
    alpha = 1 - torch.exp(-density * delta)
    # T_i = prod_{j<i} (1 - alpha_j) = exp(-delta sum_{j<i} sigma_j): the exclusive cumulative sum as a product with
    # a strictly upper-triangular matrix of ones (deterministic on CUDA, where cumsum and cumprod are not)
    n = density.shape[-1]
    before = torch.ones(n, n, dtype=density.dtype, device=density.device).triu(1)  # before[j, i] = 1 for j < i
    transmittance = torch.exp(-delta * (density @ before))
    weights = transmittance * alpha
    colour = (weights[..., None] * rgb).sum(-2)
    return colour + (1 - weights.sum(-1, keepdim=True)) * background


def _samples(cameras: Cameras, resolution: int, n_samples: int):
    origins, directions = cameras.rays(resolution)
    near, far = cameras.radius - math.sqrt(3), cameras.radius + math.sqrt(3)  # the bounding cube's reach
    depths = near + (torch.arange(n_samples, dtype=torch.float64) + 0.5) / n_samples * (far - near)
    points = origins[..., None, :] + depths[:, None] * directions[..., None, :]  # (n, H, W, S, 3)
    return points, (far - near) / n_samples


def render_field(field, cameras: Cameras, resolution: int, n_samples: int = 64, background: float = 1.0,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Ground-truth images (n, 3, H, W) of an analytic ``field``, evaluated on ``device``, returned on the CPU."""
    points, delta = _samples(cameras, resolution, n_samples)
    density, rgb = field(points.to(device))
    return _composite(density, rgb, delta, background).permute(0, 3, 1, 2).float().cpu()


def query_grid(raw_density: torch.Tensor, raw_colour: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Trilinear density (...,) and rgb (..., 3) of a raw grid (1, 1, D, D, D) / (1, 3, D, D, D) at ``points``
    (..., 3): density = softplus, colour = sigmoid, zero density outside the cube."""
    shape = points.shape[:-1]
    flat = points.reshape(-1, 3).to(raw_density.dtype)
    # outside the cube the density is masked to 0 and the colour takes the border's value, so clamping the points
    # to the cube gives both (F.grid_sample's zeros and border padding)
    values = trilinear(torch.cat([raw_density, raw_colour], 1)[0], flat.clamp(-1, 1))
    inside = (points.abs() <= 1).all(-1)
    density = values[0].reshape(shape)
    return F.softplus(density) * OPAQUE / 4 * inside, torch.sigmoid(values[1:].T).reshape(*shape, 3)


def trilinear(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation (C, N) of ``volume`` (C, D, H, W), its corners at -1 and 1 (``align_corners``), at
    ``points`` (N, 3) in [-1, 1]^3 given as (x, y, z) along (W, H, D): ``F.grid_sample``'s convention, by index
    gathers (``index_select``, whose backward is deterministic on CUDA)."""
    c, *size = volume.shape
    if len(size) != 3 or min(size) < 2 or points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"trilinear needs a volume (C, D, H, W) with every side >= 2 and points (N, 3), got "
                         f"{tuple(volume.shape)} and {tuple(points.shape)}")
    extent = torch.tensor(size[::-1], dtype=points.dtype, device=points.device) - 1   # (W-1, H-1, D-1)
    u = (points + 1) / 2 * extent                                                    # continuous voxel index
    low = u.floor().clamp(min=torch.zeros_like(extent), max=(extent - 1).clamp(min=0))  # (N, 3)
    fx, fy, fz = (u - low).unbind(1)                                                 # in [0, 1]
    low = low.long()
    stride_y, stride_z = size[2], size[1] * size[2]
    base = low[:, 0] + low[:, 1] * stride_y + low[:, 2] * stride_z                   # flat index of the low corner
    weight = ((1 - fx, fx), (1 - fy, fy), (1 - fz, fz))
    flat = volume.reshape(c, -1)
    out = 0
    # sum over the 8 corners (ox, oy, oz) of w_x(ox) w_y(oy) w_z(oz) volume[low + (ox, oy, oz)]
    for oz in (0, 1):
        for oy in (0, 1):
            w_zy = weight[2][oz] * weight[1][oy]
            for ox in (0, 1):
                corner = flat.index_select(1, base + (ox + oy * stride_y + oz * stride_z))
                out = out + (w_zy * weight[0][ox]) * corner
    return out


def render_grid(raw_density: torch.Tensor, raw_colour: torch.Tensor, cameras: Cameras, resolution: int,
                n_samples: int = 32, background: float = 1.0) -> torch.Tensor:
    """Differentiable images (n, 3, H, W) of a raw grid (see :func:`query_grid`)."""
    points, delta = _samples(cameras, resolution, n_samples)
    density, rgb = query_grid(raw_density, raw_colour, points.to(raw_density.device))
    return _composite(density, rgb, delta, background).permute(0, 3, 1, 2)


class VoxelGrid(torch.nn.Module):
    """A learnable grid of raw density and colour logits over [-1, 1]^3 (density = softplus, colour = sigmoid)."""

    def __init__(self, size: int, init_density: float = -2.0):
        super().__init__()
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        self.density = torch.nn.Parameter(torch.full((1, 1, size, size, size), init_density))
        self.colour = torch.nn.Parameter(torch.zeros(1, 3, size, size, size))

    def render(self, cameras: Cameras, resolution: int, n_samples: int = 32, background: float = 1.0) -> torch.Tensor:
        """Differentiable images (n, 3, H, W)."""
        return render_grid(self.density, self.colour, cameras, resolution, n_samples, background)

    @torch.no_grad()
    def fit_field(self, field) -> None:
        """Set the grid to an analytic field sampled at the voxel centres (the reconstruction ceiling's start)."""
        size = self.density.shape[-1]
        axis = torch.linspace(-1, 1, size, dtype=torch.float64)
        zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
        density, rgb = field(torch.stack([xx, yy, zz], -1))
        target = (density * 4 / OPAQUE).clamp(1e-4, 20)
        self.density.copy_(torch.log(torch.expm1(target))[None, None].to(self.density.dtype))  # softplus^-1
        self.colour.copy_(torch.logit(rgb.clamp(1e-3, 1 - 1e-3)).permute(3, 0, 1, 2)[None].to(self.colour.dtype))


# ---------------------------------------------------------------- measures on renders

VIEWS = ("front", "side", "back")


def view_of(azimuth: torch.Tensor) -> torch.Tensor:
    """DreamFusion's view-dependent prompt index: 0 front (|azimuth| <= 45 deg), 2 back (>= 135 deg), else 1 side."""
    a = torch.remainder(azimuth + math.pi, 2 * math.pi) - math.pi  # to [-pi, pi)
    return torch.where(a.abs() <= math.pi / 4, 0, torch.where(a.abs() >= 3 * math.pi / 4, 2, 1))


def front_feature(images: torch.Tensor, probe: str) -> torch.Tensor:
    """Share of pixels (per image) showing a probe's front feature: red for ``red-front-cube``, the dark eyes
    for ``head``."""
    r, g, b = images.unbind(1)
    if probe == "red-front-cube":
        hit = (r > 0.6) & (g < 0.4) & (b < 0.4)
    elif probe == "head":
        hit = images.amax(1) < 0.3
    else:
        raise ValueError(f"probe {probe!r}; allowed: {', '.join(PROBES)}")
    return hit.float().mean((1, 2))


def janus_score(renders: torch.Tensor, truth: torch.Tensor, cameras: Cameras, probe: str) -> torch.Tensor:
    """The continuous Janus measure: how much of the front feature the object shows from behind, beyond what the
    truth shows there (a slab's edge can be seen from behind), relative to the truth's front view minus the same
    baseline. The object's front is the view showing most of the feature, so an object that faces another way
    is not counted as two-faced. 0 is the truth (turned or not), about 0.8 a second full front.

    ``cameras`` are evenly spaced turntable views whose first azimuth is the truth's front."""
    def back_share(images: torch.Tensor) -> torch.Tensor:
        shares = front_feature(images, probe)
        front = cameras.azimuth[shares.argmax()]
        return shares[view_of(cameras.azimuth - front) == 2].mean()

    if not (view_of(cameras.azimuth) == 2).any():
        raise ValueError("janus_score needs turntable cameras with back views (|azimuth| >= 135 degrees)")
    truth_shares = front_feature(truth, probe)
    baseline = back_share(truth)
    return (back_share(renders) - baseline) / (truth_shares.max() - baseline).clamp_min(1e-6)


def aligned_psnr(renders: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, int]:
    """PSNR (dB, images in [0, 1]) between turntable ``renders`` and ``truth`` (n views each, evenly spaced),
    after the cyclic azimuth shift that fits best (a shape found facing another way is not penalised);
    returns (psnr, shift)."""
    n = len(truth)
    mse = torch.stack([((renders.roll(k, 0) - truth) ** 2).mean() for k in range(n)])
    best = int(mse.argmin())
    return -10 * torch.log10(mse[best]), best
