"""Fixtures of the distributed-sweep tests: a fresh PostgreSQL database per test."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def pg_url():
    """A new, empty database on the server of ``ECHOSYNTH_TEST_PG``; dropped afterwards."""
    server = os.environ.get("ECHOSYNTH_TEST_PG")
    if not server:
        pytest.skip("ECHOSYNTH_TEST_PG is not set (.ci/run starts a PostgreSQL and sets it)")
    import psycopg2

    created = []

    def make() -> str:
        name = f"es_{uuid.uuid4().hex[:12]}"
        con = psycopg2.connect(server)
        con.autocommit = True
        con.cursor().execute(f"CREATE DATABASE {name}")
        con.close()
        created.append(name)
        return _with_database(server, name)

    yield make
    con = psycopg2.connect(server)
    con.autocommit = True
    for name in created:
        con.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    con.close()
