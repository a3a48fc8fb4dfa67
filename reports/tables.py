"""The report's LaTeX results tables, from the tidy frames of `reports.collect`: SB's and DE's
tables, per-structure scores, convergence and fidelity, and `write_tables`, which writes every
table the runs support. Their shared layout is `reports.table_layout`.

Every entry is `mean $\\pm$ std` over seeds (the mean alone for a single seed), the best entry of
each column is bold, and, where per-sample values exist, an entry is marked when it differs
significantly from the real-only baseline (`reports.stats.compare_to_baseline`).
Only runs with status `ok` enter a table; a cell logged twice for one seed counts once (latest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reports.axes import (
    COPY_COLUMNS,
    FIDELITY_COLUMNS,
    FIDELITY_REFERENCES,
    INTENSITY_COLUMNS,
    JUDGES,
    MASK_DICE_COLUMNS,
    RANK_FLOORS,
    RECIPE_FIELDS,
    REFERENCE_LABEL,
    slug,
    usable_runs,
)
from reports.latex import escape_latex, with_caption_note
from reports.settings import mixed_note
from reports.stats import match_baselines, phase_samples
from reports.table_layout import (
    SIGNIFICANCE_COLUMNS,
    baseline_rows,
    constants_note,
    describe,
    metrics_table,
    pivot_table_tex,
    primary_metric,
    resolve_axis,
    rf_slug,
    row_labels,
    slice_runs,
)


def sb_table(
    df: pd.DataFrame,
    per_sample: pd.DataFrame | None,
    model: str,
    *,
    real_fraction: float | None = None,
    metric: str | None = None,
    tests: list[pd.DataFrame] | None = None,
    test_unit: str = "image",
) -> str:
    """SB's table for one vlseg model: rows the training strategy (real only, then each protocol,
    with generation mode and ratio when they vary), columns the prompt kind P0-P7. `tests` and
    `test_unit`: as `pivot_table_tex`'s."""
    runs = slice_runs(usable_runs(df), task="vlseg", model=model)
    if runs.empty:
        raise ValueError(f"sb_table: no vlseg runs for model {model!r}")
    rf = resolve_axis(runs, "real_fraction", real_fraction, "sb_table")
    runs = slice_runs(runs, real_fraction=rf)
    metric = metric or primary_metric(runs, "sb_table")
    axes = ["protocol", "mode", "ratio"]
    runs = runs.assign(strategy=row_labels(runs, axes))
    caption = (
        f"Vision-language segmentation ({describe(model=model, real_fraction=rf)}): test "
        f"{escape_latex(metric)} on the real test set per training strategy and prompt kind."
        + constants_note(runs, axes)
    )
    return pivot_table_tex(
        runs,
        per_sample,
        "strategy",
        "prompt",
        metric,
        caption,
        f"tab:sb-{slug(model, rf_slug(rf))}",
        corner="strategy / prompt",
        tests=tests,
        test_unit=test_unit,
    )


def de_table(
    df: pd.DataFrame,
    per_sample: pd.DataFrame | None,
    task: str,
    *,
    model: str | None = None,
    protocol: str = "mix",
    real_fraction: float | None = None,
    metric: str | None = None,
    tests: list[pd.DataFrame] | None = None,
    test_unit: str = "image",
) -> str:
    """DE's table for one task: rows the generation mode (with the prompt kind where it varies),
    columns the synthetic:real ratio, entries the task's primary metric. `tests` and `test_unit`:
    as `pivot_table_tex`'s."""
    runs = slice_runs(usable_runs(df), task=task)
    if runs.empty:
        raise ValueError(f"de_table: no runs for task {task!r}")
    model = resolve_axis(runs, "model", model, "de_table")
    rf = resolve_axis(slice_runs(runs, model=model), "real_fraction", real_fraction, "de_table")
    runs = slice_runs(runs, model=model, real_fraction=rf, protocol=protocol)
    metric = metric or primary_metric(runs, "de_table")
    runs = runs.assign(generator=row_labels(runs, ["mode", "prompt"], always=2))
    where = describe(model=model, protocol=protocol, real_fraction=rf)
    caption = (
        f"Task {escape_latex(task)} ({where}): test {escape_latex(metric)} on the real test set"
        " per generation mode and synthetic:real ratio."
    )
    return pivot_table_tex(
        runs,
        per_sample,
        "generator",
        "ratio",
        metric,
        caption,
        f"tab:de-{slug(task, model, protocol, rf_slug(rf))}",
        corner="mode / ratio",
        tests=tests,
        test_unit=test_unit,
    )


def convergence_table(
    df: pd.DataFrame,
    task: str,
    *,
    model: str | None = None,
    real_fraction: float | None = None,
    curves: pd.DataFrame | None = None,
) -> str:
    """Convergence per cell: epochs_to_95, val_auc and, given the validation `curves`
    (`collect_curves`' frame: run_id, step, value), the speed-up over the real-only baseline.

    The speed-up of a run is its baseline's (same seed) epochs_to_95 over the epochs the run
    needs to reach that same score, 95 % of the baseline's best: a fixed target. Against
    the run's own best instead, a run that never learns "converges" in its first epoch and
    looks fastest. A run that never reaches the target within its epochs has speed-up 0."""
    runs = slice_runs(usable_runs(df), task=task)
    model = resolve_axis(runs, "model", model, "convergence_table")
    rf = resolve_axis(
        slice_runs(runs, model=model), "real_fraction", real_fraction, "convergence_table"
    )
    runs = slice_runs(runs, model=model, real_fraction=rf)
    if "epochs_to_95" not in runs.columns or runs["epochs_to_95"].isna().all():
        raise ValueError(f"convergence_table: no epochs_to_95 for task {task!r}")
    axes = ["mode", "protocol", "ratio", "prompt"]
    runs = runs.assign(cell=row_labels(runs, axes))
    metrics = {"epochs_to_95": "epochs to 95%", "val_auc": "val. AUC"}
    metrics = {m: h for m, h in metrics.items() if m in runs.columns}
    speed = ""
    if curves is not None and len(curves):
        runs = runs.assign(speedup=_speedups(runs, curves))
        metrics["speedup"] = "speed-up"
        speed = (
            r", and speed-up = the real-only run's epochs to 95\% of its best over the cell's"
            r" epochs to reach that same score (same seed; 1 for the real-only run, 0 if never"
            r" reached)"
        )
    caption = (
        f"Convergence, task {escape_latex(task)} ({describe(model=model, real_fraction=rf)}):"
        r" epochs to reach 95\% of the run's best validation score, area under the validation"
        r" curve" + speed + "." + constants_note(runs, axes)
    )
    label = f"tab:convergence-{slug(task, model, rf_slug(rf))}"
    return metrics_table(runs, "cell", metrics, caption, label, {"speedup": True})


def _speedups(runs: pd.DataFrame, curves: pd.DataFrame) -> np.ndarray:
    """Per run of `runs`: baseline epochs_to_95 / epochs to reach 95 % of the baseline's best
    validation score (curve steps are 0-based epochs); 1 for a baseline, 0 for a run that
    never reaches it, NaN without a baseline or a curve."""
    curve = {run: g.sort_values("step") for run, g in curves.groupby("run_id")}
    pairs = match_baselines(runs).set_index("run_id")["baseline_run_id"]
    e95 = runs.set_index("run_id")["epochs_to_95"]
    out = []
    for run, is_base in zip(runs["run_id"], baseline_rows(runs), strict=True):
        base = run if is_base else pairs.get(run)
        if is_base:
            out.append(1.0 if pd.notna(e95.get(run)) else np.nan)
            continue
        if base is None or run not in curve or base not in curve or pd.isna(e95.get(base)):
            out.append(np.nan)
            continue
        target = 0.95 * curve[base]["value"].max()
        reached = curve[run].loc[curve[run]["value"] >= target, "step"]
        out.append(float(e95[base]) / (int(reached.iloc[0]) + 1) if len(reached) else 0.0)
    return np.array(out, dtype=float)


# Per-structure columns of the segmentation tasks, in table order; distances in mm where the
# test images had a pixel spacing, else in pixels.
STRUCTURE_COLUMNS = {
    "dice_lv": "Dice LV",
    "dice_myo": "Dice MYO",
    "dice_la": "Dice LA",
    "dice_mean": "Dice mean",
}
DISTANCE_COLUMNS = {"hd95": "HD95", "assd": "ASSD"}
CLINICAL_COLUMNS = {"ef_mae": "EF MAE", "ef_corr": "EF r"}
# The per-phase tables: the volume error of their phase in place of the EF's.
PHASES = {"ed": "end-diastole (ED)", "es": "end-systole (ES)"}
PHASE_CLINICAL_COLUMNS = {
    "ed": {"edv_mae_ml": "EDV MAE (mL)"},
    "es": {"esv_mae_ml": "ESV MAE (mL)"},
}
_CLINICAL_NOTES = {
    "ef_mae": "EF MAE: the mean absolute error of the ejection fraction in points",
    "ef_corr": "EF r: its Pearson correlation",
    "edv_mae_ml": "EDV MAE: the mean absolute error of the end-diastolic LV volume",
    "esv_mae_ml": "ESV MAE: the mean absolute error of the end-systolic LV volume",
}


def structures_table(
    df: pd.DataFrame,
    task: str,
    *,
    model: str | None = None,
    real_fraction: float | None = None,
    phase: str | None = None,
    per_sample: pd.DataFrame | None = None,
    tests: list[pd.DataFrame] | None = None,
    test_unit: str = "image",
) -> str:
    """Per-structure test scores of a segmentation task (seg or vlseg), one row per cell: Dice
    of LV, myocardium and atrium and their mean, then the mean HD95 and ASSD over structures
    (mm when every run measured them in mm, else pixels) and, where every run has them, the
    ejection fraction's error and correlation (`downstream.volumes`): the layout of CAMUS and
    nnU-Net reports.

    With `phase` ("ed" or "es") the scores are those of that phase's test images only (the
    `<metric>_<phase>` metrics of seg) and the clinical column is that phase's LV volume error,
    as CAMUS reports ED and ES apart. With `per_sample`, entries are marked where they differ
    significantly from the real-only baseline: Dice and distances image by image (in a phase
    table, on that phase's images), the EF and volume errors patient by patient. `tests` and
    `test_unit`: as `metrics_table`'s."""
    if phase is not None and phase not in PHASES:
        raise ValueError(f"structures_table: phase must be one of {list(PHASES)}, not {phase!r}")
    at = "" if phase is None else f"_{phase}"
    runs = slice_runs(usable_runs(df), task=task)
    if runs.empty:
        raise ValueError(f"structures_table: no runs for task {task!r}")
    model = resolve_axis(runs, "model", model, "structures_table")
    rf = resolve_axis(
        slice_runs(runs, model=model), "real_fraction", real_fraction, "structures_table"
    )
    runs = slice_runs(runs, model=model, real_fraction=rf)
    metrics = {f"{m}{at}": h for m, h in STRUCTURE_COLUMNS.items() if _logged(runs, f"{m}{at}")}
    if f"dice_lv{at}" not in metrics:
        raise ValueError(
            f"structures_table: no per-structure Dice{' at ' + phase.upper() if phase else ''}"
            f" for task {task!r}"
        )
    # One unit for the whole table: mm only if every run measured in mm.
    mm = all(_logged(runs, f"{name}_mm_mean{at}", every=True) for name in DISTANCE_COLUMNS)
    suffix, length = ("_mm", "mm") if mm else ("", "px")
    distances = {f"{n}{suffix}_mean{at}": f"{h} ({length})" for n, h in DISTANCE_COLUMNS.items()}
    metrics |= {m: h for m, h in distances.items() if _logged(runs, m)}
    wanted = CLINICAL_COLUMNS if phase is None else PHASE_CLINICAL_COLUMNS[phase]
    clinical = {m: h for m, h in wanted.items() if _logged(runs, m, every=True)}
    metrics |= clinical
    axes = ["mode", "protocol", "ratio", "prompt"]
    runs = runs.assign(cell=row_labels(runs, axes))
    ef = ""
    if clinical:
        ef = " " + " and ".join(_CLINICAL_NOTES[m] for m in clinical)
        ef += (
            ", from Simpson's biplane volumes of the predicted and the reference label maps"
            " per test patient."
        )
    distance_note = (
        " HD95 and ASSD (average symmetric surface distance) are means over the three"
        f" structures, in {'mm' if mm else 'pixels'}."
        if any(m in metrics for m in distances)
        else ""
    )
    images = "" if phase is None else f" at {PHASES[phase]} only"
    caption = (
        f"Per-structure scores, task {escape_latex(task)}"
        f" ({describe(model=model, real_fraction=rf)}), on the real test images{images}."
        + distance_note
        + ef
        + constants_note(runs, axes)
    )
    label = f"tab:structures-{slug(task, model, rf_slug(rf), *([phase] if phase else []))}"
    if phase is not None and per_sample is not None:
        pooled = [m.removesuffix(at) for m in metrics if m.endswith(at)]
        per_sample = phase_samples(per_sample, phase, pooled)
    return metrics_table(
        runs,
        "cell",
        metrics,
        caption,
        label,
        per_sample=per_sample,
        tests=tests,
        test_unit=test_unit,
    )


def _logged(runs: pd.DataFrame, metric: str, every: bool = False) -> bool:
    """Whether `metric` has a value in some run (in every run with `every`)."""
    if metric not in runs.columns:
        return False
    present = runs[metric].notna()
    return bool(present.all() if every else present.any())


def fidelity_table(fid: pd.DataFrame) -> str:
    """Synthetic-set fidelity per generation mode x prompt kind (from `collect_fidelity`), with
    the measuring recipe in the caption and, first and unranked, the real images' own scores
    (`FIDELITY_REFERENCES`). Values with different recipes are not comparable, so `fid` must
    hold one recipe (`write_tables` splits by recipe)."""
    recipe_cols = [c for c in RECIPE_FIELDS if c in fid.columns]
    recipe = {}
    for c in recipe_cols:
        values = pd.unique(fid[c])
        if len(values) > 1:
            raise ValueError(f"fidelity_table: {c} varies {list(values)}; one recipe per table")
        recipe[RECIPE_FIELDS[c]] = values[0]
    recipe = {k: v for k, v in recipe.items() if not pd.isna(v)}
    # The intensity distance beside the other distribution measures, before the judged ones.
    distribution = {
        m: FIDELITY_COLUMNS[m] for m in ("fid", "kid_inception", "fd", "kid", "precision", "recall")
    }
    columns = distribution | INTENSITY_COLUMNS | FIDELITY_COLUMNS | COPY_COLUMNS | MASK_DICE_COLUMNS
    metrics = {m: h for m, h in columns.items() if m in fid and fid[m].notna().any()}
    if not metrics:
        raise ValueError("fidelity_table: no fidelity metrics logged")
    # The real fraction joins the row label where it varies: each fraction has its own set.
    if "real_fraction" not in fid:
        fid = fid.assign(real_fraction=np.nan)
    runs = fid.assign(generator=row_labels(fid, ["mode", "prompt", "real_fraction"], always=2))
    runs, reference_note = _with_reference_row(runs, metrics)
    for name in ("weights SHA-256", "Inception SHA-256"):
        if name in recipe:
            recipe[name] = str(recipe[name])[:12]
    described = "; ".join(f"{k} {escape_latex(v)}" for k, v in recipe.items())
    fractions = fid["real_fraction"].dropna().unique()
    one = len(fractions) == 1
    caption = (
        "Fidelity of the synthetic sets per generation mode and prompt kind: Fr\\'echet distance"
        " (FD) and KID to the real reference set, precision and recall, conditioning fidelity"
        " (accuracy with which view, phase and quality are recognised in the synthetic images)"
        " and mask Dice (agreement of an image with its label map: Dice between a real-trained"
        " segmenter's prediction on the image and the label, per structure and mean)."
        + (
            " Intensity W1: Wasserstein-1 distance between the synthetic and the reference"
            " images' grey-level histograms, in 8-bit levels (FD's features do not see"
            " brightness)."
            if "intensity_w1" in metrics
            else ""
        )
        + (
            " FID and KID (Inc.): the standard Fr\\'echet Inception distance and KID, in"
            " InceptionV3's 2048-d pool features with the FID weights (SHA-256 in the recipe),"
            " images resized to 299 px, grey as three equal channels; FD and KID are in the"
            " echo encoder's features."
            if "fid" in metrics
            else ""
        )
        + (
            " Copies: share of synthetic images nearer (RMS pixel difference) to an image"
            " their generator was trained on than every real test image is."
            if "copy_share" in metrics
            else ""
        )
        + (f" Recipe: {described}." if described else "")
        + (f" Synthetic sets for {describe(real_fraction=fractions[0])}." if one else "")
        + _judged_note(fid)
        + reference_note
        + (f" {_KID_NOTE}" if "kid" in metrics or "kid_inception" in metrics else "")
    )
    label = "tab:fidelity" + (f"-{slug(*recipe.values())}" if recipe else "")
    # Repeated fidelity runs of one synthetic set are replicates, not training seeds.
    return metrics_table(
        runs,
        "generator",
        metrics,
        caption,
        label,
        over="runs",
        unranked=[REFERENCE_LABEL] if reference_note else [],
        rank_floor=RANK_FLOORS,
    )


_KID_NOTE = "KID below 0 ranks as 0 (an unbiased estimate of a squared distance)."


def _with_reference_row(runs: pd.DataFrame, metrics: dict[str, str]) -> tuple[pd.DataFrame, str]:
    """`runs` with the real images' scores as rows labelled `REFERENCE_LABEL` (each column's
    distinct values; every fidelity run of a dataset carries the same), ordered first, and
    the caption sentence that says what they are ("" and `runs` when none was logged)."""
    refs = {m: r for m, r in FIDELITY_REFERENCES.items() if m in metrics and r in runs}
    refs = {m: r for m, r in refs.items() if runs[r].notna().any()}
    if not refs:
        return runs, ""
    # Per column, its distinct values: a measurement repeated in every run counts once.
    values = {m: pd.unique(runs[r].dropna()).astype(float) for m, r in refs.items()}
    n = max(len(v) for v in values.values())
    rows = pd.DataFrame(
        {m: np.pad(v, (0, n - len(v)), constant_values=np.nan) for m, v in values.items()}
    )
    labels = [REFERENCE_LABEL, *runs["generator"].cat.categories]
    both = pd.concat([rows.assign(generator=REFERENCE_LABEL), runs], ignore_index=True)
    both["generator"] = pd.Categorical(both["generator"], categories=labels, ordered=True)
    distributional = ("fd", "kid", "precision", "recall", "intensity_w1", "copy_share")
    floor = [metrics[m] for m in distributional if m in refs]
    judged = [metrics[m] for m in refs if metrics[m] not in floor]
    parts = []
    if floor:
        parts.append(
            f"{', '.join(floor)} of a second real sample (the validation split, floor N"
            " images) against the same reference, the floor of real images (FD and KID"
            " depend on the sample sizes)"
        )
    if judged:
        parts.append(f"{', '.join(judged)} of the real test images with their true labels")
    note = f" First row, {REFERENCE_LABEL} (not ranked): {'; '.join(parts)}."
    return both, note


def _judged_note(fid: pd.DataFrame) -> str:
    """The caption sentence naming the real-trained judges (model, weights hash, epochs),
    where the runs logged them and agree on one value."""

    def single(column: str) -> object | None:
        values = pd.unique(fid[column].dropna()) if column in fid else []
        return values[0] if len(values) == 1 else None

    parts = []
    for prefix, judge in JUDGES.items():
        model, sha = single(prefix), single(f"{prefix}_sha256")
        if model is not None:
            epochs = single(f"{prefix}_epochs")
            text = f"{judge} {escape_latex(model)}"
            text += f" (weights {str(sha)[:12]})" if sha is not None else ""
            text += f", {epochs} epochs on the real training split" if epochs is not None else ""
            parts.append(text)
    return f" Judges: {'; '.join(parts)}." if parts else ""


def write_tables(
    df: pd.DataFrame,
    per_sample: pd.DataFrame | None,
    out_dir: str | Path,
    *,
    fidelity: pd.DataFrame | None = None,
    curves: pd.DataFrame | None = None,
    tests: list[pd.DataFrame] | None = None,
    test_unit: str = "image",
    settings: pd.DataFrame | None = None,
) -> list[Path]:
    """Write every table the data supports as `<name>.tex` in `out_dir`; return the paths.

    sb: per (model, real fraction) when vlseg runs have prompts; de: per (task, model, protocol,
    real fraction) with at least one synthetic cell; structures: per (segmentation task, model,
    real fraction) with per-structure Dice, and per phase (ED, ES) where it was logged;
    convergence: per (task, model, real fraction) where epochs_to_95 was logged; fidelity: per
    recipe when `fidelity` has rows.
    `tests`, when given, receives per table with significance marks the paired tests behind
    them: `table` (the file's stem), then `SIGNIFICANCE_COLUMNS`. `test_unit`: what the tests pair,
    each test image or each test patient (`reports.stats.TEST_UNITS`). `settings`
    (`reports.collect.collect_settings`' frame), when given, adds to the caption of a table
    whose runs were computed under different settings which ones differ
    (`reports.settings.mixed_note`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = usable_runs(df)
    written: list[Path] = []
    found: list[pd.DataFrame] = []  # the tests of the table being made

    def emit(name: str, tex: str, shown: pd.DataFrame | None = None) -> None:
        if settings is not None and shown is not None:
            tex = with_caption_note(tex, mixed_note(shown, settings))
        path = out / f"{name}.tex"
        path.write_text(tex)
        written.append(path)
        if tests is not None:
            tests.extend(f.assign(table=name)[["table", *SIGNIFICANCE_COLUMNS]] for f in found)
        found.clear()

    def combos(frame: pd.DataFrame, axes: list[str]) -> list[tuple]:
        return sorted(frame[axes].drop_duplicates().itertuples(index=False, name=None), key=str)

    cells = runs[~baseline_rows(runs)]
    vl = runs[(runs["task"] == "vlseg") & (runs["prompt"] != "-")]
    for model, rf in combos(vl, ["model", "real_fraction"]):
        emit(
            f"sb-{slug(model, rf_slug(rf))}",
            sb_table(runs, per_sample, model, real_fraction=rf, tests=found, test_unit=test_unit),
            slice_runs(runs, task="vlseg", model=model, real_fraction=rf),
        )
    for task, model, protocol, rf in combos(cells, ["task", "model", "protocol", "real_fraction"]):
        tex = de_table(
            runs,
            per_sample,
            task,
            model=model,
            protocol=protocol,
            real_fraction=rf,
            tests=found,
            test_unit=test_unit,
        )
        shown = slice_runs(runs, task=task, model=model, protocol=protocol, real_fraction=rf)
        emit(f"de-{slug(task, model, protocol, rf_slug(rf))}", tex, shown)
    if "dice_lv" in runs.columns:
        parts = runs[runs["task"].isin(["seg", "vlseg"]) & runs["dice_lv"].notna()]
        for task, model, rf in combos(parts, ["task", "model", "real_fraction"]):
            axes = {"model": model, "real_fraction": rf, "per_sample": per_sample}
            axes |= {"tests": found, "test_unit": test_unit}
            tex = structures_table(runs, task, **axes)
            part = slice_runs(runs, task=task, model=model, real_fraction=rf)
            emit(f"structures-{slug(task, model, rf_slug(rf))}", tex, part)
            for phase in PHASES:  # seg: the same per phase, as CAMUS reports it
                if f"dice_lv_{phase}" in part.columns and part[f"dice_lv_{phase}"].notna().any():
                    tex = structures_table(runs, task, phase=phase, **axes)
                    emit(f"structures-{slug(task, model, rf_slug(rf), phase)}", tex, part)
    if "epochs_to_95" in runs.columns:
        timed = runs[runs["epochs_to_95"].notna()]
        for task, model, rf in combos(timed, ["task", "model", "real_fraction"]):
            tex = convergence_table(runs, task, model=model, real_fraction=rf, curves=curves)
            shown = slice_runs(runs, task=task, model=model, real_fraction=rf)
            emit(f"convergence-{slug(task, model, rf_slug(rf))}", tex, shown)
    if fidelity is not None and len(fidelity):
        recipe_cols = [c for c in RECIPE_FIELDS if c in fidelity.columns]
        groups = fidelity.groupby(recipe_cols, dropna=False) if recipe_cols else [((), fidelity)]
        for i, (_, group) in enumerate(groups):
            emit("fidelity" + (f"-{i + 1}" if i else ""), fidelity_table(group))
    return written
