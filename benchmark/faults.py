"""Named fault points: the reliability suite's way to crash a sweep at an exact place.

Production code calls :func:`point` at the places where a crash is most dangerous (inside a
stage write, between MLflow calls, between logging a cell and telling the queue). Normally
this is one dictionary lookup. With ``ECHOSYNTH_FAULT`` set, e.g.::

    ECHOSYNTH_FAULT="stage.cells.written@2"     # SIGKILL on the 2nd time this point is hit
    ECHOSYNTH_FAULT="train.loss=nan"            # make the 1st training loss NaN

the process kills itself with SIGKILL (no ``finally``, no atexit: exactly what the OOM killer
or a lost machine does) or corrupts a value, so a test can prove that every such crash is
survived by a resume. Several faults are separated by commas; hits are counted per process.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

ENV = "ECHOSYNTH_FAULT"


@dataclass
class _Fault:
    name: str
    nth: int
    action: str  # "kill" | "nan"
    hits: int = 0


def _parse(text: str) -> dict[str, _Fault]:
    faults = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        spec, _, action = item.partition("=")
        name, _, nth = spec.partition("@")
        action = action or "kill"
        if action not in ("kill", "nan") or (nth and not nth.isdigit()):
            raise ValueError(f"{ENV}: cannot parse {item!r} (expected point[@n][=kill|nan])")
        faults[name] = _Fault(name, int(nth or 1), action)
    return faults


_FAULTS: dict[str, _Fault] | None = None


def _faults() -> dict[str, _Fault]:
    global _FAULTS
    if _FAULTS is None:
        _FAULTS = _parse(os.environ.get(ENV, ""))
    return _FAULTS


def _due(name: str, action: str) -> bool:
    fault = _faults().get(name)
    if fault is None or fault.action != action:
        return False
    fault.hits += 1
    return fault.hits == fault.nth


def point(name: str) -> None:
    """Die here with SIGKILL if ``ECHOSYNTH_FAULT`` names this point (at its n-th hit)."""
    if _FAULTS == {}:  # the common case: nothing configured
        return
    if _due(name, "kill"):
        os.kill(os.getpid(), signal.SIGKILL)


def poisoned(name: str) -> bool:
    """True if ``ECHOSYNTH_FAULT`` asks for ``name=nan`` (at its n-th hit): the caller then
    turns its value into NaN, as a diverged model would."""
    if _FAULTS == {}:
        return False
    return _due(name, "nan")
