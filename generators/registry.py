"""Mode -> generator. New generation modes register here."""

from __future__ import annotations

from benchmark.grid import Mode
from generators.base import Generator
from generators.corrupted import CorruptedGenerator
from generators.hybrid import HybridGenerator
from generators.oracle import OracleGenerator
from generators.semantic import SemanticGenerator
from generators.text import TextGenerator
from generators.unconditional import UnconditionalGenerator

IMPLEMENTED = (
    Mode.UNCONDITIONAL,
    Mode.TEXT,
    Mode.SEMANTIC,
    Mode.HYBRID,
    Mode.ORACLE,
    Mode.CORRUPTED,
)


def get_generator(mode: Mode, device: str = "auto") -> Generator:
    if mode is Mode.UNCONDITIONAL:
        return UnconditionalGenerator(device)
    if mode is Mode.TEXT:
        return TextGenerator(device)
    if mode is Mode.SEMANTIC:
        return SemanticGenerator(device)
    if mode is Mode.HYBRID:
        return HybridGenerator(device)
    if mode is Mode.ORACLE:
        return OracleGenerator()
    if mode is Mode.CORRUPTED:
        return CorruptedGenerator()
    raise ValueError(
        f"generation mode {mode.value!r} is not available yet; implemented: "
        f"{[m.value for m in IMPLEMENTED]}"
    )
