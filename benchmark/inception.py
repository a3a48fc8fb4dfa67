"""The standard FID and KID: InceptionV3's 2048-d pool features with the FID weights, from a
local file given by ``fidelity.inception_weights``.

The network is torch-fidelity's ``FeatureExtractorInceptionV3`` as torchmetrics wraps it
(``NoTrainInceptionV3``: images resized to 299 x 299 with antialiasing, 8-bit RGB in), so the
values are those of torchmetrics' ``FrechetInceptionDistance(feature=2048)``; echo images are
grey and enter as three equal channels. torch-fidelity is an optional extra (``pip install
'echosynth-bench[fid]'``, with torchvision): it is never installed by default, and the
weights (torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``, ported from
TensorFlow's FID graph) never come from a hub.

The weights are read here, as safetensors or with ``torch.load(weights_only=True)``, and
handed to torch-fidelity as a plain tensor file this module writes: a pickle file is never
unpickled beyond tensors. Their SHA-256 is in every result's recipe.

Without the weights, :mod:`benchmark.fidelity` measures distances in an echo encoder's
features instead (``fd_echo``), never called FID.
"""

from __future__ import annotations

import hashlib
import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmark.checkpoints import CheckpointError, read_state
from benchmark.fidelity import feature_distances

EXTRACTOR = "inception-v3-fid"
FEATURES = 2048
RESOLUTION = 299  # what the network resizes every image to
EXTRA = "pip install 'echosynth-bench[fid]'"


class MissingExtraError(ValueError):
    """An optional dependency a setting needs is not installed (a user error: exit 2)."""


def check_available(path: str | Path) -> None:
    """Fail before any work if the standard FID cannot be measured: torch-fidelity missing,
    or ``path`` not a weights file (CheckpointError naming it)."""
    _require_extra()
    read_weights(path)


def _require_extra() -> None:
    if importlib.util.find_spec("torch_fidelity") is None:
        raise MissingExtraError(
            f"fidelity.inception_weights needs torch-fidelity, which is not installed ({EXTRA})"
        )


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path``: ``.safetensors``, or a ``.pth``/``.pt`` state dict read with
    ``torch.load(weights_only=True)`` (anything but tensors is refused)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_state(path)
    if not path.is_file():
        raise CheckpointError(path, "missing weights file (fidelity.inception_weights)")
    if path.suffix not in (".pth", ".pt"):
        raise CheckpointError(path, "InceptionV3 weights must be .safetensors, .pth or .pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not plain tensors"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, f"not a plain tensor state dict ({first})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(path, "not a state dict of named tensors")
    return state


def weights_digest(path: str | Path) -> str:
    """SHA-256 (16 hex digits) of the weights file's bytes: the recipe's and the stage key's."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_inception(path: str | Path) -> nn.Module:
    """torchmetrics' ``NoTrainInceptionV3`` (2048-d pool features) with the weights of
    ``path``; input ``(N, 3, H, W)`` uint8, output ``(N, 2048)``."""
    _require_extra()
    state = read_weights(path)  # read once, checked: tensors only
    from torchmetrics.image.fid import NoTrainInceptionV3

    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "inception.pth"
        torch.save(state, plain)  # tensors only: torch-fidelity's own torch.load runs no code
        try:
            return NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=[str(FEATURES)],
                feature_extractor_weights_path=str(plain),
            )
        except RuntimeError as exc:  # load_state_dict: missing / unexpected keys, shapes
            said = " ".join(str(exc).split())
            said = said if len(said) <= 300 else said[:300] + " ..."
            raise CheckpointError(path, f"not InceptionV3 FID weights ({said})") from None


@torch.no_grad()
def inception_features(
    extractor: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 64
) -> torch.Tensor:
    """``(N, H, W)`` grey images in [0, 1] -> ``(N, D)`` float64 features on the CPU: each
    image rounded to 8 bits (torchmetrics' ``normalize=True`` truncates instead) and given as
    three equal RGB channels, the usual way to show a grey image to an RGB network."""
    extractor = extractor.to(device).eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size], dtype=np.float32))
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)[:, None].expand(-1, 3, -1, -1)
        out.append(extractor(x.to(device)).double().cpu())
    return torch.cat(out)


def standard_fidelity(
    path: str | Path,
    reference: np.ndarray,
    synthetic: np.ndarray,
    second: np.ndarray,
    device: torch.device,
) -> dict[str, float | int | str]:
    """The standard FID and KID of ``synthetic`` ``(M, H, W)`` against ``reference``
    ``(N, H, W)`` (images in [0, 1]), and of the second real sample ``second`` against it
    (the floor), with their recipe: ``fid``, ``kid_inception`` (+ ``_std``), ``fid_floor``,
    ``kid_inception_floor`` (+ ``_std``), ``inception_sha256``, ``inception_resolution``."""
    extractor = load_inception(path)
    ref = inception_features(extractor, reference, device)
    synth = feature_distances(ref, inception_features(extractor, synthetic, device))
    floor = feature_distances(ref, inception_features(extractor, second, device))
    return {
        "fid": synth["fd"],
        "kid_inception": synth["kid_mean"],
        "kid_inception_std": synth["kid_std"],
        "fid_floor": floor["fd"],
        "kid_inception_floor": floor["kid_mean"],
        "kid_inception_floor_std": floor["kid_std"],
        "inception_extractor": EXTRACTOR,
        "inception_sha256": weights_digest(path),
        "inception_resolution": RESOLUTION,
    }
