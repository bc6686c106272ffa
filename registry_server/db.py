"""Opening the database named by a URL, and bringing its schema up to date."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from typing import Iterator
from urllib.parse import parse_qsl, urlencode, urlparse, urlsplit, urlunsplit

import peewee as pw
from playhouse import db_url
from playhouse.migrations import Runner

from .tables import database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")
DEFAULT_DATABASE_URL = "sqlite:///registry.db"
SQLITE_BUSY_TIMEOUT_S = 10.0
_PG_MIGRATION_LOCK = 0x6D72_6567  # any constant shared by every replica: "mreg"


SQLITE_SYNCHRONOUS = ("full", "normal")


def connect(url: str, *, max_connections: int = 32, sqlite_synchronous: str = "full") -> pw.Database:
    """Opens the database of `url` (sqlite:///path or postgresql://...), pooled, and binds the tables.

    `sqlite_synchronous`: "full" (the default) puts every commit on disk before the client hears of
    it, even across a power cut. "normal" (in WAL mode) saves the fsync of each commit: a commit
    survives a crash of the server process, but the last ones may be lost on a power cut or an OS crash."""
    if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        path = sqlite_path(url)
        if not path or path == ":memory:" or db_url.parse(url).get("mode") == "memory":
            raise ValueError("SQLite needs a file: every server thread must see the same database")
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        db = db_url.connect(
            "sqlite+pool:///" + path,
            max_connections=max_connections,
            timeout=SQLITE_BUSY_TIMEOUT_S,
            # The pool hands a connection to one thread at a time, but not always the same thread.
            check_same_thread=False,
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": int(SQLITE_BUSY_TIMEOUT_S * 1000),
                "synchronous": sqlite_synchronous,
            },
        )
    elif scheme in ("postgres", "postgresql"):
        db = db_url.connect(
            "postgresql+pool" + url[len(scheme):],
            max_connections=max_connections,
            stale_timeout=300,
            timeout=10,
        )
    else:
        raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://")
    database.initialize(db)
    return db


def sqlite_path(url: str) -> str | None:
    """The file of a sqlite:/// URL, as playhouse reads it; None for other databases."""
    if urlparse(url).scheme != "sqlite":
        return None
    path: str = db_url.parse(url)["database"]
    return path


def is_sqlite(db: pw.Database) -> bool:
    return isinstance(db, pw.SqliteDatabase)


@contextlib.contextmanager
def _migration_lock(db: pw.Database) -> Iterator[None]:
    """Serialises schema upgrades between replicas starting at once on the same database."""
    if is_sqlite(db):
        with open(db.database + ".migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
    else:
        db.execute_sql("SELECT pg_advisory_lock(%s)", (_PG_MIGRATION_LOCK,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (_PG_MIGRATION_LOCK,))


def migrate(db: pw.Database) -> list[str]:
    """Applies every pending migration; returns their names (logged once each, here: playhouse's own
    line for each is silenced)."""
    runner_log = logging.getLogger("peewee.migrations")
    level = runner_log.level
    runner_log.setLevel(logging.WARNING)
    try:
        with db.connection_context(), _migration_lock(db):
            applied = Runner(db, MIGRATIONS_DIR).up()
    finally:
        runner_log.setLevel(level)
    for name in applied:
        log.info("applied migration %s", name)
    return applied


def schema_version(db: pw.Database) -> tuple[int, str]:
    """The number and name of the latest migration applied to the database ((0, "") before any)."""
    applied = Runner(db, MIGRATIONS_DIR).applied()
    if not applied:
        return 0, ""
    latest = max(applied)
    return int(latest.split("_", 1)[0]), latest


def kind(db: pw.Database) -> str:
    return "sqlite" if is_sqlite(db) else "postgresql"


def ping(db: pw.Database) -> bool:
    """True when the database answers a trivial query."""
    try:
        with db.connection_context():
            db.execute_sql("SELECT 1")
        return True
    except pw.PeeweeException:
        discard_idle_connections(db)
        return False


def discard_idle_connections(db: pw.Database) -> None:
    """After a connection failed, the idle ones in the pool are likely dead too (the database was
    restarted, or dropped us): close them, so that the next calls open fresh ones."""
    try:
        db.close_idle()
    except pw.PeeweeException:
        pass


_SECRET_PARAMETERS = {"password", "sslpassword", "passfile", "sslkey"}


def redacted(url: str) -> str:
    """The database URL as it may be logged: without the password of its user part or of its query
    (`?password=...`)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(key.lower() in _SECRET_PARAMETERS for key, _ in pairs):
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = user.split(":", 1)[0] + ":***@" + host
    query = urlencode(
        [(key, "***" if key.lower() in _SECRET_PARAMETERS else value) for key, value in pairs],
        safe="*",
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
