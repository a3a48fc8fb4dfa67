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


# Mixed precision of the training and sampling loops on CUDA: the autocast dtype, None for
# float32. CPU runs are always float32 (and deterministic).
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (bf16, fp16 or fp32) on ``device``; None means
    no autocast: fp32, and every CPU run."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision] if device.type == "cuda" else None


def autocast(dtype: torch.dtype | None, device: torch.device) -> torch.autocast:
    """Autocast at ``dtype`` (an :func:`autocast_dtype`) on ``device``; off when None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16, whose range is too narrow for small gradients; a pass-through
    for every other dtype."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)


def child_seed(seed: int, *key: int) -> int:
    """A seed derived from ``seed`` for the stream named by ``key`` (non-negative ints;
    ``SeedSequence(seed, spawn_key=key)``), below 2**63. Streams of different keys, and of
    different seeds, do not overlap as ``seed + k`` would: that is the seed of another run
    (seed ``s``'s second stream would be seed ``s + 1``'s first)."""
    child = np.random.SeedSequence(seed, spawn_key=key)
    return int(child.generate_state(1, np.uint64)[0] >> np.uint64(1))


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
