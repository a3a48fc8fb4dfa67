"""SQLAlchemy database URLs, as MLflow's tracking store and Optuna's storage both take them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import unquote

# Databases MLflow writes itself through SQLAlchemy; a driver may follow a "+"
# (postgresql+psycopg2://). A tracking server (http...) is not one.
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")


def url_scheme(url: str) -> str:
    """``postgresql`` of ``postgresql+psycopg2://h/db`` (lower case); ``""`` for a string
    with no scheme."""
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""


def is_database_url(url: str) -> bool:
    return url_scheme(url) in DATABASE_SCHEMES


def sqlite_file(url: str) -> Path | None:
    """The database file of ``sqlite:///PATH``, as SQLAlchemy reads it (percent-decoded, the
    query dropped); None for an in-memory database or another scheme."""
    if url_scheme(url) != "sqlite" or ":///" not in url:
        return None
    path = unquote(url.split(":///", 1)[1].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def with_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, older versions as psycopg2;
    the ``postgres`` extra installs psycopg2. A URL naming its driver is left alone.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"
