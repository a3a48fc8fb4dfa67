"""CLIPSeg as the vlseg model: a tiny one built from config (never a hub download)."""

import dataclasses

import pytest
import torch
from tiny_models import save_tiny_clipseg, tiny_towers
from transformers import AutoTokenizer

from benchmark.config import ConfigError, load_config
from benchmark.data.phantom import make_phantom
from benchmark.grid import Task
from benchmark.text_encoder import encoder_path
from downstream.clipseg import ClipSegNet
from downstream.registry import build_model, build_task
from downstream.training import fit


@pytest.fixture(scope="module")
def tiny_clipseg(tmp_path_factory):
    """A 1 M-parameter CLIPSeg with MiniLM's (BERT) tokenizer, saved like a pretrained one."""
    return save_tiny_clipseg(tmp_path_factory.mktemp("clipseg"), 3, image_size=64, dim=16)


def test_clipseg_needs_a_path():
    with pytest.raises(ConfigError, match="clipseg_path is required"):
        load_config(None, ["downstream.vlseg.model=clipseg"])


def test_frozen_backbone_and_shapes(tiny_clipseg):
    net = ClipSegNet(tiny_clipseg, freeze_backbone=True)
    assert not any(p.requires_grad for p in net.model.clip.parameters())
    assert any(p.requires_grad for p in net.model.decoder.parameters())
    tokens = torch.zeros(1, 2, 77, dtype=torch.long)
    tokens[0, 0, :3] = torch.tensor([101, 2000, 102])
    tokens[0, 1, :3] = 1
    assert net(torch.rand(1, 1, 40, 40), tokens).shape == (1, 1, 40, 40)


def test_clipseg_trains_as_a_vlseg_task(tiny_clipseg, smoke_config):
    cfg = load_config(
        None, ["downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={tiny_clipseg}"]
    ).downstream
    task, name = build_task(Task.VLSEG, cfg, prompt_level=2)
    model = build_model(Task.VLSEG, cfg, 32)
    assert name == "clipseg"
    data = make_phantom(4, 32, seed=3)
    before = {k: v.clone() for k, v in model.model.decoder.state_dict().items()}
    train_cfg = dataclasses.replace(smoke_config.downstream.train, epochs=1, batch_size=8)
    result = fit(
        model,
        task,
        data.split("train"),
        data.split("val"),
        train_cfg,
        torch.device("cpu"),
        0,
        progress=False,
    )
    after = result.model.model.decoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    tested = task.evaluate(result.model, data.split("test"), torch.device("cpu"))
    metrics, per_sample = tested.metrics, tested.per_sample
    assert 0 <= metrics["dice_mean"] <= 1 and len(per_sample) == 3 * len(data.split("test"))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny CLIP (text + vision towers) with MiniLM's tokenizer, saved like a pretrained one."""
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path_factory.mktemp("clip")
    tokenizer = AutoTokenizer.from_pretrained(encoder_path("minilm"))
    config = CLIPConfig(
        **tiny_towers(tokenizer, vision_layers=2),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cris_trains_as_a_vlseg_task(tiny_clip, smoke_config):
    cfg = load_config(
        None,
        [
            "downstream.vlseg.model=cris",
            f"downstream.vlseg.clip_path={tiny_clip}",
            "downstream.vlseg.cris_dim=32",
        ],
    ).downstream
    task, name = build_task(Task.VLSEG, cfg, prompt_level=3)
    model = build_model(Task.VLSEG, cfg, 32)
    assert name == "cris"
    assert not any(p.requires_grad for p in model.clip.parameters())
    data = make_phantom(4, 32, seed=4)
    train_cfg = dataclasses.replace(smoke_config.downstream.train, epochs=1, batch_size=8)
    result = fit(
        model,
        task,
        data.split("train"),
        data.split("val"),
        train_cfg,
        torch.device("cpu"),
        0,
        progress=False,
    )
    metrics = task.evaluate(result.model, data.split("test"), torch.device("cpu")).metrics
    assert 0 <= metrics["dice_mean"] <= 1
    with pytest.raises(ConfigError, match="clip_path is required"):
        load_config(None, ["downstream.vlseg.model=cris"])


def test_cris_logits_are_the_prompts_kernel_on_the_pixels(tiny_clip):
    """CRIS's text-to-pixel decoding: each pixel's logit is the prompt's sentence vector (as
    a 1x1 kernel) applied to that pixel's features, so the prompt decides the mask: two
    prompts give two masks on one image, padding changes nothing, and with the kernel zeroed
    no logit is left."""
    from downstream.cris import CrisNet

    torch.manual_seed(0)
    net = CrisNet(tiny_clip, dim=32, layers=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)

    def tokens(prompts, length):
        t = tokenizer(prompts, padding="max_length", max_length=length, return_tensors="pt")
        return torch.stack([t["input_ids"], t["attention_mask"]], 1)

    image = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1)).repeat(2, 1, 1, 1)
    prompts = ["the left ventricle", "the left atrium"]
    with torch.no_grad():
        logits = net(image, tokens(prompts, 12))
        padded = net(image, tokens(prompts, 20))
    assert logits.shape == (2, 1, 32, 32)
    assert (logits[0] - logits[1]).abs().max() > 1e-4  # the prompt picks the mask
    torch.testing.assert_close(padded, logits, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        net.kernel.weight.zero_()
        net.kernel.bias.zero_()
        assert net(image, tokens(prompts, 12)).abs().max() == 0
