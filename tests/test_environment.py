"""benchmark.environment: what a stage records of the install that computed it."""

import json
import shutil
import subprocess
from importlib import metadata

import pytest
import torch

from benchmark.environment import (
    PACKAGES,
    checkout,
    environment,
    environment_id,
    environment_tags,
    provenance_tags,
)
from benchmark.stages import StageStore


def test_environment_names_this_install():
    env = environment()
    # The build's own version (2.4.0+cu121), which a wheel's metadata may give as 2.4.0.
    assert env["packages"]["torch"] == torch.__version__
    assert env["packages"]["torch"].startswith(metadata.version("torch"))
    assert env["packages"]["echosynth-bench"] == metadata.version("echosynth-bench")
    assert set(env["packages"]) == set(PACKAGES)
    assert env["cuda"] == torch.version.cuda
    assert env["python"].count(".") == 2 and env["cpu"]
    assert env["id"] == environment_id(env) and len(env["id"]) == 12
    assert environment() is env  # looked up once per process


def test_environment_id_tells_installs_apart():
    env = {k: v for k, v in environment().items() if k != "id"}
    other = json.loads(json.dumps(env))
    other["packages"]["diffusers"] = "0.0.1"
    assert environment_id(env) == environment_id(json.loads(json.dumps(env)))
    assert environment_id(other) != environment_id(env)
    assert environment_id(env | {"id": "anything"}) == environment_id(env)


def test_tags_flatten_the_environment():
    env = {
        "python": "3.11.7",
        "gpus": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"],
        "cuda": None,
        "dirty": False,
        "packages": {"torch": "2.13.0", "monai": None},
        "id": "abc123def456",
    }
    assert environment_tags(env) == {
        "env": "abc123def456",
        "env.python": "3.11.7",
        "env.gpus": "NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3",
        "env.cuda": "None",
        "env.dirty": "False",
        "env.torch": "2.13.0",
        "env.monai": "None",
    }
    assert environment_tags(None) == {}  # a stage written before environments were


def test_an_installed_copy_has_no_commit(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    assert checkout(tmp_path) == {"commit": None, "dirty": None}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_checkout_names_its_commit_and_changes(tmp_path):
    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    git("add", "pyproject.toml")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")
    (tmp_path / "new.txt").write_text("untracked files are not a change to the code")
    assert checkout(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert checkout(tmp_path) == {"commit": head, "dirty": True}


def test_every_stage_records_the_environment_that_computed_it(tmp_path):
    store = StageStore(tmp_path)
    stage = store.get_or_compute("gen", {"a": 1}, lambda folder: None)
    done = json.loads((stage.path / "done.json").read_text())
    assert done["environment"] == environment() == stage.done["environment"]


def test_every_stage_records_the_threads_it_was_computed_with(tmp_path):
    store = StageStore(tmp_path)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as a sweep's worker sets it, after the store was opened
        stage = store.get_or_compute("gen", {"a": 2}, lambda folder: None)
    finally:
        torch.set_num_threads(before)
    assert json.loads((stage.path / "done.json").read_text())["threads"] == 1
    tags = provenance_tags(stage.done)
    assert tags["threads"] == "1" and tags["env"] == environment()["id"]
    # A stage written before threads (or environments) were recorded tags neither.
    assert provenance_tags({"environment": None}) == {}
