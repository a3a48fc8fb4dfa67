"""reports.document: report.tex assembly, escaping, and compiling it (or not) to a PDF."""

import logging
import shutil

import pytest
from PIL import Image

from reports import document
from reports.document import (
    LatexError,
    compile_pdf,
    first_error,
    latex_command,
    render_report,
    write_tex,
)
from reports.figure_layout import ReportFigure

needs_tex = pytest.mark.skipif(
    latex_command() is None, reason="needs pdflatex or latexmk (CI installs TeX Live)"
)

TABLE = r"""\begin{table}
\centering
\caption{Dice.}
\label{tab:de-seg-unet-mix-rf0p1}
\begin{tabular}{lc}
\toprule
mode / ratio & 1 \\
\midrule
real only & 0.810 $\pm$ 0.014 \\
oracle & \textbf{0.880 $\pm$ 0.028$^{*}$} \\
\bottomrule
\end{tabular}
\end{table}
"""


def _report_folder(root, table=TABLE):
    (root / "tables").mkdir(parents=True)
    (root / "figures").mkdir()
    de = root / "tables" / "de-seg-unet-mix-rf0p1.tex"
    de.write_text(table)
    conv = root / "tables" / "convergence-seg-unet-rf0p1.tex"
    conv.write_text(table.replace("tab:de", "tab:conv"))
    png = root / "figures" / "samples-rf0p1.png"
    Image.new("RGB", (16, 8), "gray").save(png)
    fig = ReportFigure(png, "Samples, 10\\%.", "fig:samples-rf0p1", "samples", 0.5)
    return [de, conv], [fig]


def test_render_orders_sections_and_inputs_tables(tmp_path):
    tables, figures = _report_folder(tmp_path)
    tex = render_report(tables, figures, tmp_path, title="quick", facts=["Sweep quick."])
    assert tex.index(r"\section{Downstream results}") < tex.index(r"\section{Convergence}")
    assert tex.index(r"\section{Convergence}") < tex.index(r"\section{Samples}")
    assert "Fidelity" not in tex  # no fidelity table or figure: no empty section
    # \input without the extension, relative to report.tex: the folder can move.
    assert r"\input{tables/de-seg-unet-mix-rf0p1}" in tex
    assert r"{figures/samples-rf0p1.png}" in tex and r"width=0.5\linewidth" in tex
    assert r"\label{fig:samples-rf0p1}" in tex and r"\caption{Samples, 10\%.}" in tex
    assert r"\usepackage{booktabs}" in tex and tex.rstrip().endswith(r"\end{document}")


def test_title_and_facts_are_escaped(tmp_path):
    tex = render_report([], [], tmp_path, title="run_1 & 50% #2", facts=["a_b {x}"])
    assert r"\title{run\_1 \& 50\% \#2}" in tex
    assert r"a\_b \{x\}" in tex
    assert "nothing to report yet" in tex


def test_first_error_quotes_the_error_and_its_line():
    log = "\n".join(
        [
            "(./report.tex",
            "./tables/de.tex:7: Undefined control sequence.",
            r"l.7 real only & \foo",
            "                      {0.8}",
        ]
    )
    assert (
        first_error(log) == r"./tables/de.tex:7: Undefined control sequence. l.7 real only & \foo"
    )
    assert first_error("! Emergency stop.\n<*> report.tex\n") == "! Emergency stop."
    assert first_error("") == "no log written"


def test_without_tex_the_pdf_is_skipped_with_a_notice(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(document.shutil, "which", lambda name: None)
    tex = write_tex([], [], tmp_path, title="t")
    with caplog.at_level(logging.WARNING, logger="reports.document"):
        assert compile_pdf(tex) is None
    assert "no latexmk or pdflatex" in caplog.text and str(tex) in caplog.text
    assert not (tmp_path / "report.pdf").exists()


def _only(monkeypatch, tool):
    """Hide the other TeX driver, so that each code path is tested where both exist."""
    which = shutil.which
    monkeypatch.setattr(
        document.shutil, "which", lambda name: which(name) if name == tool else None
    )
    if latex_command() != tool:
        pytest.skip(f"{tool} is not installed")


@needs_tex
@pytest.mark.parametrize("tool", ["latexmk", "pdflatex"])
def test_compiles_to_pdf_in_a_temporary_folder(tmp_path, monkeypatch, tool):
    _only(monkeypatch, tool)
    tables, figures = _report_folder(tmp_path)
    tex = write_tex(tables, figures, tmp_path, title="quick_1", facts=["Sweep quick."])
    pdf = compile_pdf(tex)
    assert pdf == tmp_path / "report.pdf" and pdf.read_bytes().startswith(b"%PDF")
    # Auxiliary files stay in the temporary folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "figures",
        "report.pdf",
        "report.tex",
        "tables",
    ]
    if shutil.which("pdftotext"):
        import subprocess

        text = subprocess.run(
            ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
        ).stdout
        assert "real only" in text and "0.880 ± 0.028" in text


@needs_tex
@pytest.mark.parametrize("tool", ["latexmk", "pdflatex"])
def test_latex_error_names_report_tex_and_quotes_the_error(tmp_path, monkeypatch, tool):
    _only(monkeypatch, tool)
    tables, figures = _report_folder(tmp_path, table=TABLE.replace(r"\toprule", r"\nosuchmacro"))
    tex = write_tex(tables, figures, tmp_path, title="t")
    with pytest.raises(LatexError) as err:
        compile_pdf(tex)
    message = str(err.value)
    assert str(tex) in message and "Undefined control sequence" in message
    assert "nosuchmacro" in message
    assert not (tmp_path / "report.pdf").exists()
