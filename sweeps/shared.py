"""The workspace as several worker processes (or machines) share it.

Stage folders are already safe to share (content-addressed, file-locked). What is not:
MLflow logging is check-then-write (``finished_runs`` then ``start_run``), so two workers
reaching the same generator or cell at once would both log it. Here every such write
happens under a file lock in the output folder, which every worker shares by design
(DESIGN.md: a shared folder for the stages). The resolved config that is written beside
every result and logged to MLflow has its URLs masked, so no password lands on disk.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path

from filelock import FileLock

from benchmark.config import Config, dump_config
from benchmark.grid import Mode, Prompt
from benchmark.redact import mask_uri
from benchmark.stages import Stage
from benchmark.tracking import Tracker, default_artifact_location, default_tracking_uri
from sweeps.storage import with_driver
from sweeps.workspace import Workspace

# Tracking URIs that are a database MLflow writes itself: artifacts then go to the shared
# output folder. A tracking server (http...) stores artifacts where it was told to.
_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")


def masked_config(cfg: Config) -> Config:
    """``cfg`` with the storage and tracking URLs' credentials replaced by ``***``."""
    return dataclasses.replace(
        cfg,
        sweep=dataclasses.replace(cfg.sweep, storage=mask_uri(cfg.sweep.storage)),
        tracking=dataclasses.replace(cfg.tracking, uri=mask_uri(cfg.tracking.uri)),
    )


class SharedWorkspace(Workspace):
    """A :class:`Workspace` whose MLflow writes are serialised across processes."""

    @cached_property
    def resolved(self) -> str:
        return dump_config(masked_config(self.cfg))

    @cached_property
    def tracking_uri(self) -> str:
        return with_driver(self.cfg.tracking.uri or default_tracking_uri(self.out))

    @cached_property
    def tracker(self) -> Tracker:
        self.out.mkdir(parents=True, exist_ok=True)
        scheme = self.tracking_uri.split(":", 1)[0].split("+", 1)[0]
        local = scheme in _DATABASE_SCHEMES
        return Tracker(
            self.tracking_uri,
            self.cfg.tracking.experiment or self.cfg.name,
            default_artifact_location(self.out) if local else None,
        )

    def lock(self, name: str) -> FileLock:
        """A lock every worker on this output folder shares (``<out>/.locks/<name>.lock``)."""
        folder = self.out / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / f"{name}.lock"))

    def with_config(self, cfg: Config) -> SharedWorkspace:
        """The same folder under another config (tuned values); the tracker is reused."""
        other = SharedWorkspace(cfg, Path(self.out), self.progress)
        other.__dict__["tracker"] = self.tracker
        return other

    def _log_generator(self, stage: Stage, mode: Mode, prompt: Prompt | None, fraction: float):
        # Every cell of a generator calls this; the lock turns "log unless logged" into one
        # step, so the generator gets exactly one FINISHED run however many workers ask.
        with self.lock(f"mlflow-{stage.key}"):
            super()._log_generator(stage, mode, prompt, fraction)
