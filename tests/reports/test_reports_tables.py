"""reports.tables: numbers, bold, significance marks and escaping in the LaTeX tables."""

import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from reports.axes import is_higher_better
from reports.latex import escape_latex
from reports.stats import holm
from reports.table_layout import SIGNIFICANCE_COLUMNS
from reports.tables import (
    convergence_table,
    de_table,
    fidelity_table,
    pivot_table_tex,
    sb_table,
    structures_table,
    write_tables,
)

SAMPLES = [f"p{i:03d}" for i in range(20)]
# Per-sample offsets from the baseline. text: all 20 improve (clearly significant);
# semantic: symmetric +/- (R+ = R-, p = 1); corrupted: all 20 get worse.
OFFSETS = {
    "none": np.zeros(20),
    "text": np.full(20, 0.05),
    "semantic": np.repeat([0.01, -0.01], 10) * np.tile(np.arange(1, 11), 2) / 10,
    "corrupted": np.full(20, -0.05),
}
# Hand-made run-level results: (mode, ratio) -> dice per seed 0, 1.
DICE = {
    ("none", 0.0): [0.80, 0.82],  # 0.810 +- 0.014
    ("text", 1.0): [0.90, 0.86],  # 0.880 +- 0.028  <- best at ratio 1
    ("semantic", 1.0): [0.84, 0.84],  # 0.840 +- 0.000
    ("corrupted", 1.0): [0.70, 0.74],  # 0.720 +- 0.028
    ("text", 0.5): [0.83, 0.85],  # 0.840 +- 0.014
    ("semantic", 0.5): [0.82, 0.82],  # 0.820 +- 0.000
}


def _runs_and_samples(task="seg", prompt="-", model="unet", protocol="mix", dice=DICE):
    runs, rows = [], []
    for (mode, ratio), values in dice.items():
        proto = "mix" if mode == "none" else protocol
        key = f"{task}|{model}|{mode}|{prompt}|{ratio}|{proto}"
        for seed, value in enumerate(values):
            run_id = f"{key}|{seed}"
            runs.append(
                dict(
                    run_id=run_id,
                    cell_key=key,
                    task=task,
                    mode=mode,
                    prompt=prompt,
                    ratio=ratio,
                    protocol=proto,
                    real_fraction=1.0,
                    seed=seed,
                    model=model,
                    primary_metric="dice_mean",
                    status="ok",
                    dice_mean=value,
                    hd95_mean=10 * (1 - value),
                )
            )
            base = 0.5 + 0.01 * np.arange(20)
            rows += [
                dict(run_id=run_id, cell_key=key, seed=seed, sample=s, metric="dice_mean", value=v)
                for s, v in zip(SAMPLES, base + OFFSETS[mode])
            ]
    return pd.DataFrame(runs), pd.DataFrame(rows)


def _row(tex: str, label: str) -> str:
    (line,) = [ln for ln in tex.splitlines() if ln.startswith(f"{label} &")]
    return line


def test_pivot_numbers_bold_and_marks():
    runs, per_sample = _runs_and_samples()
    tex = pivot_table_tex(runs, per_sample, "mode", "ratio", "dice_mean", "Dice.", "tab:dice")
    assert _row(tex, "none") == r"none & 0.810 $\pm$ 0.014 & -- & -- \\"
    # Text is best in both ratio columns (bold); all 20 samples improved: significant, better.
    assert _row(tex, "text") == (
        r"text & -- & \textbf{0.840 $\pm$ 0.014$^{*}$} & \textbf{0.880 $\pm$ 0.028$^{*}$} \\"
    )
    # Symmetric differences: no mark.
    assert _row(tex, "semantic") == r"semantic & -- & 0.820 $\pm$ 0.000 & 0.840 $\pm$ 0.000 \\"
    assert _row(tex, "corrupted") == r"corrupted & -- & -- & 0.720 $\pm$ 0.028$^{\dagger}$ \\"
    assert r"\begin{table}" in tex and r"\end{table}" in tex
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\label{tab:dice}" in tex
    assert "mode / ratio & 0 & 0.5 & 1" in tex
    caption = re.search(r"\\caption\{(.*)\}", tex).group(1)
    assert caption.startswith("Dice.") and "Holm" in caption and "5 tests" in caption


def test_lower_is_better_bolds_the_minimum():
    runs, _ = _runs_and_samples()
    tex = pivot_table_tex(runs, None, "mode", "ratio", "hd95_mean", "HD95.", "tab:hd")
    # hd95 = 10 (1 - dice): text at ratio 1 has the lowest (1.20).
    assert r"\textbf{1.20 $\pm$ 0.28}" in _row(tex, "text")
    assert "lower is better" in tex
    assert "$^{*}$" not in tex  # no per-sample values, no tests


def test_single_seed_shows_mean_only():
    runs, per_sample = _runs_and_samples()
    one = runs[runs["seed"] == 0]
    tex = pivot_table_tex(one, per_sample, "mode", "ratio", "dice_mean", "c", "tab:x")
    assert _row(tex, "none") == r"none & 0.800 & -- & -- \\"
    assert "single seed shows the mean only" in tex


def test_pooling_different_cells_is_an_error():
    runs, _ = _runs_and_samples()
    other = runs.assign(real_fraction=0.25, cell_key=runs["cell_key"] + "|rf")
    with pytest.raises(ValueError, match="real_fraction"):
        pivot_table_tex(pd.concat([runs, other]), None, "mode", "ratio", "dice_mean", "c", "t")


def test_failed_and_duplicate_runs_are_left_out():
    runs, _ = _runs_and_samples()
    failed = runs.iloc[[0]].assign(run_id="x", dice_mean=0.0, status="failed")
    tex = pivot_table_tex(pd.concat([runs, failed]), None, "mode", "ratio", "dice_mean", "c", "t")
    assert _row(tex, "none") == r"none & 0.810 $\pm$ 0.014 & -- & -- \\"


def test_de_table_rows_and_caption():
    runs, per_sample = _runs_and_samples()
    tex = de_table(runs, per_sample, "seg")
    assert _row(tex, "real only").startswith(r"real only & 0.810 $\pm$ 0.014")
    assert r"\textbf{0.880 $\pm$ 0.028$^{*}$}" in _row(tex, "text")
    assert r"dice\_mean" in tex and r"\label{tab:de-seg-unet-mix-rf1}" in tex


def test_sb_table_escapes_protocols_and_orders_prompts():
    dice = {("none", 0.0): [0.88, 0.89], ("semantic", 1.0): [0.85, 0.84]}
    frames = []
    for prompt in ["P0", "P2", "P10", "P1"]:
        for protocol in ["synthetic_only", "pretrain"]:
            frames.append(_runs_and_samples("vlseg", prompt, "clipseg", protocol, dice))
    runs = pd.concat([f[0] for f in frames]).drop_duplicates("run_id")
    per_sample = pd.concat([f[1] for f in frames]).drop_duplicates(["run_id", "sample"])
    tex = sb_table(runs, per_sample, "clipseg")
    assert "strategy / prompt & P0 & P1 & P2 & P10" in tex
    rows = [ln.split(" & ")[0] for ln in tex.splitlines() if ln.endswith(r"\\")][1:]
    assert rows == ["real only", "pretrain", r"synthetic\_only"]
    assert r"\label{tab:sb-clipseg-rf1}" in tex


def test_convergence_speedup_is_time_to_the_baselines_target():
    """Speed-up = baseline epochs_to_95 / the cell's epochs to the baseline's 95 % score.
    A run that never learns reaches 95 % of its own best (0) in epoch 1; against the
    baseline's target it never arrives: speed-up 0, not 12."""
    runs, _ = _runs_and_samples()
    runs["val_auc"] = 0.5
    curves = []

    def curve(run_id, values):
        curves.extend(dict(run_id=run_id, step=i, value=v) for i, v in enumerate(values))

    e95 = {}
    for run_id, mode, ratio, seed in runs[["run_id", "mode", "ratio", "seed"]].itertuples(False):
        if mode == "none":  # best 0.8, target 0.76, first reached in epoch 12
            curve(run_id, [0.1] * 11 + [0.8] * 5)
            e95[run_id] = 12
        elif (mode, ratio) == ("text", 1.0):  # reaches 0.76 in epoch 4 (seed 0) or 6
            reach = 4 + 2 * seed
            curve(run_id, [0.3] * (reach - 1) + [0.78] + [0.9] * 4)
            e95[run_id] = reach + 1  # its own best (0.9) comes later: not what counts
        elif mode == "corrupted":
            curve(run_id, [0.0] * 16)
            e95[run_id] = 1
        else:
            e95[run_id] = 5  # no curve logged: no speed-up
    runs["epochs_to_95"] = runs["run_id"].map(e95).astype(float)
    tex = convergence_table(runs, "seg", curves=pd.DataFrame(curves))
    # Speed-up per seed: 12/4 = 3, 12/6 = 2 -> 2.50 +- 0.71; baseline 1.
    assert r"\textbf{2.50 $\pm$ 0.71}" in _row(tex, r"text, ratio 1")
    assert _row(tex, "corrupted, ratio 1").endswith(r"0.00 $\pm$ 0.00 \\")
    assert _row(tex, "real only").endswith(r"1.00 $\pm$ 0.00 \\")
    assert _row(tex, "semantic, ratio 1").endswith(r"-- \\")
    assert r"epochs to 95\%" in tex and "0 if never" in tex
    # Without curves there is no speed-up column.
    assert "speed-up" not in convergence_table(runs, "seg")


def _with_structures(runs, mm=True):
    """Per-structure Dice from the mean (LV +0.05, MYO -0.10, LA +0.05) and distances."""
    runs = runs.assign(
        dice_lv=runs["dice_mean"] + 0.05,
        dice_myo=runs["dice_mean"] - 0.10,
        dice_la=runs["dice_mean"] + 0.05,
        assd_mean=runs["hd95_mean"] / 4,
    )
    if mm:
        runs = runs.assign(hd95_mm_mean=runs["hd95_mean"] * 0.3, assd_mm_mean=runs["hd95_mean"])
    return runs


def test_structures_table_columns_units_and_directions():
    runs, _ = _runs_and_samples()
    tex = structures_table(_with_structures(runs), "seg")
    assert "Dice LV & Dice MYO & Dice LA & Dice mean & HD95 (mm) & ASSD (mm)" in tex
    # text at ratio 1: Dice 0.88 +- 0.028 -> LV 0.93, MYO 0.78; HD95 10 (1 - dice) mm * 0.3.
    row = _row(tex, "text, ratio 1")
    assert row.startswith(r"text, ratio 1 & \textbf{0.930 $\pm$ 0.028} & \textbf{0.780")
    assert r"\textbf{0.360 $\pm$ 0.085}" in row  # HD95 (mm): lowest is best
    assert "in mm" in tex and "lower is better" in tex
    # One run without a spacing: the distances fall back to pixels for the whole table.
    mixed = _with_structures(runs)
    mixed.loc[0, ["hd95_mm_mean", "assd_mm_mean"]] = np.nan
    tex = structures_table(mixed, "seg")
    assert "HD95 (px) & ASSD (px)" in tex and "in pixels" in tex
    with pytest.raises(ValueError, match="no per-structure Dice"):
        structures_table(runs, "seg")


def test_structures_table_marks_per_sample_metrics_against_the_baseline():
    runs, per_sample = _runs_and_samples()
    runs = _with_structures(runs).assign(ef_mae=5.0, ef_corr=0.9)
    # Per-image HD95 in mm: text lower (better) on every image, corrupted higher.
    hd = per_sample.assign(metric="hd95_mm_mean", value=10 - 10 * per_sample["value"])
    tex = structures_table(runs, "seg", per_sample=pd.concat([per_sample, hd]))
    text, corrupted = _row(tex, "text, ratio 1"), _row(tex, "corrupted, ratio 1")
    cells = [c.strip() for c in text.removesuffix(r" \\").split("&")]
    # Dice mean (col 4) and HD95 (col 5) have per-image values: marked; Dice LV, EF: not.
    assert cells[4].endswith("$^{*}$}") and cells[5].endswith("$^{*}$}")
    assert "$^" not in cells[1] and "$^" not in cells[7] and "$^" not in cells[8]
    bad = [c.strip() for c in corrupted.removesuffix(r" \\").split("&")]
    assert bad[4].endswith(r"$^{\dagger}$") and bad[5].endswith(r"$^{\dagger}$")
    assert "semantic, ratio 1 & " in tex and "$^" not in _row(tex, "semantic, ratio 1")
    # 5 cells x 2 metrics, one Holm family: the caption counts them.
    assert "over the 10 tests in this table" in tex
    assert "Wilcoxon" not in structures_table(runs, "seg")  # no per-sample values: no tests


def test_structures_table_per_phase_takes_that_phases_scores_and_volume_error():
    runs, per_sample = _runs_and_samples()
    runs = _with_structures(runs)
    # ES scores 0.1 below the pooled ones, with the ESV error; EF columns stay pooled.
    runs = runs.assign(
        **{f"{m}_es": runs[m] - 0.1 for m in ("dice_lv", "dice_myo", "dice_la", "dice_mean")},
        hd95_mm_mean_es=runs["hd95_mm_mean"] * 2,
        assd_mm_mean_es=runs["assd_mm_mean"] * 2,
        ef_mae=5.0,
        esv_mae_ml=runs["dice_mean"] * 10,
    )
    tex = structures_table(runs, "seg", phase="es")
    assert "at end-systole (ES) only" in tex and "label{tab:structures-seg-unet-rf1-es}" in tex
    assert "Dice mean & HD95 (mm) & ASSD (mm) & ESV MAE (mL)" in tex and "EF MAE" not in tex
    row = _row(tex, "text, ratio 1")
    assert row.startswith(r"text, ratio 1 & \textbf{0.830 $\pm$ 0.028}")  # 0.93 - 0.1
    assert r"\textbf{0.72 $\pm$ 0.17}" in row  # HD95 (mm) doubled, the lowest is bold
    assert "EF MAE" in structures_table(runs, "seg")  # the pooled table keeps the EF
    # Per-patient ESV errors (the report's patient_errors rows): only that column is tested.
    esv = per_sample.assign(metric="esv_mae_ml", value=10 * per_sample["value"])
    marked = structures_table(runs, "seg", phase="es", per_sample=pd.concat([per_sample, esv]))
    cells = [c.strip() for c in _row(marked, "text, ratio 1").removesuffix(r" \\").split("&")]
    assert cells[-1].endswith("$^{\\dagger}$") and not any("$^" in c for c in cells[:-1])
    assert "over the 5 tests in this table" in marked
    with pytest.raises(ValueError, match="no per-structure Dice at ED"):
        structures_table(runs, "seg", phase="ed")
    with pytest.raises(ValueError, match="phase must be one of"):
        structures_table(runs, "seg", phase="diastole")


def _fidelity():
    return pd.DataFrame(
        dict(
            run_id=["a", "b", "c"],
            mode=["text", "text", "semantic"],
            prompt=["P1", "P3", "-"],
            fd=[12.0, 9.5, 20.0],
            kid=[0.012, 0.009, 0.03],
            mask_dice=[0.7, 0.8, 0.9],
            **{
                "recipe.extractor": ["echo_encoder"] * 3,
                "recipe.weights_sha256": ["0123456789abcdef" * 4] * 3,
                "recipe.resolution": ["128"] * 3,
                "recipe.n": ["1000"] * 3,
                "recipe.reference_split": ["train"] * 3,
            },
        )
    )


def test_fidelity_table_recipe_and_directions():
    tex = fidelity_table(_fidelity())
    assert r"extractor echo\_encoder" in tex and "0123456789ab" in tex and "N 1000" in tex
    assert r"\textbf{9.50}" in _row(tex, "text, P3")  # FD: lower is better
    assert r"\textbf{0.900}" in _row(tex, "semantic")  # mask Dice: higher is better
    with pytest.raises(ValueError, match="recipe"):
        fidelity_table(_fidelity().assign(**{"recipe.resolution": ["128", "128", "256"]}))


def test_fidelity_table_reference_row_and_kid_ties():
    # The real images' scores ride on every run of a dataset; the table shows them once,
    # first, ruled off and never bold, even where they beat every generator.
    fid = _fidelity().assign(
        kid=[-0.004, 0.02, -0.001],  # two estimates below 0: a tie at 0, not a win of -0.004
        fd_floor=5.0,
        kid_floor=-0.002,
        mask_dice_real=0.95,
        real_fraction=0.1,
        **{"recipe.n_floor": "200"},
    )
    tex = fidelity_table(fid)
    lines = tex.splitlines()
    first = lines.index(r"\midrule") + 1
    assert lines[first] == r"real images & 5.00 & -0.002 & 0.950 \\"
    assert lines[first + 1] == r"\midrule"
    assert r"\textbf{9.50}" in _row(tex, "text, P3")  # FD: the floor of 5.00 is not ranked
    assert r"\textbf{0.900}" in _row(tex, "semantic")  # mask Dice: nor is 0.950
    assert r"\textbf{-0.004}" in _row(tex, "text, P1")
    assert r"\textbf{-0.001}" in _row(tex, "semantic")
    assert "textbf" not in _row(tex, "text, P3").split(" & ")[2]
    assert "floor N 200" in tex and "Synthetic sets for real fraction 0.1" in tex
    assert "FD, KID of a second real sample" in tex and "mask Dice of the real test" in tex
    # Runs logged before the floor: no reference row, no rule.
    assert "real images" not in fidelity_table(_fidelity())
    assert fidelity_table(_fidelity()).count(r"\midrule") == 1


def test_write_tables_skips_absent_axes(tmp_path):
    runs, per_sample = _runs_and_samples()
    paths = write_tables(runs, per_sample, tmp_path)
    assert [p.name for p in paths] == ["de-seg-unet-mix-rf1.tex"]  # no vlseg, no epochs
    runs["epochs_to_95"] = 3.0
    paths = write_tables(runs, per_sample, tmp_path / "all", fidelity=_fidelity())
    names = sorted(p.name for p in paths)
    assert names == ["convergence-seg-unet-rf1.tex", "de-seg-unet-mix-rf1.tex", "fidelity.tex"]
    assert all(p.read_text().startswith(r"\begin{table}") for p in paths)
    paths = write_tables(_with_structures(runs), per_sample, tmp_path / "parts")
    assert "structures-seg-unet-rf1.tex" in [p.name for p in paths]
    assert not any(p.name.endswith(("-ed.tex", "-es.tex")) for p in paths)
    phased = _with_structures(runs).assign(dice_lv_ed=0.9, dice_lv_es=0.8, esv_mae_ml=5.0)
    esv = per_sample.assign(metric="esv_mae_ml", value=10 * per_sample["value"])
    paths = write_tables(phased, pd.concat([per_sample, esv]), tmp_path / "phases")
    names = [p.name for p in paths]
    # The phase tables get the per-sample rows too: their volume error is tested.
    assert "Wilcoxon" in (tmp_path / "phases" / "structures-seg-unet-rf1-es.tex").read_text()
    assert [n for n in names if n.startswith("structures-")] == [
        "structures-seg-unet-rf1.tex",
        "structures-seg-unet-rf1-ed.tex",
        "structures-seg-unet-rf1-es.tex",
    ]


def test_significance_rows_are_the_tests_behind_each_tables_marks(tmp_path):
    runs, per_sample = _runs_and_samples()
    hd = per_sample.assign(metric="hd95_mm_mean", value=10 - 10 * per_sample["value"])
    found = []
    paths = write_tables(_with_structures(runs), pd.concat([per_sample, hd]), tmp_path, tests=found)
    tests = pd.concat(found, ignore_index=True)
    assert list(tests.columns) == ["table", *SIGNIFICANCE_COLUMNS]
    de = tests[tests["table"] == "de-seg-unet-mix-rf1"]
    # In the table's reading order: rows text, semantic, corrupted; within a row the ratios.
    assert list(zip(de["row"], de["column"])) == [
        ("text", "0.5"),
        ("text", "1"),
        ("semantic", "0.5"),
        ("semantic", "1"),
        ("corrupted", "1"),
    ]
    assert list(de["verdict"]) == ["better", "better", "n.s.", "n.s.", "worse"]
    assert (de["metric"] == "dice_mean").all() and (de["n_pairs"] == 20).all()
    assert (de["n_seeds"] == 2).all()
    assert list(de["median_diff"].round(6)) == [0.05, 0.05, 0.0, 0.0, -0.05]
    # Every image moved by 0.05: so did every resample's mean. Semantic's interval holds 0.
    assert np.allclose(de[["mean_diff", "ci_low", "ci_high"]].iloc[[0, 1]], 0.05)
    assert np.allclose(de[["mean_diff", "ci_low", "ci_high"]].iloc[4], -0.05)
    assert (de["ci_low"].iloc[[2, 3]] < 0).all() and (de["ci_high"].iloc[[2, 3]] > 0).all()
    # p: the signed-rank test of the 20 per-image differences of the seed means.
    by_seed = per_sample.pivot_table("value", ["cell_key", "sample"], "seed").mean(axis=1)
    base = by_seed["seg|unet|none|-|0.0|mix"]
    for row, key in [
        ("text", "seg|unet|text|-|1.0|mix"),
        ("corrupted", "seg|unet|corrupted|-|1.0|mix"),
    ]:
        expected = wilcoxon((by_seed[key] - base).to_numpy()).pvalue
        assert de.loc[(de["row"] == row) & (de["column"] == "1"), "p_value"].item() == expected
    # Semantic's differences are symmetric: R+ = R-, p = 1. (Text's and corrupted's p differ
    # with the SciPy version, which may or may not treat their rounding-level ties as ties.)
    p = dict(zip(zip(de["row"], de["column"]), de["p_value"]))
    holm_p = dict(zip(zip(de["row"], de["column"]), de["p_holm"]))
    assert p[("text", "0.5")] == p[("text", "1")] and p[("corrupted", "1")] < 1e-4
    assert p[("semantic", "0.5")] == p[("semantic", "1")] == 1.0
    # Holm over the table's 5 tests: the two p of 1 stay 1; the smallest p is multiplied by 5.
    assert holm_p[("semantic", "0.5")] == holm_p[("semantic", "1")] == 1.0
    assert min(holm_p.values()) == 5 * min(p.values())
    # Each table is one family, and its verdicts are the marks it prints.
    for name, group in tests.groupby("table"):
        assert np.allclose(group["p_holm"], holm(group["p_value"].to_numpy()))
        tex = (tmp_path / f"{name}.tex").read_text()
        body = tex[tex.index(r"\midrule") : tex.index(r"\bottomrule")]  # not the caption's key
        verdicts = group["verdict"].value_counts()
        assert body.count("$^{*}$") == verdicts.get("better", 0)
        assert body.count(r"$^{\dagger}$") == verdicts.get("worse", 0)
    parts = tests[tests["table"] == "structures-seg-unet-rf1"]
    assert set(parts["column"]) == {"Dice mean", "HD95 (mm)"}  # the per-sample metrics
    assert len(parts) == 10 and sorted(p.stem for p in paths) == sorted(
        ["de-seg-unet-mix-rf1", "structures-seg-unet-rf1"]
    )
    better = parts[parts["row"] == "text, ratio 1"].set_index("metric")["verdict"]
    assert better.to_dict() == {"dice_mean": "better", "hd95_mm_mean": "better"}  # lower HD95
    assert set(tests["unit"]) == {"image"}
    # Paired by patient, every table says so (these sample ids name patients already).
    found.clear()
    write_tables(
        _with_structures(runs), per_sample, tmp_path / "patients", tests=found, test_unit="patient"
    )
    assert [set(f["unit"]) for f in found] == [{"patient"}, {"patient"}]
    assert (
        "per-patient test values"
        in (tmp_path / "patients" / "structures-seg-unet-rf1.tex").read_text()
    )
    # Without per-sample values a table has no tests, and no rows; nor with too few pairs.
    found.clear()
    write_tables(runs, None, tmp_path / "plain", tests=found)
    assert found == []
    few = per_sample[per_sample["sample"].isin(SAMPLES[:5])]
    write_tables(_with_structures(runs), few, tmp_path / "few", tests=found)
    assert [len(f) for f in found] == [0, 0]
    assert all(list(f.columns) == ["table", *SIGNIFICANCE_COLUMNS] for f in found)


def test_escape_latex():
    assert escape_latex("synthetic_only") == r"synthetic\_only"
    assert escape_latex("a&b%c$d#e{f}") == r"a\&b\%c\$d\#e\{f\}"
    assert escape_latex("~^\\") == r"\textasciitilde{}\textasciicircum{}\textbackslash{}"


@pytest.mark.parametrize(
    ("metric", "higher"),
    [
        ("dice_mean", True),
        ("f1_macro", True),
        ("auroc", True),
        ("hd95_mean", False),
        ("fd", False),
        ("kid", False),
        ("epochs_to_95", False),
        ("test/hd95_lv", False),
    ],
)
def test_metric_direction(metric, higher):
    assert is_higher_better(metric) is higher


def test_per_phase_tables_test_dice_on_that_phases_images():
    runs, per_sample = _runs_and_samples()
    phased = {f"{m}_{p}": runs[m] for m in ("dice_mean", "hd95_mean") for p in ("ed", "es")}
    runs = _with_structures(runs, mm=False).assign(
        dice_lv_ed=runs["dice_mean"], dice_lv_es=runs["dice_mean"], **phased
    )
    # Images 0-9 are at ED, 10-19 at ES. Corrupted is worse at ES only: equal to the
    # baseline on the ED images, below it on every ES image.
    ids = {s: f"{s}_A4C_{'ED' if i < 10 else 'ES'}" for i, s in enumerate(SAMPLES)}
    per_sample = per_sample.assign(sample=per_sample["sample"].map(ids))
    bad = per_sample["cell_key"].str.contains("corrupted") & per_sample["sample"].str.endswith(
        "_ED"
    )
    per_sample.loc[bad, "value"] = per_sample.loc[bad, "value"] + 0.05  # back to the baseline

    def corrupted_marks(phase):
        tex = structures_table(runs, "seg", phase=phase, per_sample=per_sample)
        return [c.strip() for c in _row(tex, "corrupted, ratio 1").split("&")], tex

    ed, ed_tex = corrupted_marks("ed")
    es, es_tex = corrupted_marks("es")
    assert "cell & Dice LV & Dice mean & HD95 (px)" in es_tex
    assert "$^" not in "".join(ed)  # all 10 ED differences are zero: p = 1
    assert es[2].endswith(r"$^{\dagger}$")  # Dice mean at ES: 10 of 10 images worse
    assert "$^" not in es[1]  # Dice LV has no per-image rows here: untested
    # Semantic's offsets are + on the ED images, - on the ES ones: better at ED, worse at ES
    # (pooled over both phases they cancel, p = 1).
    assert _row(ed_tex, "semantic, ratio 1").split("&")[2].strip().endswith("$^{*}$")
    assert _row(es_tex, "semantic, ratio 1").split("&")[2].strip().endswith(r"$^{\dagger}$")
    # 5 cells x 1 metric with per-sample values, one Holm family per table.
    assert "over the 5 tests in this table" in ed_tex and "over the 5 tests" in es_tex


def _overfull_boxes(tmp_path, table: str) -> list[str]:
    """pdflatex's Overfull \\hbox warnings for ``table`` on an A4 page with report.tex's
    margins and font."""
    import subprocess

    from reports.document import latex_command

    if latex_command() is None:
        pytest.skip("needs pdflatex (CI installs TeX Live)")
    doc = "\n".join(
        [
            r"\documentclass[10pt,a4paper]{article}",
            r"\usepackage[margin=2cm]{geometry}",
            r"\usepackage{booktabs}",
            r"\usepackage{graphicx}",
            r"\begin{document}",
            table,
            r"\end{document}",
        ]
    )
    (tmp_path / "t.tex").write_text(doc)
    subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "t.tex"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=True,
    )
    log = (tmp_path / "t.log").read_text(errors="replace")
    return re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)


def test_a_table_wider_than_the_page_is_shrunk_to_fit(tmp_path):
    # Ten ratio columns of mean +- std: wider than the text at 10 pt (the fidelity table of
    # a quick sweep ran 92 pt into the margin before the fit).
    ratios = [0.25 * k for k in range(1, 11)]
    dice = {("none", 0.0): [0.80, 0.82]} | {("text", r): [0.84, 0.86] for r in ratios}
    runs, _ = _runs_and_samples(dice=dice)
    tex = pivot_table_tex(runs, None, "mode", "ratio", "dice_mean", "Dice.", "tab:dice")
    assert tex.count(r"\resizebox") == 1 and tex.count("{") == tex.count("}")
    assert _overfull_boxes(tmp_path, tex) == []
    # The same table without the fit runs into the margin: the check above can fail.
    bare = re.sub(r"\\resizebox\{.*?\}\{!\}\{%\n", "", tex).replace(
        "\\end{tabular}}", "\\end{tabular}"
    )
    assert r"\resizebox" not in bare
    assert float(_overfull_boxes(tmp_path, bare)[0]) > 20
