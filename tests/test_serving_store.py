"""Serving workflows in the store, on SQLite and PostgreSQL: aliases and their history, idempotent
creates, atomic registration, and the event log's numbering under concurrent transactions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from registry_client import EventKind
from registry_server import errors
from registry_server.store import RegistryStore
from registry_server.tables import AliasChange, Checkpoint, Event, Model, ModelVersion, RequestRecord
from registry_server.transactions import RequestKey


def events(store: RegistryStore, after: int = 0) -> list[tuple[int, str, str, int, str]]:
    rows, _ = store.events.after(after, limit=10_000)
    return [(row.sequence, EventKind(row.kind).name, row.model_name, row.version, row.alias) for row in rows]


def in_thread(store: RegistryStore, name: str, work: Callable[[], Any]) -> threading.Thread:
    """Runs work on its own database connection, in a thread called `name`."""

    def run() -> None:
        with store.db.connection_context():
            work()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def test_aliases_name_versions_and_keep_their_history(store: RegistryStore) -> None:
    store.create_model("m", owner="alice")
    uuid = store.create_checkpoint({}).uuid
    for _ in range(3):
        store.create_version("m", uuid)
    with store.acting_as("alice"):
        assert store.set_alias("m", "production", 1).aliases == ["production"]
    with store.acting_as("bob"):
        store.set_alias("m", "staging", 2)
        assert store.set_alias("m", "production", 2).aliases == ["production", "staging"]
        store.set_alias("m", "production", 2)  # where it points already: no move, no history
    assert store.get_version("m", alias="production").version == 2
    assert [v.aliases for v in store.list_versions("m").rows] == [[], ["production", "staging"], []]

    with pytest.raises(errors.FailedPrecondition) as excinfo:
        store.delete_version("m", 2)
    assert excinfo.value.reason == "VERSION_HAS_ALIASES"
    assert excinfo.value.metadata["aliases"] == "production,staging"
    store.delete_alias("m", "staging")
    with pytest.raises(errors.NotFound) as excinfo:
        store.get_version("m", alias="staging")
    assert excinfo.value.reason == "ALIAS_NOT_FOUND"

    history = store.list_alias_history("m").rows
    assert [(c.alias, c.previous_version, c.version, c.principal) for c in history] == [
        ("production", 0, 1, "alice"),
        ("staging", 0, 2, "bob"),
        ("production", 1, 2, "bob"),
        ("staging", 2, 0, ""),
    ]
    page = store.list_alias_history("m", "production", page_size=1)
    assert (len(page.rows), page.total_size) == (1, 2)
    assert store.list_alias_history("m", "production", page_token=page.next_page_token).rows[0].version == 2
    # History follows a rename.
    store.rename_model("m", "m2")
    assert store.list_alias_history("m2").total_size == 4


def test_alias_refusals(store: RegistryStore) -> None:
    store.create_model("m")
    store.create_version("m", store.create_checkpoint({}).uuid)
    for bad in ["", "123", "a/b", "-x", "x" * 129, "with space"]:
        with pytest.raises(errors.InvalidArgument) as excinfo:
            store.set_alias("m", bad, 1)
        assert excinfo.value.reason == "INVALID_ALIAS"
    with pytest.raises(errors.NotFound) as excinfo:
        store.set_alias("m", "prod", 7)
    assert excinfo.value.reason == "MODEL_VERSION_NOT_FOUND"
    with pytest.raises(errors.InvalidArgument) as excinfo:
        store.get_version("m", 1, alias="prod")
    assert excinfo.value.reason == "ALIAS_AND_VERSION"
    with pytest.raises(errors.NotFound) as excinfo:
        store.delete_alias("m", "prod")
    assert excinfo.value.reason == "ALIAS_NOT_FOUND"
    store.set_archived("m", True)
    with pytest.raises(errors.FailedPrecondition) as excinfo:
        store.set_alias("m", "prod", 1)
    assert excinfo.value.reason == "MODEL_ARCHIVED"
    assert store.list_alias_history("m").total_size == 0


def test_concurrent_alias_moves_leave_a_consistent_history(store: RegistryStore) -> None:
    """Eight threads move one alias among five versions at once: every history entry starts where the
    previous one ended, the last one is where the alias points, and the event log says the same."""
    store.create_model("m")
    uuid = store.create_checkpoint({}).uuid
    for _ in range(5):
        store.create_version("m", uuid)
    failures: list[BaseException] = []

    def mover(worker: int) -> Callable[[], None]:
        def work() -> None:
            try:
                for i in range(15):
                    store.set_alias("m", "production", (worker + i) % 5 + 1)
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                failures.append(error)

        return work

    for thread in [in_thread(store, f"mover-{w}", mover(w)) for w in range(8)]:
        thread.join(timeout=120)
    assert failures == []
    history = store.list_alias_history("m", page_size=1000).rows
    assert history[0].previous_version == 0
    for before, after in zip(history, history[1:], strict=False):
        assert after.previous_version == before.version != after.version
    assert history[-1].version == store.get_version("m", alias="production").version
    moves = [(e[3]) for e in events(store) if e[1] == "ALIAS_SET"]
    assert moves == [c.version for c in history]


def test_a_retried_create_returns_the_first_result(store: RegistryStore) -> None:
    key = RequestKey("req-1", "CreateModel", "fingerprint-a")
    first = store.create_model("m", "d", request=key)
    again = store.create_model("m", "d", request=key)
    assert again.id == first.id
    with pytest.raises(errors.AlreadyExists) as excinfo:
        store.create_model("m", "other", request=RequestKey("req-1", "CreateModel", "fingerprint-b"))
    assert (excinfo.value.reason, excinfo.value.metadata["method"]) == ("REQUEST_ID_REUSED", "CreateModel")

    ckpt_key = RequestKey("req-2", "CreateCheckpoint", "f")
    checkpoint = store.create_checkpoint({}, request=ckpt_key)
    assert store.create_checkpoint({}, request=ckpt_key).uuid == checkpoint.uuid

    version_key = RequestKey("req-3", "CreateModelVersion", "f")
    version = store.create_version("m", checkpoint.uuid, aliases=["production"], request=version_key)
    replay = store.create_version("m", checkpoint.uuid, aliases=["production"], request=version_key)
    assert (replay.version, replay.aliases) == (version.version, ["production"])
    assert store.get_model("m").num_versions == 1
    assert [e[1] for e in events(store)] == ["MODEL_CREATED", "CHECKPOINT_CREATED", "MODEL_VERSION_CREATED", "ALIAS_SET"]

    with pytest.raises(errors.InvalidArgument) as excinfo:
        store.create_model("n", request=RequestKey("x" * 129, "CreateModel", "f"))
    assert excinfo.value.reason == "INVALID_REQUEST_ID"


def test_request_ids_are_kept_a_day_then_purged(store: RegistryStore) -> None:
    store.create_model("m", request=RequestKey("old", "CreateModel", "f"))
    store.create_model("n", request=RequestKey("new", "CreateModel", "f"))
    assert store.tx.purge_request_records() == 0
    assert store.tx.purge_request_records(retention_s=0) == 0  # never less than a day
    day_ago = RequestRecord.get(RequestRecord.request_id == "old").creation_time - 24 * 3600 * 1_000_000 - 1
    RequestRecord.update(creation_time=day_ago).where(RequestRecord.request_id == "old").execute()
    assert store.tx.purge_request_records() == 1
    assert [r.request_id for r in RequestRecord.select()] == ["new"]


def test_concurrent_calls_with_one_request_id_create_once(store: RegistryStore) -> None:
    store.create_model("m")
    uuid = store.create_checkpoint({}).uuid
    key = RequestKey("same", "CreateModelVersion", "f")
    results: list[int] = []
    threads = [
        in_thread(store, f"t{i}", lambda: results.append(store.create_version("m", uuid, request=key).version))
        for i in range(6)
    ]
    for thread in threads:
        thread.join(timeout=60)
    assert results == [1] * 6
    assert store.get_model("m").num_versions == 1


def test_atomic_registration_creates_model_checkpoint_version_and_alias(store: RegistryStore) -> None:
    with store.acting_as("pipeline"):
        version = store.create_version(
            "fresh", checkpoint={"experiment_id": 3, "metrics": {"loss": 0.5}}, create_model_if_missing=True,
            aliases=["production"], owner="pipeline",
        )
    assert (version.version, version.aliases, version.checkpoint.experiment_id) == (1, ["production"], 3)
    assert store.get_model("fresh").owner == "pipeline"
    assert [e[1] for e in events(store)] == ["MODEL_CREATED", "CHECKPOINT_CREATED", "MODEL_VERSION_CREATED", "ALIAS_SET"]
    assert {row.principal for row in Event.select()} == {"pipeline"}
    # The model exists now: the same call adds version 2 without creating it again.
    store.create_version("fresh", checkpoint={}, create_model_if_missing=True)
    assert store.get_model("fresh").num_versions == 2
    with pytest.raises(errors.InvalidArgument) as excinfo:
        store.create_version("fresh", store.get_version("fresh").checkpoint.uuid, checkpoint={})
    assert excinfo.value.reason == "CHECKPOINT_REQUIRED"


def nothing_stored() -> bool:
    return not any(t.select().exists() for t in (Model, Checkpoint, ModelVersion, AliasChange, Event, RequestRecord))


def test_failed_atomic_registration_leaves_nothing(store: RegistryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the model and the checkpoint are inserted rolls back both, and their events."""
    # Refused by the database's own rules: an inline checkpoint that is not COMPLETED.
    with pytest.raises(errors.FailedPrecondition) as excinfo:
        store.create_version("fresh", checkpoint={"state": 1}, create_model_if_missing=True, aliases=["production"])
    assert excinfo.value.reason == "CHECKPOINT_NOT_COMPLETED"
    assert nothing_stored()

    # A crash of the statement that inserts the version, after model and checkpoint rows exist.
    def crash(*_: Any, **__: Any) -> None:
        assert Model.select().where(Model.name == "fresh").exists() and Checkpoint.select().exists()
        raise RuntimeError("injected failure after the model and checkpoint inserts")

    monkeypatch.setattr(store._insert_version, "value", crash)
    with pytest.raises(RuntimeError):
        store.create_version(
            "fresh", checkpoint={}, create_model_if_missing=True, aliases=["production"],
            request=RequestKey("r", "CreateModelVersion", "f"),
        )
    assert nothing_stored()


def test_every_mutation_appends_one_event_in_order(store: RegistryStore) -> None:
    store.create_model("m")
    uuid = store.create_checkpoint({}).uuid
    store.update_model("m", {"description": "d"})
    store.update_model_metadata("m", {"k": 1}, [])
    store.create_version("m", uuid)
    store.update_version("m", 1, {"comment": "c"})
    store.set_alias("m", "production", 1)
    store.delete_alias("m", "production")
    store.delete_version("m", 1)
    store.set_archived("m", True)
    store.set_archived("m", False)
    store.rename_model("m", "m2")
    store.delete_model("m2")
    store.delete_checkpoint(uuid)
    with pytest.raises(errors.NotFound):
        store.delete_model("m2")  # refused: no event
    kinds = [e[1] for e in events(store)]
    assert kinds == [
        "MODEL_CREATED", "CHECKPOINT_CREATED", "MODEL_UPDATED", "MODEL_UPDATED", "MODEL_VERSION_CREATED",
        "MODEL_VERSION_UPDATED", "ALIAS_SET", "ALIAS_DELETED", "MODEL_VERSION_DELETED", "MODEL_ARCHIVED",
        "MODEL_UNARCHIVED", "MODEL_RENAMED", "MODEL_DELETED", "CHECKPOINT_DELETED",
    ]
    assert [e[0] for e in events(store)] == list(range(1, 15))
    rename = Event.get(Event.kind == EventKind.MODEL_RENAMED)
    assert (rename.model_name, rename.new_model_name) == ("m", "m2")
    # Filters: by model (old or new name of a rename) and by kind; the resume point skips the rest.
    rows, resume = store.events.after(0, model_names=["m2"])
    assert [EventKind(r.kind).name for r in rows] == ["MODEL_RENAMED", "MODEL_DELETED"]
    assert resume == 14
    rows, _ = store.events.after(5, kinds=[EventKind.ALIAS_SET, EventKind.ALIAS_DELETED])
    assert [r.sequence for r in rows] == [7, 8]
    rows, resume = store.events.after(0, limit=3)
    assert ([r.sequence for r in rows], resume) == ([1, 2, 3], 3)


@pytest.mark.parametrize("pause", ["before_numbering", "after_numbering"])
def test_numbers_become_visible_in_order_when_transactions_interleave(
    store: RegistryStore, monkeypatch: pytest.MonkeyPatch, pause: str
) -> None:
    """Transaction A writes its model first and is held just before (or just after) it takes its event
    number; B runs meanwhile. A watcher polling `sequence > last seen` throughout must see both
    events exactly once, whatever the commit order: a number never appears below one already seen."""
    reached, release = threading.Event(), threading.Event()
    append = store.events.append

    def held_append(pending: list[dict[str, Any]], principal: str) -> None:
        if threading.current_thread().name == "A" and pause == "before_numbering":
            reached.set()
            release.wait(30)
        append(pending, principal)
        if threading.current_thread().name == "A" and pause == "after_numbering":
            reached.set()
            release.wait(30)

    monkeypatch.setattr(store.events, "append", held_append)
    seen: list[tuple[int, str]] = []

    def poll() -> None:
        after = seen[-1][0] if seen else 0
        rows, _ = store.events.after(after)
        seen.extend((row.sequence, row.model_name) for row in rows)

    a = in_thread(store, "A", lambda: store.create_model("a"))
    assert reached.wait(30)
    b = in_thread(store, "B", lambda: store.create_model("b"))
    b.join(timeout=1.0)
    b_committed_first = not b.is_alive()
    poll()
    if b_committed_first:
        # Only possible on PostgreSQL with A held before numbering: B took number 1 and committed.
        assert (store._sqlite, pause, seen) == (False, "before_numbering", [(1, "b")])
    else:
        # B waits for A: for the counter row lock (PostgreSQL) or the write lock (SQLite). Nothing
        # is visible yet, in particular not a number above one still to come.
        assert seen == []
    release.set()
    a.join(timeout=30)
    b.join(timeout=30)
    poll()
    assert sorted(name for _, name in seen) == ["a", "b"]
    assert [sequence for sequence, _ in seen] == [1, 2]
    assert seen == ([(1, "b"), (2, "a")] if b_committed_first else [(1, "a"), (2, "b")])

