"""The standard FID (benchmark/inception.py): weights files, the extractor's input, the
distances by hand, and the fidelity stage, report and CLI with the weights given. The
InceptionV3 network itself is torch-fidelity's (an optional extra, not installed here): a
small stand-in extractor takes its place, except in the test that needs the real one."""

import hashlib
import json

import mlflow
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from benchmark import inception
from benchmark.__main__ import main
from benchmark.checkpoints import CheckpointError
from benchmark.config import load_config
from benchmark.fidelity import feature_distances
from benchmark.grid import Mode
from reports.collect import collect_fidelity
from reports.tables import fidelity_table
from sweeps.fidelity import fidelity_stage
from sweeps.workspace import Workspace
from tests.conftest import CONFIGS

JUDGES_OFF = ["fidelity.segmenter_epochs=0", "fidelity.quality_epochs=0"]


class _Extractor(nn.Module):
    """Stands in for InceptionV3: (N, 3, H, W) uint8 -> (N, 6) features; records its input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return self.conv(x.float() / 255).mean(dim=(2, 3))


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "inception.pth"
    torch.save({"conv.weight": torch.ones(2, 2)}, path)
    return path


@pytest.fixture
def stand_in(monkeypatch):
    """The stand-in extractor wherever the real one would be built."""
    made = []

    def load(path):
        inception.read_weights(path)
        made.append(_Extractor())
        return made[-1]

    monkeypatch.setattr(inception, "load_inception", load)
    monkeypatch.setattr(inception, "check_available", inception.read_weights)
    return made


def test_feature_distances_by_hand():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(300, 3, generator=gen, dtype=torch.float64)
    # The same covariance, the mean moved by (3, 4, 0): the Fréchet distance is 3^2 + 4^2.
    moved = feature_distances(real, real + torch.tensor([3.0, 4.0, 0.0]))
    assert moved["fd"] == pytest.approx(25.0, abs=1e-6)
    same = feature_distances(real, real.clone())
    assert same["fd"] == pytest.approx(0.0, abs=1e-6)
    assert same["kid_mean"] < 0.01 < moved["kid_mean"]
    # KID's subsets come from the seed: one value for one seed, whatever came before.
    torch.manual_seed(123)
    again = feature_distances(real, real + torch.tensor([3.0, 4.0, 0.0]))
    assert again == moved


def test_the_extractor_sees_8_bit_grey_as_three_equal_channels():
    extractor = _Extractor()
    images = np.array([[[0.0, 0.5], [1.0, 2 / 255]], [[0.2, 0.4], [0.6, 0.8]]] * 3)
    images = np.kron(images, np.ones((1, 2, 2)))  # (6, 4, 4): big enough for a 3x3 conv
    out = inception.inception_features(extractor, images, torch.device("cpu"), batch_size=4)
    assert out.shape == (6, 6) and out.dtype == torch.float64
    assert [len(x) for x in extractor.seen] == [4, 2]
    x = extractor.seen[0]
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 4, 4)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert x[0, 0, :, 0].tolist() == [0, 0, 255, 255] and x[0, 0, 2, 2] == 2  # 128 is 0.5
    assert x[0, 0, 0, 2] == 128


def test_weights_files_are_read_as_tensors_only(tmp_path, weights):
    state = inception.read_weights(weights)
    assert torch.equal(state["conv.weight"], torch.ones(2, 2))
    safe = tmp_path / "inception.safetensors"
    save_file({"w": torch.zeros(3)}, safe)
    assert set(inception.read_weights(safe)) == {"w"}
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert inception.weights_digest(weights) == digest
    with pytest.raises(CheckpointError, match=r"nowhere\.pth: missing weights file"):
        inception.read_weights(tmp_path / "nowhere.pth")
    (tmp_path / "net.bin").write_bytes(weights.read_bytes())
    with pytest.raises(CheckpointError, match=r"net\.bin: .*\.safetensors, \.pth or \.pt"):
        inception.read_weights(tmp_path / "net.bin")
    # A pickle holding more than tensors is refused, never unpickled.
    code = tmp_path / "code.pth"
    torch.save({"w": torch.ones(1), "hook": hashlib.sha256}, code)
    with pytest.raises(CheckpointError, match=r"code\.pth: not a plain tensor state dict"):
        inception.read_weights(code)
    listed = tmp_path / "list.pt"
    torch.save([torch.ones(1)], listed)
    with pytest.raises(CheckpointError, match=r"list\.pt: not a state dict of named tensors"):
        inception.read_weights(listed)


def test_without_torch_fidelity_the_error_names_the_extra(monkeypatch, weights):
    real_find = inception.importlib.util.find_spec
    monkeypatch.setattr(
        inception.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch_fidelity" else real_find(name, *a),
    )
    with pytest.raises(inception.MissingExtraError, match=r"echosynth-bench\[fid\]"):
        inception.check_available(weights)
    with pytest.raises(inception.MissingExtraError):
        inception.load_inception(weights)


def test_a_blank_weights_path_is_refused():
    with pytest.raises(ValueError, match="fidelity.inception_weights must be a file path"):
        load_config(CONFIGS / "smoke.yaml", ["fidelity.inception_weights=' '"])


def test_fidelity_stage_measures_the_standard_fid_when_given(tmp_path, weights, stand_in):
    plain = Workspace(
        load_config(CONFIGS / "smoke.yaml", JUDGES_OFF), tmp_path / "run", progress=False
    )
    without = fidelity_stage(plain, Mode.ORACLE, None, 1.0)
    cfg = load_config(
        CONFIGS / "smoke.yaml", [*JUDGES_OFF, f"fidelity.inception_weights={weights}"]
    )
    ws = Workspace(cfg, tmp_path / "run", progress=False)
    stage = fidelity_stage(ws, Mode.ORACLE, None, 1.0)
    # The same folder: the set and the encoder are reused, the stage is measured anew.
    assert stage.computed and not ws.synthetic_stage(Mode.ORACLE, None, 1.0)[0].computed
    result = json.loads((stage.path / "fidelity.json").read_text())
    assert result["fid"] > 0 and result["fid_floor"] > 0
    assert {"kid_inception", "kid_inception_std", "kid_inception_floor"} <= set(result)
    assert result["inception_sha256"] == inception.weights_digest(weights)
    assert result["inception_resolution"] == 299
    # Each image went through the extractor once: reference, synthetic and second sample.
    (extractor,) = stand_in
    seen = sum(len(x) for x in extractor.seen)
    assert seen == len(ws.real.split("test")) + result["n_synthetic"] + result["n_floor"]
    # The echo encoder's values are those of the stage measured without the weights.
    assert without.key != stage.key  # the weights are in the key, so a stage is not reused
    echo = json.loads((without.path / "fidelity.json").read_text())
    assert "fid" not in echo and echo["fd_echo"] == pytest.approx(result["fd_echo"])
    # Logged with its recipe, and a column of the report's fidelity table with its floor.
    client = mlflow.tracking.MlflowClient(ws.tracking_uri)
    # The run of the set measured without the weights is superseded by this one.
    (run,) = client.search_runs(
        [client.get_experiment_by_name("smoke").experiment_id], "tags.kind = 'fidelity'"
    )
    assert run.data.metrics["fid"] == pytest.approx(result["fid"])
    assert run.data.metrics["fid_floor"] == pytest.approx(result["fid_floor"])
    assert run.data.params["recipe.inception_sha256"] == result["inception_sha256"]
    tex = fidelity_table(collect_fidelity(ws.tracking_uri, "smoke"))
    (header,) = [line for line in tex.splitlines() if "FID &" in line]
    assert header.split(" & ")[1:3] == ["FID", "KID (Inc.)"]
    assert f"{result['fid_floor']:.2f}" in tex and "Inception SHA-256" in tex


@pytest.mark.parametrize("installed", [True, False])
def test_generate_checks_the_weights_before_training(tmp_path, capsys, monkeypatch, installed):
    real_find = inception.importlib.util.find_spec

    def find_spec(name, *args):
        if name == "torch_fidelity":
            return object() if installed else None
        return real_find(name, *args)

    monkeypatch.setattr(inception.importlib.util, "find_spec", find_spec)
    out = tmp_path / "run"
    missing = tmp_path / "missing.pth"
    args = ["--mode", "unconditional", "--out", str(out)]
    code = main(
        ["generate", "--config", str(CONFIGS / "smoke.yaml"), *args]
        + ["--set", f"fidelity.inception_weights={missing}"]
    )
    assert code == 2
    err = capsys.readouterr().err
    if installed:
        assert f"{missing}: missing weights file" in err
    else:
        assert "needs torch-fidelity" in err and "echosynth-bench[fid]" in err
    assert not (out / "gen").exists()  # nothing trained


def test_a_sweep_checks_the_weights_before_any_work(tmp_path):
    from sweeps.grid import check_runnable
    from sweeps.plan import grid_cells

    missing = tmp_path / "missing.safetensors"
    cfg = load_config(CONFIGS / "smoke.yaml", [f"fidelity.inception_weights={missing}"])
    with pytest.raises((CheckpointError, inception.MissingExtraError), match="missing|torch-fid"):
        check_runnable(cfg, grid_cells(cfg))
    # Real-only cells measure no synthetic set: nothing to check.
    alone = load_config(CONFIGS / "smoke.yaml", [f"fidelity.inception_weights={missing}"])
    check_runnable(alone, [c for c in grid_cells(alone) if c.mode is Mode.NONE])


def test_the_real_inception_network_from_a_weights_file(tmp_path):
    """torchmetrics' NoTrainInceptionV3 (torch-fidelity's network) built by `load_inception`
    from a weights file: random weights in its layout, saved as .pth, give 2048-d features;
    a set's FID against itself is 0, against a brighter copy it is not. Runs where the `fid`
    extra is installed (torch-fidelity and a torchvision that imports)."""
    pytest.importorskip("torch_fidelity")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):
            return None  # keep the layers' random initialisation

    blank = tmp_path / "blank.pth"
    torch.save({}, blank)
    torch.manual_seed(0)
    net = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(blank))
    path = tmp_path / "random-inception.pth"
    torch.save(net.state_dict(), path)  # no weights from a hub
    extractor = inception.load_inception(path)
    cpu = torch.device("cpu")
    images = np.random.default_rng(0).random((6, 64, 64))
    brighter = np.clip(images + 0.3, 0, 1)
    feats = inception.inception_features(extractor, images, cpu)
    assert feats.shape == (6, inception.FEATURES) and torch.isfinite(feats).all()
    fd = feature_distances(feats, inception.inception_features(extractor, brighter, cpu))
    # torchmetrics' own FID with that file, on the images as 8-bit RGB: the same value.
    from torchmetrics.image.fid import FrechetInceptionDistance

    reference = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))
    for x, real in ((images, True), (brighter, False)):
        rgb = (torch.from_numpy(x).float() * 255).round().to(torch.uint8)[:, None]
        reference.update(rgb.expand(-1, 3, -1, -1), real=real)
    assert fd["fd"] > 0 and fd["fd"] == pytest.approx(float(reference.compute()), rel=1e-5)
    # Weights of another network are refused with the file's name.
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(
        CheckpointError, match=r"other\.pth: not InceptionV3 FID weights .*Missing key"
    ):
        inception.load_inception(other)
