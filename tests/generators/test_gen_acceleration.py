"""The generators' speed options (generators/acceleration.py) and the training loop's
buffered loss reads: CPU checks of what the CUDA path relies on."""

import contextlib
import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from benchmark import faults
from benchmark.config import load_config
from generators import diffusion, resume
from generators.acceleration import Acceleration
from tests.conftest import CONFIGS


@pytest.fixture(scope="module")
def gen_cfg():
    cfg = load_config(CONFIGS / "smoke.yaml").generator
    return dataclasses.replace(cfg, train_steps=30, timesteps=10, batch_size=4)


def stream(x0: torch.Tensor, nan_at: int | None = None):
    """Batches of ``x0`` (B, C, H, W) in a seeded order; step ``nan_at``'s batch is NaN."""

    def batches(gen: torch.Generator):
        step = 0
        while True:
            order = torch.randperm(len(x0), generator=gen)
            batch = x0[order[:4]]
            yield (batch * float("nan") if step == nan_at else batch), {}
            step += 1

    return batches


def test_options_act_on_cuda_only(gen_cfg):
    every = dataclasses.replace(gen_cfg, compile=True)
    assert Acceleration.resolve(every, torch.device("cpu")) == Acceleration()
    on_gpu = Acceleration.resolve(every, torch.device("cuda"))
    assert on_gpu == Acceleration(channels_last=True, compile=True, cuda_graphs=True, preload=True)
    off = dataclasses.replace(gen_cfg, channels_last=False, cuda_graphs=False, preload=False)
    assert Acceleration.resolve(off, torch.device("cuda")) == Acceleration()


def test_training_is_reproducible_and_reads_every_loss(gen_cfg):
    x0 = torch.rand(12, 1, 16, 16) * 2 - 1
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        unet = diffusion.build_unet(gen_cfg, 16, 1, None)
        result = diffusion.train_denoiser(
            unet, stream(x0), gen_cfg, torch.device("cpu"), 3, progress=False
        )
        runs.append((result.losses, unet.state_dict()))
    # 30 steps: one read after step 25, the last 5 at the end.
    assert len(runs[0][0]) == 30 and runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())


def test_a_non_finite_loss_names_its_step(gen_cfg):
    x0 = torch.rand(12, 1, 16, 16) * 2 - 1
    unet = diffusion.build_unet(gen_cfg, 16, 1, None)
    # Step 7 is read with the first block (after step 25), and reported as step 7.
    with pytest.raises(FloatingPointError, match=r"generator loss became nan at step 7$"):
        diffusion.train_denoiser(
            unet, stream(x0, nan_at=7), gen_cfg, torch.device("cpu"), 0, progress=False
        )


def test_channels_last_training_saves_contiguous_weights(gen_cfg, tmp_path):
    """NHWC works on the CPU too: the loss curve matches the NCHW run, and the weights come
    back in the default layout, which safetensors needs to save them."""
    from diffusers import DDPMPipeline, UNet2DModel

    x0 = torch.rand(12, 1, 16, 16) * 2 - 1
    cfg = dataclasses.replace(gen_cfg, train_steps=5)
    losses = {}
    for nhwc in (False, True):
        torch.manual_seed(0)
        unet = diffusion.build_unet(cfg, 16, 1, None)
        speed = Acceleration(channels_last=nhwc)
        result = diffusion.train_denoiser(
            unet, stream(x0), cfg, torch.device("cpu"), 1, progress=False, speed=speed
        )
        losses[nhwc] = result.losses
    assert all(p.is_contiguous() for p in unet.parameters())
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    DDPMPipeline(unet=unet, scheduler=diffusion.training_scheduler(cfg)).save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert isinstance(UNet2DModel.from_pretrained(tmp_path, subfolder="unet"), UNet2DModel)


def test_sampling_with_a_prepared_denoiser_matches_the_plain_one(gen_cfg):
    torch.manual_seed(0)
    unet = diffusion.build_unet(gen_cfg, 16, 1, None)
    scheduler = diffusion.sampling_scheduler(diffusion.training_scheduler(gen_cfg), "ddim")
    args = (3, (1, 16, 16), 4, 2, 5, torch.device("cpu"))
    plain = diffusion.sample(unet, scheduler, *args, progress=False)
    nhwc = diffusion.sample(
        unet, scheduler, *args, progress=False, speed=Acceleration(channels_last=True)
    )
    torch.testing.assert_close(nhwc, plain, atol=1e-4, rtol=1e-4)


def test_preloaded_training_sets_index_on_their_device(gen_cfg):
    """The conditional modes' batch stream indexes tensors where they are (CPU here; the
    same code holds them on the GPU with ``preload``)."""
    from generators.conditional import TrainingSet

    x0, cond = torch.rand(6, 1, 8, 8), torch.rand(6, 4, 8, 8)
    states, attn = torch.rand(3, 5, 2), torch.ones(3, 5)
    index = torch.tensor([[1, 2, 1, 2, 1, 2]])
    data = TrainingSet(x0, cond, [3], states, attn, index, empty=0)
    assert data.placed(Acceleration(), torch.device("cpu")) is data
    moved = data.placed(Acceleration(preload=True), torch.device("cpu"))
    assert moved.kinds == [3] and torch.equal(moved.states, states)
    cfg = SimpleNamespace(batch_size=4, cond_dropout=0.0)
    batch, kwargs = next(moved.batches(cfg)(torch.Generator().manual_seed(0)))
    assert batch.shape == (4, 1, 8, 8) and kwargs["cond"].shape == (4, 4, 8, 8)
    assert kwargs["encoder_hidden_states"].shape == (4, 5, 2)


@pytest.mark.gpu
def test_cuda_training_and_sampling_take_the_fast_path(gen_cfg, tmp_path):
    """On a GPU: default options (NHWC, preload, CUDA graphs) train, save and sample; the
    graphed samples match eager sampling of the same weights."""
    from diffusers import DDPMPipeline

    cuda = torch.device("cuda")
    speed = Acceleration.resolve(gen_cfg, cuda)
    assert speed.channels_last and speed.preload and speed.cuda_graphs
    x0 = speed.place(torch.rand(12, 1, 16, 16) * 2 - 1, cuda)
    unet = diffusion.build_unet(gen_cfg, 16, 1, None)
    diffusion.train_denoiser(unet, stream(x0), gen_cfg, cuda, 0, progress=False)
    DDPMPipeline(unet=unet.cpu(), scheduler=diffusion.training_scheduler(gen_cfg)).save_pretrained(
        tmp_path
    )
    scheduler = diffusion.sampling_scheduler(diffusion.training_scheduler(gen_cfg), "ddim")
    args = (5, (1, 16, 16), 4, 4, 0, cuda)
    eager = diffusion.sample(unet, scheduler, *args, progress=False)
    graphed = diffusion.sample(unet, scheduler, *args, progress=False, speed=speed)
    torch.testing.assert_close(graphed, eager, atol=5e-2, rtol=5e-2)


@pytest.mark.gpu
def test_cuda_loader_augments_on_the_device_with_the_cpu_draws():
    from downstream.augment import BatchAugment
    from downstream.loading import seeded_loader

    items = [{"image": torch.rand(1, 16, 16), "label": torch.rand(1, 16, 16)} for _ in range(8)]
    aug = BatchAugment(warp=("image", "label"), nearest=("label",), p_affine=1.0)
    on_cpu = list(seeded_loader(items, aug, 4, True, 0))
    on_gpu = list(seeded_loader(items, aug, 4, True, 0, device=torch.device("cuda")))
    for a, b in zip(on_cpu, on_gpu):
        assert b["image"].device.type == "cuda"
        torch.testing.assert_close(b["image"].cpu(), a["image"], atol=1e-4, rtol=1e-4)


class _Stop(Exception):
    """Stands in for a killed process."""


@pytest.mark.parametrize(
    ("device", "precision"),
    [
        ("cpu", "fp32"),
        pytest.param("cuda", "bf16", marks=pytest.mark.gpu),
        # fp16: the loss scaler's state is checkpointed too.
        pytest.param("cuda", "fp16", marks=pytest.mark.gpu),
    ],
)
def test_training_resumes_on_the_fast_path(gen_cfg, tmp_path, monkeypatch, device, precision):
    """A UNet training with its device's speed options (on a GPU: autocast, NHWC, data
    preloaded), stopped after its 2nd checkpoint of 3, resumes from it: it keeps the losses
    of the steps done and ends where a training never stopped ends, within what two
    uninterrupted runs differ by (nothing on the CPU; on a GPU, the order of cuDNN's and the
    atomic adds' sums)."""
    cfg = dataclasses.replace(gen_cfg, precision=precision, lr=1e-3)
    where = torch.device(device)
    speed = Acceleration.resolve(cfg, where)
    x0 = speed.place(torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(0)), where)

    def train(folder=None):
        torch.manual_seed(0)
        unet = diffusion.build_unet(cfg, 16, 1, None)
        start = torch.cat([p.detach().flatten().float().cpu() for p in unet.parameters()])
        within = resume.resumable(folder, 10) if folder else contextlib.nullcontext()
        with within:
            result = diffusion.train_denoiser(unet, stream(x0 * 2 - 1), cfg, where, 0, False)
        end = torch.cat([p.detach().flatten().float().cpu() for p in unet.parameters()])
        return result.losses, start, end

    losses, start, whole = train()
    _, _, again = train()
    checkpoints = []

    def point(name):
        if name == "generator.checkpointed":
            checkpoints.append(name)
            if len(checkpoints) == 2:
                raise _Stop

    monkeypatch.setattr(faults, "point", point)
    with pytest.raises(_Stop):
        train(tmp_path)
    monkeypatch.undo()
    saved = torch.load(tmp_path / "phase1" / resume.STATE_FILE, weights_only=True)
    assert saved["step"] == 20
    resumed_losses, _, resumed = train(tmp_path)
    assert len(resumed_losses) == 30 and resumed_losses[:20] == saved["losses"]
    assert math.isfinite(resumed_losses[-1]) and bool(torch.isfinite(resumed).all())
    noise = (again - whole).norm()
    moved = (whole - start).norm()
    # A resume that lost the optimizer's moments or the EMA would be off by a share of the
    # 10 steps' movement, far beyond the tolerance.
    assert (resumed - whole).norm() <= 5 * noise + 1e-3 * moved
    if device == "cpu":
        assert resumed_losses == losses and torch.equal(resumed, whole)
