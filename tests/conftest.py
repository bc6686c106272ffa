"""Fixtures: a fresh database per test (SQLite file, and PostgreSQL schema when configured), the store
on it, and a real registry server on it."""

from __future__ import annotations

import os
import uuid
from typing import Iterator
from urllib.parse import quote

import pytest

from registry_server import db as database
from registry_server.server import RegistryServer, build_server
from registry_server.storage import LocalStorage
from registry_server.store import RegistryStore

POSTGRES_URL = os.environ.get("MODEL_REGISTRY_TEST_POSTGRES_URL", "")


def pytest_report_header() -> str:
    return f"PostgreSQL tests: {'on ' + POSTGRES_URL if POSTGRES_URL else 'skipped (MODEL_REGISTRY_TEST_POSTGRES_URL unset)'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL of an empty database: a new SQLite file, or a new schema of the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/registry.db"
        return
    if not POSTGRES_URL:
        pytest.skip("MODEL_REGISTRY_TEST_POSTGRES_URL is not set")
    import psycopg2

    schema = "test_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def store(database_url: str) -> Iterator[RegistryStore]:
    db = database.connect(database_url)
    database.migrate(db)
    try:
        with db.connection_context():
            yield RegistryStore(db)
    finally:
        db.close_all()


@pytest.fixture
def storage_dir(tmp_path) -> str:
    """Where the test server keeps checkpoint files."""
    return str(tmp_path / "files")


@pytest.fixture
def registry_server(database_url: str, storage_dir: str) -> Iterator[RegistryServer]:
    running = build_server(database_url, "127.0.0.1", 0, storage=LocalStorage(storage_dir))
    try:
        yield running
    finally:
        running.stop(grace=None)


@pytest.fixture
def registry_target(registry_server: RegistryServer) -> str:
    """host:port of a real registry server on an empty database."""
    return f"127.0.0.1:{registry_server.port}"
