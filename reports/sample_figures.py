"""The report's sample grids: real and synthetic images side by side, per real fraction.

They are the one input of a report read from the sweep's run folder, not from MLflow: the
`samples.png` that each synthetic stage writes there (its fidelity run holds a copy, but not
the real images beside it), so they are drawn only when that folder is available here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from benchmark.imaging import save_grid
from reports.axes import axis_value, display_order, slug
from reports.figure_layout import FULL_WIDTH, Plot
from reports.latex import escape_latex

# Image pairs shown per source (two rows of save_grid's eight columns).
SAMPLE_IMAGES = 16
SAMPLE_COLUMNS = 8

_MODE_NOTES = {
    "oracle": "oracle samples are fresh simulator patients with exact label maps (upper bound)",
    "corrupted": "corrupted samples are real images paired with another image's label map on "
    "purpose (lower bound)",
}


@dataclass(frozen=True)
class _SynthSet:
    mode: str
    prompt: str | None
    real_fraction: float
    grid: Path
    size: int | None  # image height in pixels, to crop the grid to its first rows
    data: str | None  # hash of the real data stage it was made from
    digest: str | None  # its own stage hash, as the cells that used it name it


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def synthetic_sets(run_dir: Path, stages: Iterable[str] | None = None) -> list[_SynthSet]:
    """The finished synthetic stages of a run folder that have a sample grid. Temporary and
    half-written folders (no done.json) are left out. With `stages` (the cell stage folders of
    the reported runs), only the sets those cells trained on: a folder also holds the stages of
    earlier configurations, which the report's tables do not show."""
    used = None
    if stages is not None:
        specs = (_read_json(Path(run_dir, "cells", s, "spec.json")) for s in stages if s)
        used = {spec.get("spec", {}).get("synthetic") for spec in specs} - {None}
    found = []
    for stage in sorted(Path(run_dir, "synth").glob("[!.]*")):
        grid = stage / "samples.png"
        if not (stage.is_dir() and grid.is_file() and (stage / "done.json").is_file()):
            continue
        meta = _read_json(stage / "spec.json")
        spec = meta.get("spec", {})
        if "mode" not in spec or "real_fraction" not in spec:
            continue
        if used is not None and meta.get("hash") not in used:
            continue
        shape = _read_json(stage / "data.json").get("shape")
        found.append(
            _SynthSet(
                spec["mode"],
                spec.get("prompt"),
                float(spec["real_fraction"]),
                grid,
                int(shape[0]) if shape else None,
                spec.get("data"),
                meta.get("hash"),
            )
        )
    return found


def _real_grid(run_dir: Path, data_hash: str | None, tmp: Path) -> np.ndarray | None:
    """Real training images drawn exactly as the synthetic stages draw theirs (save_grid)."""
    for stage in sorted(Path(run_dir, "data").glob("[!.]*")):
        if data_hash and _read_json(stage / "spec.json").get("hash") != data_hash:
            continue
        try:
            images = np.load(stage / "images.npy", mmap_mode="r")
            masks = np.load(stage / "masks.npy", mmap_mode="r")
            split = pd.read_csv(stage / "manifest.csv", usecols=["split"])["split"]
        except (OSError, ValueError):
            continue
        idx = np.flatnonzero(split.to_numpy() == "train")[:SAMPLE_IMAGES]
        if not idx.size:
            continue
        path = save_grid(tmp / "real.png", images[idx], masks[idx], columns=SAMPLE_COLUMNS)
        return np.asarray(Image.open(path).convert("RGB"))
    return None


def _first_rows(grid: Path, size: int | None) -> np.ndarray:
    """The first SAMPLE_IMAGES tiles of a save_grid picture (tiles are `size` + 2 px high)."""
    picture = np.asarray(Image.open(grid).convert("RGB"))
    if size:
        picture = picture[: (SAMPLE_IMAGES // SAMPLE_COLUMNS) * (size + 2)]
    return picture


def sample_figures(run_dir: Path | None, stages: Iterable[str] | None = None) -> list[Plot]:
    """Real and synthetic samples side by side, one figure per real fraction: a row of real
    training images, then a row per synthetic set, each image plain and with its labels.
    `stages` limits the sets to those the given cell stages used (see `synthetic_sets`)."""
    if run_dir is None or not Path(run_dir, "synth").is_dir():
        return []
    sets = synthetic_sets(Path(run_dir), stages)
    plots = []
    for rf in display_order("real_fraction", [s.real_fraction for s in sets]):
        chosen = [s for s in sets if s.real_fraction == rf]
        order = display_order("mode", [s.mode for s in chosen])
        chosen.sort(key=lambda s: (order.index(s.mode), str(s.prompt)))
        with tempfile.TemporaryDirectory(prefix="report_samples_") as tmp:
            real = _real_grid(Path(run_dir), chosen[0].data, Path(tmp))
        panels = [("real (training split)", real)] if real is not None else []
        for s in chosen:
            label = s.mode + (f", {s.prompt}" if s.prompt else "")
            panels.append((label, _first_rows(s.grid, s.size)))
        heights = [p.shape[0] / p.shape[1] * FULL_WIDTH for _, p in panels]
        fig = Figure(figsize=(FULL_WIDTH, sum(heights) + 0.3 * len(panels)), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)
        for ax, (label, picture) in zip(axes[:, 0], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(label, loc="left", fontsize=8)
            ax.set_axis_off()
        notes = [_MODE_NOTES[m] for m in order if m in _MODE_NOTES]
        caption = (
            ("Real training images (top) and" if real is not None else "")
            + f" synthetic samples per generation mode, real fraction {rf:g} (the generators saw"
            f" {rf:.0%} of the real training patients). Each image is shown plain and with its"
            " label map (LV cavity red, myocardium green, left atrium blue)"
            + ("; " + "; ".join(notes) if notes else "")
            + "."
        ).strip()
        caption = escape_latex(caption[0].upper() + caption[1:])
        name = f"samples-{slug('rf' + axis_value('real_fraction', rf))}"
        plots.append(Plot(name, fig, caption, "samples", raster=True))
    return plots
