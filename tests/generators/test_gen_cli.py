"""`python -m benchmark generate` for each mode on the smoke preset."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.__main__ import main
from benchmark.data.records import EchoData


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """One output folder for every mode: the data stage and MLflow store are made once."""
    return tmp_path_factory.mktemp("generate")


@pytest.mark.parametrize(
    ("mode", "variant"),
    [("text", None), ("semantic", None), ("hybrid", "concat"), ("hybrid", "controlnet")],
)
def test_generate_cli(mode, variant, out, capsys):
    argv = ["generate", "--config", "smoke", "--mode", mode, "--prompt", "P3"]
    argv += ["--out", str(out), "--json", "--quiet"]
    settings = ["train_steps=2", "sample_steps=2", "n_samples=4"]
    if variant is not None:
        settings.append(f"hybrid_variant={variant}")
    for setting in settings:
        argv += ["--set", f"generator.{setting}"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out, parse_constant=_not_json)
    assert info["mode"] == mode and info["n_images"] == 4
    if variant == "controlnet":
        index = json.loads((Path(info["pipeline"]) / "model_index.json").read_text())
        assert index["_class_name"] == "EchoControlNetPipeline" and "controlnet" in index
    # Mask alignment is measured on every set with label maps (all of these).
    assert 0 <= info["fidelity"]["mask_dice_mean"] <= 1
    synth = EchoData.load(info["synthetic"])
    assert set(np.unique(synth.masks)) <= {0, 1, 2, 3}
    assert (synth.meta["source"] == "synthetic").all()
    assert ("prompt" in synth.meta.columns) == (mode != "semantic")


def _not_json(name: str):
    raise AssertionError(f"{name} in the --json line: not JSON (RFC 8259)")


@pytest.mark.parametrize("mode", ["unconditional", "oracle"])
def test_generate_cli_mask_free_and_control(mode, out, capsys):
    argv = ["generate", "--config", "smoke", "--mode", mode, "--out", str(out), "--json"]
    argv += ["--quiet"]
    for setting in ["train_steps=2", "sample_steps=2", "n_samples=4"]:
        argv += ["--set", f"generator.{setting}"]
    assert main(argv) == 0
    # Strict JSON: the view accuracy of images that carry no view is null, not NaN.
    info = json.loads(capsys.readouterr().out, parse_constant=_not_json)
    assert info["n_images"] == 4 and (info["pipeline"] is None) == (mode == "oracle")
    if mode == "unconditional":
        assert info["fidelity"]["cond_view_acc"] is None
    synth = EchoData.load(info["synthetic"])
    expected = {"unconditional": "generated", "oracle": "phantom"}[mode]
    assert (synth.meta["label_source"] == expected).all()
    assert synth.images.shape == (4, 32, 32) and synth.masks.shape == (4, 32, 32)


def test_generate_a_prompted_mode_without_prompt_samples_p1(out, capsys):
    """As a cell does: a prompted mode given no prompt kind is sampled at P1."""
    argv = ["generate", "--config", "smoke", "--mode", "text", "--out", str(out)]
    argv += ["--json", "--quiet"]
    for setting in ["train_steps=2", "sample_steps=2", "n_samples=4", "text_training=all_kinds"]:
        argv += ["--set", f"generator.{setting}"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    spec = json.loads((Path(info["synthetic"]) / "spec.json").read_text())
    assert info["n_images"] == 4 and spec["spec"]["prompt"] == "P1"
