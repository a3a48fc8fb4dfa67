"""The GPU checks' kit (scripts/gpu/, configs/gpu.yaml): what can be checked without a GPU,
so that a session that gets one spends its minutes measuring, not debugging."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from benchmark.config import load_config, to_dict
from benchmark.grid import Mode
from generators.registry import IMPLEMENTED as IMPLEMENTED_MODES
from sweeps.grid import check_runnable
from sweeps.plan import grid_cells
from tests.conftest import CONFIGS

ROOT = CONFIGS.parent
RUN_SH = ROOT / "scripts" / "gpu" / "run.sh"


def kit_tree(tmp_path: Path) -> Path:
    """A checkout holding run.sh only (no .site, .whl or .minilm: a fresh machine)."""
    (tmp_path / "scripts" / "gpu").mkdir(parents=True)
    shutil.copy(RUN_SH, tmp_path / "scripts" / "gpu" / "run.sh")
    return tmp_path


def run_sh(tree: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(tree / "scripts" / "gpu" / "run.sh"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OUT": str(tree / "out"), **env},
        timeout=600,
    )


def test_gpu_preset_covers_every_generator_and_every_task_real_only():
    cfg = load_config(
        CONFIGS / "gpu.yaml",
        ["generator.text_encoder=/enc", "downstream.vlseg.text_encoder=/enc"],
    )
    cells = grid_cells(cfg)
    check_runnable(cfg, cells)
    assert cfg.data.size == 128 and cfg.device == "cuda"
    real_only = [c for c in cells if c.mode is Mode.NONE]
    assert {(c.task.value, c.real_fraction, c.seed) for c in real_only} == {
        (t, f, s) for t in ("seg", "cls", "vlseg") for f in (1.0, 0.1) for s in (0, 1, 2)
    }
    assert {c.mode for c in cells} - {Mode.NONE} == set(IMPLEMENTED_MODES)
    assert len(cells) == 24


def test_gpu_preset_trains_downstream_as_the_paper_preset():
    # Its cells are the paper's at 128 px, so that `project --from runs/gpu --config paper`
    # measures the paper's models and each task's recipe (cls: DE's SGD).
    gpu = load_config(CONFIGS / "gpu.yaml")
    paper = load_config(CONFIGS / "paper.yaml", ["data.root=/x"])
    assert to_dict(gpu.downstream) == to_dict(paper.downstream)
    assert gpu.downstream.train_for("cls").optimizer == "sgd"
    assert gpu.downstream.train_for("vlseg").scheduler == "plateau"


def test_run_sh_refuses_unknown_parts_and_a_fresh_machine(tmp_path):
    tree = kit_tree(tmp_path)
    bad = run_sh(tree, "tests", "benhc")
    assert bad.returncode == 2 and "unknown part 'benhc'" in bad.stderr
    assert run_sh(tree).returncode == 2
    fresh = run_sh(tree, "studies")
    assert fresh.returncode == 2 and "run call 1 (carry .whl) first" in fresh.stderr
    assert not (tree / ".site").exists()


@pytest.mark.slow
def test_studies_part_rehearsed_on_cpu(tmp_path):
    """run.sh studies end to end on the CPU, the presets shrunk by the arguments after --:
    the float16 encoder copy is restored, the sweep runs every cell, the archive holds the
    report and the fidelity figures and no weights."""
    from transformers import AutoModel, AutoTokenizer

    from benchmark.text_encoder import encoder_path

    tree = tmp_path / "repo"
    shutil.copytree(
        ROOT, tree, ignore=shutil.ignore_patterns(".git", "runs", ".whl", ".site", "*.egg-info")
    )
    (tree / ".site").mkdir()
    (tree / ".site" / ".installed").touch()  # this environment has every package
    shutil.rmtree(tree / ".minilm", ignore_errors=True)
    source = encoder_path("minilm")
    AutoModel.from_pretrained(source).half().save_pretrained(tree / ".minilm")
    AutoTokenizer.from_pretrained(source).save_pretrained(tree / ".minilm")
    shrink = [
        "device=cpu",
        "data.size=32",
        "data.phantom_patients=12",
        "generator.block_out_channels=[16,32]",
        "generator.layers_per_block=1",
        "generator.train_steps=2",
        "generator.sample_steps=2",
        "generator.batch_size=4",
        "downstream.train.epochs=1",
        "downstream.seg.channels=[8,16]",
        "downstream.seg.num_res_units=1",
        "fidelity.encoder_steps=2",
        "fidelity.segmenter_epochs=1",
        "fidelity.quality_epochs=1",
        "sweep.workers=1",
    ]
    args = sum((["--set", s] for s in shrink), ["--quiet"])
    done = run_sh(tree, "studies", "--", *args, PYTHON=sys.executable)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "studies finished with status 0" in done.stdout
    assert (tree / ".site" / "minilm" / "config.json").is_file()
    with tarfile.open(tree / "out" / "studies.tar.gz") as archive:
        names = archive.getnames()
    assert "gpu/report/runs.csv" in names
    assert any(n.startswith("gpu/fidelity/hybrid-") and n.endswith("fidelity.json") for n in names)
    assert not any(n.endswith(".safetensors") for n in names)
    projection = json.loads((tree / "out" / "projection-paper.json").read_text())
    assert projection["config"] == "paper" and projection["cells"] == 951
