"""The papers' claims with their margins, their verdicts from the recorded per-seed numbers, the test-bed health
table, the numbers the prose glues and every generated text of the page.

Claims are judged per object (and per Janus probe): a verdict holds only if every object agrees. PSNR arms are
read off their optimisation curves (the mean of the last ``CURVE_WINDOW`` evaluations, with the convergence
rule), against the reconstruction from ground-truth renders as their ceiling; chroma lies in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np

from distillbook.chapters.sds_3d_gradients.experiment import (AMORTISED_ARMS, CAMERA_GAP_ARMS, DIVERSITY_ARMS,
                                                              FAST_FAKE_FACTOR, JANUS_ARMS, PSNR_ARMS,
                                                              VARIANCE_TIMESTEPS, Bed, object_arms)
from distillbook.chapters.sds_3d_gradients.params import CURVE_WINDOW, Params
from distillbook.core.claims import (Claim, curve_difference, derived, mean_std_text, relative_change, tail_mean,
                                     verdict_text)
from distillbook.core.claims import curve as as_curve
from distillbook.core.results import Run
from distillbook.testbeds import voxel3d as v3

PROLIFIC, ESD_PAPER, CONSISTENT3D, PLACID, TV3DG, SCALE = 60, 14, 49, 68, 12, 15
ARM_LABELS = {"reconstruction": "reconstruction (ceiling)", "sds_low": "SDS, low CFG", "sds_high": "SDS, high CFG",
              "sds_bsd": "SDS at BSD's classifier scale", "vsd": "VSD (one particle)", "bsd": "BSD", "cds": "CDS",
              "cds_fresh": "CDS, annealed t' and fresh noise (ablation)",
              "cds_random": "CDS, random t and fresh noise (ablation)", "vsd_particles": "VSD particles",
              "csd": "CSD (classifier term)",
              "csm": "CSM (classifier term, DDIM-inverted noise)", "sds_noview": "SDS, no view word",
              "sds": "SDS with the view word",
              "vsd_noview_fast": f"VSD, no view word, fake score at {FAST_FAKE_FACTOR}x lr",
              "vsd_noview_particles": f"VSD particles, no view word, fake score at {FAST_FAKE_FACTOR}x lr",
              "esd_noview_fast": f"ESD, no view word, fake score at {FAST_FAKE_FACTOR}x lr",
              "sds_particles": "SDS, independent runs"}


def arm_tag(obj: str, arm: str) -> str:
    return f"{obj.replace(' ', '-')}/{arm}"


def object_mean(run: Run, arm: str, metric: str) -> np.ndarray:
    """Per-seed mean of a metric over the fidelity objects (for the figures; claims are per object)."""
    return np.mean([run.values(f"{arm_tag(o, arm)}/{metric}") for o in run.params.fidelity_objects], axis=0)


def _grouped(names, value):
    """``{name: value(name)}`` over two or more groups; the bare value when there is one (the smoke profile)."""
    names = list(names)
    return {n: value(n) for n in names} if len(names) > 1 else value(names[0])


def closest_palette_pair() -> tuple[str, str, float]:
    """The two palette colours nearest each other in rgb, and their distance."""
    names = list(v3.COLOURS)
    rgb = {n: np.array(v3.COLOURS[n]) for n in names}
    return min(((a, b, float(np.linalg.norm(rgb[a] - rgb[b]))) for i, a in enumerate(names) for b in names[i + 1:]),
               key=lambda x: x[2])


def palette_margin(particles: int) -> float:
    """The colour spread that one of ``particles`` particles taking the nearest other palette colour adds:
    the std over particles of their mean rgb (as ``scene_metrics``) is sqrt(k - 1) / k * d, d the smallest
    distance between two palette colours (renders of the flat-coloured scenes keep the palette colour)."""
    return float(math.sqrt(particles - 1) / particles * closest_palette_pair()[2])


CHROMA_MARGIN = 0.02
CHROMA_RATIONALE = ("0.02 of the chroma range [0, 1] (five levels of 8-bit colour) is the smallest saturation "
                    "change worth calling a change")
PSNR_MARGIN = 0.5
PSNR_RATIONALE = ("0.5 dB, the smallest PSNR gain customarily reported as an improvement: a 12% change of MSE "
                  "(10^0.05)")
JANUS_MARGIN = 0.05
JANUS_RATIONALE = ("1/16 of a second full front (about 0.8 by voxel3d.janus_score's construction); the head's "
                   "measure moves in steps of about 0.02 (a pixel of eye in a back view), so 0.05 is two to three "
                   "pixels")


# the left-out-able arms each claim reads (a profile that leaves an arm out leaves its claims out)
CLAIM_ARMS = {"cds-fixed-noise-hurts": ("cds_fresh",), "cds-schedule-hurts": ("cds_random", "cds_fresh"),
              "csm-beats-sds": ("csm",), "denoising-term-needed": ("csd",), "csm-beats-csd": ("csm", "csd")}


def runs_claim(p: Params, claim_id: str) -> bool:
    """Whether this profile runs every arm the claim reads."""
    return not set(CLAIM_ARMS.get(claim_id, ())) & set(p.left_out_arms)

# ESD's λ mixes the fake score's predictions with and without the view word: where they differ by less than this
# share of what the prior's do (the camera gap, mean over seeds), λ cannot move the gradient by more than that
# share of the view word's own effect, and ESD against VSD is a fact about the set-up, not a test of ESD
ESD_LIVE_GAP = 0.1


def claims(p: Params) -> tuple[Claim, ...]:
    lo, hi = f"{p.low_guidance:g}", f"{p.high_guidance:g}"
    k = p.particles
    spread = palette_margin(k)
    near_a, near_b, near_d = closest_palette_pair()
    spread_why = (f"one of {k} particles in the nearest other palette colour adds sqrt({k}-1)/{k} x {near_d:.3f} "
                  f"(the closest palette pair, {near_a} and {near_b}) = {spread:.3f} to the colour spread: less "
                  "than that is not a second colour")
    chroma = dict(margin=CHROMA_MARGIN, rationale=CHROMA_RATIONALE, floor=0.0, ceiling=1.0,
                  saturation_tol=CHROMA_MARGIN)
    psnr = dict(margin=PSNR_MARGIN, rationale=PSNR_RATIONALE, saturation_tol=PSNR_MARGIN)
    janus = dict(margin=JANUS_MARGIN, rationale=JANUS_RATIONALE, floor=0.0, saturation_tol=JANUS_MARGIN,
                 region=("<", 0.0))
    last = arm_tag(p.fidelity_objects[-1], "")
    probe = p.janus_probes[0]
    oversaturation_why = ("3-D SDS would inherit the over-saturation of the prior's own samples at high guidance, "
                          "which the 2-D mechanism check measures; where the high-guidance run diverges (below an "
                          "empty render's PSNR, listed under the fidelity figure), its chroma reads a broken grid, "
                          "not a saturated object")
    snr = ("the ratio of the two gradients' signal-to-noise ratios, || E g ||^2 / E || g - E g ||^2; a 10% higher "
           "SNR: less would be matched by a 5% smaller SDS step (the noise's size scales as the square root of its "
           "variance)")
    out = [
        Claim("sds-high-cfg-oversaturates", PROLIFIC, statement=f"SDS at CFG {hi} makes a more saturated object "
              f"(chroma) than SDS at CFG {lo}, per object", a=f"chroma, SDS {hi}", b=f"chroma, SDS {lo}", **chroma,
              paper_figure="ProlificDreamer Fig. 1 / Section 5", paper_value="SDS over-saturates at CFG 100",
              explanation=oversaturation_why, diagnosis="prior-high-cfg-more-chroma"),
        Claim("sds-high-cfg-above-vsd", PROLIFIC, statement=f"...and than VSD at CFG {lo}, per object",
              a=f"chroma, SDS {hi}", b=f"chroma, VSD {lo}", **chroma,
              paper_figure="ProlificDreamer Section 5", paper_value="VSD works at CFG 7.5",
              explanation=oversaturation_why, diagnosis="prior-high-cfg-more-chroma"),
        Claim("prior-high-cfg-more-chroma", None, reference="mechanism check (2-D) for the over-saturation claims",
              statement=f"The prior's own DDIM samples are more saturated at CFG {hi} than at CFG {lo}, per object",
              a=f"chroma of prior samples, CFG {hi}", b=f"chroma of prior samples, CFG {lo}", **chroma,
              explanation="guidance extrapolates the prior's shape more than its colour for a prompt with one sharp "
                          "mode, and samples are clamped to [0, 1] (untested: no run varies the prior's colour "
                          "modes)"),
        Claim("vsd-higher-fidelity", PROLIFIC, statement=f"VSD at CFG {lo} (one particle, as many views per step as "
              f"SDS) reaches a higher PSNR than SDS at CFG {lo}, per object (at convergence)",
              a=f"PSNR (dB), VSD {lo}", b=f"PSNR (dB), SDS {lo}", **psnr,
              paper_figure="ProlificDreamer Table / user study", paper_value="higher fidelity than SDS",
              explanation="low-CFG SDS is not blurry on this prior (one sharp mode per prompt), so VSD has nothing "
                          "to fix; its fake score only adds the noise of its own fit (untested: no run sharpens or "
                          "blurs the prior)"),
        Claim("esd-less-janus-than-vsd", ESD_PAPER, statement=f"Without the view word, ESD (camera guidance "
              f"{p.esd_lambda:g} on the fake score) has a lower Janus measure than VSD (1), per probe, both with the "
              f"fake score trained at {FAST_FAKE_FACTOR}x fake_lr (judged where the fake score's camera gap reaches "
              f"{ESD_LIVE_GAP:.0%} of the prior's)",
              a="Janus, ESD", b="Janus, VSD", **janus, paper_figure="ESD Table 1 (Janus rate)",
              paper_value="fewer Janus artefacts",
              explanation="ESD's λ mixes the fake score's predictions with and without the view word, and even the "
                          "faster fake score hears the view word far less than the prior does (its camera gap), so "
                          "λ moves the gradient little",
              diagnosis=f"{probe}/esd_noview_fast/fake_camera_gap"),
        Claim("vsd-less-janus-than-sds", ESD_PAPER, statement=f"VSD (one particle, fake score at {FAST_FAKE_FACTOR}x "
              "fake_lr) has a lower Janus measure than SDS, both without the view word, per probe",
              a="Janus, VSD", b="Janus, SDS", **janus, paper_figure="ESD Table 1",
              paper_value="SDS is the most mode-collapsed",
              explanation="with one particle VSD holds no distribution over views: its fake score fits the "
                          "particle's own renders, so VSD's gradient is SDS's with a learned baseline, and whatever "
                          "it takes off the front mode stays below the margin",
              diagnosis="vsd-particles-less-janus"),
        Claim("vsd-particles-less-janus", None, reference="diagnosis of vsd-less-janus-than-sds (several particles)",
              statement=f"VSD with {k} particles has a lower Janus measure (mean over particles) than VSD with one, "
              f"both without the view word and with the fake score at {FAST_FAKE_FACTOR}x fake_lr (it then fits the "
              f"renders of all {k}), per probe", a=f"Janus, VSD, {k} particles", b="Janus, VSD, one particle",
              **janus,
              explanation="particles do not spread the views either: the fake score hears the view word far less "
                          "than the prior does (its camera gap, measured on this arm), so it cannot tell a "
                          "particle's back from its front, and every particle inherits the prior's front bias",
              diagnosis=f"{probe}/vsd_noview_particles/fake_camera_gap"),
        Claim("cds-higher-snr", CONSISTENT3D, statement="CDS's image gradient has a higher signal-to-noise ratio "
              "over noise draws than SDS's at the same renders, per timestep", a="SNR of the CDS gradient",
              b="SNR of the SDS gradient", statistic="ratio", region=(">", 1.0), margin=0.1, rationale=snr,
              floor=0.0, paper_figure="Consistent3D Section 3", paper_value="deterministic sampling prior",
              explanation="one ODE step from t carries the same noise at both ends only when the gap is small "
                          "against t, so the advantage fades at large t (untested: no run varies the gap)"),
        Claim("cds-higher-fidelity", CONSISTENT3D, statement=f"CDS reaches a higher PSNR than SDS (CFG {lo}), per "
              "object (at convergence)", a="PSNR (dB), CDS", b=f"PSNR (dB), SDS {lo}", **psnr,
              paper_figure="Consistent3D Table 1", paper_value="higher fidelity than SDS",
              explanation="Consistent3D's fixed noise makes every step push the grid toward the one ODE trajectory "
                          "of that noise, which ties colours to noise patterns",
              diagnosis="cds-fixed-noise-hurts"),
        Claim("cds-fixed-noise-hurts", None, reference="diagnosis of cds-higher-fidelity (ablation of the noise)",
              statement="CDS with a fresh noise each step (Consistent3D's annealed t' kept) reaches a higher PSNR "
              "than with its one fixed noise, per object", a="PSNR (dB), CDS, fresh noise", b="PSNR (dB), CDS",
              **psnr, explanation="the annealed schedule, not the noise, is what holds CDS back: t' falls to small "
                                  "t only at the run's end, so most steps shape colour at coarse noise levels",
              diagnosis="cds-schedule-hurts" if runs_claim(p, "cds-schedule-hurts") else None),
        Claim("cds-schedule-hurts", None, reference="diagnosis of cds-higher-fidelity (ablation of the schedule)",
              statement="CDS with SDS's random t (and fresh noise) reaches a higher PSNR than with the annealed t', "
              "per object", a="PSNR (dB), CDS, random t", b="PSNR (dB), CDS, fresh noise", **psnr,
              explanation="the CDS gradient itself, not its schedule, is what this prior cannot use"),
        Claim("bsd-closer-than-sds", PLACID, statement=f"BSD (classifier scale {p.bsd_scale:g}) is closer to the "
              f"true chroma than SDS at the same guidance scale, per object", a="|chroma - truth|, BSD",
              b=f"|chroma - truth|, SDS at CFG {p.bsd_scale:g}", region=("<", 0.0), margin=CHROMA_MARGIN,
              rationale=CHROMA_RATIONALE, floor=0.0, saturation_tol=CHROMA_MARGIN,
              paper_figure="PlacidDreamer Fig. 5 / Table 2", paper_value="balanced saturation",
              explanation="the reference code's BSD (the classifier term mixed with ε_∅, no noise subtracted) "
                          "pulls colours toward the prior's unconditional mean, not toward the truth: it lands "
                          "closer to the truth only where that mean lies between SDS's colour and the truth's",
              diagnosis="bsd-below-truth"),
        Claim("bsd-below-truth", None, reference="diagnosis of bsd-closer-than-sds",
              statement="BSD's chroma lies below the truth's, per object", a="chroma, BSD", b="chroma, truth",
              region=("<", 0.0), **{**chroma, "saturation_tol": 0.0},
              explanation="BSD's denoising term does not wash colours out on every object: where the prior itself "
                          "over-saturates a colour (a pastel), BSD inherits it"),
        Claim("csm-beats-sds", TV3DG, statement=f"CSM (classifier term at DDIM-inverted noise) reaches a higher "
              f"PSNR than SDS (CFG {lo}), per object (at convergence)", a="PSNR (dB), CSM",
              b=f"PSNR (dB), SDS {lo}", **psnr, paper_figure="TV-3DG Table 1", paper_value="stable, higher quality",
              explanation="the classifier term alone has no denoising term to hold the render near the prior's "
                          "images; SDS is that classifier term plus the denoising term at the same noise",
              diagnosis="denoising-term-needed"),
        Claim("denoising-term-needed", None, reference="diagnosis of csm-beats-sds (ablation)",
              statement=f"SDS (CFG {lo}) reaches a higher PSNR than its classifier term alone (CSD), per object",
              a=f"PSNR (dB), SDS {lo}", b="PSNR (dB), CSD", **psnr,
              explanation="the classifier term alone already carries the prompt's image at this scale"),
        Claim("csm-beats-csd", TV3DG, statement="CSM reaches a higher PSNR than CSD (the classifier term at random "
              "noise), per object (at convergence)", a="PSNR (dB), CSM", b="PSNR (dB), CSD", **psnr,
              paper_figure="TV-3DG ablation", paper_value="inverted noise beats random noise",
              explanation="on some objects CSM's curve stays flat for its first evaluations (the inversion of an "
                          "empty grid's render lands near the unconditional mode) and is still rising at the end",
              diagnosis=f"{last}csm/curve_psnr"),
    ]
    if p.diversity_shape is not None:
        out += [
        Claim("vsd-diverse", PROLIFIC, statement=f"VSD's {k} particles for the colour-free prompt "
              f"'a {p.diversity_shape}' spread their colours beyond one palette colour (colour spread above the "
              "margin)", a="colour spread, VSD particles, colour-free prompt", statistic="value",
              margin=spread, rationale=spread_why, floor=0.0,
              paper_figure="ProlificDreamer Fig. 6 (particles)", paper_value="diverse samples from one prompt",
              explanation="the particles part ways in some seeds and not in others: each keeps the colour mode "
                          "nearest its random start, and with four seeds the spread's variation over seeds keeps the "
                          "interval across the margin",
              diagnosis="vsd-more-diverse-than-sds"),
        Claim("vsd-more-diverse-than-sds", PROLIFIC, statement=f"...and more than {k} independent SDS runs', each "
              f"particle or run on {p.views_per_particle} views a step",
              a="colour spread, VSD particles", b="colour spread, SDS runs", margin=spread, rationale=spread_why,
              paper_figure="ProlificDreamer Section 5", paper_value="SDS is mode-seeking",
              explanation="independent SDS runs settle in one colour mode (their count of distinct colours is "
                          "the diagnosis) while VSD's particles spread; the gap varies over seeds as VSD's spread "
                          "does",
              diagnosis=f"a-{p.diversity_shape}/sds_particles/distinct_colours"),
        ]
    if p.amortised_steps:
        small, large = p.amortised_sizes
        out += [
            Claim("asd-scales", SCALE, statement=f"From {small} to {large} prompts, the amortised generator loses "
                  "less PSNR with ASD than with VSD (at convergence)", a="PSNR drop, ASD", b="PSNR drop, VSD",
                  region=("<", 0.0), margin=PSNR_MARGIN, rationale=PSNR_RATIONALE,
                  paper_figure="ScaleDreamer Fig. 1 / Table 1", paper_value="stable up to 100k prompts",
                  explanation="a smaller drop can come from VSD being better on the small set, so the final "
                              "quality on the large set is the test", diagnosis="asd-above-vsd-at-scale"),
            Claim("asd-above-vsd-at-scale", SCALE, statement=f"On {large} prompts, the ASD generator reaches a "
                  f"higher PSNR (on the first {small} prompts) than the VSD generator (at convergence)",
                  a=f"PSNR (dB), ASD, {large} prompts", b=f"PSNR (dB), VSD, {large} prompts", **psnr,
                  paper_figure="ScaleDreamer Table 1", paper_value="ASD beats VSD on large prompt sets",
                  explanation="VSD's shared fake score keeps up with the generator at this number of prompts"),
        ]
    return tuple(claim for claim in out if runs_claim(p, claim.id))


def evaluate_claims(run: Run) -> list[dict]:
    p = run.params
    c = {claim.id: claim for claim in claims(p)}
    objects, coloured = p.fidelity_objects, p.chroma_objects  # the PSNR claims' objects, the chroma claims'

    def value(obj, arm, metric):
        return np.asarray(run.values(f"{arm_tag(obj, arm)}/{metric}"), float)

    def chroma(arm):
        return _grouped(coloured, lambda o: as_curve(run.values(f"{arm_tag(o, arm)}/curve_saturation"), CURVE_WINDOW))

    def psnr(arm):
        return _grouped(objects, lambda o: as_curve(run.values(f"{arm_tag(o, arm)}/curve_psnr"), CURVE_WINDOW))

    def error(arm):
        """|tail of the chroma curve - the truth's chroma| per seed, converged when the chroma curve is."""
        def one(o):
            chroma_curve = as_curve(run.values(f"{arm_tag(o, arm)}/curve_saturation"), CURVE_WINDOW)
            truth_chroma = np.asarray(run.values(f"{o.replace(' ', '-')}/truth_saturation"), float)
            return derived(np.abs(chroma_curve.values() - truth_chroma), chroma_curve.drift(), CURVE_WINDOW)
        return _grouped(coloured, one)

    def prior(level):
        return _grouped(coloured, lambda o: np.asarray(run.values(f"{o.replace(' ', '-')}/prior/chroma_{level}"),
                                                       float))

    def janus(arm):
        return _grouped(p.janus_probes, lambda q: np.asarray(run.values(f"{q}/{arm}/janus"), float))

    live = esd_probes(run)  # the probes where ESD and VSD differ at all (elsewhere: a fact for the prose)

    def tail(name):
        return as_curve(run.values(name), CURVE_WINDOW)

    def per_t(name):
        values = np.asarray(run.values(f"gradient/{name}"), float)  # (seeds, timesteps)
        columns = {f"t = {t}": values[:, i] for i, t in enumerate(VARIANCE_TIMESTEPS)}
        return _grouped(columns, columns.get)

    ceiling = _grouped(objects, lambda o: value(o, "reconstruction", "psnr"))  # the PSNR claims' room to move
    truth = _grouped(coloured, lambda o: np.asarray(run.values(f"{o.replace(' ', '-')}/truth_saturation"), float))
    diversity = f"a-{p.diversity_shape}"
    results = [
        c["sds-high-cfg-oversaturates"].evaluate(chroma("sds_high"), chroma("sds_low")),
        c["sds-high-cfg-above-vsd"].evaluate(chroma("sds_high"), chroma("vsd")),
        c["prior-high-cfg-more-chroma"].evaluate(prior("high"), prior("low")),
        c["vsd-higher-fidelity"].evaluate(psnr("vsd"), psnr("sds_low"), ceiling=ceiling),
        *([c["esd-less-janus-than-vsd"].evaluate(
            _grouped(live, lambda q: np.asarray(run.values(f"{q}/esd_noview_fast/janus"), float)),
            _grouped(live, lambda q: np.asarray(run.values(f"{q}/vsd_noview_fast/janus"), float)))] if live else []),
        c["vsd-less-janus-than-sds"].evaluate(janus("vsd_noview_fast"), janus("sds_noview")),
        c["vsd-particles-less-janus"].evaluate(janus("vsd_noview_particles"), janus("vsd_noview_fast")),
        c["cds-higher-snr"].evaluate(per_t("snr_cds"), per_t("snr_sds")),
        c["cds-higher-fidelity"].evaluate(psnr("cds"), psnr("sds_low"), ceiling=ceiling),
    ]
    optional = {  # claims whose arms a profile may leave out
        "cds-fixed-noise-hurts": lambda: (psnr("cds_fresh"), psnr("cds")),
        "cds-schedule-hurts": lambda: (psnr("cds_random"), psnr("cds_fresh")),
    }
    results += [c[cid].evaluate(*arms(), ceiling=ceiling) for cid, arms in optional.items() if cid in c]
    results += [c["bsd-closer-than-sds"].evaluate(error("bsd"), error("sds_bsd")),
                c["bsd-below-truth"].evaluate(chroma("bsd"), truth)]
    optional = {"csm-beats-sds": lambda: (psnr("csm"), psnr("sds_low")),
                "denoising-term-needed": lambda: (psnr("sds_low"), psnr("csd")),
                "csm-beats-csd": lambda: (psnr("csm"), psnr("csd"))}
    results += [c[cid].evaluate(*arms(), ceiling=ceiling) for cid, arms in optional.items() if cid in c]
    if p.diversity_shape is not None:
        results += [c["vsd-diverse"].evaluate(run.values(f"{diversity}/vsd_particles/colour_spread")),
                    c["vsd-more-diverse-than-sds"].evaluate(run.values(f"{diversity}/vsd_particles/colour_spread"),
                                                            run.values(f"{diversity}/sds_particles/colour_spread"))]
    if p.amortised_steps:
        small, large = p.amortised_sizes

        def drop(kind):
            """The drop: tail(small set) - tail(large set) per seed; converged only if both curves are."""
            return curve_difference(run.values(f"amortised/{kind}-{small}/curve_psnr"),
                                    run.values(f"amortised/{kind}-{large}/curve_psnr"), CURVE_WINDOW)

        results += [c["asd-scales"].evaluate(drop("asd"), drop("vsd")),
                    c["asd-above-vsd-at-scale"].evaluate(tail(f"amortised/asd-{large}/curve_psnr"),
                                                         tail(f"amortised/vsd-{large}/curve_psnr"))]
    return results


def camera_gap_share(run: Run, probe: str, arm: str = "esd_noview_fast") -> float:
    """The fake score's camera gap as a share of the prior's, mean over seeds."""
    return float(np.mean(np.asarray(run.values(f"{probe}/{arm}/fake_camera_gap"))
                         / np.asarray(run.values(f"{probe}/{arm}/prior_camera_gap"))))


def esd_probes(run: Run) -> list[str]:
    """The Janus probes on which ESD's mechanism can act: the fake score (ESD's, at 10x lr) hears the view word at
    least ``ESD_LIVE_GAP`` as much as the prior does. Elsewhere the summary states the measured share instead of a
    claim whose statistic the set-up holds at 0."""
    return [q for q in run.params.janus_probes if camera_gap_share(run, q) >= ESD_LIVE_GAP]


def record_health(run: Run) -> None:
    """The test-bed health rows: the grid and renderer against the truth, the prior's colour and view word."""
    p = run.params
    for obj in p.fidelity_objects:
        key, tag = obj.replace(" ", "-"), arm_tag(obj, "reconstruction")
        run.health(f"grid + renderer, {obj} (reconstruction)", "PSNR (dB) at the turntable views", f"{tag}/psnr",
                   lower_is_better=False, references={"start (random grid)": f"{tag}/psnr_start",
                                                      "empty render": f"{key}/psnr_empty"},
                   note="the ceiling of every PSNR claim on this object; an arm below the empty render made "
                        "something worse than nothing")
        run.health(f"grid + renderer, {obj} (reconstruction)", "relative PSNR change, last window vs the one before",
                   f"{tag}/psnr_drift", lower_is_better=True, references={"convergence tolerance": 0.02},
                   note="above the tolerance, the ceiling itself is still rising")
    for obj in p.chroma_objects:
        key = obj.replace(" ", "-")
        run.health(f"prior, '{obj}'", f"chroma of its samples at CFG {p.low_guidance:g}", f"{key}/prior/chroma_low",
                   lower_is_better=False, references={"truth": f"{key}/truth_saturation",
                                                      f"CFG {p.high_guidance:g}": f"{key}/prior/chroma_high",
                                                      "maximum": 1.0},
                   note="should sit near the truth (far above it, the prior itself over-saturates this colour); "
                        "the gap to the maximum is the room over-saturation has")
    for probe in p.janus_probes:
        run.health(f"prior's view words, {probe}", "Janus measure of SDS with the view word", f"{probe}/sds/janus",
                   lower_is_better=True, references={"truth": 0.0, "SDS without the view word":
                                                     f"{probe}/sds_noview/janus"},
                   note="the view word removes Janus when the prior has learned it; dropping it makes the problem")


def glue_values(run: Run, bed: Bed) -> dict[str, float]:
    """The numbers the chapter's prose quotes (glued into the page, never typed): parameters and the share of the
    prior's training views that landed within 45 degrees of the front."""
    p = run.params
    out: dict[str, float] = {name: int(getattr(p, name)) for name in
                             ("resolution", "grid_size", "eval_views", "amortised_grid", "iterations", "particles",
                              "views_per_particle")}
    out.update({name: float(getattr(p, name)) for name in
                ("front_share", "colour_dropout", "view_dropout", "label_dropout", "camera_dropout")})
    out["front_landed"] = float((v3.view_of(bed.azimuths.flatten()) == 0).float().mean())
    return out


def tables_markdown(run: Run) -> str:
    """Per-method tables of PSNR, SSIM and chroma (per object), Janus (per probe) and the amortised PSNR."""
    p = run.params
    lines = [f"Over {len(run.seeds)} seeds (profile `{run.profile}`), mean ± std. PSNR and chroma are the means of "
             f"the last {CURVE_WINDOW} evaluations of each optimisation curve (what the claims read); chroma is the "
             "mean max − min of the rgb as displayed over white, over the object's pixels."]
    for obj in dict.fromkeys(p.fidelity_objects + p.chroma_objects):
        key = obj.replace(" ", "-")
        truth = run.values(f"{key}/truth_saturation") if obj in p.chroma_objects else None
        truth_text = "" if truth is None else f"true chroma {mean_std_text(truth)}; "
        lines += ["", f"**{obj}** ({truth_text}an empty render scores {mean_std_text(run.values(f'{key}/psnr_empty'))} "
                  "dB)", "", "| method | PSNR (dB), curve tail | SSIM | chroma | chroma − truth |",
                  "|---|---|---|---|---|"]
        for arm in object_arms(p, obj):
            tag = arm_tag(obj, arm)
            tail = [float(np.mean(c[-CURVE_WINDOW:])) for c in run.values(f"{tag}/curve_psnr")]
            chroma = [float(np.mean(c[-CURVE_WINDOW:])) for c in run.values(f"{tag}/curve_saturation")]
            signed = "—" if truth is None else mean_std_text(np.asarray(chroma) - np.asarray(truth))
            lines.append(f"| {ARM_LABELS[arm]} | {mean_std_text(tail)} | {mean_std_text(run.values(f'{tag}/ssim'))} | "
                         f"{mean_std_text(chroma)} | {signed} |")
    probes = p.janus_probes
    lines += ["", "| method | Janus, " + " | Janus, ".join(probes) + " |", "|---|" + "---|" * len(probes)]
    for arm in JANUS_ARMS:
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(mean_std_text(run.values(f'{probe}/{arm}/janus'))
                                                         for probe in probes) + " |")
    lines += ["", "| fake score at the end of the run | camera gap, " + " | camera gap, ".join(probes) + " |",
              "|---|" + "---|" * len(probes)]  # E||eps(view) - eps(no view)|| / E||eps(no view)||
    for arm in CAMERA_GAP_ARMS:
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(mean_std_text(run.values(f'{probe}/{arm}/fake_camera_gap'))
                                                         for probe in probes) + " |")
    lines.append("| the prior (reference) | " + " | ".join(
        mean_std_text(run.values(f'{probe}/vsd_noview_fast/prior_camera_gap')) for probe in probes) + " |")
    if p.diversity_shape is not None:
        key = f"a-{p.diversity_shape}"
        lines += ["", f"| '{p.diversity_shape}' without a colour ({p.particles} particles or runs) | colour spread | "
                  "distinct palette colours |", "|---|---|---|"]
        for arm in DIVERSITY_ARMS:
            lines.append(f"| {ARM_LABELS[arm]} | {mean_std_text(run.values(f'{key}/{arm}/colour_spread'))} | "
                         f"{mean_std_text(run.values(f'{key}/{arm}/distinct_colours'))} |")
    if not p.amortised_steps:
        return "\n".join(lines)
    small, large = p.amortised_sizes
    lines += ["", f"| amortised generator | PSNR, {small} prompts | PSNR, {large} prompts |", "|---|---|---|"]
    for kind in AMORTISED_ARMS:
        tails = {n: [float(np.mean(c[-CURVE_WINDOW:])) for c in run.values(f"amortised/{kind}-{n}/curve_psnr")]
                 for n in (small, large)}
        lines.append(f"| {kind.upper()} | {mean_std_text(tails[small])} | {mean_std_text(tails[large])} |")
    return "\n".join(lines)


def summary_markdown(run: Run, results: list[dict]) -> str:
    """What the verdicts say, generated from the results (so the page reads right whatever the outcome)."""
    r = {x["id"]: x for x in results}

    def v(cid):
        if cid not in r:
            return f"not run at profile `{run.profile}` (its arms are left out)"
        x = r[cid]
        text = f"**{verdict_text(x)}**"
        if x.get("groups"):
            text += " (" + "; ".join(f"{g}: {verdict_text(y)}" for g, y in x["groups"].items()) + ")"
        return text

    p = run.params
    lo, hi = f"{p.low_guidance:g}", f"{p.high_guidance:g}"
    return "\n".join([
        f"- **Guidance.** SDS at CFG {hi} more saturated than at CFG {lo}: {v('sds-high-cfg-oversaturates')}; "
        f"than VSD: {v('sds-high-cfg-above-vsd')}. The prior's own samples at CFG {hi} more saturated than at "
        f"{lo}: {v('prior-high-cfg-more-chroma')}.",
        f"- **VSD.** Higher PSNR than low-guidance SDS: {v('vsd-higher-fidelity')}. " + (
            f"Particles of the colour-free prompt spread beyond one colour: {v('vsd-diverse')}; more than "
            f"independent SDS runs: {v('vsd-more-diverse-than-sds')}." if p.diversity_shape is not None else
            f"Diversity (particles of a colour-free prompt) is not run at profile `{run.profile}`, to hold its time "
            "budget (the `gpu` profile runs it)."),
        f"- **Janus** (no view word). {esd_text(run, r)} VSD below SDS: {v('vsd-less-janus-than-sds')}; with "
        f"{p.particles} particles: {v('vsd-particles-less-janus')}.",
        f"- **CDS.** Higher gradient signal-to-noise ratio: {v('cds-higher-snr')}; higher PSNR than SDS: "
        f"{v('cds-higher-fidelity')}; a fresh noise each step above the fixed noise: {v('cds-fixed-noise-hurts')}; "
        f"SDS's random t above the annealed t': {v('cds-schedule-hurts')}.",
        f"- **BSD.** Closer to the true chroma than SDS at the same scale: {v('bsd-closer-than-sds')}; its chroma "
        f"below the truth's: {v('bsd-below-truth')}.",
        f"- **CSM.** Above SDS: {v('csm-beats-sds')}; SDS above its classifier term alone: "
        f"{v('denoising-term-needed')}; CSM above CSD: {v('csm-beats-csd')}.",
        (f"- **ASD.** Smaller PSNR drop than VSD from {p.amortised_sizes[0]} to {p.amortised_sizes[1]} prompts: "
         f"{v('asd-scales')}; higher PSNR than VSD on {p.amortised_sizes[1]} prompts: "
         f"{v('asd-above-vsd-at-scale')}." if p.amortised_steps else
         f"- **ASD.** Not run at profile `{run.profile}`: its generators need more steps to converge than this "
         "profile's budget holds (the `gpu` profile runs them)."),
    ])


def scope_markdown(run: Run) -> str:
    """What this profile runs, and what it leaves out to hold its time budget (the `gpu` profile runs it all)."""
    p = run.params
    out = [f"At profile `{run.profile}`: the PSNR claims on {', '.join(p.fidelity_objects)}; the chroma claims on "
           f"{', '.join(p.chroma_objects)}; the Janus claims on {', '.join(p.janus_probes)}."]
    left = []
    if p.left_out_arms:
        gone = [cid for cid in CLAIM_ARMS if not runs_claim(p, cid)]
        left.append(f"the arms {', '.join(ARM_LABELS[a] for a in p.left_out_arms)} (with the claims "
                    f"{', '.join(gone)})")
    if p.diversity_shape is None:
        left.append("the diversity runs (VSD particles of a colour-free prompt)")
    if not p.amortised_steps:
        left.append("the amortised generators (ASD)")
    if left:
        out.append("Left out to hold the profile's time budget (arms are dropped, never steps): "
                   + " and ".join(left) + ".")
    return " ".join(out)


def esd_text(run: Run, by_id: dict) -> str:
    """ESD's sentence of the summary: its verdict on the probes where ESD and VSD differ, and for the others the
    set-up fact (the same Janus measure in every seed) with the fake score's camera gap against the prior's."""
    live = esd_probes(run)
    same = [q for q in run.params.janus_probes if q not in live]
    parts = []
    if live:
        x = by_id["esd-less-janus-than-vsd"]
        parts.append(f"ESD below VSD ({FAST_FAKE_FACTOR}x fake score lr): **{verdict_text(x)}**"
                     + (" (" + "; ".join(f"{g}: {verdict_text(y)}" for g, y in x["groups"].items()) + ")"
                        if x.get("groups") else f" (on the {live[0]})") + ".")
    for q in same:
        diff = np.asarray(run.values(f"{q}/esd_noview_fast/janus")) - np.asarray(run.values(f"{q}/vsd_noview_fast/janus"))
        parts.append(f"On the {q}, ESD against VSD is not judged: the fake score's camera gap is "
                     f"{camera_gap_share(run, q):.1%} of the prior's (below {ESD_LIVE_GAP:.0%}), so λ has almost "
                     f"nothing to mix; ESD's Janus minus VSD's is {mean_std_text(diff)} over seeds.")
    return " ".join(parts)


def fidelity_caption(run: Run, tol: float = 0.02) -> str:
    """The sentence under the fidelity figure: how many curves are still moving at the end, and which arms end
    below what an empty render scores (diverged: their PSNR and chroma describe a broken grid)."""
    p = run.params
    pairs = [(obj, arm) for obj in dict.fromkeys(p.fidelity_objects + p.chroma_objects) for arm in object_arms(p, obj)]
    moving = [(obj, arm) for obj, arm in pairs if obj in p.fidelity_objects and arm in PSNR_ARMS
              and any(relative_change(c, CURVE_WINDOW) > tol for c in run.values(f"{arm_tag(obj, arm)}/curve_psnr"))]
    total = len(p.fidelity_objects) * len([a for a in PSNR_ARMS if a not in p.left_out_arms])
    text = (f"Left: one point per seed and method (averaged over {', '.join(p.fidelity_objects)}). Right: PSNR along "
            f"the optimisation, mean ± std over seeds. In {len(moving)} of {total} object-method pairs at least one "
            f"seed's curve still moves by more than {tol:.0%} between its last {CURVE_WINDOW} evaluations and the "
            f"{CURVE_WINDOW} before")
    text += (": " + ", ".join(f"{ARM_LABELS[a]} on the {o}" for o, a in moving) + "." if moving else ".")
    empty = {o: np.asarray(run.values(f"{o.replace(' ', '-')}/psnr_empty"), float) for o, _ in pairs}
    diverged = [(o, a) for o, a in pairs if np.mean([tail_mean(c, CURVE_WINDOW) for c in
                                                     run.values(f"{arm_tag(o, a)}/curve_psnr")]) < empty[o].mean()]
    return text + (" Below the PSNR of an empty render (diverged, so their chroma reads a broken grid): "
                   + ", ".join(f"{ARM_LABELS[a]} on the {o}" for o, a in diverged) + "." if diverged else
                   " No arm ends below the PSNR of an empty render.")
