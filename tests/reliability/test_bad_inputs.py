"""Bad input (issue #9): each case runs the CLI the way a user does and must fail with a
non-zero exit code, a message naming the offending file, key or URL and the problem, no
traceback, no password, and nothing half-written (no temporary leftovers, no stage folder
without ``done.json``; a config error creates no output folder at all).

The table is the suite: one ``@case`` per bad input (``bad_input_table.py``), in one module
per category (``bad_inputs_configs``, ``_data``: data trees, synthetic sets and stage
folders, ``_checkpoints``, ``_urls``: storage and tracking URLs). Most
run ``benchmark.__main__.main`` in this process (seconds); a few run ``python -m benchmark``
as a subprocess to prove the real exit code and output.
"""

from __future__ import annotations

import logging

import bad_inputs_checkpoints  # noqa: F401  (each category module registers its cases)
import bad_inputs_configs  # noqa: F401
import bad_inputs_data  # noqa: F401
import bad_inputs_urls  # noqa: F401
import nibabel as nib
import numpy as np
import pytest
from bad_input_support import (
    REPO,
    cli,
    cli_subprocess,
    edit_metadata,
    find_stage,
    finish,
    half_written,
    write_camus_tree,
    write_folder_dataset,
    write_tiny_clip,
    write_tiny_clipseg,
)
from bad_input_table import CASES, SECRET, Case, Ctx, T
from bad_inputs_data import gt

# ----------------------------------------------------------------------------- the checks


@pytest.fixture(scope="module")
def stage_template(tmp_path_factory):
    """Finished stages of the tiny preset, built once: every stage case damages a copy.

    The echo encoder is trained through the API: the CLI's fidelity stage would also
    measure and log the oracle set, which no case needs."""
    from benchmark.__main__ import main
    from benchmark.config import load_config
    from sweeps.fidelity import encoder_stage
    from sweeps.workspace import Workspace

    out = tmp_path_factory.mktemp("stage_template") / "out"
    for mode in ("oracle", "unconditional", "semantic"):
        argv = ["generate", *T, "--set", "fidelity.enabled=false", "--mode", mode, "--out", out]
        assert main([str(a) for a in argv]) == 0
    sets = [T[i + 1] for i, arg in enumerate(T) if arg == "--set"]
    encoder_stage(Workspace(load_config(REPO / "configs" / "smoke.yaml", sets), out, False))
    return out


def assert_clean_failure(result, c: Case, ctx: Ctx, damaged: set[str]) -> None:
    """``damaged``: what the case broke on purpose (a stage left without done.json)."""
    text = result.out + result.err
    assert result.rc == c.rc, f"exit code {result.rc}, expected {c.rc}:\n{result.err}"
    assert "Traceback" not in text, result.err
    for needle in c.expect:
        assert needle in result.err, f"{needle!r} not in the message:\n{result.err}"
    assert SECRET not in text, "a password reached the output"
    left = set(half_written(ctx.tmp)) - damaged
    assert not left, f"left half-written: {sorted(left)}"
    if c.no_out:
        assert not ctx.out.exists(), f"a config error created {ctx.out}"


@pytest.mark.parametrize("name", [pytest.param(n, marks=c.marks, id=n) for n, c in CASES.items()])
def test_bad_input(name, tmp_path, request, capsys, caplog, reliability_record):
    c = CASES[name]
    ctx = Ctx(tmp_path, request)
    argv = c.build(ctx)
    damaged = set(half_written(ctx.tmp))
    caplog.set_level(logging.INFO)  # a password must not reach a log record either
    result = cli(argv, capsys)
    reliability_record("bad_input", case=name, category=c.category, exit_code=result.rc)
    assert SECRET not in caplog.text, "a password reached the log"
    assert_clean_failure(result, c, ctx, damaged)
    if c.check is not None:
        c.check(ctx)


# ----------------------------------------------------------------------------- real processes

# Started with the module and collected at its end, so their interpreter start-up overlaps
# the in-process cases. The data commands start in seconds; the in-process storage cases
# check the log records for passwords instead (see ``caplog`` in test_bad_input).
REAL = {
    "real-camus-label-values": ("data", ("patient0002_4CH_ES_gt.nii.gz", "outside 0-3: 7")),
    "real-metadata-escape": ("data", ("metadata.csv: row 2: image path", "escapes the dataset")),
}


@pytest.fixture(scope="module")
def real_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    root = write_camus_tree(tmp / "camus")
    label = np.asarray(nib.load(gt(root)).dataobj).copy()
    label[3, 3] = 7
    nib.save(nib.Nifti1Image(label, np.eye(4)), gt(root))
    tree = write_folder_dataset(tmp / "folder")
    edit_metadata(tree, image="/etc/hostname")
    procs = {
        "real-camus-label-values": cli_subprocess(["data", "inspect", root], tmp),
        "real-metadata-escape": cli_subprocess(["data", "inspect", tree], tmp),
    }
    yield tmp, procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module", autouse=True)
def _start_real_processes(request):
    if any(item.name.startswith("test_real_process") for item in request.session.items):
        request.getfixturevalue("real_processes")


@pytest.mark.parametrize("name", list(REAL))
def test_real_process(name, real_processes, reliability_record):
    tmp, procs = real_processes
    category, expect = REAL[name]
    result = finish(procs[name])
    reliability_record("bad_input", case=name, category=category, exit_code=result.rc)
    assert result.rc == 2, result.err
    assert "Traceback" not in result.err, result.err
    for needle in expect:
        assert needle in result.err, f"{needle!r} not in:\n{result.err}"
    assert not half_written(tmp), half_written(tmp)


def test_intact_inputs_load(stage_template, tmp_path):
    """The control of the checkpoint cases: the same files, undamaged, load through the same
    functions, so each case above fails because of its damage and nothing else."""
    from diffusers import UNet2DModel

    from benchmark.checkpoints import load_pretrained, load_state
    from benchmark.fidelity import EchoEncoder
    from benchmark.text_encoder import TextEncoder
    from downstream.clipseg import ClipSegNet
    from downstream.cris import CrisNet
    from generators.pipelines import load_pipeline

    encoder = find_stage(stage_template, "fidelity", "encoder") / "encoder.safetensors"
    load_state(EchoEncoder(), encoder)
    load_pretrained(UNet2DModel, find_stage(stage_template, "gen", "unconditional"), "unet")
    assert load_pipeline(find_stage(stage_template, "gen", "semantic")).unet is not None
    ClipSegNet(write_tiny_clipseg(tmp_path / "clipseg"))
    CrisNet(write_tiny_clip(tmp_path / "clip"), dim=8)
    assert TextEncoder().encode(["the left ventricle"]).shape == (1, 384)  # the packaged MiniLM


def test_enough_cases_in_every_category():
    per_category = {}
    for c in CASES.values():
        per_category[c.category] = per_category.get(c.category, 0) + 1
    assert len(CASES) >= 30
    assert set(per_category) == {"configs", "data", "synthetic", "checkpoint", "storage"}
    assert min(per_category.values()) >= 4, per_category
