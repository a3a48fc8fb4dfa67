"""Load model weights safely, and say which file is wrong and why when they do not fit.

Weights are read from safetensors files only: a pickle checkpoint (``.bin``, ``.pt``,
``.ckpt``) can run arbitrary code when it is opened, so a folder holding nothing else is
refused rather than unpickled. Every weight the model expects must be in the file with the
right shape: libraries otherwise initialise what is missing at random and only log a
warning, which would turn a wrong or damaged checkpoint into a silently untrained model.

Every problem is a :class:`CheckpointError` whose text is ``"<path>: <problem>"``; it is a
``ValueError``, so the CLI reports it as a user error (exit code 2) without a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

_SHOWN = 5  # key names quoted in a message; a wrong architecture mismatches hundreds


class CheckpointError(ValueError):
    """A weights file or model folder that cannot be used; ``str()`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of one ``.safetensors`` file; CheckpointError if missing, damaged or not
    safetensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "missing weights file")
    if path.suffix != ".safetensors":
        raise CheckpointError(
            path, "only .safetensors weights are loaded (pickle checkpoints can run code)"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        problem = f"corrupt or truncated safetensors file ({_first_line(exc)})"
        raise CheckpointError(path, problem) from None


def aliases(model: torch.nn.Module) -> dict[str, str]:
    """Each state-dict key of ``model`` that names the same tensor as an earlier key, mapped
    to that key. MONAI's DynUNet registers its blocks twice (as ``skip_layers`` and as
    ``input_block``, ``downsamples``, ...), and safetensors refuses to write shared tensors."""
    first: dict[int, str] = {}
    out = {}
    for key, value in model.state_dict(keep_vars=True).items():
        out_key = first.setdefault(id(value), key)
        if out_key != key:
            out[key] = out_key
    return out


def save_state(model: torch.nn.Module, path: str | Path) -> None:
    """Write ``model``'s weights to the safetensors file ``path``, each shared tensor once
    (under its first name); :func:`load_state` restores the other names."""
    skip = aliases(model)
    state = {
        k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in skip
    }
    save_file(state, str(path))


def load_state(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load ``path`` into ``model`` (strictly: the same keys and shapes) and return it. A
    key that shares its tensor with another (:func:`aliases`) may be left out of the file."""
    state = read_state(path)
    for alias, key in aliases(model).items():
        if alias not in state and key in state:
            state[alias] = state[key]
    expected = model.state_dict()
    mismatched = [
        f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    check_fit(
        path,
        type(model).__name__,
        missing=[k for k in expected if k not in state],
        unexpected=[k for k in state if k not in expected],
        mismatched=mismatched,
    )
    model.load_state_dict(state)
    return model


def load_pretrained(cls: Any, folder: str | Path, subfolder: str | None = None, **kwargs) -> Any:
    """``cls.from_pretrained(folder)`` for a diffusers or transformers model class, from
    safetensors only, with every weight present and of the right shape.

    ``folder`` (``/subfolder``) is named in every error. Library log noise about missing
    weights is silenced: the error says the same, once.
    """
    where = Path(folder) / subfolder if subfolder else Path(folder)
    if not (where / "config.json").is_file():
        raise CheckpointError(where, "not a saved model folder (no config.json)")
    # Checked here, not left to use_safetensors=True: transformers 4.x still opens a
    # folder's pytorch_model.bin when it holds no safetensors file.
    if not any(where.glob("*.safetensors")):
        raise CheckpointError(where, _no_safetensors(where))
    if subfolder:
        kwargs["subfolder"] = subfolder
    if _is_transformers(cls):
        # Report size mismatches below, by key, instead of transformers' bare RuntimeError.
        kwargs.setdefault("ignore_mismatched_sizes", True)
    try:
        with _quiet("transformers", "diffusers"):
            model, info = cls.from_pretrained(
                str(folder), use_safetensors=True, output_loading_info=True, **kwargs
            )
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        # diffusers before 0.33 raises on missing keys where later versions report them.
        check_fit(where, cls.__name__, missing=_missing_in_message(exc))
        raise CheckpointError(where, _load_problem(where, exc)) from None
    check_fit(
        where,
        cls.__name__,
        missing=info.get("missing_keys", ()),
        unexpected=(),  # extra weights (a bigger model's head) are harmless and ignored
        mismatched=[_mismatch_text(m) for m in info.get("mismatched_keys", ())],
        errors=info.get("error_msgs", ()),
    )
    return model


def load_diffusers_pipeline(pipeline_cls: Any, folder: str | Path) -> Any:
    """``pipeline_cls.from_pretrained(folder)`` with every network of the pipeline loaded
    through :func:`load_pretrained` (safetensors only, all weights present and fitting).

    diffusers' pipeline loader gives no loading report, so the networks named in
    ``model_index.json`` are loaded here, checked, and handed to it ready-made; it then
    loads only what holds no weights (schedulers, settings).
    """
    import diffusers

    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise CheckpointError(folder, "not a saved generator pipeline (no model_index.json)")
    try:
        entries = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(index, f"unreadable pipeline index ({_first_line(exc)})") from None
    networks = {}
    for name, entry in entries.items():
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == "diffusers":
            cls = getattr(diffusers, str(entry[1]), None)
            if isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin):
                networks[name] = load_pretrained(cls, folder, subfolder=name)
    try:
        with _quiet("diffusers"):
            return pipeline_cls.from_pretrained(str(folder), use_safetensors=True, **networks)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(folder, f"cannot load the pipeline ({_first_line(exc)})") from None


def load_settings(cls: Any, folder: str | Path, subfolder: str | None = None) -> Any:
    """``cls.from_pretrained`` for a part that holds no weights (a diffusers scheduler),
    with a missing or unreadable config reported as a CheckpointError naming the folder."""
    where = Path(folder) / subfolder if subfolder else Path(folder)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    try:
        # use_safetensors is moot without weights; passed so that no call can read pickles.
        return cls.from_pretrained(str(folder), use_safetensors=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise CheckpointError(where, f"cannot load {cls.__name__} ({_first_line(exc)})") from None


def load_tokenizer(folder: str | Path) -> Any:
    """``AutoTokenizer.from_pretrained(folder)`` (a tokenizer holds no weights), with a
    missing or damaged tokenizer file reported as a CheckpointError naming the folder."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # tokenizers' parser raises bare Exception and JSON errors
        raise CheckpointError(folder, f"cannot load the tokenizer ({_first_line(exc)})") from None


def check_fit(
    path: str | Path,
    model_name: str,
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    mismatched: Iterable[str] = (),
    errors: Iterable[str] = (),
) -> None:
    """CheckpointError listing the keys that make ``path`` not fit ``model_name``, if any."""
    parts = []
    for label, keys in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
        ("errors", errors),
    ):
        keys = sorted(str(k) for k in keys)
        if keys:
            shown = ", ".join(keys[:_SHOWN])
            more = f", ... ({len(keys)} in all)" if len(keys) > _SHOWN else ""
            parts.append(f"{label} {shown}{more}")
    if parts:
        raise CheckpointError(
            path, f"weights do not fit {model_name} (wrong architecture?): " + "; ".join(parts)
        )


def _no_safetensors(where: Path) -> str:
    pickles = sorted(p.name for p in where.glob("*") if p.suffix in (".bin", ".pt", ".ckpt"))
    if pickles:
        return (
            f"no safetensors weights, only pickle checkpoint(s) {', '.join(pickles)}, "
            "which are refused because loading them can run code; convert them with "
            "save_pretrained(..., safe_serialization=True)"
        )
    return "no safetensors weights in this folder"


def _load_problem(where: Path, exc: BaseException) -> str:
    text = _first_line(exc)
    if "no file named" in text and "safetensors" in text:
        return _no_safetensors(where)
    return f"cannot load weights ({text})"


_MISSING_KEYS = re.compile(r"following keys are\s+missing:\s*(.*?)\.\s*(?:\n|$)", re.S)


def _missing_in_message(exc: BaseException) -> list[str]:
    """The keys an older diffusers' "keys are missing" error names; none otherwise."""
    found = _MISSING_KEYS.search(str(exc))
    return [k.strip() for k in found.group(1).split(",") if k.strip()] if found else []


def _mismatch_text(item: Any) -> str:
    # transformers: (key, checkpoint shape, model shape); diffusers raises instead.
    if isinstance(item, tuple | list) and len(item) == 3:
        key, ckpt, model = item
        return f"{key} {tuple(ckpt)} (model {tuple(model)})"
    return str(item)


def _is_transformers(cls: Any) -> bool:
    return any(base.__module__.startswith("transformers.") for base in getattr(cls, "__mro__", ()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Silence the named libraries' warnings and their loading bars: reading a local
    folder takes milliseconds, and a bar per load buries the sweep's own progress."""
    import importlib

    loggers = [logging.getLogger(n) for n in names]
    levels = [log.level for log in loggers]
    bars = [importlib.import_module(f"{n}.utils.logging") for n in names]
    shown = [bar.is_progress_bar_enabled() for bar in bars]
    for log in loggers:
        log.setLevel(logging.ERROR)
    for bar in bars:
        bar.disable_progress_bar()
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)
        for bar, was_shown in zip(bars, shown):
            if was_shown:
                bar.enable_progress_bar()
