"""Bad-input cases: checkpoints (weights, pickles, tokenizers, pipelines)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from bad_input_support import (
    find_stage,
    pickle_only,
    truncate,
    write_malicious_pickle,
    write_tiny_clip,
    write_tiny_clipseg,
)
from bad_input_table import Ctx, T, case
from bad_inputs_data import generate
from safetensors.torch import load_file, save_file

# ----------------------------------------------------------------------------- checkpoints


def encoder_file(ctx: Ctx) -> Path:
    return find_stage(ctx.stages(), "fidelity", "encoder") / "encoder.safetensors"


@case("encoder-corrupt", "checkpoint", "encoder.safetensors: corrupt or truncated safetensors")
def _(ctx):
    truncate(encoder_file(ctx))
    return generate(ctx, "oracle", fidelity=True)


@case(
    "encoder-wrong-architecture",
    "checkpoint",
    "encoder.safetensors: weights do not fit EchoEncoder",
    "missing keys",
    "unexpected keys classifier.weight",
)
def _(ctx):
    save_file({"classifier.weight": torch.zeros(2, 2)}, str(encoder_file(ctx)))
    return generate(ctx, "oracle", fidelity=True)


@case("encoder-shape-mismatch", "checkpoint", "encoder.safetensors", "shape mismatches")
def _(ctx):
    path = encoder_file(ctx)
    state = load_file(str(path))
    key = sorted(state)[-1]
    state[key] = torch.zeros(*state[key].shape, 2)
    save_file(state, str(path))
    return generate(ctx, "oracle", fidelity=True)


def generator_unet(ctx: Ctx, mode: str) -> Path:
    """The generator's UNet folder; its synthetic set is removed so it is sampled again."""
    out = ctx.stages()
    shutil.rmtree(find_stage(out, "synth", mode))
    return find_stage(out, "gen", mode) / "unet"


@case("unet-corrupt", "checkpoint", "gen/unconditional-", "/unet: cannot load weights")
def _(ctx):
    truncate(generator_unet(ctx, "unconditional") / "diffusion_pytorch_model.safetensors")
    return generate(ctx, "unconditional")


@case(
    "unet-wrong-architecture",
    "checkpoint",
    "/unet: weights do not fit UNet2DModel",
    "missing keys conv_in.bias",
)
def _(ctx):
    weights = generator_unet(ctx, "unconditional") / "diffusion_pytorch_model.safetensors"
    save_file({"encoder.weight": torch.zeros(3)}, str(weights))
    return generate(ctx, "unconditional")


def _not_unpickled(ctx: Ctx) -> None:
    assert not (ctx.tmp / "unpickled").exists(), "a pickle checkpoint was unpickled"


@case(
    "unet-pickle-only",
    "checkpoint",
    "/unet: no safetensors weights",
    "diffusion_pytorch_model.bin, which are refused",
    check=_not_unpickled,
)
def _(ctx):
    pickle_only(generator_unet(ctx, "unconditional"), ctx.tmp / "unpickled")
    return generate(ctx, "unconditional")


@case("pipeline-unet-corrupt", "checkpoint", "gen/semantic-", "/unet: cannot load weights")
def _(ctx):
    truncate(generator_unet(ctx, "semantic") / "diffusion_pytorch_model.safetensors", 0.3)
    return generate(ctx, "semantic")


@case(
    "pipeline-unet-shape",
    "checkpoint",
    "gen/semantic-",
    "/unet: cannot load weights",
    "conv_in.weight expected shape",
)
def _(ctx):
    weights = generator_unet(ctx, "semantic") / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["conv_in.weight"] = torch.zeros(1, 2, 3, 3)
    save_file(state, str(weights))
    return generate(ctx, "semantic")


def vlseg(ctx: Ctx, *sets: str) -> list:
    extra = [a for s in sets for a in ("--set", s)]
    return ["run", *T, *extra, "--task", "vlseg", "--prompt", "P1", "--out", ctx.out]


@case("clipseg-garbage", "checkpoint", "clipseg: cannot load weights", "deserializing header")
def _(ctx):
    model = write_tiny_clipseg(ctx.tmp / "clipseg")
    (model / "model.safetensors").write_bytes(os.urandom(4096))
    return vlseg(ctx, "downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={model}")


@case(
    "clipseg-wrong-architecture",
    "checkpoint",
    "clipseg: weights do not fit CLIPSegForImageSegmentation",
    "missing keys",
)
def _(ctx):
    model = write_tiny_clipseg(ctx.tmp / "clipseg")
    # With the metadata save_pretrained writes (transformers 4.x cannot read a file without).
    weights = {"bert.pooler.weight": torch.zeros(4, 4)}
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    return vlseg(ctx, "downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={model}")


@case(
    "clipseg-pickle-only",
    "checkpoint",
    "clipseg: no safetensors weights",
    "pytorch_model.bin, which are refused",
    check=_not_unpickled,
)
def _(ctx):
    model = pickle_only(write_tiny_clipseg(ctx.tmp / "clipseg"), ctx.tmp / "unpickled")
    return vlseg(ctx, "downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={model}")


@case("clipseg-tokenizer-corrupt", "checkpoint", "clipseg: cannot load the tokenizer")
def _(ctx):
    model = write_tiny_clipseg(ctx.tmp / "clipseg")
    (model / "tokenizer.json").write_text("{not json")
    return vlseg(ctx, "downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={model}")


@case("clipseg-not-a-model", "checkpoint", "weights: no tokenizer saved in this model folder")
def _(ctx):
    (ctx.tmp / "weights").mkdir()
    path = ctx.tmp / "weights"
    return vlseg(ctx, "downstream.vlseg.model=clipseg", f"downstream.vlseg.clipseg_path={path}")


@case("cris-clip-truncated", "checkpoint", "clip: cannot load weights")
def _(ctx):
    model = write_tiny_clip(ctx.tmp / "clip")
    truncate(model / "model.safetensors", 0.7)
    return vlseg(
        ctx,
        "downstream.vlseg.model=cris",
        "downstream.vlseg.cris_dim=8",
        f"downstream.vlseg.clip_path={model}",
    )


@case(
    "text-encoder-pickle-only",
    "checkpoint",
    "encoder: no safetensors weights",
    "pytorch_model.bin, which are refused",
    check=_not_unpickled,
)
def _(ctx):
    from benchmark.text_encoder import encoder_path

    folder = ctx.tmp / "encoder"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(encoder_path("minilm") / name, folder / name)
    write_malicious_pickle(folder / "pytorch_model.bin", ctx.tmp / "unpickled")
    return vlseg(ctx, f"downstream.vlseg.text_encoder={folder}")
