"""Content-addressed stage folders: compute once, reuse forever, never half-written.

A stage is a folder ``<root>/<kind>/<label>-<hash>`` whose hash covers exactly the inputs
it depends on (a JSON-able spec). It is computed into a temporary sibling, completed with
``spec.json`` and ``done.json``, then atomically renamed into place, so a folder under its
final name is always finished. A file lock beside it keeps two processes (or machines on a
shared file system) from computing the same stage at once; the loser waits and reuses.

Under a multi-process launch (``torchrun``; :mod:`benchmark.distributed`) only the main
process takes those locks: it decides and broadcasts, the other ranks follow (see
:meth:`StageStore.get_or_compute`), so no rank waits on a lock held by one that is itself
waiting for it in a collective.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from benchmark import faults
from benchmark.environment import environment, torch_threads

if TYPE_CHECKING:
    from benchmark.distributed import Ranks

# Bump when the meaning of a stage's files changes, so old caches are not reused.
STAGE_FORMAT = 1


class StaleStageError(RuntimeError):
    """A stage folder exists under the expected key but was made from a different spec."""


def spec_hash(spec: Any) -> str:
    """SHA-256 of the canonical JSON of ``spec`` (sorted keys, no whitespace)."""
    text = json.dumps({"format": STAGE_FORMAT, "spec": spec}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Stage:
    """A finished stage folder and what was recorded in its ``done.json``."""

    path: Path
    kind: str
    digest: str
    done: dict
    computed: bool  # True if this call computed it, False if it was reused

    @property
    def key(self) -> str:
        return self.path.name


class StageStore:
    """The stage folders of one sweep output directory."""

    def __init__(self, root: Path, lock_timeout: float = -1, ranks: Ranks | None = None) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout  # seconds; -1 waits forever
        # The processes of a multi-process launch (benchmark.distributed); None: this one.
        self.ranks = ranks
        # The install every stage written here records, looked up now, as the run starts: a
        # checkout edited during a long run would otherwise be recorded as the code that ran.
        self.environment = environment()

    def path_for(self, kind: str, spec: Any, label: str = "") -> Path:
        digest = spec_hash(spec)
        name = f"{label}-{digest[:12]}" if label else digest[:16]
        return self.root / kind / name

    def lookup(self, kind: str, spec: Any, label: str = "") -> Stage | None:
        """The finished stage for ``spec``, or ``None`` if it has not been computed."""
        path = self.path_for(kind, spec, label)
        return self._read(path, kind, spec) if path.exists() else None

    def get_or_compute(
        self,
        kind: str,
        spec: Any,
        compute: Callable[[Path], dict | None],
        label: str = "",
        resolved_config: str | None = None,
        extra_seconds: float = 0.0,
        collective: bool = False,
    ) -> Stage:
        """Return the stage for ``spec``, running ``compute(tmp_dir)`` if it is not done.

        ``compute`` writes its files into the temporary folder it is given and may return
        a JSON-able summary that is stored in ``done.json``. ``resolved_config`` (YAML text)
        is saved as ``config.yaml`` beside the result. If ``compute`` raises, the temporary
        folder is removed and nothing under the final name appears. ``extra_seconds``: work
        for this stage done before the call (its share of a training shared with other
        stages), added to the ``seconds`` that ``done.json`` records.

        With ``ranks`` of several processes every rank must make the same calls in the same
        order. The main process alone takes the lock, decides whether the stage exists and
        computes and writes it; the others receive the finished stage by broadcast. With
        ``collective`` (a data-parallel training), once the main process holds the lock
        and found no stage, every rank runs ``compute``: the others into a scratch folder
        that is then deleted, so the stage is still written once, by the main process.
        """
        if self.ranks is None or self.ranks.count < 2:
            return self._get_or_compute(kind, spec, compute, label, resolved_config, extra_seconds)
        if self.ranks.is_main:
            return self._lead(
                kind, spec, compute, label, resolved_config, extra_seconds, collective
            )
        return self._follow(compute)

    def _lead(
        self,
        kind: str,
        spec: Any,
        compute: Callable[[Path], dict | None],
        label: str,
        resolved_config: str | None,
        extra_seconds: float,
        collective: bool,
    ) -> Stage:
        """The main process's part of :meth:`get_or_compute` under several ranks. It
        broadcasts ``("compute", None)`` when a collective stage is to be computed (under
        its lock), then ``("stage", stage)``, or ``("error", text)`` if it failed."""
        ranks = self.ranks
        announced = computed = False

        def announce() -> None:
            nonlocal announced
            ranks.broadcast(("compute", None))
            announced = True

        def run(tmp: Path) -> dict | None:
            nonlocal computed
            summary = compute(tmp)
            computed = True
            return summary

        try:
            stage = self._get_or_compute(
                kind,
                spec,
                run,
                label,
                resolved_config,
                extra_seconds,
                before_compute=announce if collective else None,
            )
        except Exception as exc:
            # The others wait for the decision, or for the stage after a collective compute
            # that returned. If that compute itself raised, they may be inside one of its
            # collectives: nothing more is sent, and this process's exit ends the launch.
            if not announced or computed:
                ranks.broadcast(("error", f"{type(exc).__name__}: {exc}"))
            raise
        ranks.broadcast(("stage", stage))
        return stage

    def _follow(self, compute: Callable[[Path], dict | None]) -> Stage:
        """Another rank's part of :meth:`get_or_compute`: the main process's decision."""
        what, payload = self.ranks.broadcast()
        if what == "compute":  # a collective stage: take part, write nothing
            with tempfile.TemporaryDirectory(prefix="echosynth-rank-") as scratch:
                compute(Path(scratch))
            what, payload = self.ranks.broadcast()
        if what == "error":
            raise RuntimeError(f"the main process failed: {payload}")
        return payload

    def _get_or_compute(
        self,
        kind: str,
        spec: Any,
        compute: Callable[[Path], dict | None],
        label: str = "",
        resolved_config: str | None = None,
        extra_seconds: float = 0.0,
        before_compute: Callable[[], None] | None = None,
    ) -> Stage:
        """:meth:`get_or_compute` in this process; ``before_compute`` is called under the
        lock once it is certain that the stage is to be computed."""
        path = self.path_for(kind, spec, label)
        if path.exists():
            return self._read(path, kind, spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=self.lock_timeout):
            if path.exists():  # another process finished it while we waited
                return self._read(path, kind, spec)
            if before_compute is not None:
                before_compute()
            _remove_orphans(path)
            tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                started = time.time()
                summary = compute(tmp) or {}
                if resolved_config is not None:
                    (tmp / "config.yaml").write_text(resolved_config)
                digest = spec_hash(spec)
                _write_json(tmp / "spec.json", {"kind": kind, "hash": digest, "spec": spec})
                faults.point(f"stage.{kind}.written")
                done = {
                    "kind": kind,
                    "hash": digest,
                    "seconds": round(time.time() - started + extra_seconds, 3),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "host": socket.gethostname(),
                    "environment": self.environment,
                    "threads": torch_threads(),
                    "summary": summary,
                }
                _write_json(tmp / "done.json", done)
                _fsync_dir(tmp)
                os.rename(tmp, path)
                _fsync_dir(path.parent)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            faults.point(f"stage.{kind}.renamed")
        return Stage(path=path, kind=kind, digest=digest, done=done, computed=True)

    def finished(self, kind: str) -> list[Stage]:
        """Every finished stage folder of ``kind``, checked for damage (``StaleStageError``).

        Temporary folders of unfinished writes are not stages and are skipped."""
        folder = self.root / kind
        if not folder.is_dir():
            return []
        stages = []
        for path in sorted(folder.iterdir()):
            if path.is_dir() and not path.name.startswith("."):
                try:
                    spec = json.loads((path / "spec.json").read_text())["spec"]
                except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise StaleStageError(
                        f"{path}: stage folder is damaged ({exc}); delete it to recompute"
                    ) from None
                stages.append(self._read(path, kind, spec))
        return stages

    def _read(self, path: Path, kind: str, spec: Any) -> Stage:
        digest = spec_hash(spec)
        try:
            done = json.loads((path / "done.json").read_text())
            stored = json.loads((path / "spec.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StaleStageError(
                f"{path}: stage folder is damaged ({exc}); delete it to recompute"
            ) from None
        if stored.get("hash") != digest or done.get("hash") != digest:
            raise StaleStageError(
                f"{path}: cached stage was made from a different configuration "
                f"(stored hash {str(stored.get('hash'))[:12]}, expected {digest[:12]}); "
                "delete the folder or use another --out"
            )
        return Stage(path=path, kind=kind, digest=digest, done=done, computed=False)


def _remove_orphans(path: Path) -> None:
    """Delete temporary folders of ``path`` left by a process that died mid-write.

    Only the holder of the stage's lock ever creates one, and we hold it now, so any that
    exists belongs to a dead process (on any machine sharing the folder). They are never
    read (only a folder under its final name counts); this only reclaims their disk space.
    """
    for orphan in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(orphan, ignore_errors=True)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable: without this a crash can lose a "finished" stage.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
