"""The two test beds and every training of the chapter: the teachers, the feature classifier, the students."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distillbook.chapters.dmd_one_step.params import FAKE_LABEL_DROPOUT, TEACHER_LABEL_DROPOUT, Params
from distillbook.core.metrics import accuracy, frechet_distance, precision_recall, sliced_wasserstein
from distillbook.core.results import Run
from distillbook.core.runtime import derived_generator, derived_seed
from distillbook.methods import distribution_matching as dm
from distillbook.methods.diffusion import Schedule, guided
from distillbook.models.denoiser import Generator, MLPDenoiser, UNetDenoiser, train_denoiser
from distillbook.models.mlp import mlp, predict_logits
from distillbook.testbeds import digits, ring2d

# What each seed derived from a run seed is for (``derived_seed(seed, purpose)``). The teachers and the
# classifier derive theirs from the first seed; every student of a seed starts from the same initialisation.
STUDENT_INIT, RENOISE = 11, 13                                  # every student; the few-step generators' re-noising
RING_TEACHER_INIT, GRID_TEACHER_INIT, DIGITS_TEACHER_INIT, CLASSIFIER_INIT = 21, 22, 31, 32
RING_DATA, RING_NOISE, RING_FRESH, RING_SAMPLER = 1, 2, 4, 5
DIGITS_NOISE, DIGITS_SAMPLER, DIGITS_RESAMPLE = 41, 42, 43


# ---------------------------------------------------------------- shared pieces


def distil(run: Run, name: str, seed: int, teacher, schedule: Schedule, arm: dm.Arm, *, steps: int, batch_size: int,
           dim: int, n_classes: int, evaluate, real_data=None) -> tuple[dm.Student, dict[str, list[float]]]:
    """Train one student for ``steps`` generator updates; return it and the evaluation curves of its EMA
    generator, one per metric that ``evaluate`` returns (the initial generator's value first, then
    ``eval_points`` evenly spaced ones)."""
    p = run.params
    torch.manual_seed(derived_seed(seed, STUDENT_INIT))
    student = dm.Student(teacher, schedule, arm)
    total = steps * arm.ratio
    initial = evaluate(student.ema)

    def loss(m: dm.Student, batch: dict, step: int):
        return dm.distillation_loss(m, batch, step, teacher, schedule, arm, p.sid_alpha, p.sim_c, p.gan_weight)

    def after_step(m: dm.Student, step: int):
        if arm.moves_generator(step):
            m.update_ema(p.ema_decay)

    next_batch = dm.batch_sampler(schedule, arm, batch_size, dim, n_classes, real_data, label_dropout=FAKE_LABEL_DROPOUT)
    result = run.fit(name, seed, student, loss, next_batch, steps=total, optimizer=dm.student_optimizer(student, arm),
                     after_step=after_step, evaluate=lambda m: evaluate(m.ema), eval_every=total // p.eval_points)
    return student, {k: [v, *result.column(k)[:p.eval_points]] for k, v in initial.items()}


def _generate(generator: Generator, z: torch.Tensor, labels=None, seed: int = 0) -> torch.Tensor:
    """All of a (few-step) generator's steps, re-noising from a stream derived from ``seed`` (on the CPU)."""
    device = next(generator.parameters()).device
    renoise_gen = derived_generator(seed, RENOISE)
    noise = [torch.randn(z.shape, generator=renoise_gen).to(device) for _ in generator.timesteps[1:]]
    with torch.no_grad():
        return generator(z.to(device), None if labels is None else labels.to(device), noise=noise).cpu()


def _sample_teacher(schedule: Schedule, model_fn, z: torch.Tensor, steps: int, sampler: str, seed: int) -> torch.Tensor:
    """The teacher's own sampler from x_T = z (on the model's device, its noise from ``seed``), back on the CPU."""
    return schedule.sample(model_fn, z, steps, sampler, generator=torch.Generator(z.device).manual_seed(seed)).cpu()


# ---------------------------------------------------------------- the 2-D test beds: ring2d and grid2d


@dataclass
class MixtureBed:
    """A 2-D mixture, its teacher trained to near the exact-score oracle, and (ring only) an under-trained one."""

    name: str                             # the metrics' prefix: "ring" or "grid"
    mixture: ring2d.Mixture
    schedule: Schedule
    teacher: torch.nn.Module
    weak_teacher: torch.nn.Module | None  # the GAN claims' teacher: few steps at a constant rate
    rare: tuple[int, ...] = ()            # the rare modes (grid2d's corners)


def mixture_bed(run: Run, name: str, mixture: ring2d.Mixture, hidden: list[int], steps: int, init: int,
                weak_steps: int | None = None, rare: tuple[int, ...] = (), fourier_features: int = 0) -> MixtureBed:
    """An MLP teacher (v-prediction) trained with a cosine-annealed rate, and optionally an under-trained twin."""
    p = run.params
    schedule = Schedule()

    def sample(gen):
        return mixture.sample(p.ring_batch, gen)[0], None

    def teacher(steps, cosine, label):
        torch.manual_seed(derived_seed(run.seeds[0], init))
        net = MLPDenoiser(2, hidden, fourier_features=fourier_features).to(run.device)
        return train_denoiser(run, f"{name}-{label}", net, schedule, sample, steps, cosine=cosine)

    weak = None if weak_steps is None else teacher(weak_steps, False, "weak-teacher")
    return MixtureBed(name, mixture, schedule, teacher(steps, True, "teacher"), weak, rare)


def ring_bed(run: Run) -> MixtureBed:
    """The 8-mode ring: a teacher near the oracle, and an under-trained one for the GAN claims."""
    p = run.params
    return mixture_bed(run, "ring", ring2d.ring(8), p.ring_hidden, p.ring_teacher_steps, RING_TEACHER_INIT,
                       weak_steps=p.weak_teacher_steps)


def grid_bed(run: Run) -> MixtureBed:
    """The 5x5 grid whose 4 corners (the modes farthest from the generator's start) are rare."""
    p = run.params
    rare = ring2d.corners(p.grid_side)
    mixture = ring2d.grid(p.grid_side, std=p.grid_std, rare=rare, rare_weight=p.grid_rare_weight)
    return mixture_bed(run, "grid", mixture, p.grid_hidden, p.grid_teacher_steps, GRID_TEACHER_INIT, rare=rare,
                       fourier_features=p.grid_fourier_features)


def circle_directions(n: int) -> torch.Tensor:
    """(2, n) unit vectors at angles pi k / n: in 2-D the sliced Wasserstein distance's average over directions is a
    1-D integral, which evenly spaced angles compute with no sampling noise (W2 is the same for theta and -theta)."""
    angles = torch.arange(n, dtype=torch.float64) * torch.pi / n
    return torch.stack([angles.cos(), angles.sin()])


def mixture_arms(p: Params, bed: str) -> dict[str, dm.Arm]:
    base = dict(lr=p.ring_lr, fake_lr=p.ring_fake_lr, timesteps=(p.generator_timestep,))
    if bed == "grid":
        return {"dmd": dm.Arm("dmd", ratio=1, **base), "dmd2": dm.Arm("dmd", ratio=p.ttur_ratio, **base)}
    fast = dict(base, lr=p.ring_lr * p.lr_multiplier, fake_lr=p.ring_fake_lr * p.lr_multiplier)
    return {"sid": dm.Arm("sid", **base), "sim": dm.Arm("sim", **base),
            "sid_fast": dm.Arm("sid", **fast), "sim_fast": dm.Arm("sim", **fast),
            "weak_dmd2": dm.Arm("dmd", ratio=p.ttur_ratio, **base),
            "weak_dmd2_gan": dm.Arm("dmd", ratio=p.ttur_ratio, gan=True, **base)}


def run_mixture_seed(run: Run, seed: int, bed: MixtureBed) -> dict[str, torch.Tensor]:
    """Data floor, oracle, teacher baselines and every student of one 2-D bed for one seed; returns samples to show.

    Metrics (prefixed by the bed's name): SW to a stratified reference set (every mode at its exact share), modes
    covered (rare modes too), the share of samples near a mode, and precision and recall (k = 5) on the first
    ``pr_samples`` points."""
    p = run.params
    n, pre = p.ring_eval_samples, bed.name
    data = bed.mixture.sample_stratified(n, derived_generator(seed, RING_DATA))  # the reference: exact mode shares
    z = torch.randn(n, 2, generator=derived_generator(seed, RING_NOISE))
    projections = circle_directions(p.sw_directions)

    def measure(x):
        precision, recall = precision_recall(data[:p.pr_samples], x[:p.pr_samples], k=5)
        out = {"sw": sliced_wasserstein(x, data, projections=projections), "modes": ring2d.modes_covered(x, bed.mixture),
               "quality": ring2d.high_quality_share(x, bed.mixture), "precision": precision, "recall": recall}
        if bed.rare:
            out["rare"] = ring2d.modes_covered(x, bed.mixture, modes=bed.rare)
        return out

    metrics, shown = {}, {"data": data}

    def record(name, x):
        metrics.update({f"{pre}_{k}_{name}": v for k, v in measure(x).items()})
        shown[name] = x

    # the data floor: fresh i.i.d. data (a perfect sampler) against the reference; its SW from 4 fresh draws (root mean
    # square), as a single draw's SW varies with how many points each mode happens to get
    fresh_gen = derived_generator(seed, RING_FRESH)
    record("data", bed.mixture.sample(n, fresh_gen)[0])
    draws = [metrics[f"{pre}_sw_data"]] + [sliced_wasserstein(bed.mixture.sample(n, fresh_gen)[0], data,
                                                              projections=projections) for _ in range(3)]
    metrics[f"{pre}_sw_data"] = float(np.sqrt(np.mean(np.square(draws))))
    shown["data"] = data

    def oracle(x, t):
        alpha, sigma = bed.schedule.coefficients(t)
        return bed.schedule.convert(bed.mixture.posterior_mean(x, alpha, sigma), x, t, "v_prediction", source="sample")

    teachers = {"teacher": bed.teacher, "oracle": oracle}
    if bed.weak_teacher is not None:
        teachers["weak_teacher"] = bed.weak_teacher
    for label, model in teachers.items():
        for nfe in p.teacher_nfes:
            x = _sample_teacher(bed.schedule, model, z.to(run.device), nfe, p.sampler, derived_seed(seed, RING_SAMPLER))
            record(f"{label}{nfe}", x)
            if nfe < max(p.teacher_nfes):  # and with the strongest few-step solver
                x = _sample_teacher(bed.schedule, model, z.to(run.device), nfe, p.few_step_sampler,
                                    derived_seed(seed, RING_SAMPLER))
                record(f"{label}{nfe}_{p.few_step_sampler}", x)

    def evaluate(g):
        return measure(_generate(g, z, seed=seed))

    def real_data(g):
        return bed.mixture.sample(p.ring_batch, g)[0], None

    for name, arm in mixture_arms(p, bed.name).items():
        teacher = bed.weak_teacher if name.startswith("weak_") else bed.teacher
        steps = p.grid_steps if bed.name == "grid" else p.ring_steps
        student, curves = distil(run, f"{pre}-{name}", seed, teacher, bed.schedule, arm, steps=steps,
                                 batch_size=p.ring_batch, dim=2, n_classes=0, evaluate=evaluate, real_data=real_data)
        record(name, _generate(student.ema, z, seed=seed))
        metrics.update({f"{pre}_{k}_curve_{name}": v for k, v in curves.items()})
    run.record(seed, **metrics)
    return shown


# ---------------------------------------------------------------- digits


@dataclass
class DigitsBed:
    schedule: Schedule
    teacher: torch.nn.Module
    classifier: torch.nn.Module
    real_features: torch.Tensor
    real_x: torch.Tensor              # every real digit (model space), the reference set of the metrics
    real_y: torch.Tensor
    classifier_test_accuracy: float   # the measuring instrument on the held-out test split


def to_model_space(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] to the diffusion models' [-1, 1]."""
    return 2 * x - 1


def digits_bed(run: Run) -> DigitsBed:
    """A class-conditional teacher (10% null labels for guidance) and a feature classifier, on the first seed's
    training split."""
    p = run.params
    data = digits.load(run.seeds[0])
    x, y = to_model_space(data.train.x), data.train.y
    schedule = Schedule()
    torch.manual_seed(derived_seed(run.seeds[0], DIGITS_TEACHER_INIT))
    if p.teacher_checkpoint is not None:
        teacher = load_teacher(p.teacher_checkpoint).to(run.device)
    else:
        if p.digits_denoiser == "unet":
            net = UNetDenoiser(8, 1, n_classes=digits.N_CLASSES, block_out_channels=p.unet_channels)
        else:
            net = MLPDenoiser(64, p.digits_hidden, n_classes=digits.N_CLASSES)

        def sample(gen):
            i = torch.randint(0, len(y), (p.digits_batch,), generator=gen)
            return x[i], y[i]

        teacher = train_denoiser(run, "digits-teacher", net.to(run.device), schedule, sample, p.digits_teacher_steps,
                                 label_dropout=TEACHER_LABEL_DROPOUT)
    classifier = train_classifier(run, x, y)
    all_x = to_model_space(torch.cat([data.train.x, data.val.x, data.test.x]))
    all_y = torch.cat([data.train.y, data.val.y, data.test.y])
    test_accuracy = accuracy(predict_logits(classifier, to_model_space(data.test.x)), data.test.y)
    return DigitsBed(schedule, teacher, classifier, features(classifier, all_x), all_x, all_y, test_accuracy)


def load_teacher(name_or_path: str) -> UNetDenoiser:
    """A saved digits teacher (``teacher_checkpoint``), checked against what this chapter feeds it.

    The network must predict v on the cosine schedule; a ``scheduler_config.json`` beside it (or in
    ``../scheduler``) is checked when present, otherwise that is the caller's responsibility.
    """
    for config in (Path(name_or_path) / "scheduler_config.json", Path(name_or_path).parent / "scheduler" / "scheduler_config.json"):
        if config.exists():
            kind = json.loads(config.read_text()).get("prediction_type", "epsilon")
            if kind != "v_prediction":
                raise ValueError(f"teacher_checkpoint={name_or_path!r} predicts {kind!r}; this chapter's schedule "
                                 "needs 'v_prediction'")
    net = UNetDenoiser.from_pretrained(name_or_path)
    if (net.size, net.channels, net.n_classes) != (8, 1, digits.N_CLASSES):
        raise ValueError(f"teacher_checkpoint={name_or_path!r} is a {net.size}x{net.size} UNet with {net.channels} "
                         f"channel(s) and {net.n_classes} classes; this chapter needs 8x8, 1 channel, 10 classes "
                         "(+ the null class)")
    net.eval()
    return net.requires_grad_(False)


def train_classifier(run: Run, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """The measuring instrument: an MLP digit classifier whose last hidden layer gives the features."""
    torch.manual_seed(derived_seed(run.seeds[0], CLASSIFIER_INIT))
    net = mlp(64, [256, 128], digits.N_CLASSES).to(run.device)

    def batch(gen):
        i = torch.randint(0, len(y), (128,), generator=gen)
        return x[i] + 0.05 * torch.randn(128, 64, generator=gen), y[i]

    run.fit("digits-classifier", run.seeds[0], net, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batch,
            steps=run.params.classifier_steps, optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3))
    net.eval()
    net.requires_grad_(False)
    return net


@torch.no_grad()
def features(classifier: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's last hidden layer, computed on its device."""
    return classifier[:-1](x.to(next(classifier.parameters()).device))


def digit_metrics(bed: DigitsBed, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """cFID, class accuracy, precision and recall of generated digits (clamped to the pixel range)."""
    x = x.clamp(-1, 1)
    feats = features(bed.classifier, x)
    precision, recall = precision_recall(bed.real_features, feats, k=5)
    return {"cfid": frechet_distance(bed.real_features, feats),
            "accuracy": accuracy(predict_logits(bed.classifier, x), labels), "precision": precision, "recall": recall}


def digit_arms(p: Params) -> dict[str, dm.Arm]:
    w = p.guidance_scale
    base = dict(lr=p.digits_lr, fake_lr=p.digits_fake_lr, timesteps=(p.generator_timestep,))
    return {"vsd": dm.Arm("vsd", real_scale=w, **dict(base, fake_lr=p.lora_lr), lora_rank=p.lora_rank),
            "sds": dm.Arm("sds", real_scale=w, **base),
            "sid_cfg": dm.Arm("sid", real_scale=w, **base),
            "sid_zero": dm.Arm("sid", real_scale=1.0, fake_scale=0.0, **base),
            "sid_anti": dm.Arm("sid", real_scale=1.0, fake_scale=p.anti_cfg_scale, **base),
            "sid_anti_mild": dm.Arm("sid", real_scale=1.0, fake_scale=p.anti_cfg_scale / 4, **base)}


def run_digits_seed(run: Run, seed: int, bed: DigitsBed) -> dict[str, torch.Tensor]:
    """Teacher baselines and every ``digits`` student for one seed; returns samples to show."""
    p = run.params
    n = p.digits_eval_samples
    labels = torch.arange(n) % digits.N_CLASSES
    z = torch.randn(n, 64, generator=derived_generator(seed, DIGITS_NOISE))
    metrics, shown = {}, {}

    def record(name, x):
        for k, v in digit_metrics(bed, x, labels).items():
            metrics[f"digits_{k}_{name}"] = v
        shown[name] = x

    # the data floor: a bootstrap resample of the reference digits, the best any sampler of that set can score
    pick = torch.randint(0, len(bed.real_x), (n,), generator=derived_generator(seed, DIGITS_RESAMPLE))
    for k, v in digit_metrics(bed, bed.real_x[pick], bed.real_y[pick]).items():
        metrics[f"digits_{k}_data"] = v
    metrics["digits_classifier_test_accuracy"] = bed.classifier_test_accuracy

    for scale in sorted({1.0, p.guidance_scale}):
        def teacher_fn(x, t, scale=scale):
            return guided(bed.teacher, x, t, labels.to(run.device), scale)

        for nfe in p.teacher_nfes if scale == p.guidance_scale else [max(p.teacher_nfes)]:
            record(f"teacher{nfe}_w{scale:g}", _sample_teacher(bed.schedule, teacher_fn, z.to(run.device), nfe,
                                                               p.sampler, derived_seed(seed, DIGITS_SAMPLER)))

    def evaluate(g):
        return digit_metrics(bed, _generate(g, z, labels, seed), labels)

    for name, arm in digit_arms(p).items():
        student, curves = distil(run, f"digits-{name}", seed, bed.teacher, bed.schedule, arm, steps=p.digits_steps,
                                 batch_size=p.digits_batch, dim=64, n_classes=digits.N_CLASSES, evaluate=evaluate)
        record(name, _generate(student.ema, z, labels, seed))
        metrics.update({f"digits_{k}_curve_{name}": v for k, v in curves.items()})
    run.record(seed, **metrics)
    return shown


# ---------------------------------------------------------------- both beds, one seed


@dataclass
class Bed:
    """What every seed shares: the 2-D mixtures and their teachers, the digits' teacher and classifier."""

    ring: MixtureBed
    grid: MixtureBed
    digits: DigitsBed


def build_bed(run: Run) -> Bed:
    """Every test bed (teachers trained with the first seed, cached through ``run.fit``)."""
    return Bed(ring_bed(run), grid_bed(run), digits_bed(run))


def run_seed(run: Run, seed: int, bed: Bed) -> dict[str, dict[str, torch.Tensor]]:
    """Every test bed for one seed (``distillbook.core.parallel.map_seeds`` runs seeds side by side); returns the
    samples the figures show, per bed."""
    return {"ring": run_mixture_seed(run, seed, bed.ring), "grid": run_mixture_seed(run, seed, bed.grid),
            "digits": run_digits_seed(run, seed, bed.digits)}
