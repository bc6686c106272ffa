"""Export and import: a lossless round trip, between SQLite and PostgreSQL in both directions."""

from __future__ import annotations

import io

import pytest

from registry_server import backup, errors
from registry_server import db as database
from registry_server.store import CheckpointQuery, ModelQuery, RegistryStore
from registry_server.tables import AliasChange, Checkpoint, Event, EventCounter, Model, ModelAlias, ModelVersion
from tests.conftest import POSTGRES_URL


def fill(store: RegistryStore) -> None:
    store.create_model("mnist_cnn", "digits", {"dataset_url": "http://x", "nested": [1, {"b": None}]}, ["vision", "ocr"], "n", "alice")
    store.create_model("bert", labels=["nlp"], owner="bob")
    first = store.create_checkpoint(
        {"experiment_id": 1, "trial_id": 2, "batch_number": 100, "hparams": {"lr": 0.001}, "metrics": {"loss": 0.091},
         "resources": {"model.pt": 1234, "dir/opt.pt": 5}, "framework": "torch-2.3", "format": "pt", "storage_uri": "s3://b/p"}
    )
    second = store.create_checkpoint({"state": 1, "experiment_config": {"searcher": {"name": "single"}}})
    for _ in range(3):
        store.create_version("mnist_cnn", first.uuid, "v", "c", ["prod"], {"acc": 0.97}, "notes", "carol")
    store.delete_version("mnist_cnn", 2)
    store.set_alias("mnist_cnn", "production", 1)
    store.set_alias("mnist_cnn", "production", 3)
    store.set_alias("mnist_cnn", "staging", 1)
    store.delete_alias("mnist_cnn", "staging")
    store.set_archived("bert", True)
    assert second.uuid


def snapshot(store: RegistryStore) -> dict:
    """Every row of every table, without the surrogate ids, as plain values."""
    models = [
        {k: v for k, v in row.items() if k != "id"} | {"label_rows": store.list_model_labels()}
        for row in Model.select().order_by(Model.name).dicts()
    ]
    checkpoints = [{k: v for k, v in row.items() if k != "id"} for row in Checkpoint.select().order_by(Checkpoint.uuid).dicts()]
    versions = [
        (v.model.name, v.version, v.checkpoint.uuid, v.name, v.comment, v.labels, v.metadata, v.notes, v.owner,
         v.creation_time, v.last_updated_time)
        for v in store._versions().order_by(Model.name, ModelVersion.version)
    ]
    aliases = sorted(ModelAlias.select(ModelAlias.alias, ModelAlias.version, Model.name).join(Model).tuples())
    history = list(
        AliasChange.select(Model.name, AliasChange.alias, AliasChange.previous_version, AliasChange.version,
                           AliasChange.time, AliasChange.principal).join(Model).order_by(AliasChange.time, AliasChange.id).tuples()
    )
    events = list(Event.select().order_by(Event.sequence).dicts())
    counter = EventCounter.select(EventCounter.last_sequence).scalar()
    return {"models": models, "checkpoints": checkpoints, "versions": versions, "aliases": aliases,
            "history": history, "events": events, "counter": counter}



def test_round_trip_is_lossless(store: RegistryStore, tmp_path) -> None:
    fill(store)
    before = snapshot(store)
    out = io.StringIO()
    counts = backup.export_registry(store, out)
    assert counts == {"checkpoints": 2, "checkpoint_files": 0, "models": 2, "model_versions": 2, "model_aliases": 1,
                      "alias_changes": 4, "events": counts["events"]} and counts["events"] >= 12

    target_db = database.connect(f"sqlite:///{tmp_path}/imported.db")
    database.migrate(target_db)
    target = RegistryStore(target_db)
    with target_db.connection_context():
        assert backup.import_registry(target, io.StringIO(out.getvalue())) == counts
        assert snapshot(target) == before
        # The counters continue: numbers are still never reused.
        target.set_archived("bert", False)
        assert target.create_version("mnist_cnn", target.list_checkpoints(CheckpointQuery()).rows[0].uuid).version == 4
        # ... and so does the event log: unarchive and register are the next two numbers.
        assert [e.sequence for e in Event.select().order_by(Event.sequence)][-2:] == [before["counter"] + 1, before["counter"] + 2]
        # A second import into the now non-empty registry is refused, and writes nothing.
        with pytest.raises(errors.FailedPrecondition) as excinfo:
            backup.import_registry(target, io.StringIO(out.getvalue()))
        assert excinfo.value.reason == "REGISTRY_NOT_EMPTY"
        assert target.list_models(ModelQuery()).total_size == 2
    target_db.close_all()


@pytest.mark.skipif(not POSTGRES_URL, reason="MODEL_REGISTRY_TEST_POSTGRES_URL is not set")
def test_sqlite_to_postgresql_and_back(tmp_path, request) -> None:
    """SQLite -> PostgreSQL -> SQLite gives back every row as it was."""
    import psycopg2
    import uuid

    schema = "test_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        urls = [
            f"sqlite:///{tmp_path}/a.db",
            f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}options=-csearch_path%3D{schema}",
            f"sqlite:///{tmp_path}/b.db",
        ]
        document, first = "", None
        for index, url in enumerate(urls):
            db = database.connect(url)
            database.migrate(db)
            store = RegistryStore(db)
            with db.connection_context():
                if index == 0:
                    fill(store)
                else:
                    backup.import_registry(store, io.StringIO(document))
                state = snapshot(store)
                first = first or state
                assert state == first, url
                out = io.StringIO()
                backup.export_registry(store, out)
                document = out.getvalue()
            db.close_all()
    finally:
        admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def test_malformed_documents_are_refused(store: RegistryStore) -> None:
    for text in ["not json", "[]", '{"format": "other"}']:
        with pytest.raises(errors.InvalidArgument) as excinfo:
            backup.import_registry(store, io.StringIO(text))
        assert excinfo.value.reason == "INVALID_EXPORT"
