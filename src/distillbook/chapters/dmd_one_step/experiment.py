"""The two test beds and every training of the chapter: the teachers, the feature classifier, the students."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
RING_TEACHER_INIT, DIGITS_TEACHER_INIT, CLASSIFIER_INIT = 21, 31, 32
RING_DATA, RING_NOISE, RING_PROJECTIONS, RING_FRESH, RING_SAMPLER = 1, 2, 3, 4, 5
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


# ---------------------------------------------------------------- ring2d


@dataclass
class RingBed:
    mixture: ring2d.Mixture
    schedule: Schedule
    teacher: torch.nn.Module


def ring_bed(run: Run) -> RingBed:
    """The 8-mode ring and its deliberately under-trained MLP teacher (v-prediction)."""
    p = run.params
    mixture, schedule = ring2d.ring(8), Schedule()
    torch.manual_seed(derived_seed(run.seeds[0], RING_TEACHER_INIT))
    net = MLPDenoiser(2, p.ring_hidden).to(run.device)

    def sample(gen):
        return mixture.sample(p.ring_batch, gen)[0], None

    teacher = train_denoiser(run, "ring-teacher", net, schedule, sample, p.ring_teacher_steps)
    return RingBed(mixture, schedule, teacher)


def ring_arms(p: Params) -> dict[str, dm.Arm]:
    base = dict(lr=p.ring_lr, fake_lr=p.ring_fake_lr, timesteps=(p.generator_timestep,))
    fast = dict(base, lr=p.ring_lr * p.lr_multiplier, fake_lr=p.ring_fake_lr * p.lr_multiplier)
    return {"dmd": dm.Arm("dmd", ratio=1, **base), "dmd2": dm.Arm("dmd", ratio=p.ttur_ratio, **base),
            "dmd2_gan": dm.Arm("dmd", ratio=p.ttur_ratio, gan=True, **base),
            "sid": dm.Arm("sid", **base), "sim": dm.Arm("sim", **base),
            "dmd_fast": dm.Arm("dmd", **fast), "sid_fast": dm.Arm("sid", **fast), "sim_fast": dm.Arm("sim", **fast)}


def run_ring_seed(run: Run, seed: int, bed: RingBed) -> dict[str, torch.Tensor]:
    """Teacher baselines and every ``ring2d`` student for one seed; returns samples to show."""
    p = run.params
    n = p.ring_eval_samples
    data, _ = bed.mixture.sample(n, derived_generator(seed, RING_DATA))
    z = torch.randn(n, 2, generator=derived_generator(seed, RING_NOISE))
    projections = torch.randn(2, 256, generator=derived_generator(seed, RING_PROJECTIONS), dtype=torch.float64)
    projections = projections / projections.norm(dim=0, keepdim=True)

    def sw(x):
        return sliced_wasserstein(x, data, projections=projections)

    fresh = bed.mixture.sample(n, derived_generator(seed, RING_FRESH))[0]
    # the data floor: fresh data against the evaluation data (SW), and the share of data near a mode
    metrics = {"ring_sw_data": sw(fresh), "ring_quality_data": ring2d.high_quality_share(fresh, bed.mixture)}
    shown = {"data": data}

    def teacher_fn(x, t):
        return bed.teacher(x, t)

    for nfe in p.teacher_nfes:
        x = _sample_teacher(bed.schedule, teacher_fn, z.to(run.device), nfe, p.sampler, derived_seed(seed, RING_SAMPLER))
        metrics[f"ring_sw_teacher{nfe}"] = sw(x)
        metrics[f"ring_modes_teacher{nfe}"] = ring2d.modes_covered(x, bed.mixture)
        metrics[f"ring_quality_teacher{nfe}"] = ring2d.high_quality_share(x, bed.mixture)
        shown[f"teacher{nfe}"] = x

    def oracle(x, t):
        alpha, sigma = bed.schedule.coefficients(t)
        return bed.schedule.convert(bed.mixture.posterior_mean(x, alpha, sigma), x, t, "v_prediction", source="sample")

    x = _sample_teacher(bed.schedule, oracle, z, max(p.teacher_nfes), p.sampler, derived_seed(seed, RING_SAMPLER))
    metrics.update(ring_sw_oracle=sw(x), ring_modes_oracle=ring2d.modes_covered(x, bed.mixture),
                   ring_quality_oracle=ring2d.high_quality_share(x, bed.mixture))

    def evaluate(g):
        x = _generate(g, z, seed=seed)
        return {"sw": sw(x), "quality": ring2d.high_quality_share(x, bed.mixture),
                "modes": ring2d.modes_covered(x, bed.mixture)}

    def real_data(g):
        return bed.mixture.sample(p.ring_batch, g)[0], None

    for name, arm in ring_arms(p).items():
        student, curves = distil(run, f"ring-{name}", seed, bed.teacher, bed.schedule, arm, steps=p.ring_steps,
                                 batch_size=p.ring_batch, dim=2, n_classes=0, evaluate=evaluate, real_data=real_data)
        x = _generate(student.ema, z, seed=seed)
        metrics.update({f"ring_sw_{name}": sw(x), f"ring_modes_{name}": ring2d.modes_covered(x, bed.mixture),
                        f"ring_quality_{name}": ring2d.high_quality_share(x, bed.mixture),
                        f"ring_curve_{name}": curves["sw"], f"ring_quality_curve_{name}": curves["quality"],
                        f"ring_modes_curve_{name}": curves["modes"]})
        shown[name] = x
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
    net = mlp(64, [256, 128], digits.N_CLASSES)

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
    return classifier[:-1](x)


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
            "sid_4step": dm.Arm("sid", real_scale=w, **dict(base, timesteps=tuple(p.few_step_timesteps)))}


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
        metrics[f"digits_curve_{name}"] = curves["cfid"]  # cFID along training (the figures' name)
        for k in ("accuracy", "precision", "recall"):
            metrics[f"digits_{k}_curve_{name}"] = curves[k]
    run.record(seed, **metrics)
    return shown


# ---------------------------------------------------------------- both beds, one seed


@dataclass
class Bed:
    """What every seed shares: the ring's mixture and teacher, the digits' teacher and classifier."""

    ring: RingBed
    digits: DigitsBed


def build_bed(run: Run) -> Bed:
    """Both test beds (teachers trained with the first seed, cached through ``run.fit``)."""
    return Bed(ring_bed(run), digits_bed(run))


def run_seed(run: Run, seed: int, bed: Bed) -> dict[str, dict[str, torch.Tensor]]:
    """Both test beds for one seed (``distillbook.core.parallel.map_seeds`` runs seeds side by side); returns the
    samples the figures show, per bed."""
    return {"ring": run_ring_seed(run, seed, bed.ring), "digits": run_digits_seed(run, seed, bed.digits)}
