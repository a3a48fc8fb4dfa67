"""The software and hardware a result was computed with, recorded beside it.

Every stage's ``done.json`` carries the :func:`environment` of the process that computed it,
and the MLflow runs logged from a stage carry it as ``env.*`` tags (:func:`environment_tags`),
so a report can say which installs its scores come from. Bitwise CPU determinism holds
within one install, not across them: the controls preset's unconditional generator, trained
from the same code in two sessions' installs, gave FD 18.9 in one and 20.0 in the other
(``docs/RESULTS.md``, run 13), and nothing recorded what the first install had been.

Only what is fixed for a process is recorded, looked up once, when the process opens its
stage folder (:class:`benchmark.stages.StageStore`): package versions, Python,
the CPU and GPU models, the CUDA and cuDNN builds, and the project's commit when it runs
from a git checkout. The GPU models come from ``nvidia-smi``, not from torch, which would
initialise CUDA in a process that may not use it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# The distributions whose versions can move a result, in the order a reader looks for them.
PACKAGES = (
    "echosynth-bench",
    "torch",
    "diffusers",
    "transformers",
    "monai",
    "torchmetrics",
    "accelerate",
    "numpy",
    "scipy",
    "safetensors",
)
# The MLflow tag holding the environment's id; its fields are ``env.<field>``.
ENV_TAG = "env"
THREADS_TAG = "threads"  # the torch threads a stage was computed with (per stage, not per install)
_TIMEOUT_S = 10


@functools.cache
def environment() -> dict[str, Any]:
    """This process's environment: ``python``, ``os``, ``cpu``, ``gpus`` (model names, empty
    without an NVIDIA driver), ``cuda`` and ``cudnn`` (torch's builds, None on a CPU build),
    ``commit`` and ``dirty`` (None outside a git checkout), ``packages`` (name -> version,
    None when not installed) and ``id``: a short hash of all of them."""
    import torch  # here, not at import: reports read environments without torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.machine()}",
        "cpu": _cpu_model(),
        "gpus": _gpu_models(),
        "cuda": torch.version.cuda,
        "cudnn": None if cudnn is None else str(cudnn),
        **checkout(Path(__file__).resolve().parents[1]),
        # torch's own version names its build (2.4.0+cu121); its wheel's metadata may not.
        "packages": {name: _version(name) for name in PACKAGES} | {"torch": torch.__version__},
    }
    env["id"] = environment_id(env)
    return env


def torch_threads() -> int | None:
    """torch's intra-op thread count in this process now; None when torch is not loaded.

    Recorded per stage, not in :func:`environment`: a sweep sets it per worker after the
    environment is looked up, and it moves CPU results. A sum of 4 million floats, or a
    convolution's output summed, differs in its last bits between 1 and 2 threads (torch
    2.13.0+cpu), since each thread reduces its own chunk."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def environment_id(env: dict[str, Any]) -> str:
    """12 hex digits of SHA-256 over ``env`` without its ``id``: equal for equal installs."""
    fields = {k: v for k, v in env.items() if k != "id"}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def environment_tags(env: dict[str, Any] | None) -> dict[str, str]:
    """MLflow tags of a recorded environment (a stage's ``done.json["environment"]``):
    ``env`` (its id) and ``env.<field>`` / ``env.<package>``, values as text; none for a
    stage recorded before environments were (``None``)."""
    if not env:
        return {}
    tags = {ENV_TAG: str(env["id"])}
    for key, value in env.items():
        if key == "packages":
            tags |= {f"{ENV_TAG}.{name}": str(v) for name, v in value.items()}
        elif key != "id":
            tags[f"{ENV_TAG}.{key}"] = ", ".join(value) if isinstance(value, list) else str(value)
    return tags


def provenance_tags(done: dict[str, Any]) -> dict[str, str]:
    """MLflow tags of what computed a stage, from its ``done.json``: its environment's
    (:func:`environment_tags`) and ``threads`` (torch's intra-op threads), each when recorded."""
    tags = environment_tags(done.get("environment"))
    if done.get("threads") is not None:
        tags[THREADS_TAG] = str(done["threads"])
    return tags


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform`` has none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(args: list[str], cwd: Path | None = None) -> str | None:
    """``args``' standard output, stripped; None when it cannot run or fails."""
    try:
        done = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _gpu_models() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    names = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    return [n.strip() for n in names.splitlines() if n.strip()] if names else []


def checkout(root: Path) -> dict[str, str | bool | None]:
    """``commit`` and ``dirty`` (uncommitted changes to tracked files) of the project
    checkout at ``root`` (the folder above this package); None for an installed copy, which
    no checkout describes."""
    unknown = {"commit": None, "dirty": None}
    # Both beside the package: a copy in site-packages inside some other repository is not it.
    if not ((root / ".git").exists() and (root / "pyproject.toml").is_file()):
        return unknown
    if shutil.which("git") is None:
        return unknown
    commit = _run(["git", "rev-parse", "HEAD"], cwd=root)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    if not commit or status is None:
        return unknown
    return {"commit": commit, "dirty": bool(status)}
