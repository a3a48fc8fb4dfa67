"""The benchmark's scientific axes, the grid cell, the one canonicalisation rule, and the
grid's configuration section (``GridConfig``, its ``also`` blocks).

A :class:`GridCell` names one downstream run. Many raw combinations of the axes cannot
differ (ratio 0 uses no generator, an unconditional generator ignores the prompt, ...);
:func:`canonicalize` maps each of them to a single representative so that nothing is
trained twice and every table row means one thing.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    """How the synthetic images of a cell are made."""

    NONE = "none"  # real only
    UNCONDITIONAL = "unconditional"
    TEXT = "text"
    SEMANTIC = "semantic"  # mask only, SDM-like
    HYBRID = "hybrid"  # text + mask
    ORACLE = "oracle"  # fresh simulator patients: the upper-bound control
    CORRUPTED = "corrupted"  # real images with another image's label map: the lower-bound control


class Protocol(StrEnum):
    MIX = "mix"  # real ∪ synthetic
    PRETRAIN = "pretrain"  # synthetic, then a fresh fine-tune on real
    SYNTHETIC_ONLY = "synthetic_only"


class Task(StrEnum):
    SEG = "seg"  # 4-class segmentation
    VLSEG = "vlseg"  # prompted binary segmentation per structure
    CLS = "cls"  # ED vs ES classification


class Prompt(StrEnum):
    """SB's prompt kinds: P0 (empty) to P7 (structure, view, phase, sex, age, quality, shape)."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"
    P5 = "P5"
    P6 = "P6"
    P7 = "P7"

    @property
    def level(self) -> int:
        return int(self.value[1])


# Modes whose generator reads a prompt; the others are prompt-free.
PROMPTED_MODES = frozenset({Mode.TEXT, Mode.HYBRID})
# Modes whose images come from a trained diffusion model; the others are real only and the
# simulator-based controls. Every generator's ``trains`` agrees (tested).
TRAINED_MODES = frozenset({Mode.UNCONDITIONAL, Mode.TEXT, Mode.SEMANTIC, Mode.HYBRID})
# Tasks whose model reads a prompt.
PROMPTED_TASKS = frozenset({Task.VLSEG})


@dataclass(frozen=True)
class GridCell:
    """One point of the grid. ``prompt`` is ``None`` when neither generator nor task reads one."""

    task: Task
    mode: Mode
    prompt: Prompt | None
    ratio: float
    protocol: Protocol
    real_fraction: float
    seed: int

    def __post_init__(self) -> None:
        # Checked whenever a cell is made (config, --ratio, a parsed key), before any work.
        if not self.ratio >= 0:
            raise ValueError(f"ratio must be >= 0, got {self.ratio}")
        if not 0 < self.real_fraction <= 1:
            raise ValueError(f"real fraction must be in (0, 1], got {self.real_fraction}")

    def key(self) -> str:
        """A readable, file-name-safe identifier that :func:`parse_key` inverts.

        Example: ``seg-unconditional-P_-r0.5-mix-f1-s0``.
        """
        prompt = self.prompt.value if self.prompt is not None else "P_"
        return (
            f"{self.task.value}-{self.mode.value}-{prompt}-r{_num(self.ratio)}-"
            f"{self.protocol.value}-f{_num(self.real_fraction)}-s{self.seed}"
        )

    @property
    def uses_generator(self) -> bool:
        return self.mode is not Mode.NONE


_KEY_RE = re.compile(
    r"^(?P<task>[a-z]+)-(?P<mode>[a-z]+)-(?P<prompt>P[0-7_])-r(?P<ratio>[0-9.e+-]+)-"
    r"(?P<protocol>[a-z_]+)-f(?P<fraction>[0-9.e+-]+)-s(?P<seed>-?[0-9]+)$"
)


def _num(x: float) -> str:
    """Shortest exact text of a float: 1.0 -> '1', 0.25 -> '0.25'."""
    return repr(float(x)).removesuffix(".0")


def parse_key(key: str) -> GridCell:
    """Invert :meth:`GridCell.key`; raises ``ValueError`` naming the key if it is malformed."""
    m = _KEY_RE.match(key)
    if not m:
        raise ValueError(f"not a cell key: {key!r}")
    try:
        return GridCell(
            task=Task(m["task"]),
            mode=Mode(m["mode"]),
            prompt=None if m["prompt"] == "P_" else Prompt(m["prompt"]),
            ratio=float(m["ratio"]),
            protocol=Protocol(m["protocol"]),
            real_fraction=float(m["fraction"]),
            seed=int(m["seed"]),
        )
    except ValueError as exc:
        raise ValueError(f"not a cell key: {key!r} ({exc})") from None


def canonicalize(cell: GridCell) -> GridCell:
    """Collapse a cell onto the representative of every cell that cannot differ from it.

    Rules, in order:
    - ``mode none`` or ``ratio 0`` means no synthetic data: mode ``none``, ratio 0,
      protocol ``mix`` (pretraining on nothing or training on no synthetic image is the
      real-only baseline).
    - ``synthetic_only`` does not use real training images, so its ratio is irrelevant: 1.
    - The prompt matters only if the generator or the task reads it.
    """
    mode, ratio, protocol, prompt = cell.mode, cell.ratio, cell.protocol, cell.prompt
    if mode is Mode.NONE or ratio == 0:
        mode, ratio, protocol = Mode.NONE, 0.0, Protocol.MIX
    elif protocol is Protocol.SYNTHETIC_ONLY:
        ratio = 1.0
    if mode not in PROMPTED_MODES and cell.task not in PROMPTED_TASKS:
        prompt = None
    elif prompt is None:
        prompt = Prompt.P1
    return replace(cell, mode=mode, ratio=float(ratio), protocol=protocol, prompt=prompt)


def expand(
    tasks: list[Task],
    modes: list[Mode],
    prompts: list[Prompt],
    ratios: list[float],
    protocols: list[Protocol],
    real_fractions: list[float],
    seeds: list[int],
    include_baseline: bool = True,
) -> list[GridCell]:
    """All canonical cells of the cross product, deduplicated and sorted.

    With ``include_baseline`` the real-only reference cell of every (task, prompt, fraction,
    seed) is added even if the grid lists neither mode ``none`` nor ratio 0: every reported
    effect is measured against it.
    """
    cells = {
        canonicalize(GridCell(t, m, p, float(r), pr, float(f), s))
        for t, m, p, r, pr, f, s in itertools.product(
            tasks, modes, prompts, ratios, protocols, real_fractions, seeds
        )
    }
    if include_baseline:
        cells |= {canonicalize(replace(c, mode=Mode.NONE, ratio=0.0)) for c in list(cells)}
    return sorted(cells, key=lambda c: c.key())


# ----------------------------------------------------------------------------- config

AXES = ("tasks", "modes", "prompts", "ratios", "protocols", "real_fractions", "seeds")


def _check_axes(axes: Any, where: str) -> None:
    """Reject an empty axis and impossible ratios or fractions; ``None`` axes are inherited."""
    for name in AXES:
        value = getattr(axes, name)
        if value is not None and not value:
            raise ValueError(f"{where}.{name} must not be empty")
    if axes.ratios is not None and any(r < 0 for r in axes.ratios):
        raise ValueError(f"{where}.ratios must be >= 0, got {axes.ratios}")
    if axes.seeds is not None and any(s < 0 for s in axes.seeds):
        raise ValueError(f"{where}.seeds must be >= 0, got {axes.seeds}")
    fractions = axes.real_fractions
    if fractions is not None and any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"{where}.real_fractions must be in (0, 1], got {fractions}")


@dataclass
class GridBlock:
    """A further cross product of the sweep: the axes it lists replace the main grid's, the
    others are inherited. A study's question rarely needs the product of every axis (SB's
    prompt kinds × DE's ratios and protocols), so a grid is the union of its blocks."""

    tasks: list[Task] | None = None
    modes: list[Mode] | None = None
    prompts: list[Prompt] | None = None
    ratios: list[float] | None = None
    protocols: list[Protocol] | None = None
    real_fractions: list[float] | None = None
    seeds: list[int] | None = None


@dataclass
class GridConfig:
    """The scientific axes crossed by a sweep (see DESIGN.md)."""

    tasks: list[Task] = field(default_factory=lambda: [Task.SEG])
    modes: list[Mode] = field(default_factory=lambda: [Mode.NONE, Mode.UNCONDITIONAL])
    prompts: list[Prompt] = field(default_factory=lambda: [Prompt.P1])
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    protocols: list[Protocol] = field(default_factory=lambda: [Protocol.MIX])
    real_fractions: list[float] = field(default_factory=lambda: [1.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    # Further cross products whose cells are added to this one's (GridBlock).
    also: list[GridBlock] = field(default_factory=list)
    # false: only the ``also`` blocks are crossed (they still inherit this grid's axes), so
    # that a grid can be run block by block, e.g. on machines lent for a few minutes each.
    # Cells keep their keys; synthetic sets are sized for the largest ratio that runs.
    main: bool = True
    # Which patients form a real fraction is fixed across seeds, so seeds vary training only
    # and a generator trained on that fraction is shared by every seed.
    subset_seed: int = 0
    include_baseline: bool = True  # always add the real-only reference cells

    def __post_init__(self) -> None:
        _check_axes(self, "grid")
        if self.subset_seed < 0:
            raise ValueError(f"grid.subset_seed must be >= 0, got {self.subset_seed}")
        for i, block in enumerate(self.also):
            _check_axes(block, f"grid.also[{i}]")
        if not self.main and not self.also:
            raise ValueError("grid.main is false but grid.also is empty: no cells to run")

    def blocks(self) -> list[dict[str, list]]:
        """The axes of every cross product: this grid's (unless ``main`` is false), then
        each ``also`` block's with the axes it leaves out taken from this grid."""
        main = {name: list(getattr(self, name)) for name in AXES}
        out = [main] if self.main else []
        for block in self.also:
            own = {n: list(getattr(block, n)) for n in AXES if getattr(block, n) is not None}
            out.append(main | own)
        return out

    def values(self, axis: str) -> list:
        """Every value an axis takes in some block, in first-seen order."""
        seen: dict = {}
        for block in self.blocks():
            seen.update(dict.fromkeys(block[axis]))
        return list(seen)
