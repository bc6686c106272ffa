"""Fixtures: a fresh database per test (SQLite file, and PostgreSQL schema when configured), the store
on it, and a real registry server on it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from registry_client import Registry
from registry_server import db as database
from registry_server.server import RegistryServer, build_server
from registry_server.storage import LocalStorage
from registry_server.store import RegistryStore

POSTGRES_URL = os.environ.get("MODEL_REGISTRY_TEST_POSTGRES_URL", "")
# Server processes started by tests serve HTTP on a free port, never on the default 8080 that another
# run (or `make run`) may hold.
os.environ.setdefault("MODEL_REGISTRY_HTTP_PORT", "0")


def pytest_report_header() -> str:
    return f"PostgreSQL tests: {'on ' + POSTGRES_URL if POSTGRES_URL else 'skipped (MODEL_REGISTRY_TEST_POSTGRES_URL unset)'}"


@contextlib.contextmanager
def empty_database(kind: str, directory: Path) -> Iterator[str]:
    """A URL of an empty database: a new SQLite file in `directory`, or a new schema of the test
    PostgreSQL (dropped afterwards)."""
    if kind == "sqlite":
        yield f"sqlite:///{directory}/registry.db"
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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database, on each database in turn."""
    with empty_database(request.param, tmp_path) as url:
        yield url


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


@pytest.fixture
def registry(registry_target: str) -> Iterator[Registry]:
    """The Python client, connected to the registry server of `registry_target`."""
    with Registry(registry_target, timeout=30) as r:
        yield r


@pytest.fixture
def stub(registry_target: str) -> Iterator[pb_grpc.ModelRegistryServiceStub]:
    """A bare gRPC stub of the registry server of `registry_target`."""
    with grpc.insecure_channel(registry_target) as channel:
        yield pb_grpc.ModelRegistryServiceStub(channel)


# Principals of the token file the secured servers of the tests read: TOKEN PRINCIPAL ROLE.
TOKENS = {
    "admin": ("admin-token-0123456789", "root", "admin"),
    "alice": ("alice-token-0123456789", "alice", "editor"),
    "bob": ("bob-token-0123456789", "bob", "editor"),
    "viewer": ("viewer-token-0123456789", "carol", "viewer"),
}


def write_tokens(path: Path, entries: dict[str, tuple[str, str, str]] = TOKENS) -> str:
    path.write_text("# token principal role\n" + "".join(" ".join(entry) + "\n" for entry in entries.values()))
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def tokens_file(tmp_path: Path) -> str:
    return write_tokens(tmp_path / "tokens")
