"""The bad-input suite's table: ``@case`` registers one bad input (a category, the argv it
builds, the words its error must hold); the category modules fill it, test_bad_inputs runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bad_input_support import TINY, copy_tree

# Smaller still than TINY: 16 px, 8 phantom patients; the stage templates use it too.
T = [*TINY, "--set", "data.size=16", "--set", "data.phantom_patients=8"]
SECRET = "hunter2"
PG_DOWN = f"postgresql://u:{SECRET}@127.0.0.1:1/db"  # port 1: refused at once


# ----------------------------------------------------------------------------- the table


@dataclass
class Ctx:
    """What a case builds its input in: a fresh ``tmp`` folder and ``out`` beneath it."""

    tmp: Path
    request: pytest.FixtureRequest

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def stages(self) -> Path:
        """A private copy of the finished stage folders of the tiny preset (``stage_template``)
        as ``out``: data, oracle synthetic set with its fidelity encoder, unconditional and
        semantic generators with their synthetic sets, and the MLflow store."""
        return copy_tree(self.request.getfixturevalue("stage_template"), self.out)


@dataclass
class Case:
    category: str
    build: Callable[[Ctx], list]  # returns the argv
    expect: tuple[str, ...]  # substrings of stderr: the culprit and the problem
    rc: int = 2
    no_out: bool = False  # the output folder must not even exist
    check: Callable[[Ctx], None] | None = None  # extra assertions after the run
    marks: tuple = field(default_factory=tuple)


CASES: dict[str, Case] = {}


def case(name: str, category: str, *expect: str, **kwargs):
    """Register the decorated ``build(ctx) -> argv`` as bad input ``name``; ``expect``: the
    substrings the error message must hold. A config error never creates the output folder."""
    kwargs.setdefault("no_out", category == "configs")

    def register(build: Callable[[Ctx], list]) -> Callable[[Ctx], list]:
        assert name not in CASES, name
        CASES[name] = Case(category, build, expect, **kwargs)
        return build

    return register


def run_cell(ctx: Ctx, *sets: str) -> list:
    """``run`` of the real-only seg cell with extra ``--set`` overrides."""
    extra = [a for s in sets for a in ("--set", s)]
    return ["run", *T, *extra, "--task", "seg", "--out", ctx.out]
