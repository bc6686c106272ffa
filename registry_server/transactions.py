"""The unit of work: who is writing, write transactions that store their events with them (the
outbox of events.py), and idempotent creates (request ids, per principal)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import peewee as pw

from . import events, prepared, tracing, validation
from .db import is_sqlite
from .errors import AlreadyExists
from .tables import RequestRecord

# A request_id is remembered at least this long; purge_request_records forgets older ones.
REQUEST_ID_RETENTION_S = 24 * 3600


@dataclass(frozen=True)
class Actor:
    """Who is writing: the principal recorded as owner and in events, and whether it is an admin."""

    name: str
    admin: bool


_ADMIN = Actor("", True)


@dataclass(frozen=True)
class RequestKey:
    """What makes a create idempotent: the caller's request_id, and a fingerprint of the rest of the
    request (with the method), so that a reused request_id on a different request is told apart."""

    request_id: str
    method: str
    fingerprint: str


class Transactions:
    """Write transactions on one database, for the threads of one process."""

    def __init__(self, db: pw.Database, log: events.EventLog) -> None:
        self.db = db
        self.events = log
        self._sqlite = is_sqlite(db)
        # Per thread: the actor of the call being served, and the events of the open write.
        self._local = threading.local()
        # SQLite takes one writer at a time, and a writer that finds the lock taken polls for it with
        # sleeps of up to 100 ms (busy_timeout): at 16 writes in flight that cut throughput ~5-fold.
        # Writers of this process queue on a lock instead; other processes still meet busy_timeout.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self._sqlite else contextlib.nullcontext()
        )
        # Built once (prepared.py): the look-up and the record of a request_id, on every create that has one.
        self._find_request = prepared.PreparedQuery(
            RequestRecord.select(RequestRecord.method, RequestRecord.fingerprint, RequestRecord.result_id)
            .where((RequestRecord.principal == prepared.param("principal")) & (RequestRecord.request_id == prepared.param("request_id")))
            .limit(1)
        )
        self._record_request = prepared.insert(RequestRecord)

    @contextlib.contextmanager
    def acting_as(self, principal: str, admin: bool = True) -> Iterator[None]:
        """Attributes what this thread writes, until the block ends, to `principal`, and checks its
        changes against ownership unless it is an `admin` (as everyone is on servers without tokens,
        and direct users of the store)."""
        previous = getattr(self._local, "actor", None)
        self._local.actor = Actor(principal, admin)
        try:
            yield
        finally:
            self._local.actor = previous

    def actor(self) -> Actor:
        actor: Actor | None = getattr(self._local, "actor", None)
        return actor or _ADMIN

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """A write transaction; the events recorded in it (`event`) are appended just before it
        commits, and the event log is told after. On SQLite it takes the write lock at BEGIN, so that
        two writers never read the same state and then collide on upgrading their locks."""
        assert getattr(self._local, "events", None) is None, "write transactions do not nest"
        recorded: list[dict[str, Any]] = []
        self._local.events = recorded
        try:
            with tracing.span("db.transaction"), self._write_lock, self.db.atomic(
                **({"lock_type": "IMMEDIATE"} if self._sqlite else {})
            ):
                yield
                self.events.append(recorded, self.actor().name)
        finally:
            self._local.events = None
        if recorded:
            self.events.committed()

    def event(self, kind: int, model_name: str = "", **fields: Any) -> None:
        """Records an event of the open write transaction; it is stored with it or not at all."""
        self._local.events.append({"kind": int(kind), "model_name": model_name, **fields})

    def create_once(
        self,
        key: RequestKey | None,
        create: Callable[[], Any],
        load: Callable[[int], Any],
        conflict: Callable[[], Exception | None],
    ) -> Any:
        """Runs create() in a write transaction, once per request_id of the acting principal: a
        repeated request_id returns the first call's result (`load(id)`). A unique-index violation is
        `conflict()` (None: passed on), unless it was a concurrent call with the same request_id that
        won the race."""
        validation.request_id(key.request_id if key else "")
        try:
            with self.write():
                found = self._recall(key, load)
                if found is not None:
                    return found
                row = create()
                if key is not None:
                    self._record_request.execute(
                        self.db,
                        principal=self.actor().name,
                        request_id=key.request_id,
                        method=key.method,
                        fingerprint=key.fingerprint,
                        result_id=row.id,
                        creation_time=events.now_us(),
                    )
                return row
        except pw.IntegrityError:
            found = self._recall(key, load)
            if found is not None:
                return found
            error = conflict()
            if error is None:
                raise
            raise error from None

    def _recall(self, key: RequestKey | None, load: Callable[[int], Any]) -> Any | None:
        """The result of an earlier call with key's request_id by the same principal, or None; a
        different request under the same id is refused."""
        if key is None:
            return None
        record = self._find_request.first(self.db, principal=self.actor().name, request_id=key.request_id)
        if record is None:
            return None
        method, fingerprint, result_id = record
        if (method, fingerprint) != (key.method, key.fingerprint):
            raise AlreadyExists(
                "REQUEST_ID_REUSED",
                f"request_id {key.request_id!r} was already used by a different {method} request",
                request_id=key.request_id,
                method=method,
            )
        return load(result_id)

    def purge_request_records(self, retention_s: float = REQUEST_ID_RETENTION_S) -> int:
        """Forgets request_ids older than `retention_s` (at least a day); returns how many."""
        cutoff = events.now_us() - int(max(retention_s, REQUEST_ID_RETENTION_S) * 1_000_000)
        deleted: int = RequestRecord.delete().where(RequestRecord.creation_time < cutoff).execute()
        return deleted
