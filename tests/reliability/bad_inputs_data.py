"""Bad-input cases: data trees, synthetic sets and stage folders."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from bad_input_support import (
    edit_metadata,
    find_stage,
    truncate,
    write_camus_tree,
    write_folder_dataset,
)
from bad_input_table import Ctx, T, case, run_cell

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
