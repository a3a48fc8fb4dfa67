"""`python -m benchmark generate` for each conditional mode on the smoke preset."""

import json

import numpy as np
import pytest

from benchmark.__main__ import main
from benchmark.data.records import EchoData


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """One output folder for every mode: the data stage and MLflow store are made once."""
    return tmp_path_factory.mktemp("generate")


@pytest.mark.parametrize("mode", ["text", "semantic", "hybrid"])
def test_generate_cli(mode, out, capsys):
    argv = ["generate", "--config", "smoke", "--mode", mode, "--prompt", "P3"]
    argv += ["--out", str(out), "--json", "--quiet"]
    for setting in ("train_steps=2", "sample_steps=2", "n_samples=4"):
        argv += ["--set", f"generator.{setting}"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == mode and info["n_images"] == 4
    synth = EchoData.load(info["synthetic"])
    assert set(np.unique(synth.masks)) <= {0, 1, 2, 3}
    assert (synth.meta["source"] == "synthetic").all()
    assert ("prompt" in synth.meta.columns) == (mode != "semantic")
