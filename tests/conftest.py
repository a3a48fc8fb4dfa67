"""Shared fixtures: tests shrink the real presets instead of inventing configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a model hub
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


@pytest.fixture(autouse=True, scope="session")
def _library_log_handlers():
    """diffusers and transformers give their root logger a StreamHandler on the sys.stderr
    of the moment they first log. Made inside a test, that is the test's capture buffer,
    closed when the test ends: every later warning then prints "--- Logging error ---" and a
    traceback, which the bad-input checks rightly count as a failure. Made here, once."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.get_logger("diffusers")
    transformers.utils.logging.get_logger("transformers")


@pytest.fixture
def smoke_config():
    """The smoke preset, as the sweep would load it."""
    from benchmark.config import load_config

    return load_config(CONFIGS / "smoke.yaml")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
