"""`python -m benchmark report RUN_DIR` end to end on a small hand-made sweep: MLflow store,
run folder, tables, figures, report.tex and (with TeX installed) report.pdf."""

import shutil
import subprocess
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from benchmark.__main__ import main
from benchmark.config import TestUnit
from reports.collect import sweep_folder
from reports.document import latex_command
from reports.report import write_report
from reports.stats import TEST_UNITS

REPO = Path(__file__).resolve().parents[2]
SAMPLES = [f"patient{i:04d}-ED" for i in range(8)]
# mode -> (ratio -> dice of seeds 0, 1), and each mode's per-sample offset from the baseline:
# oracle better on every test image, corrupted worse on every one (8 pairs: p = 2/2**8).
DICE = {
    "none": {0.0: [0.40, 0.42]},
    "oracle": {0.5: [0.47, 0.49], 1.0: [0.50, 0.52]},
    "corrupted": {0.5: [0.35, 0.33], 1.0: [0.30, 0.32]},
}
OFFSET = {"none": 0.0, "oracle": 0.08, "corrupted": -0.08}


def _tags(mode, ratio, seed):
    key = f"seg-{mode}-P_-r{ratio:g}-mix-f0.1-s{seed}"
    return {
        "kind": "cell",
        "cell_key": key,
        "task": "seg",
        "mode": mode,
        "prompt": "-",
        "ratio": str(ratio),
        "protocol": "mix",
        "real_fraction": "0.1",
        "seed": str(seed),
        "model": "monai-unet",
        "primary_metric": "dice_mean",
        "status": "ok",
        # The cell's stage folder; the fake run folder has one per (mode, fraction) at ratio 1.
        "stage": f"seg-{mode}-r1-f0.1",
    }


def _sweep(run_dir: Path) -> str:
    """The MLflow store a `smoke` sweep into `run_dir` would leave, made by hand."""
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("smoke", artifact_location=(run_dir / "mlartifacts").as_uri())
    parent = client.create_run(exp, tags={"kind": "sweep", "sweep": "smoke"}).info.run_id
    client.log_param(parent, "out", str(run_dir))
    for mode, ratios in DICE.items():
        for ratio, values in ratios.items():
            for seed, dice in enumerate(values):
                run = client.create_run(
                    exp, tags=_tags(mode, ratio, seed) | {"mlflow.parentRunId": parent}
                ).info.run_id
                metrics = {"test/dice_mean": dice, "epochs_to_95": 3 + (mode != "oracle")}
                curve = [Metric("val/dice_mean", dice * e / 4, 0, e) for e in (1, 2, 3, 4)]
                client.log_batch(
                    run, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()] + curve
                )
                per_sample = 0.4 + OFFSET[mode] + 0.01 * np.arange(len(SAMPLES))
                csv = "sample,dice_mean\n" + "".join(
                    f"{s},{v:.4f}\n" for s, v in zip(SAMPLES, per_sample)
                )
                client.log_text(run, csv, "per_sample.csv")
                client.set_terminated(run)
    client.set_terminated(parent)
    return uri


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fake_run_dir):
    """A sweep folder: config.yaml, data and synthetic stages, MLflow store."""
    run_dir = tmp_path_factory.mktemp("sweep") / "smoke"
    run_dir.mkdir()
    shutil.copyfile(REPO / "configs" / "smoke.yaml", run_dir / "config.yaml")
    fake_run_dir(run_dir, modes=("oracle", "corrupted"), fractions=(0.1,))
    _sweep(run_dir)
    return run_dir


def test_report_command_end_to_end(run_dir, capsys, caplog):
    # In process: the command's own code path without a second interpreter's imports.
    code = main(["report", str(run_dir)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr[-3000:]
    assert "oracle" in stdout and "dice_mean" in stdout  # the summary table
    out = run_dir / "report"
    de = (out / "tables" / "de-seg-monai-unet-mix-rf0p1.tex").read_text()
    # Oracle better on every test image, corrupted worse: marked both ways after Holm.
    assert r"real only & 0.410 $\pm$ 0.014 & -- & -- \\" in de
    oracle = r"oracle & -- & \textbf{0.480 $\pm$ 0.014$^{*}$} & \textbf{0.510 $\pm$ 0.014$^{*}$}"
    assert oracle in de
    assert r"corrupted & -- & 0.340 $\pm$ 0.014$^{\dagger}$ & 0.310 $\pm$ 0.014$^{\dagger}$" in de
    # The tests behind those marks, with their p-values, beside the tables.
    tests = pd.read_csv(out / "significance.csv")
    de_tests = tests[tests["table"] == "de-seg-monai-unet-mix-rf0p1"]
    assert sorted(zip(de_tests["row"], de_tests["verdict"])) == [
        ("corrupted", "worse"),
        ("corrupted", "worse"),
        ("oracle", "better"),
        ("oracle", "better"),
    ]
    assert (de_tests["p_holm"] < 0.05).all() and (de_tests["n_pairs"] == len(SAMPLES)).all()
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["curves-seg-monai-unet.pdf", "ratio-seg-monai-unet.pdf", "samples-rf0p1.png"]
    tex = (out / "report.tex").read_text()
    assert r"\input{tables/de-seg-monai-unet-mix-rf0p1}" in tex
    assert "The 4 paired tests behind the marks of 1 table, with their p-values" in tex
    assert r"{figures/samples-rf0p1.png}" in tex
    if latex_command() is None:
        assert not (out / "report.pdf").exists()
        assert "no latexmk or pdflatex" in caplog.text
        pytest.skip("report.tex checked; compiling needs TeX (CI installs it)")
    pdf = out / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    if shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
        ).stdout
        assert "Downstream results" in text and "0.510 ± 0.014" in text
        assert "real only" in text and "Samples" in text


def test_report_pairs_test_patients_when_the_config_or_the_command_asks(run_dir, tmp_path):
    assert typing.get_args(TestUnit) == TEST_UNITS  # the config's values are the tests' units
    copy = tmp_path / "smoke"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report"))
    config = copy / "config.yaml"
    config.write_text(config.read_text() + "report:\n  test_unit: patient\n")
    assert main(["report", str(copy)]) == 0
    tests = pd.read_csv(copy / "report" / "significance.csv")
    assert len(tests) == 4 and set(tests["unit"]) == {"patient"}
    de = (copy / "report" / "tables" / "de-seg-monai-unet-mix-rf0p1.tex").read_text()
    assert "test on per-patient test values (the mean over each test patient's images)" in de
    # The command's option wins over the folder's config.
    assert (
        main(["report", str(copy), "--out", str(tmp_path / "images"), "--test-unit", "image"]) == 0
    )
    assert set(pd.read_csv(tmp_path / "images" / "significance.csv")["unit"]) == {"image"}


def test_report_finds_the_recorded_run_folder_or_skips_samples(run_dir, tmp_path):
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    # The sweep's parent run records its folder: reports on the sweep's machine find samples.
    assert sweep_folder(uri, "smoke") == run_dir
    # A folder without synthetic stages (or none at all): every other figure, no sample grid.
    stale = tmp_path / "r" / "figures" / "heatmap-seg-old.pdf"  # from an earlier report
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"%PDF")
    made = write_report(uri, "smoke", tmp_path / "r", run_dir=tmp_path, pdf=False)
    assert not stale.exists()
    assert {"tables", "exports", "figures", "tex", "pdf", "summary"} <= set(made)
    assert made["pdf"] is None and made["tex"].is_file()
    assert [p.name for p in made["figures"]] == [
        "ratio-seg-monai-unet.pdf",
        "curves-seg-monai-unet.pdf",
    ]


def test_report_of_a_moved_sweep_folder_reads_its_artifacts_and_stages(
    tmp_path, fake_run_dir, recwarn
):
    """A sweep folder copied off the GPU machine: MLflow still names the artifacts' old
    absolute location, and the sweep's recorded `out` no longer exists."""
    made = tmp_path / "gpu-machine" / "smoke"
    made.mkdir(parents=True)
    shutil.copyfile(REPO / "configs" / "smoke.yaml", made / "config.yaml")
    fake_run_dir(made, modes=("oracle", "corrupted"), fractions=(0.1,))
    _sweep(made)
    moved = tmp_path / "laptop" / "smoke"
    moved.parent.mkdir()
    shutil.move(made, moved)

    assert main(["report", str(moved)]) == 0
    assert not [w for w in recwarn if "per_sample.csv" in str(w.message)]
    out = moved / "report"
    per_sample = (out / "per_sample.csv").read_text().splitlines()
    assert len(per_sample) == 1 + 10 * len(SAMPLES)  # 10 runs, every test image of each
    de = (out / "tables" / "de-seg-monai-unet-mix-rf0p1.tex").read_text()
    assert r"\textbf{0.510 $\pm$ 0.014$^{*}$}" in de  # the paired tests had their samples
    assert (out / "figures" / "samples-rf0p1.png").is_file()
