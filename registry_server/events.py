"""The event log, in one place: events are numbered and stored by the transaction that makes the
change (the outbox: transactions.py records them, `append` stores them), read back in order, and
followed by watch streams, which commits wake at once (this process's directly, other replicas' by
PostgreSQL's LISTEN/NOTIFY) and which poll meanwhile."""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable, Iterator
from typing import Any

import peewee as pw

from . import metrics, prepared
from .db import is_sqlite
from .tables import Event, EventCounter, now_us

log = logging.getLogger(__name__)

# PostgreSQL channel notified (at commit) of every transaction that appended events.
EVENTS_CHANNEL = "model_registry_events"
# How often a watch stream looks for events committed through other replicas (commits through its
# own process, and on PostgreSQL those of every replica, wake it at once), and how many events it
# reads per query.
WATCH_POLL_INTERVAL_S = 0.5
WATCH_BATCH = 500
_LISTEN_RETRY_S = 2.0

__all__ = ["EVENTS_CHANNEL", "WATCH_BATCH", "WATCH_POLL_INTERVAL_S", "EventLog", "now_us"]


class EventLog:
    """The events of one database, as one server process writes, reads and follows them."""

    def __init__(self, db: pw.Database, poll_interval: float = WATCH_POLL_INTERVAL_S) -> None:
        self.db = db
        self.poll_interval = poll_interval
        self._sqlite = is_sqlite(db)
        # Built once (prepared.py): the counter's bump and the insert of one event, on every write.
        self._take_numbers = prepared.PreparedQuery(
            EventCounter.update(last_sequence=EventCounter.last_sequence + prepared.param("count"))
            .where(EventCounter.id == 1)
            .returning(EventCounter.last_sequence)
        )
        self._insert = prepared.insert(Event)
        self._changed = threading.Condition()
        self._generation = 0  # bumped on every wake-up, so that none is missed between query and wait
        self._stopping = threading.Event()
        # For the metrics: the last sequence each follow() has read up to (by stream), and the highest
        # sequence this process has seen stored.
        self._positions: dict[int, int] = {}
        self._high = 0

    def watch_state(self) -> tuple[int, int]:
        """How many streams follow the log in this process, and how many events the slowest of them
        has yet to read (as far as this process knows of the log's end)."""
        positions = list(self._positions.values())
        return len(positions), (max(0, self._high - min(positions)) if positions else 0)

    def append(self, recorded: list[dict[str, Any]], principal: str) -> None:
        """Numbers and stores the events of a transaction, as its LAST statements before COMMIT.

        Why a watcher that has read every event up to N never misses one numbered below a later one:
        the numbers come from one counter row, bumped here by an UPDATE that locks the row until the
        transaction ends. A second transaction reaching this point waits for the first to commit (or
        roll back, which gives its numbers back) and then reads the committed counter (PostgreSQL's
        READ COMMITTED re-reads a row it waited for). So numbers are taken in commit order, and since
        the row lock is released only after the commit is visible, a reader that sees N+1 already sees
        every number up to N: no gap, ever, in what a reader sees. SQLite serialises writers at BEGIN
        IMMEDIATE, which gives the same order. The lock is held only from here to COMMIT, and always
        taken last, so it cannot deadlock with the row locks taken before it."""
        if not recorded:
            return
        last = self._take_numbers.value(self.db, count=len(recorded))
        now = now_us()
        for i, event in enumerate(recorded, start=1):
            self._insert.execute(self.db, **event, sequence=last - len(recorded) + i, time=now, principal=principal)
        metrics.events_appended(len(recorded))
        self._high = max(self._high, last)
        if not self._sqlite:
            # Delivered at COMMIT, to every replica LISTENing: their watchers need not wait for a poll.
            self.db.execute_sql("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, str(last)))

    def committed(self) -> None:
        """Events were committed: every waiting watch stream looks for them now."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def after(
        self, after: int, model_names: list[str] | None = None, kinds: list[int] | None = None, limit: int = WATCH_BATCH
    ) -> tuple[list[Event], int]:
        """Up to `limit` events numbered after `after` that match the filters, in order, and the
        sequence to resume after: the last event returned, or (when fewer than `limit` matched) the
        highest number stored, so that unmatched events are not scanned again."""
        # Read first: every number up to `high` is committed (see append), so the filtered query
        # below, a later statement, sees all of them.
        high = Event.select(pw.fn.MAX(Event.sequence)).scalar() or 0
        query = Event.select().where(Event.sequence > after, Event.sequence <= high)
        if model_names:
            query = query.where(Event.model_name.in_(model_names) | Event.new_model_name.in_(model_names))
        if kinds:
            query = query.where(Event.kind.in_(kinds))
        rows = list(query.order_by(Event.sequence).limit(limit))
        self._high = max(self._high, high)
        return rows, (rows[-1].sequence if len(rows) == limit else max(high, after))

    def follow(
        self,
        after: int,
        model_names: list[str],
        kinds: list[int],
        active: Callable[[], bool],
        *,
        stop_at_end: bool = False,
    ) -> Iterator[Event]:
        """The stored events after `after`, then new ones as they are committed, while `active()`
        and the log is not stopped (then `stopped` says so); with `stop_at_end`, only those stored
        when a read comes back short. Reading `sequence > last sent` in order is gap-free because
        numbers become visible in commit order (see append). Each read takes a pooled connection for
        its own time only."""
        key = id(object())
        self._positions[key] = after
        try:
            while active() and not self._stopping.is_set():
                generation = self._generation
                with self.db.connection_context():
                    rows, after = self.after(after, model_names, kinds, WATCH_BATCH)
                yield from rows
                self._positions[key] = after
                if len(rows) < WATCH_BATCH:
                    if stop_at_end:
                        return
                    with self._changed:
                        self._changed.wait_for(lambda: self._generation != generation, self.poll_interval)
        finally:
            self._positions.pop(key, None)

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ends every follow(), so that a stopping server does not wait out its grace for streams."""
        self._stopping.set()
        self.committed()

    def listen(self) -> None:
        """PostgreSQL (a thread's body, until stop()): wakes this process's watch streams as soon as
        any replica commits events (NOTIFY is delivered at commit). Only a shortcut: the streams poll
        anyway, so a lost connection here delays them by at most their poll interval and loses nothing."""
        import psycopg2  # PostgreSQL only

        while not self._stopping.is_set():
            connection = None
            try:
                connection = psycopg2.connect(database=self.db.database, **self.db.connect_params)
                connection.autocommit = True
                connection.cursor().execute(f"LISTEN {EVENTS_CHANNEL}")
                while not self._stopping.is_set():
                    if select.select([connection], [], [], 1.0)[0]:
                        connection.poll()
                        if connection.notifies:
                            connection.notifies.clear()
                            self.committed()
            except (psycopg2.Error, OSError) as error:
                log.warning("not listening for other replicas' events (watchers poll meanwhile): %s", error)
                self._stopping.wait(_LISTEN_RETRY_S)
            finally:
                if connection is not None:
                    connection.close()
