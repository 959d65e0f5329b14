"""Distribution matching for one-step generators: DMD/DMD2, SiD, SIM (VSD and SDS, shared with 3-D
optimisation, are in :mod:`distillbook.methods.score_distillation`), and the two-player game that trains them.

A generator output x = G(z) is diffused to x_t = alpha_t x + sigma_t eps. Two denoisers read x_t: the
frozen *real* one (the teacher, p) and a *fake* one fitted online to the generator's samples (q) by
:func:`denoising_loss`. Their disagreement is the generator's learning signal. Each loss here is a
*surrogate*: its gradient with respect to the generator's parameters is the method's update. Tensors
are (batch, dim); every loss sums over dim and averages over the batch.

Scores and predictions: s(x_t) = -eps_hat / sigma_t, x0_hat = (x_t - sigma_t eps_hat) / alpha_t.

Which inputs carry gradients matters:

- DMD and VSD/SDS take predictions made *without* gradient: their update is a fixed vector times dx/dθ.
- SiD and SIM differentiate *through* the denoisers' inputs x_t (the networks' own weights stay frozen):
  predictions passed to them must be computed with gradients flowing to x.

The three are one family. With d(y) = ||y||^2 / 2, SIM's loss is SiD's at alpha = 1; SiD's alpha = 1/2 is the full gradient of the Fisher divergence E_{q_t} ||s_q - s_p||^2 / 2 (its
sampling distribution moving with the generator too); DMD's direction is the gradient of KL(q_t || p_t).

The game (:class:`Arm` describes one student, :class:`Student` holds both players, :func:`distillation_loss`
is one step of it, :func:`student_optimizer` the Adam that takes it, :func:`batch_sampler` what each step
draws): every step fits the fake score to fresh generator samples; every ``ratio``-th step also moves the
generator (DMD2's two time-scale update rule, TTUR); DMD2's optional GAN head reads the fake score's features.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from distillbook.methods.diffusion import Schedule, denoising_loss, drop_labels, guided
from distillbook.methods.score_distillation import surrogate, vsd
from distillbook.models.denoiser import Generator, frozen

METHODS = {
    "DMD2 distribution-matching gradient": ("dmd_loss", 50),
    "DMD2 two time-scale update rule (TTUR): which steps move the generator": ("Arm", 50),
    "one step of the two-player game (fake score, GAN head, generator)": ("distillation_loss", 50),
    "DMD2 GAN term, discriminator side": ("gan_discriminator_loss", 50),
    "DMD2 GAN term, generator side": ("gan_generator_loss", 50),
    "SwiftBrush one-step student with a LoRA fake score": ("Student", 19),
    "SiD score identity distillation loss": ("sid_loss", 58),
    "SIM score implicit matching loss": ("sim_loss", 86),
    "SIM pseudo-Huber distance": ("pseudo_huber_derivative", 86),
    "two-player Adam (beta1 = 0, own fake-score rate)": ("student_optimizer", None),
}


def _per_sample_sum(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1).sum(dim=1)


def dmd_loss(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """DMD2's distribution-matching gradient (paper 50), normalised per sample.

    With p = x - x0_hat from each denoiser,
        g = (p_real - p_fake) / mean_d |p_real| = (x0_fake - x0_real) / mean_d |x - x0_real|,
    and the surrogate 1/2 || x - sg(x - g) ||^2 (averaged over the batch of n) has gradient g / n with
    respect to x. Unnormalised,
    g = (sigma_t^2 / alpha_t) (s_fake - s_real) = (sigma_t^2 / alpha_t^2) grad_x KL(q_t || p_t) per sample.
    """
    with torch.no_grad():
        p_real, p_fake = x - x0_real, x - x0_fake
        # mean_d |p_real|
        normaliser = p_real.abs().reshape(len(x), -1).mean(dim=1).clamp_min(1e-5)
        # g = (p_real - p_fake) / mean_d |p_real|
        grad = (p_real - p_fake) / normaliser.reshape((-1,) + (1,) * (x.ndim - 1))
    # 1/2 || x - sg(x - g) ||^2
    return surrogate(x, grad)


def sid_loss(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor, alpha: float = 1.2) -> torch.Tensor:
    """Score identity distillation (SiD, paper 58), as in its reference training loop:

        L = (y_r - y_f) . ((y_r - x) - alpha (y_r - y_f)) / sg(mean_d |x - y_r|),

    y = x0_hat of the real and fake denoisers at x_t. Gradients flow through y_r, y_f (via x_t) and x.
    """
    with torch.no_grad():
        # sg(mean_d |x - y_r|)
        weight = (x - x0_real).abs().reshape(len(x), -1).mean(dim=1).clamp_min(1e-5)
    diff = x0_real - x0_fake
    # (y_r - y_f) . ((y_r - x) - alpha (y_r - y_f)) / weight
    return (_per_sample_sum(diff * ((x0_real - x) - alpha * diff)) / weight).mean()


def pseudo_huber_derivative(u: torch.Tensor, c: float) -> torch.Tensor:
    """d'(u) = u / sqrt(||u||^2 + c^2), the gradient of d(u) = sqrt(||u||^2 + c^2) - c (per sample)."""
    if c <= 0:
        raise ValueError(f"the pseudo-Huber constant c must be > 0, got {c}")
    norm2 = _per_sample_sum(u ** 2).reshape((-1,) + (1,) * (u.ndim - 1))
    # u / sqrt(||u||^2 + c^2)
    return u / torch.sqrt(norm2 + c ** 2)


def sim_loss(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor, c: float | None = 1e-3) -> torch.Tensor:
    """Score implicit matching (SIM, paper 86) with the pseudo-Huber distance, in x0 units with SiD's weight.

    SIM's divergence is D = E_{x_t ~ sg(q_t)} d(y_t), y_t = s_q(x_t) - s_p(x_t) (the generator's fake score minus
    the teacher's), the sampling distribution held at the current generator; its gradient is that of
    -d'(y_t) . (s_q(x_t) - grad_{x_t} log q_t(x_t | x)), differentiated through x_t everywhere, d'(y_t) included. In x0 units (s = (alpha_t y - x_t) / sigma_t^2,
    Delta = y_r - y_f) and with the per-sample weight of the SiD code base, in which SIM was trained (its
    released sampler is SiD's; the training code is not public):
        L = d'(Delta) . (y_f - x) / sg(mean_d |x - y_r|),   d'(Delta) = Delta / sqrt(||Delta||^2 + c^2),
    c in x0 units (1e-3: the paper states its default for its own parameterisation, so here it is a choice, not
    the paper's constant). Gradients flow through y_r, y_f (via x_t) and x.
    ``c=None`` is d(Delta) = ||Delta||^2 / 2 (d' = Delta, the limit of c d' as c -> infinity): then L is exactly
    SiD's loss at alpha = 1, whose gradient ``tests/test_distribution_matching.py`` checks against the closed-form
    gradient of SIM's divergence on Gaussians.
    """
    with torch.no_grad():
        # sg(mean_d |x - y_r|)
        weight = (x - x0_real).abs().reshape(len(x), -1).mean(dim=1).clamp_min(1e-5)
    delta = x0_real - x0_fake
    # d'(Delta): Delta for d = ||Delta||^2 / 2, else the pseudo-Huber derivative
    direction = delta if c is None else pseudo_huber_derivative(delta, c)
    # L = d'(Delta) . (y_f - x) / weight
    return (_per_sample_sum(direction * (x0_fake - x)) / weight).mean()


def gan_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for DMD2's classifier head: softplus(-D(real)) + softplus(D(fake))."""
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def gan_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's side: softplus(-D(G(z)))."""
    return F.softplus(-logits_fake).mean()


# ---------------------------------------------------------------- the two-player game


@dataclass(frozen=True)
class Arm:
    """One student: its method, fake-score updates per generator update, learning rates and options."""

    method: Literal["dmd", "vsd", "sds", "sid", "sim"]
    ratio: int = 1              # fake-score updates per generator update (DMD2's TTUR: > 1)
    lr: float = 1e-3            # the generator's Adam rate
    fake_lr: float | None = None  # the fake score's (and GAN head's) rate; default: lr
    gan: bool = False           # DMD2's GAN head on the fake score's features (the only arm that sees data)
    real_scale: float = 1.0     # teacher guidance (conditional test beds)
    fake_scale: float = 1.0     # fake-score guidance; 0 = unconditional fake score (Zero-CFG)
    lora_rank: int | None = None  # SwiftBrush: the fake score is a LoRA copy of the teacher
    timesteps: tuple[int, ...] = (749,)  # the generator's timesteps; several make a few-step generator

    def __post_init__(self):
        if self.method not in ("dmd", "vsd", "sds", "sid", "sim"):
            raise ValueError(f"Arm.method must be 'dmd', 'vsd', 'sds', 'sid' or 'sim', got {self.method!r}")
        if self.ratio < 1:
            raise ValueError(f"Arm.ratio (fake-score updates per generator update) must be >= 1, got {self.ratio}")
        if self.lr <= 0 or (self.fake_lr is not None and self.fake_lr <= 0):
            raise ValueError(f"Arm.lr and Arm.fake_lr must be > 0, got {self.lr} and {self.fake_lr}")
        if self.gan and self.method == "sds":
            raise ValueError("Arm.gan needs a fake score to read features from; method 'sds' has none")
        if not self.timesteps:
            raise ValueError("Arm.timesteps needs at least one timestep")

    def moves_generator(self, step: int) -> bool:
        """TTUR: the generator moves in steps 0, ratio, 2 ratio, ...; the fake score in every step."""
        return step % self.ratio == 0


class Student(torch.nn.Module):
    """The generator, its EMA, its fake score (a copy or a LoRA copy of the teacher) and an optional GAN
    head, in one module so that one checkpoint holds the whole two-player state."""

    def __init__(self, teacher: torch.nn.Module, schedule: Schedule, arm: Arm):
        super().__init__()
        self.generator = Generator(teacher, schedule, arm.timesteps)
        fake = copy.deepcopy(teacher)
        fake.requires_grad_(True)
        if arm.lora_rank is not None:  # SwiftBrush: W + B A with B = 0 at the start, so fake = teacher
            from peft import LoraConfig, inject_adapter_in_model

            targets = [n for n, m in fake.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
            fake = inject_adapter_in_model(LoraConfig(r=arm.lora_rank, lora_alpha=arm.lora_rank,
                                                      target_modules=targets), fake)
        self.generator.net.requires_grad_(True)
        self.fake = fake
        self.head = torch.nn.Linear(teacher.feature_dim, 1) if arm.gan else None
        self.ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.to(next(teacher.parameters()).device)

    def update_ema(self, decay: float) -> None:
        """After each step that moved the generator."""
        for e, g in zip(self.ema.parameters(), self.generator.parameters()):
            # ema <- decay ema + (1 - decay) generator
            e.lerp_(g, 1 - decay)


def batch_sampler(schedule: Schedule, arm: Arm, batch_size: int, dim: int, n_classes: int, real_data=None,
                  label_dropout: float = 0.0):
    """``next_batch(gen)`` for :func:`distillation_loss`: everything random in a step, drawn from the fit loop's
    generator (so a resumed run draws the same). ``real_data(gen) -> (x, labels or None)`` feeds the GAN head;
    ``label_dropout`` of the fake score's training labels become the null class (conditional beds)."""
    n = batch_size

    def batch(gen):
        out = {"z": torch.randn(n, dim, generator=gen),
               "steps": int(torch.randint(1, len(arm.timesteps) + 1, (), generator=gen)),
               "renoise": [torch.randn(n, dim, generator=gen) for _ in arm.timesteps[1:]],
               "t_fake": schedule.sample_timesteps(n, gen), "noise_fake": torch.randn(n, dim, generator=gen),
               "t_gen": schedule.sample_timesteps(n, gen), "noise_gen": torch.randn(n, dim, generator=gen)}
        if n_classes:
            out["labels"] = torch.randint(0, n_classes, (n,), generator=gen)
            out["fake_dropout"] = torch.rand(n, generator=gen) < label_dropout
        if arm.gan:
            out["real"], out["real_labels"] = real_data(gen)
            out["t_real"] = schedule.sample_timesteps(n, gen)
            out["noise_real"] = torch.randn(n, dim, generator=gen)
        return out
    return batch


def distillation_loss(student: Student, batch: dict, step: int, teacher: torch.nn.Module, schedule: Schedule,
                      arm: Arm, sid_alpha: float, sim_c: float, gan_weight: float):
    """Step ``step`` of the two-player game, as one loss whose single backward pass updates both players.

    Every step fits the fake score (and the GAN head) to fresh generator samples; the steps where
    ``arm.moves_generator(step)`` also update the generator. The generator's samples are detached in the fake
    score's loss and the fake score's weights are detached in the generator's, so one Adam over both sees each
    gradient once (parameters without a gradient are skipped). ``batch`` is one draw of :func:`batch_sampler`.
    """
    z, labels = batch["z"], batch.get("labels")
    k = batch["steps"]
    gen = student.generator
    fake_labels = None if arm.fake_scale == 0.0 else labels

    def generate():
        if k == 1:
            return gen(z, labels, steps=1)
        with torch.no_grad():  # earlier steps of a few-step generator: no gradient (backward simulation)
            prev = gen(z, labels, steps=k - 1, noise=batch["renoise"])
        t = torch.full((len(z),), gen.timesteps[k - 1], dtype=torch.long, device=z.device)
        # x = G_k(alpha_t G_{<k}(z) + sigma_t eps, t), t = the k-th timestep
        return gen.denoise(schedule.add_noise(prev, batch["renoise"][k - 2], t), k - 1, labels)

    # the generator's samples, with gradients on the steps that move it (the fake score reads them detached)
    moves = arm.moves_generator(step)
    x = generate() if moves else None

    # the fake score: denoising score matching on detached generator samples (SDS has none to train)
    loss = torch.zeros((), device=z.device)
    if arm.method != "sds":
        with torch.no_grad():
            x_detached = x.detach() if moves else generate()
        t_f, noise_f = batch["t_fake"], batch["noise_fake"]
        x_t = schedule.add_noise(x_detached, noise_f, t_f)
        train_labels = fake_labels
        if fake_labels is not None:
            train_labels = drop_labels(fake_labels, batch["fake_dropout"], teacher.n_classes)
        # L_fake = E || fake(alpha_t sg(x) + sigma_t eps, t, y) - target(sg(x), eps, t) ||^2
        loss = denoising_loss(student.fake(x_t, t_f, train_labels), schedule.target(x_detached, noise_f, t_f))
    if student.head is not None:  # DMD2's GAN: the head reads the fake score's features, real vs generated
        xr_t = schedule.add_noise(batch["real"], batch["noise_real"], batch["t_real"])
        logits_real = student.head(student.fake.features(xr_t, batch["t_real"], batch.get("real_labels")))
        logits_fake = student.head(student.fake.features(x_t, t_f, fake_labels))
        # L_D = softplus(-D(real_t)) + softplus(D(sg(x)_t))
        loss = loss + gan_discriminator_loss(logits_real, logits_fake)
    extras = {"fake_loss": loss.detach()}  # tensors: fit reads them at its logging points only

    if moves:
        t, noise = batch["t_gen"], batch["noise_gen"]
        # x_t = alpha_t G(z) + sigma_t eps, with gradients to the generator
        x_t = schedule.add_noise(x, noise, t)
        fake_net = frozen(student.fake)

        def real(xt):
            return guided(teacher, xt, t, labels, arm.real_scale)

        def fake(xt):
            return guided(fake_net, xt, t, labels, arm.fake_scale)

        def to(out, kind):
            return schedule.convert(out, x_t, t, kind)

        if arm.method == "dmd":
            with torch.no_grad():
                x0_real, x0_fake = to(real(x_t), "sample"), to(fake(x_t), "sample")
            # g = (x0_fake - x0_real) / mean_d |x - x0_real|, followed through 1/2 || x - sg(x - g) ||^2
            g_loss = dmd_loss(x, x0_real, x0_fake)
        elif arm.method in ("vsd", "sds"):
            _, sigma = schedule.coefficients(t, x.ndim)
            with torch.no_grad():
                eps_real = to(real(x_t), "epsilon")
                eps_fake = noise if arm.method == "sds" else to(fake(x_t), "epsilon")
            # g = sigma_t^2 (eps_real - eps_fake)  (SDS: eps_fake = eps, the injected noise)
            g_loss = surrogate(x, vsd(eps_real, eps_fake, sigma ** 2))
        elif arm.method == "sid":
            # L = (y_r - y_f) . ((y_r - x) - alpha (y_r - y_f)) / sg(mean_d |x - y_r|), through x_t
            g_loss = sid_loss(x, to(real(x_t), "sample"), to(fake(x_t), "sample"), alpha=sid_alpha)
        else:
            # L = d'(y_r - y_f) . (y_f - x) / sg(mean_d |x - y_r|), through x_t
            g_loss = sim_loss(x, to(real(x_t), "sample"), to(fake(x_t), "sample"), c=sim_c)
        if student.head is not None:
            logits = frozen(student.head)(fake_net.features(x_t, t, fake_labels))
            # L_G += w_GAN softplus(-D(x_t))
            g_loss = g_loss + gan_weight * gan_generator_loss(logits)
        loss = loss + g_loss
        extras["generator_loss"] = g_loss.detach()
    return loss, extras


def student_optimizer(student: Student, arm: Arm) -> torch.optim.Optimizer:
    """Adam for both players, beta1 = 0 as is usual for two-player updates; the generator at ``arm.lr``,
    the fake score and GAN head at ``arm.fake_lr`` (the EMA is not trained)."""
    others = [q for n, q in student.named_parameters()
              if not n.startswith(("generator.", "ema.")) and q.requires_grad]
    return torch.optim.Adam([{"params": list(student.generator.parameters())},
                             {"params": others, "lr": arm.lr if arm.fake_lr is None else arm.fake_lr}], lr=arm.lr, betas=(0.0, 0.999))
