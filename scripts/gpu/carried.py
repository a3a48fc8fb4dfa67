"""The wheels the GPU checks carry, pinned to the versions installed here.

scripts/gpu/wheels.txt names what the GPU image lacks. The versions installed here can
require more than the list names: a new release adds a requirement (importlib-metadata 10.2
added lazy-importer), and a wheel installed there with --no-deps would then fail at import.
So the carried set is the list's names and, transitively, what their installed versions
require (markers evaluated for the image's Python), less what the image has: its packages
(scripts/gpu/image_packages.txt) and what their versions here require.

    python scripts/gpu/carried.py     # one NAME==VERSION per line (prepare.sh downloads them)

tests/test_gpu_kit.py imports :func:`carried` to allow exactly these imports in its
rehearsal of the GPU machine.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

KIT = Path(__file__).resolve().parent
# The GPU image's interpreter (/work/.library/device/KINDS.md: Python 3.12.3).
IMAGE_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.3"}


def listed(path: Path) -> set[str]:
    """The canonical package names of a list file (one per line, ``#`` comments)."""
    names = [ln.strip() for ln in path.read_text().splitlines()]
    return {canonicalize_name(n) for n in names if n and not n.startswith("#")}


def requirements(name: str, environment: dict | None) -> list[str]:
    """What the version of ``name`` installed here requires under ``environment`` (marker
    variables; None: this interpreter's), extras off; nothing if it is not installed."""
    try:
        texts = distribution(name).requires or []
    except PackageNotFoundError:
        return []
    env = {**default_environment(), **(environment or {}), "extra": ""}
    found = []
    for text in texts:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            found.append(canonicalize_name(req.name))
    return found


def with_requirements(names: set[str], environment: dict | None = None) -> set[str]:
    """``names`` and what their installed versions require, transitively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(requirements(name, environment))
    return seen


def carried(environment: dict | None = IMAGE_PYTHON) -> set[str]:
    """wheels.txt's names (all of them: the list also carries what the image's own versions
    may lack) and, transitively, their requirements that the image does not hold."""
    image = with_requirements(listed(KIT / "image_packages.txt"), environment)
    out = listed(KIT / "wheels.txt")
    todo = [r for name in out for r in requirements(name, environment)]
    while todo:
        name = todo.pop()
        if name in out or name in image or not _installed(name):
            continue
        out.add(name)
        todo.extend(requirements(name, environment))
    return out


def _installed(name: str) -> bool:
    try:
        distribution(name)
    except PackageNotFoundError:
        return False
    return True


def main() -> int:
    missing = sorted(n for n in listed(KIT / "wheels.txt") if not _installed(n))
    if missing:
        print(
            f"carried.py: not installed here: {' '.join(missing)} (pip install -e '.[dev]')",
            file=sys.stderr,
        )
        return 1
    for name in sorted(carried()):
        print(f"{name}=={version(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
