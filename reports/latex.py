"""LaTeX text: escaping labels, and one table entry (`mean $\\pm$ std` and its mark)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

BETTER_MARK = r"$^{*}$"
WORSE_MARK = r"$^{\dagger}$"
EMPTY = "--"

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))


def escape_latex(text: object) -> str:
    """Escape LaTeX special characters in a label (`synthetic_only` -> `synthetic\\_only`)."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], str(text))


def decimals_for(means: Iterable[float]) -> int:
    finite = np.abs([m for m in means if np.isfinite(m)])
    top = finite.max() if finite.size else 1.0
    return 1 if top >= 100 else 2 if top >= 1 else 3 if top >= 0.01 else 4


def entry(mean: float, std: float, n: float, decimals: int, mark: str) -> str:
    if not n or np.isnan(mean):
        return EMPTY
    text = f"{mean:.{decimals}f}"
    if not np.isnan(std):
        text += rf" $\pm$ {std:.{decimals}f}"
    return text + mark


def with_caption_note(tex: str, note: str) -> str:
    """``tex`` (one `table` environment) with ``note`` (LaTeX) appended to its caption."""
    if not note:
        return tex
    i = tex.index(r"\caption{") + len(r"\caption{")
    depth = 1
    while i < len(tex):
        if tex[i] == "\\":  # an escaped character (\{, \}, \\) opens or closes nothing
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(tex[i], 0)
        if depth == 0:
            return tex[:i] + note + tex[i:]
        i += 1
    raise ValueError("unbalanced braces in the table's caption")
