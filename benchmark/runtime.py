"""Device choice and seeding: the run-time facts every trainer needs."""

from __future__ import annotations

import random

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    """Seed Python, NumPy and torch; on CPU also ask torch for deterministic kernels.

    Returns a torch generator on ``device`` for code that draws its own noise.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device.type == "cpu":
        # warn_only: a few ops have no deterministic CPU kernel; a warning beats a crash.
        torch.use_deterministic_algorithms(True, warn_only=True)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
