"""The run profiles: ``smoke`` (seconds, CI), ``cpu`` (minutes on 2 cores), ``gpu`` (one H200), and ``auto``."""

from __future__ import annotations

PROFILES = ("smoke", "cpu", "gpu")


def check_profile(profile: str, allow_auto: bool = False) -> str:
    allowed = PROFILES + (("auto",) if allow_auto else ())
    if profile not in allowed:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(allowed)}")
    return profile


def resolve_profile(profile: str) -> str:
    """``auto`` becomes ``gpu`` when CUDA is available, else ``cpu``."""
    check_profile(profile, allow_auto=True)
    if profile == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return profile
