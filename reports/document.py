"""report.tex: the tables and figures of a report folder in one LaTeX document, and its PDF.

The document `\\input`s the table files and includes the figure files by paths relative to
report.tex, so the folder stays self-contained (copy it anywhere and compile it there).
Compilation uses latexmk when it is installed, else pdflatex twice, in a temporary folder, so
a failed run leaves no half-written auxiliary files beside the report.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reports.figure_layout import ReportFigure
from reports.latex import escape_latex

log = logging.getLogger(__name__)

TEX_NAME = "report.tex"
COMPILE_TIMEOUT_S = 300
PACKAGES = ("booktabs", "graphicx", "float")


class LatexError(RuntimeError):
    """report.tex did not compile; the message names the file and quotes LaTeX's error."""


@dataclass(frozen=True)
class _Section:
    title: str
    intro: str
    tables: tuple[str, ...]  # prefixes of the table file names
    figures: tuple[str, ...]  # figure sections (ReportFigure.section)


# Report order: the question first (does synthetic data help?), then how and why.
_SECTIONS = (
    _Section(
        "Downstream results",
        "Test scores on the real test set. Rows are generation modes (the real-only baseline"
        " first), columns synthetic:real ratios or prompt kinds.",
        ("de-", "sb-"),
        ("downstream",),
    ),
    _Section(
        "Per-structure scores",
        "The segmentation tasks per structure (LV cavity, myocardium, left atrium), with"
        " surface distances and the ejection fraction's agreement with the reference, as"
        " CAMUS and nnU-Net report them.",
        ("structures-",),
        ("structures",),
    ),
    _Section(
        "Convergence",
        "How fast validation scores rise with synthetic data, against the real-only baseline.",
        ("convergence-",),
        ("convergence",),
    ),
    _Section(
        "Fidelity of the synthetic data",
        "How close each synthetic set is to the real data, and whether that predicts its use.",
        ("fidelity",),
        ("fidelity",),
    ),
    _Section("Samples", "", (), ("samples",)),
)


def _relative(path: Path, root: Path) -> str:
    """`path` relative to report.tex's folder, with forward slashes (LaTeX's separator)."""
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError as exc:
        raise ValueError(f"{path} is outside the report folder {root}") from exc


def _figure_tex(fig: ReportFigure, root: Path) -> str:
    return "\n".join(
        [
            r"\begin{figure}[H]",
            r"\centering",
            rf"\includegraphics[width={fig.width:g}\linewidth,height=0.8\textheight,"
            r"keepaspectratio]"
            rf"{{{_relative(fig.path, root)}}}",
            rf"\caption{{{fig.caption}}}",
            rf"\label{{{fig.label}}}",
            r"\end{figure}",
        ]
    )


def render_report(
    tables: Sequence[Path],
    figures: Sequence[ReportFigure],
    root: Path,
    *,
    title: str,
    facts: Sequence[str] = (),
    failed: Sequence[tuple[str, str]] = (),
) -> str:
    """The LaTeX source of report.tex for files under `root` (the report folder).

    `title` and `facts` (short sentences for the opening paragraph) are plain text and are
    escaped here; figure captions are LaTeX already. Sections without tables or figures are
    left out; a report with neither says so instead of compiling to an empty page.
    `failed` lists (cell key, reason) of cells without a result: a section of their own, so a
    reader sees which cells a table is missing and why.
    """
    root = Path(root)
    body: list[str] = []
    for section in _SECTIONS:
        mine = [
            Path(t) for t in tables if section.tables and Path(t).stem.startswith(section.tables)
        ]
        figs = [f for f in figures if f.section in section.figures]
        if not mine and not figs:
            continue
        body += [rf"\section{{{section.title}}}", section.intro, ""]
        # \input without the .tex: LaTeX adds it (table names have no other dot).
        body += [rf"\input{{{_relative(t.with_suffix(''), root)}}}" for t in mine]
        body += [_figure_tex(f, root) for f in figs]
    if failed:
        body += [
            r"\section{Failed cells}",
            "These cells have no result; the tables leave them out.",
            r"\begin{itemize}",
            *(rf"\item \texttt{{{escape_latex(k)}}}: {escape_latex(r[:300])}" for k, r in failed),
            r"\end{itemize}",
        ]
    if not body:
        body = ["No finished cell runs: nothing to report yet."]
    opening = " ".join(escape_latex(f) for f in facts)
    preamble = [
        r"\documentclass[10pt,a4paper]{article}",
        r"\usepackage[margin=2cm]{geometry}",
        *(rf"\usepackage{{{p}}}" for p in PACKAGES),
        # Results tables are wide (mean $\pm$ std per column): a smaller font in every float
        # keeps them within the text width. \@floatboxreset runs at the start of each float.
        r"\makeatletter\g@addto@macro\@floatboxreset{\small}\makeatother",
        r"\setlength{\tabcolsep}{4pt}",
        # Tables and figures stay where they are written ([H]): a report is read in order, and
        # floating would carry one section's tables past the next heading.
        r"\floatplacement{table}{H}",
        rf"\title{{{escape_latex(title)}}}",
        rf"\date{{{datetime.now(UTC):%Y-%m-%d}}}",
        r"\begin{document}",
        r"\maketitle",
        opening,
        "",
    ]
    return "\n".join([*preamble, *body, r"\end{document}", ""])


def write_tex(
    tables: Sequence[Path],
    figures: Sequence[ReportFigure],
    out_dir: str | Path,
    *,
    title: str,
    facts: Sequence[str] = (),
    failed: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write `out_dir/report.tex` (see `render_report`) and return its path."""
    out = Path(out_dir)
    path = out / TEX_NAME
    path.write_text(render_report(tables, figures, out, title=title, facts=facts, failed=failed))
    return path


def latex_command() -> str | None:
    """`latexmk` or `pdflatex`, whichever is installed (latexmk first); None without TeX."""
    for name in ("latexmk", "pdflatex"):
        if shutil.which(name):
            return name
    return None


# An error line in a LaTeX log: `./tables/x.tex:12: Undefined control sequence.` (with
# -file-line-error, which names the \input file at fault) or `! Undefined control sequence.`
_ERROR = re.compile(r"^(?:!|[^\s:]+\.\w+:\d+: )")
_WHERE = re.compile(r"^l\.\d+")


def first_error(log_text: str) -> str:
    """LaTeX's first error from a .log, with the `l.<n> ...` line that shows where, or the log's
    last line when there is no error line (e.g. a run killed half way)."""
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        if _ERROR.match(line):
            where = next((ln.strip() for ln in lines[i + 1 : i + 12] if _WHERE.match(ln)), "")
            return f"{line.strip()} {where}".strip()
    tail = [ln.strip() for ln in lines if ln.strip()]
    return tail[-1] if tail else "no log written"


def compile_pdf(tex: str | Path, timeout: float = COMPILE_TIMEOUT_S) -> Path | None:
    """Compile `tex` to a PDF beside it; return the PDF's path, or None (with one logged
    notice) when neither latexmk nor pdflatex is installed.

    Runs in `tex`'s folder (so relative \\input and \\includegraphics paths resolve) with the
    auxiliary files in a temporary folder. Raises LatexError naming `tex` and quoting the first
    LaTeX error when compilation fails or runs past `timeout` seconds.
    """
    tex = Path(tex).resolve()
    tool = latex_command()
    if tool is None:
        log.warning("%s written; no latexmk or pdflatex installed, so no PDF", tex)
        return None
    flags = ["-interaction=nonstopmode", "-halt-on-error", "-file-line-error", "-no-shell-escape"]
    with tempfile.TemporaryDirectory(prefix="report_tex_") as tmp:
        if tool == "latexmk":
            runs = [["latexmk", "-pdf", "-silent", f"-outdir={tmp}", *flags, tex.name]]
        else:
            # Twice: the first pass writes the .aux that the second needs for references.
            runs = [["pdflatex", f"-output-directory={tmp}", *flags, tex.name]] * 2
        log_file = Path(tmp, tex.with_suffix(".log").name)
        for cmd in runs:
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=tex.parent,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise LatexError(f"{tex}: {tool} ran past {timeout:g} s") from None
            if proc.returncode != 0:
                text = log_file.read_text(errors="replace") if log_file.is_file() else proc.stdout
                raise LatexError(f"{tex}: {tool} failed: {first_error(text)}")
        pdf = tex.with_suffix(".pdf")
        shutil.copyfile(Path(tmp, pdf.name), pdf)
    return pdf
