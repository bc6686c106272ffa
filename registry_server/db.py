"""Opening the database named by a URL, and bringing its schema up to date."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
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


def connect_existing(url: str, *, read_only: bool = False) -> pw.Database:
    """Opens an existing database for one command (not pooled) and binds the tables; never creates
    one: a SQLite file that is not there is a FileNotFoundError. `read_only`: SQLite opens the file
    read-only (the caller makes its transactions read-only on PostgreSQL)."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        path = sqlite_path(url)
        if not path or path == ":memory:" or db_url.parse(url).get("mode") == "memory":
            raise ValueError("SQLite needs a file")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no SQLite database at {path}")
        name = Path(path).absolute().as_uri() + "?mode=ro" if read_only else path
        db: pw.Database = pw.SqliteDatabase(
            name, uri=read_only, timeout=SQLITE_BUSY_TIMEOUT_S, pragmas={"busy_timeout": int(SQLITE_BUSY_TIMEOUT_S * 1000)}
        )
    elif scheme in ("postgres", "postgresql"):
        db = db_url.connect("postgresql" + url[len(scheme):])
    else:
        raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://")
    database.initialize(db)
    return db


def schema_problem(db: pw.Database) -> str | None:
    """Why this release cannot read the database's schema as it is (older or newer migrations), or
    None. Reads only."""
    with db.connection_context():
        runner = Runner(db, MIGRATIONS_DIR)
        status = runner.status()
    applied = [m.name for m in status if m.applied is not None]
    if not applied:
        return "it holds no model registry (no schema)"
    unknown = [m.name for m in status if m.path is None]
    if unknown:
        return f"its schema is newer than this release's (migration {unknown[-1]}): use the release that wrote it"
    pending = [m.name for m in status if m.applied is None]
    if pending:
        return (
            f"its schema is older than this release's (migration {applied[-1]}, this release needs {pending[-1]}): "
            "start this release's server on it once, which upgrades it, or use the release that wrote it"
        )
    return None


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
            if not is_sqlite(db):
                ensure_name_index(db)
    finally:
        runner_log.setLevel(level)
    for name in applied:
        log.info("applied migration %s", name)
    return applied


NAME_INDEX = "model_name_key_trgm"


def ensure_name_index(db: pw.Database) -> bool:
    """PostgreSQL: a trigram GIN index of the folded model names (name_key), so that ListModels' name
    filter (LIKE '%text%') reads the matching models instead of scanning every name. It needs the
    pg_trgm extension (trusted since PostgreSQL 13: a database owner may create it), made in `public`
    so that dropping another schema never takes it along. Tried at every start until it exists; when
    the extension cannot be created, a warning says so and the filter scans. True when the index exists."""
    exists = "SELECT 1 FROM pg_indexes WHERE indexname = %s AND schemaname = current_schema()"
    if db.execute_sql(exists, (NAME_INDEX,)).fetchone():
        return True
    try:
        with db.atomic():
            found = db.execute_sql("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'")
            row = found.fetchone()
            if row is None:
                db.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
                schema = "public"
            else:
                schema = row[0]
            db.execute_sql(
                f'CREATE INDEX IF NOT EXISTS {NAME_INDEX} ON model USING gin (name_key "{schema}".gin_trgm_ops)'
            )
        log.info("made the trigram index of model names (pg_trgm)")
        return True
    except pw.DatabaseError as error:
        log.warning(
            "ListModels' name filter will scan every model name: no trigram index (%s). Hint: let the "
            "registry's database user create the pg_trgm extension (CREATE EXTENSION pg_trgm SCHEMA public, "
            "as a superuser), and restart",
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
        )
        return False


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
    pool: Any = db  # playhouse's pooled databases, untyped
    try:
        pool.close_idle()
    except pw.PeeweeException:
        pass


def close_pool(db: pw.Database) -> None:
    """Closes every connection of the database's pool (at shutdown)."""
    pool: Any = db
    pool.close_all() if hasattr(pool, "close_all") else pool.close()


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
