"""The work a grid implies, from its config alone: the canonical cells, the prompt kind each
generator is trained for, and how many images a synthetic set holds.

Nothing here imports torch or a model layer, so commands that only plan or count work
(``project``) start in a second instead of after the model libraries' imports.
"""

from __future__ import annotations

import math

from benchmark.config import Config
from benchmark.grid import PROMPTED_MODES, GridCell, Mode, Prompt, Protocol, expand


def grid_cells(cfg: Config) -> list[GridCell]:
    """The canonical cells of every block of the grid (``grid.also``), deduplicated."""
    cells = {
        cell
        for block in cfg.grid.blocks()
        for cell in expand(**block, include_baseline=cfg.grid.include_baseline)
    }
    return sorted(cells, key=lambda c: c.key())


def generator_prompt(cfg: Config, mode: Mode, prompt: Prompt | None) -> Prompt | None:
    """The prompt kind a generator is trained for: None for modes without prompts and for
    ``generator.text_training: all_kinds`` (one model for every kind)."""
    if mode not in PROMPTED_MODES or cfg.generator.text_training == "all_kinds":
        return None
    return prompt


def synthetic_count(cfg: Config, n_real: int) -> int:
    """Images a synthetic set holds: ``generator.n_samples``, or enough for the grid's
    largest ratio of ``n_real`` real training images."""
    if cfg.generator.n_samples is not None:
        return cfg.generator.n_samples
    ratios = list(cfg.grid.values("ratios"))
    if Protocol.SYNTHETIC_ONLY in cfg.grid.values("protocols"):
        ratios.append(1.0)  # synthetic_only cells are canonicalised to ratio 1
    return max(1, math.ceil(max(ratios) * n_real))
