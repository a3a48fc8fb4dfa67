"""Bad input (issue #9): each case runs the CLI the way a user does and must fail with a
non-zero exit code, a message naming the offending file, key or URL and the problem, no
traceback, no password, and nothing half-written (no temporary leftovers, no stage folder
without ``done.json``; a config error creates no output folder at all).

The table below is the suite: one ``@case`` per bad input, grouped by category (configs,
data trees, synthetic sets and stage folders, checkpoints, storage and tracking URLs). Most
run ``benchmark.__main__.main`` in this process (seconds); a few run ``python -m benchmark``
as a subprocess to prove the real exit code and output.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bad_input_support import (
    REPO,
    TINY,
    cli,
    cli_subprocess,
    copy_tree,
    edit_metadata,
    find_stage,
    finish,
    half_written,
    pickle_only,
    truncate,
    write_camus_tree,
    write_folder_dataset,
    write_malicious_pickle,
    write_tiny_clip,
    write_tiny_clipseg,
)
from safetensors.torch import load_file, save_file

# Smaller still than TINY: 16 px, 8 phantom patients; the stage templates use it too.
T = [*TINY, "--set", "data.size=16", "--set", "data.phantom_patients=8"]
SECRET = "hunter2"
PG_DOWN = f"postgresql://u:{SECRET}@127.0.0.1:1/db"  # port 1: refused at once


# ----------------------------------------------------------------------------- the table


@dataclass
class Ctx:
    """What a case builds its input in: a fresh ``tmp`` folder and ``out`` beneath it."""

    tmp: Path
    request: pytest.FixtureRequest

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def stages(self) -> Path:
        """A private copy of the finished stage folders of the tiny preset (``stage_template``)
        as ``out``: data, oracle synthetic set with its fidelity encoder, unconditional and
        semantic generators with their synthetic sets, and the MLflow store."""
        return copy_tree(self.request.getfixturevalue("stage_template"), self.out)


@dataclass
class Case:
    category: str
    build: Callable[[Ctx], list]  # returns the argv
    expect: tuple[str, ...]  # substrings of stderr: the culprit and the problem
    rc: int = 2
    no_out: bool = False  # the output folder must not even exist
    check: Callable[[Ctx], None] | None = None  # extra assertions after the run
    marks: tuple = field(default_factory=tuple)


CASES: dict[str, Case] = {}


def case(name: str, category: str, *expect: str, **kwargs):
    """Register the decorated ``build(ctx) -> argv`` as bad input ``name``; ``expect``: the
    substrings the error message must hold. A config error never creates the output folder."""
    kwargs.setdefault("no_out", category == "configs")

    def register(build: Callable[[Ctx], list]) -> Callable[[Ctx], list]:
        assert name not in CASES, name
        CASES[name] = Case(category, build, expect, **kwargs)
        return build

    return register


def run_cell(ctx: Ctx, *sets: str) -> list:
    """``run`` of the real-only seg cell with extra ``--set`` overrides."""
    extra = [a for s in sets for a in ("--set", s)]
    return ["run", *T, *extra, "--task", "seg", "--out", ctx.out]


# ----------------------------------------------------------------------------- configs


@case("unknown-key", "configs", "smoke.yaml", "unknown key(s) grid.ratio")
def _(ctx):
    return run_cell(ctx, "grid.ratio=[1]")


@case("unknown-section", "configs", "unknown key(s) training", "valid keys here")
def _(ctx):
    return run_cell(ctx, "training.epochs=3")


@case(
    "wrong-type",
    "configs",
    "downstream.train.epochs: expected an integer, got 'abc'",
)
def _(ctx):
    return run_cell(ctx, "downstream.train.epochs=abc")


@case("list-expected", "configs", "grid.ratios: expected a list, got 'abc'")
def _(ctx):
    return run_cell(ctx, "grid.ratios=abc")


@case("negative-ratio", "configs", "grid.ratios must be >= 0", "-0.5")
def _(ctx):
    return run_cell(ctx, "grid.ratios=[-0.5,1]")


@case("real-fraction-above-1", "configs", "grid.real_fractions must be in (0, 1]")
def _(ctx):
    return run_cell(ctx, "grid.real_fractions=[1.5]")


@case("real-fraction-0", "configs", "grid.real_fractions must be in (0, 1]", "0.0")
def _(ctx):
    return run_cell(ctx, "grid.real_fractions=[0]")


@case("unknown-mode", "configs", "grid.modes[0]: 'texty' is not one of", "unconditional")
def _(ctx):
    return run_cell(ctx, "grid.modes=[texty]")


@case("unknown-task", "configs", "grid.tasks[0]: 'detect' is not one of")
def _(ctx):
    return run_cell(ctx, "grid.tasks=[detect]")


@case("unknown-prompt", "configs", "grid.prompts[0]: 'P9' is not one of", "P7")
def _(ctx):
    return run_cell(ctx, "grid.prompts=[P9]")


@case("epochs-0", "configs", "downstream.train.epochs must be > 0, got 0")
def _(ctx):
    return run_cell(ctx, "downstream.train.epochs=0")


@case("missing-root", "configs", "data.root is required when data.source is 'camus'")
def _(ctx):
    return run_cell(ctx, "data.source=camus")


@case("missing-config-file", "configs", "nope.yaml: cannot read config", "No such file")
def _(ctx):
    return ["run", "--config", ctx.tmp / "nope.yaml", "--task", "seg", "--out", ctx.out]


@case(
    "yaml-syntax-error",
    "configs",
    "broken.yaml: invalid YAML at line 3",
    "flow mapping that starts at line 2, column 7",
)
def _(ctx):
    (ctx.tmp / "broken.yaml").write_text("name: x\ngrid: {tasks: [seg]\n")
    return ["run", "--config", ctx.tmp / "broken.yaml", "--task", "seg", "--out", ctx.out]


@case("yaml-top-level-list", "configs", "list.yaml: the top level must be a mapping")
def _(ctx):
    (ctx.tmp / "list.yaml").write_text("- name: x\n- device: cpu\n")
    return ["run", "--config", ctx.tmp / "list.yaml", "--task", "seg", "--out", ctx.out]


def _not_executed(ctx: Ctx) -> None:
    assert not (ctx.tmp / "pwned").exists(), "the YAML tag's code ran"


@case(
    "yaml-python-tag",
    "configs",
    "evil.yaml: invalid YAML at line 1",
    "tag !!python/object/apply:os.system is not allowed",
    check=_not_executed,
)
def _(ctx):
    evil = ctx.tmp / "evil.yaml"
    evil.write_text(f"name: !!python/object/apply:os.system ['mkdir {ctx.tmp / 'pwned'}']\n")
    return ["run", "--config", evil, "--task", "seg", "--out", ctx.out]


@case(
    "set-python-tag",
    "configs",
    'override "name=!!python/object/apply:os.system',
    "tag !!python/object/apply:os.system is not allowed",
    check=_not_executed,
)
def _(ctx):
    return run_cell(ctx, f"name=!!python/object/apply:os.system ['mkdir {ctx.tmp / 'pwned'}']")


@case("set-without-equals", "configs", "override 'grid.ratios' must look like key.path=value")
def _(ctx):
    return run_cell(ctx, "grid.ratios")


@case("set-unparsable-value", "configs", "override 'grid.ratios=[0.5'", "cannot parse value")
def _(ctx):
    return run_cell(ctx, "grid.ratios=[0.5")


@case("set-into-a-value", "configs", "override 'grid.modes.x=1': 'modes' is not a section")
def _(ctx):
    return run_cell(ctx, "grid.modes.x=1")


@case("unknown-task-flag", "configs", "invalid cell: 'segg' is not a valid Task")
def _(ctx):
    return ["run", *T, "--task", "segg", "--out", ctx.out]


@case("negative-ratio-flag", "configs", "ratio", "-1")
def _(ctx):
    return ["run", *T, "--task", "seg", "--mode", "oracle", "--ratio", "-1", "--out", ctx.out]


@case("real-fraction-flag-0", "configs", "fraction")
def _(ctx):
    return ["run", *T, "--task", "seg", "--real-fraction", "0", "--out", ctx.out]


@case("out-under-a-file", "configs", "afile/out", "Not a directory")
def _(ctx):
    (ctx.tmp / "afile").write_text("x")
    return ["run", *T, "--task", "seg", "--out", ctx.tmp / "afile" / "out"]


# ----------------------------------------------------------------------------- data trees


@case("data-root-missing", "data", "nope: data root does not exist")
def _(ctx):
    return ["data", "inspect", ctx.tmp / "nope"]


@case("data-tree-empty", "data", "empty: empty folder")
def _(ctx):
    (ctx.tmp / "empty").mkdir()
    return ["data", "inspect", ctx.tmp / "empty"]


@case("data-unknown-layout", "data", "no known layout", "metadata.csv")
def _(ctx):
    (ctx.tmp / "random").mkdir()
    (ctx.tmp / "random" / "notes.txt").write_text("hello")
    return ["data", "inspect", ctx.tmp / "random"]


def camus(ctx: Ctx, **kwargs) -> Path:
    return write_camus_tree(ctx.tmp / "camus", **kwargs)


def gt(root: Path, patient: int = 2, view: str = "4CH", phase: str = "ES") -> Path:
    name = f"patient{patient:04d}"
    return root / "database_nifti" / name / f"{name}_{view}_{phase}_gt.nii.gz"


@case("camus-label-missing", "data", "patient0002_4CH_ES_gt.nii.gz: missing label map")
def _(ctx):
    root = camus(ctx)
    gt(root).unlink()
    return ["data", "inspect", root]


@case("camus-label-values", "data", "patient0002_4CH_ES_gt.nii.gz", "label values outside 0-3: 7")
def _(ctx):
    root = camus(ctx)
    label = np.asarray(nib.load(gt(root)).dataobj).copy()
    label[0, 0] = 7
    nib.save(nib.Nifti1Image(label, np.eye(4)), gt(root))
    return ["data", "inspect", root]


@case("camus-shape-mismatch", "data", "patient0002_4CH_ES_gt.nii.gz", "does not match image")
def _(ctx):
    root = camus(ctx)
    nib.save(nib.Nifti1Image(np.zeros((10, 10), np.uint8), np.eye(4)), gt(root))
    return ["data", "inspect", root]


@case("camus-corrupt-nifti", "data", "patient0001_2CH_ED.nii.gz", "unreadable or truncated")
def _(ctx):
    root = camus(ctx)
    truncate(root / "database_nifti/patient0001/patient0001_2CH_ED.nii.gz", 0.4)
    return ["data", "inspect", root]


@case("camus-cfg-missing", "data", "Info_2CH.cfg: missing metadata file")
def _(ctx):
    root = camus(ctx)
    (root / "database_nifti/patient0003/Info_2CH.cfg").unlink()
    return ["data", "inspect", root]


@case("camus-legacy-raw-missing", "data", "patient0001_4CH_ED.mhd", "unreadable or truncated")
def _(ctx):
    root = camus(ctx, layout="legacy")
    (root / "training/patient0001/patient0001_4CH_ED.raw").unlink()
    return ["data", "inspect", root]


@case("camus-split-incomplete", "data", "database_split", "patient0003 is in no split list")
def _(ctx):
    lists = {"training": ["patient0001"], "validation": ["patient0002"], "testing": []}
    return ["data", "inspect", camus(ctx, patients=3, split_lists=lists)]


@case("camus-bad-label-in-run", "data", "patient0002_4CH_ES_gt.nii.gz", "label values outside")
def _(ctx):
    # Through the pipeline, not only `data inspect`: the data stage fails, leaves nothing.
    root = camus(ctx)
    nib.save(nib.Nifti1Image(np.full((24, 40), 9, np.uint8), np.eye(4)), gt(root))
    return run_cell(ctx, "data.source=camus", f"data.root={root}")


def folder(ctx: Ctx, **kwargs) -> Path:
    return write_folder_dataset(ctx.tmp / "folder", **kwargs)


@case("folder-corrupt-png", "data", "img/1.png", "unreadable or truncated")
def _(ctx):
    root = folder(ctx)
    (root / "img/1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return ["data", "inspect", root]


@case("folder-label-values", "data", "img/2_gt.png", "label values outside 0-3: 5")
def _(ctx):
    from benchmark.data.readers import write_png

    root = folder(ctx)
    write_png(np.full((20, 12), 5, np.uint8), root / "img/2_gt.png")
    return ["data", "inspect", root]


@case("folder-column-missing", "data", "metadata.csv: missing column 'patient'")
def _(ctx):
    root = folder(ctx)
    edit_metadata(root, patient=None)
    return ["data", "inspect", root]


@case("folder-bad-view", "data", "metadata.csv", "column 'view' has values ['3CH']")
def _(ctx):
    root = folder(ctx)
    edit_metadata(root, view="3CH")
    return ["data", "inspect", root]


def _outside_untouched(ctx: Ctx) -> None:
    assert (ctx.tmp / "outside.png").read_bytes() == b"not an image"


@case(
    "folder-path-dotdot",
    "data",
    "metadata.csv: row 2: image path '../outside.png' escapes the dataset root",
    check=_outside_untouched,
)
def _(ctx):
    root = folder(ctx)
    (ctx.tmp / "outside.png").write_bytes(b"not an image")
    edit_metadata(root, image="../outside.png")
    return ["data", "inspect", root]


@case("folder-path-absolute", "data", "metadata.csv: row 2: label path", "escapes the dataset")
def _(ctx):
    root = folder(ctx)
    edit_metadata(root, label=str(ctx.tmp / "elsewhere" / "gt.png"))
    return ["data", "inspect", root]


@case("folder-path-escape-in-run", "data", "metadata.csv", "'img/../../x.png' escapes the")
def _(ctx):
    root = folder(ctx)
    edit_metadata(root, image="img/../../x.png")
    return run_cell(ctx, "data.source=folder", f"data.root={root}")


@case("folder-metadata-missing", "data", "metadata.csv: missing metadata file", no_out=True)
def _(ctx):
    (ctx.tmp / "images").mkdir()
    return run_cell(ctx, "data.source=folder", f"data.root={ctx.tmp / 'images'}")


# ----------------------------------------------------------------------------- stage folders


def data_stage(ctx: Ctx) -> Path:
    return find_stage(ctx.stages(), "data")


@case("data-stage-images-missing", "synthetic", "images.npy: missing dataset file")
def _(ctx):
    (data_stage(ctx) / "images.npy").unlink()
    return ["run", *T, "--task", "seg", "--out", ctx.out]


@case("data-stage-images-truncated", "synthetic", "images.npy", "unreadable or truncated")
def _(ctx):
    truncate(data_stage(ctx) / "images.npy")
    return ["run", *T, "--task", "seg", "--out", ctx.out]


@case("data-stage-rows-mismatch", "synthetic", "manifest.csv: 31 rows for the 32 images")
def _(ctx):
    manifest = data_stage(ctx) / "manifest.csv"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines[:-1]))
    return ["run", *T, "--task", "seg", "--out", ctx.out]


@case("data-stage-not-done", "synthetic", "stage folder is damaged", "delete it to recompute")
def _(ctx):
    (data_stage(ctx) / "done.json").unlink()
    return ["run", *T, "--task", "seg", "--out", ctx.out]


def synth_stage(ctx: Ctx, mode: str = "oracle") -> Path:
    return find_stage(ctx.stages(), "synth", mode)


def generate(ctx: Ctx, mode: str, fidelity: bool = False) -> list:
    extra = [] if fidelity else ["--set", "fidelity.enabled=false"]
    return ["generate", *T, *extra, "--mode", mode, "--out", ctx.out]


@case("synth-images-truncated", "synthetic", "synth/oracle-", "images.npy: unreadable")
def _(ctx):
    truncate(synth_stage(ctx) / "images.npy", 0.9)
    return generate(ctx, "oracle")


@case("synth-masks-shape", "synthetic", "masks.npy: shape (8, 8, 8) does not match")
def _(ctx):
    np.save(synth_stage(ctx) / "masks.npy", np.zeros((8, 8, 8), np.uint8))
    return generate(ctx, "oracle")


@case("synth-pickled-array", "synthetic", "images.npy", "allow_pickle=False")
def _(ctx):
    # An object array is a pickle: np.load must refuse it, not run it.
    np.save(synth_stage(ctx) / "images.npy", np.array([{"a": 1}], dtype=object))
    return generate(ctx, "oracle")


@case("synth-labels-outside", "synthetic", "masks.npy: label values outside 0-3")
def _(ctx):
    path = synth_stage(ctx, "unconditional") / "masks.npy"
    masks = np.load(path)
    masks[0, 0, 0] = 9
    np.save(path, masks)
    return ["data", "inspect", path.parent]


# ----------------------------------------------------------------------------- checkpoints


def encoder_file(ctx: Ctx) -> Path:
    return find_stage(ctx.stages(), "fidelity", "encoder") / "encoder.safetensors"


@case("encoder-corrupt", "checkpoint", "encoder.safetensors: corrupt or truncated safetensors")
def _(ctx):
    truncate(encoder_file(ctx))
    return generate(ctx, "oracle", fidelity=True)


@case(
    "encoder-wrong-architecture",
    "checkpoint",
    "encoder.safetensors: weights do not fit EchoEncoder",
    "missing keys",
    "unexpected keys classifier.weight",
)
def _(ctx):
    save_file({"classifier.weight": torch.zeros(2, 2)}, str(encoder_file(ctx)))
    return generate(ctx, "oracle", fidelity=True)


@case("encoder-shape-mismatch", "checkpoint", "encoder.safetensors", "shape mismatches")
def _(ctx):
    path = encoder_file(ctx)
    state = load_file(str(path))
    key = sorted(state)[-1]
    state[key] = torch.zeros(*state[key].shape, 2)
    save_file(state, str(path))
    return generate(ctx, "oracle", fidelity=True)


def generator_unet(ctx: Ctx, mode: str) -> Path:
    """The generator's UNet folder; its synthetic set is removed so it is sampled again."""
    out = ctx.stages()
    shutil.rmtree(find_stage(out, "synth", mode))
    return find_stage(out, "gen", mode) / "unet"


@case("unet-corrupt", "checkpoint", "gen/unconditional-", "/unet: cannot load weights")
def _(ctx):
    truncate(generator_unet(ctx, "unconditional") / "diffusion_pytorch_model.safetensors")
    return generate(ctx, "unconditional")


@case(
    "unet-wrong-architecture",
    "checkpoint",
    "/unet: weights do not fit UNet2DModel",
    "missing keys conv_in.bias",
)
def _(ctx):
    weights = generator_unet(ctx, "unconditional") / "diffusion_pytorch_model.safetensors"
    save_file({"encoder.weight": torch.zeros(3)}, str(weights))
    return generate(ctx, "unconditional")


def _not_unpickled(ctx: Ctx) -> None:
    assert not (ctx.tmp / "unpickled").exists(), "a pickle checkpoint was unpickled"


@case(
    "unet-pickle-only",
    "checkpoint",
    "/unet: no safetensors weights",
    "diffusion_pytorch_model.bin, which are refused",
    check=_not_unpickled,
)
def _(ctx):
    pickle_only(generator_unet(ctx, "unconditional"), ctx.tmp / "unpickled")
    return generate(ctx, "unconditional")


@case("pipeline-unet-corrupt", "checkpoint", "gen/semantic-", "/unet: cannot load weights")
def _(ctx):
    truncate(generator_unet(ctx, "semantic") / "diffusion_pytorch_model.safetensors", 0.3)
    return generate(ctx, "semantic")


@case(
    "pipeline-unet-shape",
    "checkpoint",
    "gen/semantic-",
    "/unet: cannot load weights",
    "conv_in.weight expected shape",
)
def _(ctx):
    weights = generator_unet(ctx, "semantic") / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["conv_in.weight"] = torch.zeros(1, 2, 3, 3)
    save_file(state, str(weights))
    return generate(ctx, "semantic")


def vlseg(ctx: Ctx, *sets: str) -> list:
    extra = [a for s in sets for a in ("--set", s)]
    return ["run", *T, *extra, "--task", "vlseg", "--prompt", "P1", "--out", ctx.out]


@case("clipseg-garbage", "checkpoint", "clipseg: cannot load weights", "deserializing header")
def _(ctx):
    model = write_tiny_clipseg(ctx.tmp / "clipseg")
    (model / "model.safetensors").write_bytes(os.urandom(4096))
    return vlseg(ctx, "downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={model}")


@case(
    "clipseg-wrong-architecture",
    "checkpoint",
    "clipseg: weights do not fit CLIPSegForImageSegmentation",
    "missing keys",
)
def _(ctx):
    model = write_tiny_clipseg(ctx.tmp / "clipseg")
    save_file({"bert.pooler.weight": torch.zeros(4, 4)}, str(model / "model.safetensors"))
    return vlseg(ctx, "downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={model}")


@case(
    "clipseg-pickle-only",
    "checkpoint",
    "clipseg: no safetensors weights",
    "pytorch_model.bin, which are refused",
    check=_not_unpickled,
)
def _(ctx):
    model = pickle_only(write_tiny_clipseg(ctx.tmp / "clipseg"), ctx.tmp / "unpickled")
    return vlseg(ctx, "downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={model}")


@case("clipseg-tokenizer-corrupt", "checkpoint", "clipseg: cannot load the tokenizer")
def _(ctx):
    model = write_tiny_clipseg(ctx.tmp / "clipseg")
    (model / "tokenizer.json").write_text("{not json")
    return vlseg(ctx, "downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={model}")


@case("clipseg-not-a-model", "checkpoint", "weights: no tokenizer saved in this model folder")
def _(ctx):
    (ctx.tmp / "weights").mkdir()
    path = ctx.tmp / "weights"
    return vlseg(ctx, "downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={path}")


@case("cris-clip-truncated", "checkpoint", "clip: cannot load weights")
def _(ctx):
    model = write_tiny_clip(ctx.tmp / "clip")
    truncate(model / "model.safetensors", 0.7)
    return vlseg(
        ctx,
        "downstream.vlseg.model=cris",
        "downstream.vlseg.cris_dim=8",
        f"downstream.vlseg.clip_path={model}",
    )


@case(
    "text-encoder-pickle-only",
    "checkpoint",
    "encoder: no safetensors weights",
    "pytorch_model.bin, which are refused",
    check=_not_unpickled,
)
def _(ctx):
    from benchmark.text_encoder import encoder_path

    folder = ctx.tmp / "encoder"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(encoder_path("minilm") / name, folder / name)
    write_malicious_pickle(folder / "pytorch_model.bin", ctx.tmp / "unpickled")
    return vlseg(ctx, f"downstream.vlseg.text_encoder={folder}")


# ----------------------------------------------------------------------------- URLs


def sweep(ctx: Ctx, *args: str) -> list:
    return ["sweep", *T, "--out", ctx.out, *args]


@case("storage-unknown-scheme", "storage", "sweep.storage 'foo://x' is not a storage URL")
def _(ctx):
    return sweep(ctx, "--storage", "foo://x")


@case("storage-unknown-scheme-password", "storage", "'redis://u:***@h/0' is not a storage URL")
def _(ctx):
    return sweep(ctx, "--storage", f"redis://u:{SECRET}@h/0")


@case("storage-journal-under-a-file", "storage", "journal:///", "is a file, not a folder")
def _(ctx):
    (ctx.tmp / "afile").write_text("x")
    return sweep(ctx, "--storage", f"journal://{ctx.tmp / 'afile' / 'sub' / 'optuna.log'}")


@case("storage-journal-is-a-folder", "storage", "optuna.log is a folder, not a file")
def _(ctx):
    (ctx.tmp / "optuna.log").mkdir()
    return sweep(ctx, "--storage", f"journal://{ctx.tmp / 'optuna.log'}")


@case("storage-sqlite-under-a-file", "storage", "sqlite:///", "is a file, not a folder")
def _(ctx):
    (ctx.tmp / "afile").write_text("x")
    return sweep(ctx, "--storage", f"sqlite:///{ctx.tmp / 'afile' / 'optuna.db'}")


@case(
    "storage-postgres-malformed",
    "storage",
    "sweep.storage 'postgresql://u:***@127.0.0.1:notaport/db' is not a valid database URL",
)
def _(ctx):
    return sweep(ctx, "--storage", f"postgresql://u:{SECRET}@127.0.0.1:notaport/db")


@case(
    "storage-postgres-unreachable",
    "storage",
    "sweep.storage 'postgresql://u:***@127.0.0.1:1/db': cannot connect to the database",
    "Connection refused",
)
def _(ctx):
    return sweep(ctx, "--storage", PG_DOWN)


@case(
    "storage-password-in-query",
    "storage",
    "password=***",
    "cannot connect to the database",
)
def _(ctx):
    return sweep(ctx, "--storage", f"postgresql://u@127.0.0.1:1/db?password={SECRET}")


@case(
    "tracking-unknown-scheme",
    "storage",
    "tracking.uri 'foo://u:***@x' has an unknown scheme 'foo'",
)
def _(ctx):
    return sweep(ctx, "--tracking-uri", f"foo://u:{SECRET}@x")


# An unreachable tracking server is not bad input: the sweep runs with its tracker offline and
# `sync` logs the results later (test_offline.py). A tracking URL that cannot be parsed is.
@case(
    "tracking-postgres-malformed",
    "storage",
    "tracking.uri 'postgresql://u:***@127.0.0.1:notaport/db' is not a valid database URL",
)
def _(ctx):
    url = f"postgresql://u:{SECRET}@127.0.0.1:notaport/db"
    return ["run", *T, "--task", "seg", "--tracking-uri", url, "--out", ctx.out]


# ----------------------------------------------------------------------------- cell level


@case(
    "sweep-cell-checkpoint",
    "checkpoint",
    "failed vlseg-none-P1-r0-mix-f1-s0: CheckpointError:",
    "clipseg: cannot load weights",
    rc=1,  # a broken cell fails alone; the sweep goes on and reports it
)
def _(ctx):
    model = write_tiny_clipseg(ctx.tmp / "clipseg")
    truncate(model / "model.safetensors")
    ctx.stages()
    grid = ["grid.tasks=[vlseg]", "grid.modes=[none]", "grid.ratios=[0]", "grid.prompts=[P1]"]
    vl = ["downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={model}"]
    return sweep(ctx, *[a for s in grid + vl for a in ("--set", s)])


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
