"""The one error type data loaders raise for a bad file or tree."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file or folder that cannot be used; ``str()`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
