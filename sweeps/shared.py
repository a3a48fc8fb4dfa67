"""The workspace as several worker processes (or machines) share it.

Stage folders are already safe to share (content-addressed, file-locked). What is not:
MLflow logging is check-then-write (``logged_run`` then ``start_run``), so two workers
reaching the same generator or cell at once would both log it: every such write happens
under a file lock in the output folder (``Workspace.lock``), which every worker shares by
design (DESIGN.md: a shared folder for the stages). The resolved config that is written beside
every result and logged to MLflow has its URLs masked, so no password lands on disk.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from benchmark.config import Config
from benchmark.tracking import Tracker, default_artifact_location, default_tracking_uri
from sweeps.storage import with_driver
from sweeps.workspace import Workspace

# Tracking URIs that are a database MLflow writes itself: artifacts then go to the shared
# output folder. A tracking server (http...) stores artifacts where it was told to.
_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")


class SharedWorkspace(Workspace):
    """A :class:`Workspace` whose MLflow writes are serialised across processes."""

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

    def with_config(self, cfg: Config) -> SharedWorkspace:
        """The same folder under another config (tuned values); the tracker is reused."""
        other = SharedWorkspace(cfg, Path(self.out), self.progress)
        other.__dict__["tracker"] = self.tracker
        return other
