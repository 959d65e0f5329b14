"""Parameter validation: unknown keys, wrong types and out-of-range values fail before compute, by name."""

import pytest

from distillbook.core import catalog
from distillbook.core.params import ParameterError
from distillbook.core.pipeline import params_class
from distillbook.core.profiles import PROFILES, resolve_profile

Params = params_class("foundations")


@pytest.mark.parametrize("chapter", [c.id for c in catalog.written_chapters()])
@pytest.mark.parametrize("profile", PROFILES)
def test_every_preset_validates(chapter, profile):
    assert params_class(chapter).for_profile(profile).profile == profile


def test_cpu_and_gpu_presets_have_enough_seeds_for_verdicts():
    from distillbook.core.claims import MIN_SEEDS

    for chapter in catalog.written_chapters():
        for profile in ("cpu", "gpu"):
            assert len(params_class(chapter.id).for_profile(profile).seeds) >= MIN_SEEDS


def test_unknown_key_is_named_with_the_allowed_ones():
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) 'temprature'.*allowed: .*temperatures"):
        Params.for_profile("cpu", temprature=[1.0])


def test_wrong_type_is_named():
    with pytest.raises(ParameterError, match=r"parameter 'small_steps'.*got 'many'"):
        Params.for_profile("cpu", small_steps="many")


def test_out_of_range_is_named_with_bounds():
    with pytest.raises(ParameterError, match=r"parameter 'alpha'.*less than or equal to 1.*<= 1"):
        Params.for_profile("cpu", alpha=1.5)


def test_profile_is_not_an_override():
    with pytest.raises(ParameterError, match="'profile' is chosen by the profile argument"):
        Params.for_profile("smoke", profile="gpu")


def test_chapter_rules_are_checked():
    with pytest.raises(ParameterError, match="temperatures"):
        Params.for_profile("cpu", temperatures=[2.0, 4.0])
    with pytest.raises(ParameterError, match=r"mnist_temperature \(20\) must be one of temperatures"):
        Params.for_profile("cpu", temperatures=[1.0, 2.0, 4.0])
    with pytest.raises(ParameterError, match="eval_every"):
        Params.for_profile("smoke", eval_every=1000)
    with pytest.raises(ParameterError, match="seeds"):
        Params.for_profile("cpu", seeds=[1, 1, 2])
    with pytest.raises(ParameterError, match="device"):
        Params.for_profile("cpu", device="tpu")


def test_unknown_profile_and_chapter():
    with pytest.raises(ValueError, match=r"unknown profile 'big'; allowed: smoke, cpu, gpu, auto"):
        Params.for_profile("big")
    with pytest.raises(ValueError, match="unknown chapter 'nope'; known chapters: foundations"):
        catalog.chapter("nope")


def test_none_keeps_the_preset_and_overrides_are_recorded():
    params = Params.for_profile("cpu", seeds=None, small_steps=300)
    assert params.seeds == Params.PRESETS["cpu"]["seeds"]
    assert params.overrides_from_preset() == {"small_steps": 300}


def test_auto_profile(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile("auto") == "gpu"


def test_params_are_frozen():
    params = Params.for_profile("smoke")
    with pytest.raises(Exception):
        params.alpha = 0.1
