"""The settings a sweep's cell runs were computed under: collected from MLflow, compared key
by key, and named in the caption of a table that mixes them."""

import mlflow
import pandas as pd
import pytest

from reports.collect import collect_runs, collect_settings
from reports.latex import with_caption_note
from reports.settings import (
    NOT_RECORDED,
    describe_settings,
    differing,
    mixed_note,
    run_settings,
    settings_id,
    settings_table,
)
from reports.tables import write_tables
from tests.reports.conftest import sqlite_experiment
from tests.reports.test_reports_tables import _runs_and_samples

SWEEP = "settings"
SEG = {
    "data.size": "64",
    "downstream.seg.channels": "[16, 32, 64]",
    "downstream.seg.train.lr": "0.003",
}
GEN = {"generator.seed": "0", "generator.epochs": "40"}


def _per_run(rows: list[tuple[str, dict]]) -> pd.DataFrame:
    """collect_settings' frame from (run_id, settings) pairs."""
    frame = pd.DataFrame(
        [{"run_id": r, "settings": settings_id(s)} | s for r, s in rows],
    )
    return frame


def test_run_settings_are_the_prefixed_params_and_their_id_is_stable():
    params = {"settings.data.size": "64", "settings.grid.subset_seed": "0", "data.size": "64"}
    assert run_settings(params) == {"data.size": "64", "grid.subset_seed": "0"}
    one = settings_id({"a": "1", "b": "2"})
    assert one == settings_id({"b": "2", "a": "1"})  # order-free
    assert one != settings_id({"a": "1", "b": "3"})
    assert len(one) == 12
    assert settings_id({}) == NOT_RECORDED


def test_settings_differ_key_by_key_not_by_id():
    # A real-only run has no generator settings; a text cell has a guidance scale that a
    # semantic cell lacks: three ids, one recipe.
    rows = [
        ("base", SEG),
        ("text", SEG | GEN | {"generator.guidance_scale": "2.0"}),
        ("semantic", SEG | GEN | {"generator.mask_copies": "1"}),
    ]
    per_run = _per_run(rows)
    assert per_run["settings"].nunique() == 3
    assert differing(per_run) == {}
    assert mixed_note(per_run[["run_id"]], per_run) == ""
    assert describe_settings(per_run) == [
        "The 3 cell runs that record their settings (settings.csv) share them, apart from"
        " what their axes vary."
    ]
    # A fourth level for one cell, another generator for another: both named, with counts.
    wider = SEG | {"downstream.seg.channels": "[16, 32, 64, 128]"}
    rows += [("base-1", wider), ("text-1", wider | GEN | {"generator.epochs": "80"})]
    per_run = _per_run(rows)
    varies = differing(per_run)
    assert list(varies) == ["downstream.seg.channels", "generator.epochs"]
    assert varies["downstream.seg.channels"] == {"[16, 32, 64]": 3, "[16, 32, 64, 128]": 2}
    note = mixed_note(per_run[["run_id"]], per_run)
    assert note == (
        r" Mixed settings: its runs differ in downstream.seg.channels: [16, 32, 64] in 3 runs,"
        r" [16, 32, 64, 128] in 2 runs; generator.epochs: 40 in 2 runs, 80 in 1 run."
        " Compare its entries with care."
    )
    # Only the table's own runs count: these two agree.
    assert mixed_note(pd.DataFrame({"run_id": ["base", "text"]}), per_run) == ""
    assert describe_settings(per_run)[0].startswith(
        "The cell runs differ in downstream.seg.channels, generator.epochs (settings.csv)"
    )


def test_runs_without_settings_are_counted_not_compared():
    per_run = _per_run([("old", {}), ("new", SEG), ("new-1", SEG)])
    note = mixed_note(per_run[["run_id"]], per_run)
    assert note.startswith(" 1 of its 3 runs was logged before settings were recorded")
    wider = SEG | {"downstream.seg.channels": "[16, 32, 64, 128]"}
    mixed = _per_run([("old", {}), ("new", SEG), ("wide", wider)])
    assert mixed_note(mixed[["run_id"]], mixed).endswith(
        "Compare its entries with care. It also holds 1 run without settings."
    )
    # A table of old runs only says nothing: the report's opening says it once.
    assert mixed_note(pd.DataFrame({"run_id": ["old"]}), per_run) == ""
    assert describe_settings(per_run)[-1] == "1 cell run was logged before settings were recorded."
    table = settings_table(per_run)
    assert table[["settings", "runs"]].values.tolist() == [
        [settings_id(SEG), 2],
        [NOT_RECORDED, 1],
    ]
    assert table.loc[0, "downstream.seg.channels"] == "[16, 32, 64]"


def test_the_note_is_escaped_and_names_at_most_three_settings():
    other = {k: v + "1" for k, v in SEG.items()}
    ds = "downstream.seg.deep_supervision"
    rows = [("a", {ds: "0"} | SEG), ("b", {ds: "2"} | other)]
    note = mixed_note(pd.DataFrame({"run_id": ["a", "b"]}), _per_run(rows))
    assert r"downstream.seg.deep\_supervision" in note
    assert "downstream.seg.train.lr" not in note  # the fourth, in column order
    assert "and 1 more (settings.csv)" in note


def test_caption_note_goes_inside_the_caption():
    tex = "\\begin{table}\n\\caption{Dice \\{x\\} of \\textbf{a}.}\n\\label{t}\n\\end{table}"
    out = with_caption_note(tex, " More.")
    assert "\\caption{Dice \\{x\\} of \\textbf{a}. More.}\n\\label{t}" in out
    assert with_caption_note(tex, "") == tex
    with pytest.raises(ValueError, match="unbalanced"):
        with_caption_note("\\caption{open", " x")


def test_a_table_whose_runs_differ_says_so_in_its_caption(tmp_path):
    runs, per_sample = _runs_and_samples()
    # Seed 1 of every cell was swept again with a fourth level; seed 0 kept the old runs.
    wider = SEG | {"downstream.seg.channels": "[16, 32, 64, 128]"}
    per_run = _per_run([(r, wider if r.endswith("|1") else SEG) for r in runs["run_id"]])
    paths = write_tables(runs, per_sample, tmp_path, settings=per_run)
    de = next(p for p in paths if p.name.startswith("de-")).read_text()
    assert "Mixed settings: its runs differ in downstream.seg.channels" in de
    caption = de[de.index("\\caption{") : de.index("\\label")]
    assert caption.rstrip().endswith("Compare its entries with care.}")
    # The same runs under one setting: no note.
    same = _per_run([(r, SEG) for r in runs["run_id"]])
    paths = write_tables(runs, per_sample, tmp_path / "same", settings=same)
    assert all("Mixed settings" not in p.read_text() for p in paths)


def test_settings_are_collected_from_the_runs_params(tmp_path):
    with sqlite_experiment(tmp_path, SWEEP) as (uri, exp):
        for seed, values in ((0, SEG), (1, {})):
            tags = {"kind": "cell", "cell_key": "seg-none", "seed": str(seed), "status": "ok"}
            with mlflow.start_run(experiment_id=exp, tags=tags):
                mlflow.log_params({f"settings.{k}": v for k, v in values.items()})
                mlflow.log_param("data.size", "64")  # the config's params are not settings
        per_run = collect_settings(uri, SWEEP)
        runs = collect_runs(uri, SWEEP)
    by_seed = runs.set_index("seed")["settings"]
    assert by_seed[0] == settings_id(SEG) and by_seed[1] == NOT_RECORDED
    assert list(per_run.columns) == ["run_id", "settings", *sorted(SEG)]
    assert set(per_run["settings"]) == {settings_id(SEG), NOT_RECORDED}
