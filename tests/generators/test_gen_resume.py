"""A generator training stopped after a checkpoint resumes from it and ends bitwise where
the training that was never stopped ends (generators/resume.py)."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from benchmark import faults
from benchmark.config import load_config
from benchmark.grid import Mode, Prompt
from generators import diffusion, resume
from sweeps.workspace import Workspace

CONFIGS = Path(__file__).parents[2] / "configs"


class _Stop(Exception):
    """Stands in for a killed process."""


def _stop_at(monkeypatch, nth: int) -> None:
    """Make the ``nth`` checkpoint written be the last thing the process does."""
    hits = []

    def point(name: str) -> None:
        if name == "generator.checkpointed":
            hits.append(name)
            if len(hits) == nth:
                raise _Stop

    monkeypatch.setattr(faults, "point", point)


class _Tiny(torch.nn.Module):
    """A denoiser with dropout: the global random stream matters to it too."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, sample, t, **kwargs):
        return SimpleNamespace(sample=self.drop(self.conv(sample)))


def _train(cfg, folder=None):
    images = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1

    def batches(gen):
        while True:
            yield images[torch.randint(0, 10, (4,), generator=gen)], {}

    model = _Tiny()
    torch.manual_seed(1)
    if folder is None:
        result = diffusion.train_denoiser(model, batches, cfg, torch.device("cpu"), 3, False)
    else:
        with resume.resumable(folder, 2):
            result = diffusion.train_denoiser(model, batches, cfg, torch.device("cpu"), 3, False)
    return model, result


def test_resumed_training_is_the_one_never_stopped(smoke_config, tmp_path, monkeypatch):
    cfg = dataclasses.replace(smoke_config.generator, train_steps=7, ema_decay=0.9, lr=1e-2)
    whole, whole_result = _train(cfg)
    _stop_at(monkeypatch, 2)
    with pytest.raises(_Stop):
        _train(cfg, tmp_path)
    state = torch.load(tmp_path / "phase1" / resume.STATE_FILE, weights_only=True)
    assert state["step"] == 4 and len(state["losses"]) == 4
    monkeypatch.undo()
    resumed, result = _train(cfg, tmp_path)
    assert result.losses == whole_result.losses
    assert result.ema_decay == whole_result.ema_decay
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # Without a resume folder nothing is written or read.
    _train(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phase1"]


def _workspace(out, *overrides):
    cfg = load_config(
        CONFIGS / "smoke.yaml",
        ["generator.train_steps=6", "generator.checkpoint_every=2", *overrides],
    )
    return Workspace(cfg, out, progress=False)


@pytest.mark.parametrize(
    ("mode", "overrides", "stop"),
    [
        (Mode.UNCONDITIONAL, (), 2),
        # Stopped in the ControlNet's second phase: the finished base phase is not redone.
        (Mode.HYBRID, ("generator.hybrid_variant=controlnet",), 5),
    ],
)
def test_a_stopped_generator_stage_resumes(tmp_path, monkeypatch, mode, overrides, stop):
    prompt = Prompt.P2 if mode is Mode.HYBRID else None
    _stop_at(monkeypatch, stop)
    ws = _workspace(tmp_path / "run", *overrides)
    with pytest.raises(_Stop):
        ws.generator_stage(mode, prompt, 1.0)
    (left,) = (tmp_path / "run" / "gen").glob(".*.resume")
    assert (left / "phase1" / resume.STATE_FILE).is_file()
    monkeypatch.undo()
    stage = _workspace(tmp_path / "run", *overrides).generator_stage(mode, prompt, 1.0)
    assert not left.exists()  # the stage is written: its checkpoints are gone
    fresh = _workspace(tmp_path / "fresh", *overrides, "generator.checkpoint_every=0")
    other = fresh.generator_stage(mode, prompt, 1.0)
    assert other.path.name == stage.path.name  # checkpoint_every is in no key
    weights = sorted(stage.path.rglob("*.safetensors"))
    assert weights
    for path in weights:
        a, b = load_file(path), load_file(other.path / path.relative_to(stage.path))
        assert all(torch.equal(a[k], b[k]) for k in a)
