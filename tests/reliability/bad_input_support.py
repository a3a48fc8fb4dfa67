"""Helpers of the bad-input and security suites: run the CLI as a user does, build tiny
broken inputs, and check that a failure left nothing half-written behind."""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tiny_models import save_tiny_clipseg, tiny_towers  # tests/: on the path through its conftest

REPO = Path(__file__).resolve().parents[2]
STAGE_KINDS = ("data", "gen", "synth", "fidelity", "cells")

# The smoke preset shrunk further: every stage these suites need trains in a second or two.
TINY = [
    "--config",
    "smoke",
    "--quiet",
    "--set",
    "generator.train_steps=2",
    "--set",
    "generator.sample_steps=2",
    "--set",
    "generator.n_samples=8",
    "--set",
    "fidelity.encoder_steps=2",
    "--set",
    "fidelity.segmenter_epochs=0",
    "--set",
    "fidelity.quality_epochs=0",
    "--set",
    "downstream.train.epochs=1",
]


@dataclass
class Result:
    rc: int
    out: str
    err: str


def cli(argv: list[str], capsys) -> Result:
    """``python -m benchmark ARGV`` in this process; argparse's exit becomes the code."""
    from benchmark.__main__ import main

    capsys.readouterr()  # drop what earlier steps of the test printed
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: 2 on a usage error
        rc = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Result(rc, captured.out, captured.err)


def cli_subprocess(argv: list[str], cwd: Path) -> subprocess.Popen:
    """Start the real ``python -m benchmark ARGV`` (collect it with :func:`finish`)."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark", *map(str, argv)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> Result:
    out, err = proc.communicate(timeout=timeout)
    return Result(proc.returncode, out, err)


def half_written(root: Path) -> list[str]:
    """Leftovers a failure must never leave under ``root``: temporary files or folders, and
    stage folders (``<out>/<kind>/<name>``) without ``done.json``."""
    bad = []
    for path in Path(root).rglob("*"):
        if ".tmp" in path.name:
            bad.append(f"temporary {path}")
        elif (
            path.is_dir()
            and path.parent.name in STAGE_KINDS
            and not path.name.startswith(".")
            and not (path / "done.json").is_file()
        ):
            bad.append(f"stage without done.json {path}")
    return bad


# ----------------------------------------------------------------------------- stage folders


def find_stage(out: Path, kind: str, prefix: str = "") -> Path:
    """The one finished stage folder of ``kind`` whose name starts with ``prefix``."""
    found = [p for p in (Path(out) / kind).iterdir() if p.is_dir() and p.name.startswith(prefix)]
    assert len(found) == 1, f"expected one {kind}/{prefix}* stage in {out}, found {found}"
    return found[0]


def truncate(path: Path, keep: float = 0.5) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


class Exploding:
    """Unpickling this creates ``marker``: proof that a loader ran a pickle's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def write_malicious_pickle(path: Path, marker: Path) -> None:
    """A pickle checkpoint that would create ``marker`` if anything unpickled it."""
    with open(path, "wb") as fh:
        pickle.dump({"weight": Exploding(marker)}, fh)


# ----------------------------------------------------------------------------- data trees


def write_camus_tree(root: Path, **kwargs) -> Path:
    """The CAMUS fixture tree of ``tests/data/conftest.py`` (both releases' layouts)."""
    spec = importlib.util.spec_from_file_location(
        "camus_fixtures", REPO / "tests" / "data" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_camus_tree(Path(root), **kwargs)


def write_folder_dataset(root: Path, n: int = 3, labels: bool = True) -> Path:
    """A folder dataset (PNG images and label maps, metadata.csv) of ``n`` images."""
    from benchmark.data.readers import write_png

    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        image = np.full((20, 12), 10 * (i + 1), np.uint8)
        label = np.zeros((20, 12), np.uint8)
        label[:5, :4] = 1
        write_png(image, root / f"img/{i}.png")
        row = {"image": f"img/{i}.png", "patient": f"p{i}", "view": "4CH", "split": "train"}
        if labels:
            write_png(label, root / f"img/{i}_gt.png")
            row["label"] = f"img/{i}_gt.png"
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def edit_metadata(root: Path, **changes) -> None:
    """Set ``column=value`` in the first row of ``root/metadata.csv`` (None drops the column)."""
    path = root / "metadata.csv"
    meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column, value in changes.items():
        if value is None:
            meta = meta.drop(columns=column)
        else:
            meta.loc[0, column] = value
    meta.to_csv(path, index=False)


# ----------------------------------------------------------------------------- model folders


def write_tiny_clipseg(folder: Path) -> Path:
    """A tiny CLIPSeg with MiniLM's tokenizer, saved as a pretrained one would be."""
    return save_tiny_clipseg(folder, 2, image_size=32, dim=8)


def write_tiny_clip(folder: Path) -> Path:
    """A tiny CLIP (the backbone of CRIS) with MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    from benchmark.text_encoder import encoder_path

    tokenizer = AutoTokenizer.from_pretrained(encoder_path("minilm"))
    torch.manual_seed(0)
    CLIPModel(
        CLIPConfig(**tiny_towers(tokenizer, vision_layers=2, image_size=32), projection_dim=8)
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def pickle_only(folder: Path, marker: Path) -> Path:
    """Replace every ``*.safetensors`` in ``folder`` by a pickle ``.bin`` of the same role
    that creates ``marker`` when unpickled."""
    names = {
        "model.safetensors": "pytorch_model.bin",
        "diffusion_pytorch_model.safetensors": "diffusion_pytorch_model.bin",
    }
    for path in list(Path(folder).glob("*.safetensors")):
        path.unlink()
        write_malicious_pickle(path.with_name(names.get(path.name, "pytorch_model.bin")), marker)
    return folder


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
