"""What the report's figure modules share: the page geometry, and a figure before and after
it is saved (`Plot`, `ReportFigure`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

# Width of a full figure in inches: the text width of report.tex (A4, 2 cm margins) is ~6.7 in.
FULL_WIDTH = 6.7
PANEL_HEIGHT = 2.3


@dataclass(frozen=True)
class Plot:
    """A drawn figure before it is saved: `name` is the file stem (no dots, so that LaTeX
    reads the extension right), `caption` is LaTeX (already escaped), `section` says where
    report.tex puts it, and `raster` marks pictures of images (PNG) rather than plots (PDF)."""

    name: str
    figure: Figure
    caption: str
    section: str
    raster: bool = False


@dataclass(frozen=True)
class ReportFigure:
    """A saved figure as report.tex includes it; `width` is its share of the text width, so
    that a one-panel plot keeps its font size instead of being blown up to the full width."""

    path: Path
    caption: str
    label: str
    section: str
    width: float = 1.0
