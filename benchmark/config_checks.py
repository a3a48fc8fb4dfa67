"""Value checks shared by the configuration sections (``benchmark.config`` and the
sections that live beside what they configure); each raises ``ValueError`` naming the key."""

from __future__ import annotations

from typing import Any


def positive(obj: Any, prefix: str, *names: str) -> None:
    """Each of ``obj``'s fields ``names`` is > 0; the message names ``prefix.name``."""
    for name in names:
        value = getattr(obj, name)
        if not value > 0:  # written so, NaN fails too
            raise ValueError(f"{prefix}.{name} must be > 0, got {value}")


def non_negative(obj: Any, prefix: str, *names: str) -> None:
    """Each of ``obj``'s fields ``names`` is >= 0 (seeds, weight decays)."""
    for name in names:
        value = getattr(obj, name)
        if not value >= 0:
            raise ValueError(f"{prefix}.{name} must be >= 0, got {value}")


def check_precision(section: str, value: str) -> None:
    """``section.precision`` is one of the mixed-precision settings."""
    if value not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"{section}.precision must be bf16, fp16 or fp32, got {value!r}")
