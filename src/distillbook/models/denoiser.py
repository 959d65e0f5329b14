"""Denoising networks for flat data (2-D points, 8x8 digits), and the one-step generator made from one.

- :class:`MLPDenoiser`: an MLP on [x_t, sinusoidal embedding of t (diffusers'), class embedding].
  Class ``n_classes`` is the *null* class, used for classifier-free guidance.
- :class:`UNetDenoiser`: diffusers' ``UNet2DModel`` (class embeddings included) behind the same
  interface, for images given as flat vectors (the gpu profile's teacher).
- :class:`Generator`: a copy of a denoiser evaluated at fixed timesteps, returning x_0 predictions:
  one step from pure noise, or a few steps with re-noising in between (DMD2, SiD).
- :func:`train_denoiser`: denoising score matching (with null labels for guidance) in the book's loop.
- :class:`frozen`: a network called with detached weights, so gradients reach only its inputs.

Every denoiser is called as ``net(x_t, t, labels=None)`` and returns its schedule's prediction type;
``net(..., return_features=True)`` (or ``net.features(...)``) gives the last hidden layer, which
DMD2's GAN head reads.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn
from torch.func import functional_call

from distillbook.methods.diffusion import Schedule, denoising_loss, drop_labels


class MLPDenoiser(nn.Module):
    """``fourier_features`` > 0 also feeds [sin, cos](2 pi B x_t), B ~ N(0, ``fourier_scale``^2) fixed at construction
    (random Fourier features: an MLP on raw low-dimensional coordinates cannot resolve many narrow modes)."""

    def __init__(self, dim: int, hidden: Sequence[int], n_classes: int = 0, time_dim: int = 64,
                 class_dim: int = 32, fourier_features: int = 0, fourier_scale: float = 1.0):
        super().__init__()
        if dim < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"dim and hidden widths must be positive, got dim={dim}, hidden={list(hidden)}")
        if fourier_features < 0 or fourier_scale <= 0:
            raise ValueError(f"fourier_features must be >= 0 and fourier_scale > 0, got {fourier_features} and "
                             f"{fourier_scale}")
        self.dim, self.n_classes, self.time_dim = dim, n_classes, time_dim
        self.class_embedding = nn.Embedding(n_classes + 1, class_dim) if n_classes else None
        # B, fixed (a buffer: checkpointed and copied with the network, never trained)
        self.register_buffer("fourier", fourier_scale * torch.randn(dim, fourier_features) if fourier_features else None)
        width = dim + 2 * fourier_features + time_dim + (class_dim if n_classes else 0)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, dim)
        self.feature_dim = width

    def _labels(self, labels: torch.Tensor | None, n: int, device) -> torch.Tensor:
        if labels is None:  # the null class
            return torch.full((n,), self.n_classes, dtype=torch.long, device=device)
        return labels

    def features(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        parts = [x_t]
        if self.fourier is not None:
            # [sin, cos](2 pi B x_t)
            angles = 2 * torch.pi * x_t @ self.fourier
            parts += [angles.sin(), angles.cos()]
        parts.append(get_timestep_embedding(t, self.time_dim, flip_sin_to_cos=True, downscale_freq_shift=0))
        if self.class_embedding is not None:
            parts.append(self.class_embedding(self._labels(labels, len(x_t), x_t.device)))
        elif labels is not None:
            raise ValueError("labels given to an unconditional denoiser (n_classes=0)")
        return self.body(torch.cat(parts, dim=-1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                return_features: bool = False) -> torch.Tensor:
        h = self.features(x_t, t, labels)
        return h if return_features else self.out(h)


class UNetDenoiser(nn.Module):
    """diffusers' ``UNet2DModel`` on flat ``channels * size * size`` vectors, with a null class for guidance."""

    def __init__(self, size: int, channels: int = 1, n_classes: int = 0,
                 block_out_channels: Sequence[int] = (64, 128), layers_per_block: int = 2,
                 unet: UNet2DModel | None = None):
        super().__init__()
        self.size, self.channels, self.n_classes = size, channels, n_classes
        self.dim = channels * size * size
        if unet is None:
            n_blocks = len(block_out_channels)
            unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                               block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                               down_block_types=("DownBlock2D",) * n_blocks, up_block_types=("UpBlock2D",) * n_blocks,
                               num_class_embeds=(n_classes + 1) if n_classes else None,
                               norm_num_groups=min(32, min(block_out_channels)))
        self.unet = unet
        self.feature_dim = block_out_channels[-1]
        self._mid = None
        self.unet.mid_block.register_forward_hook(self._keep_mid)  # a bound method: picklable for seed workers

    def _keep_mid(self, module, inputs, output):
        self._mid = output

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> "UNetDenoiser":
        """A saved ``UNet2DModel`` (a local folder, or a hub id when online); with class embeddings, the last
        one is taken as the null class."""
        unet = UNet2DModel.from_pretrained(name_or_path)
        config = unet.config
        n_classes = (config.num_class_embeds - 1) if config.num_class_embeds else 0
        return cls(config.sample_size, config.in_channels, n_classes, config.block_out_channels, unet=unet)

    def _labels(self, labels, n, device):
        if not self.n_classes:
            if labels is not None:
                raise ValueError("labels given to an unconditional denoiser (n_classes=0)")
            return None
        return torch.full((n,), self.n_classes, dtype=torch.long, device=device) if labels is None else labels

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                return_features: bool = False) -> torch.Tensor:
        images = x_t.reshape(len(x_t), self.channels, self.size, self.size)
        out = self.unet(images, t, class_labels=self._labels(labels, len(x_t), x_t.device)).sample
        mid, self._mid = self._mid, None  # hold no graph between calls (the module stays picklable)
        return mid.mean(dim=(2, 3)) if return_features else out.reshape(len(x_t), -1)

    def features(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Spatially pooled mid-block activations."""
        return self.forward(x_t, t, labels, return_features=True)


class Generator(nn.Module):
    """x_0 = G(z): a copy of ``teacher`` evaluated at ``timesteps`` (first entry: from pure noise).

    One timestep is a one-step generator. With several, step k re-noises the previous x_0 estimate to
    ``timesteps[k]`` with fresh noise and denoises again (DMD2's backward simulation, SiD's few steps).
    """

    def __init__(self, teacher: nn.Module, schedule: Schedule, timesteps: Sequence[int] = (999,)):
        super().__init__()
        if not timesteps or any(not 0 <= t < schedule.num_train_timesteps for t in timesteps):
            raise ValueError(f"timesteps must be a non-empty list in [0, {schedule.num_train_timesteps}), got {timesteps}")
        if list(timesteps) != sorted(timesteps, reverse=True):
            raise ValueError(f"timesteps must decrease, got {list(timesteps)}")
        self.net = copy.deepcopy(teacher)
        self.schedule = schedule
        self.timesteps = list(timesteps)

    def denoise(self, x_t: torch.Tensor, step: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.full((len(x_t),), self.timesteps[step], dtype=torch.long, device=x_t.device)
        return self.schedule.convert(self.net(x_t, t, labels), x_t, t, "sample")

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, steps: int | None = None,
                noise: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Run the first ``steps`` steps (all by default); ``noise[k - 1]`` re-noises before step k."""
        steps = len(self.timesteps) if steps is None else steps
        if not 1 <= steps <= len(self.timesteps):
            raise ValueError(f"steps must be in [1, {len(self.timesteps)}], got {steps}")
        if len(noise) < steps - 1:
            raise ValueError(f"{steps} steps need {steps - 1} re-noising tensors, got {len(noise)}")
        x0 = self.denoise(z, 0, labels)
        for k in range(1, steps):
            t = torch.full((len(z),), self.timesteps[k], dtype=torch.long, device=z.device)
            x0 = self.denoise(self.schedule.add_noise(x0, noise[k - 1], t), k, labels)
        return x0


class frozen:
    """``net`` called with its weights detached: gradients reach its inputs, never its weights."""

    def __init__(self, net: nn.Module):
        self.net, self.n_classes = net, getattr(net, "n_classes", 0)
        self.weights = {n: p.detach() for n, p in net.named_parameters()}

    def __call__(self, *args, **kwargs):
        return functional_call(self.net, self.weights, args, kwargs)

    def features(self, *args):
        return self(*args, return_features=True)


def train_denoiser(run, name: str, net: nn.Module, schedule: Schedule, sample_data, steps: int,
                   label_dropout: float = 0.0, lr: float = 2e-3, cosine: bool = False) -> nn.Module:
    """Denoising score matching, E || net(alpha_t x_0 + sigma_t eps, t, y) - target ||^2, on
    ``sample_data(gen) -> (x0, labels or None)`` with ``run.fit`` (first seed); frozen afterwards.

    With labels, ``label_dropout`` of them become the null class (classifier-free guidance training).
    ``cosine`` anneals the learning rate to 0 over ``steps`` (a teacher trained to its floor); else it is constant.
    """
    def batch(gen):
        x0, labels = sample_data(gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, schedule.num_train_timesteps, (len(x0),), generator=gen)
        if labels is not None:
            drop = torch.rand(len(labels), generator=gen) < label_dropout
            labels = drop_labels(labels, drop, net.n_classes)
        return x0, noise, t, labels

    def loss(m, b):
        x0, noise, t, labels = b
        return denoising_loss(m(schedule.add_noise(x0, noise, t), t, labels), schedule.target(x0, noise, t))

    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cosine else None
    run.fit(name, run.seeds[0], net, loss, batch, steps=steps, optimizer=optimizer, scheduler=scheduler)
    net.eval()
    net.requires_grad_(False)
    return net
