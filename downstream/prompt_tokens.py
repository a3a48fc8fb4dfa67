"""Prompts as token ids for models with their own text tower (CLIPSeg, CLIP in CRIS)."""

from __future__ import annotations

from pathlib import Path

import torch


class PromptTokens:
    """Prompts -> ``(P, 2, L)`` int64: token ids and attention mask, padded to ``L`` = 77
    (CLIP's context length), with the tokenizer saved in a local model ``folder``."""

    def __init__(self, folder: str | Path) -> None:
        from benchmark.checkpoints import load_tokenizer

        folder = Path(folder).expanduser()
        if not (folder / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"{folder}: no tokenizer saved in this model folder")
        self.tokenizer = load_tokenizer(folder)
        self._cache: dict[str, torch.Tensor] = {}

    def encode(self, prompts: list[str]) -> torch.Tensor:
        # Pad every prompt to the same length so that pairs batch together.
        length = 77
        for text in set(prompts) - self._cache.keys():
            tok = self.tokenizer(
                text,
                padding="max_length",
                truncation=True,
                max_length=length,
                return_tensors="pt",
            )
            self._cache[text] = torch.stack([tok["input_ids"][0], tok["attention_mask"][0]])
        if not prompts:
            return torch.zeros((0, 2, length), dtype=torch.long)
        return torch.stack([self._cache[p] for p in prompts])
