"""Chapter parameters: one pydantic model per chapter, with a preset per profile.

A chapter subclasses :class:`ChapterParams`, adds its own fields (with bounds)
and fills ``PRESETS``; the notebook builds its parameters with
``Params.for_profile(profile, **overrides)``. Unknown keys, wrong types and
out-of-range values raise :class:`ParameterError` before any compute, naming
the parameter and what it accepts.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distillbook.core.profiles import PROFILES, resolve_profile

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
RUN_SETTINGS = frozenset({"device", "threads", "workers", "tracking"})


class ParameterError(ValueError):
    """A parameter failed validation; the message names it and what is allowed."""


class ChapterParams(BaseModel):
    """Parameters every chapter shares. Chapters add theirs in a subclass."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    profile: Literal["smoke", "cpu", "gpu"] = Field(description="run size: smoke (seconds), cpu (minutes on 2 cores), gpu (one H200)")
    seeds: list[int] = Field(min_length=1, description="independent seeds; verdicts need at least 3")
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N")
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads (1 keeps shared 2-core machines fast)")
    workers: int | Literal["auto"] = Field("auto", description="processes running seeds side by side where a chapter "
                                           "allows it (auto: one per core up to the seeds, 1 on CUDA or with tracking); "
                                           "the numbers do not depend on it")
    tracking: Literal["off", "offline", "online"] = Field("off", description="wandb tracking")
    precision: Literal["fp32", "tf32", "bf16"] = Field(
        "fp32", description="arithmetic: fp32, tf32 (CUDA matmuls and convolutions) or bf16 (losses autocast); "
        "changes the numbers, so off the preset it makes an experiment")

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")
        return value

    @field_validator("workers")
    @classmethod
    def _positive_workers(cls, value):
        if value != "auto" and value < 1:
            raise ValueError("must be 'auto' or an integer >= 1")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("seeds must be distinct")
        if any(s < 0 for s in value):
            raise ValueError("seeds must be non-negative")
        return value

    @classmethod
    def for_profile(cls, profile: str, /, **overrides: Any):
        """The preset of ``profile`` (``auto``: gpu with CUDA, else cpu) with ``overrides`` on top.

        ``None`` values in ``overrides`` mean "keep the preset", so a notebook's
        parameters cell can default its knobs to ``None``.
        """
        profile = resolve_profile(profile)
        missing = set(PROFILES) - set(cls.PRESETS)
        if missing:
            raise TypeError(f"{cls.__name__}.PRESETS lacks profiles {sorted(missing)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if "profile" in given:
            raise ParameterError("'profile' is chosen by the profile argument (--profile), not by an override")
        unknown = sorted(set(given) - set(cls.model_fields) - {"profile"})
        if unknown:
            raise ParameterError(
                f"unknown parameter(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
                f"allowed: {', '.join(sorted(set(cls.model_fields) - {'profile'}))}"
            )
        values = {**cls.PRESETS[profile], **given, "profile": profile}
        try:
            return cls(**values)
        except ValidationError as err:
            raise ParameterError(_describe(cls, err)) from None

    def overrides_from_preset(self) -> dict[str, Any]:
        """The experiment's fields that differ from this profile's preset (provenance records them).

        Run settings (``RUN_SETTINGS``: device, threads, workers, tracking) change where and how a run
        executes, not what it measures, so they are not overrides.
        """
        preset = type(self).for_profile(self.profile)
        return {k: v for k, v in self.model_dump().items() if k not in RUN_SETTINGS and getattr(preset, k) != v}


def _allowed(field) -> str:
    bits = [str(field.annotation).replace("typing.", "")]
    for m in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >=")):
            if getattr(m, attr, None) is not None:
                bits.append(f"{sym} {getattr(m, attr)}")
    if field.description:
        bits.append(f"({field.description})")
    return " ".join(bits)


def _describe(cls, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        if not e["loc"]:  # a rule across fields: its message names them
            lines.append(e["msg"].removeprefix("Value error, "))
            continue
        name = ".".join(str(p) for p in e["loc"])
        top = str(e["loc"][0])
        allowed = _allowed(cls.model_fields[top]) if top in cls.model_fields else ""
        got = e.get("input")
        lines.append(f"parameter {name!r}: {e['msg']} (got {got!r}); allowed: {allowed}")
    return f"invalid parameters for {cls.__name__}:\n  " + "\n  ".join(lines)
