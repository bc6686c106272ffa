"""Backups (backup.py): a lossless round trip between SQLite and PostgreSQL with the checkpoint files,
and hostile archives refused, on both databases, with nothing written."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import tarfile
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registry_server import backup, errors
from registry_server import db as database
from registry_server.files import CheckpointFiles
from registry_server.storage import LocalStorage
from registry_server.store import CheckpointQuery, ModelQuery, RegistryStore
from registry_server.tables import (
    AliasChange,
    BlobHold,
    Checkpoint,
    CheckpointFile,
    Event,
    EventCounter,
    Model,
    ModelAlias,
    ModelVersion,
)
from registry_server.tables import database as proxy
from tests.conftest import empty_database

FILES = {"model.pt": b"weights " * 1000, "dir/opt.pt": b"optimizer", "same.pt": b"optimizer", "empty": b""}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(store: RegistryStore, storage: LocalStorage, uuid: str, files: dict[str, bytes]) -> None:
    with CheckpointFiles(store, storage).begin_upload(uuid) as upload:
        for path, data in files.items():
            upload.start_file(path, len(data), sha(data))
            upload.write(data)
        upload.commit()


def fill(store: RegistryStore, storage: LocalStorage | None = None) -> None:
    store.create_model("mnist_cnn", "digits", {"dataset_url": "http://x", "nested": [1, {"b": None}]}, ["vision", "ocr"], "n", "alice")
    store.create_model("bert", labels=["nlp"], owner="bob", editors=["carol"])
    first = store.create_checkpoint(
        {"experiment_id": 1, "trial_id": 2, "batch_number": 100, "hparams": {"lr": 0.001}, "metrics": {"loss": 0.091},
         "resources": {"model.pt": 1234, "dir/opt.pt": 5}, "framework": "torch-2.3", "format": "pt", "storage_uri": "s3://b/p"}
    )
    second = store.create_checkpoint({"state": 1, "experiment_config": {"searcher": {"name": "single"}}})
    if storage is not None:
        upload(store, storage, first.uuid, FILES)
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
    """Every row of every table, without the surrogate ids (and storage places), as plain values."""
    models = [
        {k: v for k, v in row.items() if k != "id"} | {"label_rows": store.list_model_labels()}
        for row in Model.select().order_by(Model.name).dicts()
    ]
    checkpoints = [
        {k: v for k, v in row.items() if k not in ("id", "storage_uri")}
        for row in Checkpoint.select().order_by(Checkpoint.uuid).dicts()
    ]
    files = sorted(CheckpointFile.select(Checkpoint.uuid, CheckpointFile.path, CheckpointFile.size, CheckpointFile.sha256).join(Checkpoint).tuples())
    versions = [
        (v.model.name, v.version, v.checkpoint.uuid, v.name, v.comment, v.labels, v.metadata, v.notes, v.owner,
         v.creation_time, v.last_updated_time)
        for v in ModelVersion.select(ModelVersion, Model, Checkpoint).join(Model).switch(ModelVersion).join(Checkpoint)
        .order_by(Model.name, ModelVersion.version)
    ]
    aliases = sorted(ModelAlias.select(ModelAlias.alias, ModelAlias.version, Model.name).join(Model).tuples())
    history = list(
        AliasChange.select(Model.name, AliasChange.alias, AliasChange.previous_version, AliasChange.version,
                           AliasChange.time, AliasChange.principal).join(Model).order_by(AliasChange.id).tuples()
    )
    events = list(Event.select().order_by(Event.sequence).dicts())
    counter = EventCounter.select(EventCounter.last_sequence).scalar()
    return {"models": models, "checkpoints": checkpoints, "files": files, "versions": versions, "aliases": aliases,
            "history": history, "events": events, "counter": counter}


def blobs(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "blobs").rglob("*") if p.is_file()} if (root / "blobs").exists() else {}


def empty(store: RegistryStore) -> bool:
    tables = (Model, Checkpoint, CheckpointFile, ModelVersion, ModelAlias, AliasChange, Event, BlobHold)
    return all(not table.select().exists() for table in tables) and not EventCounter.select(EventCounter.last_sequence).scalar()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[bytes, dict]]:
    """An archive of a filled SQLite registry with files, and the registry's rows."""
    db = database.connect(f"sqlite:///{tmp_path}/source.db")
    database.migrate(db)
    storage = LocalStorage(tmp_path / "source-files")
    store = RegistryStore(db)
    out = io.BytesIO()
    try:
        with db.connection_context():
            fill(store, storage)
            rows = snapshot(store)
            backup.export_registry(store, out, storage)
    finally:
        db.close_all()
    yield out.getvalue(), rows


@pytest.fixture
def target(database_url: str, tmp_path: Path) -> Iterator[tuple[RegistryStore, LocalStorage]]:
    db = database.connect(database_url)
    database.migrate(db)
    try:
        with db.connection_context():
            yield RegistryStore(db), LocalStorage(tmp_path / "target-files")
    finally:
        db.close_all()


def members(archive: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    return json.loads(files.pop(backup.DOCUMENT)), files


def archive_of(document: dict[str, Any], files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in [(backup.DOCUMENT, json.dumps(document).encode()), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# The round trip ------------------------------------------------------------------------------------


def test_round_trip_with_files_is_lossless(source: tuple[bytes, dict], target: tuple[RegistryStore, LocalStorage]) -> None:
    archive, before = source
    document, files = members(archive)
    assert document["format_version"] == 4 and document["files"] is True
    assert sorted(files) == sorted(f"blobs/{sha(data)}" for data in set(FILES.values()))
    assert all(files[f"blobs/{sha(data)}"] == data for data in FILES.values())
    assert not any("id" in row for section in backup.SECTIONS for row in document[section])

    store, storage = target
    counts = backup.import_registry(store, io.BytesIO(archive), storage)
    assert counts["models"] == 2 and counts["model_versions"] == 2 and counts["blobs"] == len(set(FILES.values()))
    assert snapshot(store) == before
    assert blobs(storage.root) == {sha(data): data for data in FILES.values()}
    checkpoint = Checkpoint.get(Checkpoint.experiment_id == 1)
    assert checkpoint.storage_uri == storage.uri()  # the files are in this registry's storage now
    assert list((storage.root / ".uploads").iterdir()) == []
    # Downloads read the blobs the records name.
    files_api = CheckpointFiles(store, storage)
    _, headers = files_api.stored_files(checkpoint.uuid, [])
    assert {h.path: b"".join(files_api.read(checkpoint.uuid, h)) for h in headers} == FILES
    # The counters continue: numbers are never reused, and the ids are the target's own.
    store.set_archived("bert", False)
    uuid = store.list_checkpoints(CheckpointQuery()).rows[0].uuid
    assert store.create_version("mnist_cnn", uuid).version == 4
    assert [e.sequence for e in Event.select().order_by(Event.sequence)][-2:] == [before["counter"] + 1, before["counter"] + 2]
    store.create_model("after-import")
    # A second import into the now non-empty registry is refused, and writes nothing.
    with pytest.raises(errors.FailedPrecondition) as refused:
        backup.import_registry(store, io.BytesIO(archive), storage)
    assert refused.value.reason == "REGISTRY_NOT_EMPTY"
    assert store.list_models(ModelQuery()).total_size == 3


def test_sqlite_to_postgresql_and_back_with_files(tmp_path: Path) -> None:
    """SQLite -> PostgreSQL -> SQLite gives back every row and every file as they were."""
    with empty_database("postgresql", tmp_path) as postgresql:
        urls = [f"sqlite:///{tmp_path}/a.db", postgresql, f"sqlite:///{tmp_path}/b.db"]
        archive, first = b"", None
        for index, url in enumerate(urls):
            db = database.connect(url)
            database.migrate(db)
            store, storage = RegistryStore(db), LocalStorage(tmp_path / f"files{index}")
            try:
                with db.connection_context():
                    if index == 0:
                        fill(store, storage)
                    else:
                        backup.import_registry(store, io.BytesIO(archive), storage)
                    state = snapshot(store)
                    first = first or state
                    assert state == first, url
                    assert blobs(storage.root) == {sha(data): data for data in FILES.values()}
                    out = io.BytesIO()
                    backup.export_registry(store, out, storage, compress=index == 1)
                    archive = out.getvalue()
            finally:
                db.close_all()
        assert archive[:2] == b"\x1f\x8b" or members(archive)  # the PostgreSQL one was gzip-compressed


def test_records_only_needs_the_blobs_in_the_storage(source: tuple[bytes, dict], target: tuple[RegistryStore, LocalStorage], tmp_path: Path) -> None:
    """--no-files: the archive holds the document alone; an import finds the blobs in its storage
    (copied there beforehand) and refuses without them."""
    _, before = source
    db = database.connect(f"sqlite:///{tmp_path}/source.db")
    out = io.BytesIO()
    with db.connection_context():
        backup.export_registry(RegistryStore(db), out, LocalStorage(tmp_path / "source-files"), files=False)
    db.close_all()
    document, files = members(out.getvalue())
    assert files == {} and document["files"] is False
    store, storage = target
    proxy.initialize(store.db)  # bound to the source again above
    with pytest.raises(backup.Refused) as refused:
        backup.import_registry(store, io.BytesIO(out.getvalue()), storage)
    assert "is neither in the archive nor in the storage" in refused.value.message
    assert "--no-files" in refused.value.message
    assert empty(store)
    for name, data in blobs(tmp_path / "source-files").items():  # what the warning's rsync does
        (storage.root / "blobs" / name[:2]).mkdir(parents=True, exist_ok=True)
        (storage.root / "blobs" / name[:2] / name).write_bytes(data)
    backup.import_registry(store, io.BytesIO(out.getvalue()), storage)
    assert snapshot(store) == before


def test_documents_of_version_3_still_import(target: tuple[RegistryStore, LocalStorage]) -> None:
    """A bare JSON document, as the client's `export` wrote them (every column but the id)."""
    store, storage = target
    uuid = str(uuidlib.uuid4())
    document = {
        "format": "model-registry-export", "format_version": 3, "last_event_sequence": 1,
        "checkpoints": [{"uuid": uuid, "state": 2, "report_time": 1, "creation_time": 1, "owner": ""}],
        "checkpoint_files": [],
        "models": [{"name": "m", "name_key": "m", "creation_time": 1, "last_updated_time": 1, "num_versions": 1,
                    "latest_version": 1, "last_assigned_version": 1, "labels": [], "metadata": {}}],
        "model_versions": [{"model_name": "m", "version": 1, "checkpoint_uuid": uuid, "creation_time": 1, "last_updated_time": 1}],
        "model_aliases": [], "alias_changes": [],
        "events": [{"sequence": 1, "time": 1, "kind": 1, "model_name": "m"}],
    }
    backup.import_registry(store, io.BytesIO(json.dumps(document).encode()), storage)
    assert store.get_version("m", 1).checkpoint.uuid == uuid
    assert store.get_model("m").num_versions == 1


# Hostile archives ---------------------------------------------------------------------------------


def _checkpoint_with_files(document: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in document["checkpoints"] if c["experiment_id"] == 1)


def _set(section: str, index: int, field: str, value: Any) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    def change(document: dict[str, Any], _: dict[str, bytes]) -> None:
        document[section][index][field] = value
    return change


def _add_file(path: str) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    """A record naming a stored blob (with its true digest) under a hostile path."""
    def change(document: dict[str, Any], _: dict[str, bytes]) -> None:
        row = dict(document["checkpoint_files"][0], path=path)
        document["checkpoint_files"].append(row)
    return change


def _tamper(document: dict[str, Any], files: dict[str, bytes]) -> None:
    name = f"blobs/{sha(FILES['model.pt'])}"
    files[name] = b"W" + files[name][1:]


def _drop_blob(document: dict[str, Any], files: dict[str, bytes]) -> None:
    del files[f"blobs/{sha(FILES['model.pt'])}"]


def _version_zero_counter(document: dict[str, Any], _: dict[str, bytes]) -> None:
    next(m for m in document["models"] if m["name"] == "mnist_cnn")["last_assigned_version"] = 0


def _events_below(document: dict[str, Any], _: dict[str, bytes]) -> None:
    document["last_event_sequence"] = document["events"][-1]["sequence"] - 1


def _twin(document: dict[str, Any], _: dict[str, bytes]) -> None:
    document["models"].append(dict(document["models"][0], name="MNIST_cnn"))


def _upper_case_uuid(document: dict[str, Any], _: dict[str, bytes]) -> None:
    checkpoint = _checkpoint_with_files(document)
    old = checkpoint["uuid"]
    for section in ("checkpoint_files", "model_versions"):
        for row in document[section]:
            if row["checkpoint_uuid"] == old:
                row["checkpoint_uuid"] = old.upper()
    checkpoint["uuid"] = old.upper()


def _alias_to_nothing(document: dict[str, Any], _: dict[str, bytes]) -> None:
    document["model_aliases"][0]["version"] = 2  # deleted


def _version_of_missing_checkpoint(document: dict[str, Any], _: dict[str, bytes]) -> None:
    document["model_versions"][0]["checkpoint_uuid"] = str(uuidlib.uuid4())


HOSTILE: dict[str, tuple[Callable[[dict[str, Any], dict[str, bytes]], None], str]] = {
    "absolute path": (_add_file("/etc/passwd"), "checkpoint_files[4].path: file path must be relative"),
    "traversal": (_add_file("../../../../etc/hostname"), "checkpoint_files[4].path: file path must not have empty, '.' or '..'"),
    "metadata as a string": (_set("models", 0, "metadata", "{}"), "models[0].metadata: must be a JSON object"),
    "checkpoint metadata as a string": (_set("checkpoints", 0, "metadata", "x"), "checkpoints[0].metadata: must be a JSON object"),
    "experiment_id 2^40": (_set("checkpoints", 0, "experiment_id", 2**40), "checkpoints[0].experiment_id: experiment_id must be an integer from 0 to 2147483647"),
    "upper-case uuid": (_upper_case_uuid, "checkpoints[0].uuid: "),
    "name with a slash": (_set("models", 1, "name", "a/b"), "models[1].name: name must not contain '/'"),
    "name twin": (_twin, "models[2].name: 'MNIST_cnn' and 'mnist_cnn' (models[0]) are in the backup twice"),
    "last_event_sequence below": (_events_below, "last_event_sequence: "),
    "last_assigned_version 0": (_version_zero_counter, "models[0].last_assigned_version: 0 is below version 3"),
    "explicit id": (_set("models", 0, "id", 7), "models[0].id: ids are not imported"),
    "explicit model_id": (_set("model_versions", 0, "model_id", 7), "model_versions[0].model_id: ids are not imported"),
    "unknown field": (_set("models", 0, "num_version", 7), "models[0].num_version: is not a field of models"),
    "label": (_set("models", 0, "labels", ["ok", " padded"]), "models[0].labels: each label must be"),
    "alias": (_set("model_aliases", 0, "alias", "12"), "model_aliases[0].alias: an alias is"),
    "alias to a deleted version": (_alias_to_nothing, "model_aliases[0].version: model 'mnist_cnn' has no version 2"),
    "version of a missing checkpoint": (_version_of_missing_checkpoint, "model_versions[0].checkpoint_uuid: no checkpoint"),
    "deep metadata": (_set("models", 0, "metadata", {"a": json.loads("[" * 25 + "]" * 25)}), "models[0].metadata: metadata nests"),
    "event kind": (_set("events", 0, "kind", 99), "events[0].kind: 99 is not an event kind"),
    "time out of range": (_set("events", 0, "time", 2**62), "events[0].time: time must be an integer"),
    "tampered blob": (_tamper, f"blobs/{sha(FILES['model.pt'])}: its bytes do not match their sha256"),
    "missing blob": (_drop_blob, "is neither in the archive nor in the storage"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archives_are_refused_and_write_nothing(
    case: str, source: tuple[bytes, dict], target: tuple[RegistryStore, LocalStorage]
) -> None:
    archive, _ = source
    document, files = members(archive)
    document, files = copy.deepcopy(document), dict(files)
    change, expected = HOSTILE[case]
    change(document, files)
    store, storage = target
    with pytest.raises(backup.Refused) as refused:
        backup.import_registry(store, io.BytesIO(archive_of(document, files)), storage)
    assert refused.value.reason == "INVALID_EXPORT"
    assert expected in refused.value.message, refused.value.message
    assert "\n" not in refused.value.message
    assert empty(store)
    assert blobs(storage.root) == {}
    assert list((storage.root / ".uploads").iterdir()) == []


@pytest.mark.parametrize("data", [b"not an archive", b"[]", b'{"format": "other"}', b"\x1f\x8b garbage"])
def test_what_is_not_an_archive_is_refused(data: bytes, target: tuple[RegistryStore, LocalStorage]) -> None:
    store, storage = target
    with pytest.raises(errors.InvalidArgument) as refused:
        backup.import_registry(store, io.BytesIO(data), storage)
    assert refused.value.reason == "INVALID_EXPORT"
    assert empty(store)


def test_a_truncated_archive_is_refused(source: tuple[bytes, dict], target: tuple[RegistryStore, LocalStorage]) -> None:
    archive, _ = source
    store, storage = target
    with pytest.raises(errors.InvalidArgument):
        backup.import_registry(store, io.BytesIO(archive[: len(archive) // 2]), storage)
    assert empty(store) and blobs(storage.root) == {}


def insert_model_directly(url: str, name: str) -> None:
    """Commits a model from a connection of its own (not the registry's code)."""
    columns = ("name, name_key, description, metadata, labels, notes, archived, owner, editors, creation_time, "
               "last_updated_time, num_versions, latest_version, last_assigned_version")
    values = (name, name, "", "{}", "[]", "", False, "", "[]", 1, 1, 0, 0, 0)
    if url.startswith("sqlite"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(database.sqlite_path(url) or "")) as connection, connection:
            connection.execute(f"INSERT INTO model ({columns}) VALUES ({', '.join('?' * len(values))})", values)
    else:
        import psycopg2

        with contextlib.closing(psycopg2.connect(url)) as connection, connection, connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO model ({columns}) VALUES ({', '.join(['%s'] * len(values))})", values)


def test_export_reads_one_snapshot(database_url: str) -> None:
    """A model committed while the export is half way through is not in it (on PostgreSQL the old
    export read each section at READ COMMITTED, so it was)."""
    db = database.connect(database_url)
    database.migrate(db)
    with db.connection_context():
        fill(RegistryStore(db))
    db.close_all()
    source = database.connect_existing(database_url, read_only=True)
    document = io.StringIO()

    class Interleaved(io.StringIO):
        def write(self, text: str) -> int:
            if '"checkpoint_files"' in text:
                insert_model_directly(database_url, "written-during-export")
            return document.write(text)

    try:
        with source.connection_context():
            backup.write_document(RegistryStore(source), Interleaved())
            assert Model.select().where(Model.name == "written-during-export").exists()  # it was committed
    finally:
        source.close()
    assert [m["name"] for m in json.loads(document.getvalue())["models"]] == ["mnist_cnn", "bert"]


def test_export_does_not_migrate_the_source(tmp_path: Path) -> None:
    """A database of an older schema is refused by name, and left as it was (the old export migrated it)."""
    from playhouse.migrations import Runner

    url = f"sqlite:///{tmp_path}/old.db"
    db = database.connect(url)
    with db.connection_context():
        Runner(db, database.MIGRATIONS_DIR).up(target="0005_model_name_search")
    db.close_all()
    before = (tmp_path / "old.db").read_bytes()
    source = database.connect_existing(url, read_only=True)
    problem = database.schema_problem(source)
    source.close()
    assert problem is not None and "older than this release's" in problem and "0005_model_name_search" in problem
    assert (tmp_path / "old.db").read_bytes() == before


def test_every_column_is_backed_up_or_derived() -> None:
    """A column added to a table without a place in the backup fails here, not in a user's restore."""
    tables = {"checkpoints": Checkpoint, "checkpoint_files": CheckpointFile, "models": Model, "model_versions": ModelVersion,
              "model_aliases": ModelAlias, "alias_changes": AliasChange, "events": Event}
    for section, table in tables.items():
        columns = {f.name for f in table._meta.sorted_fields} - {"id", "model", "checkpoint"}
        assert columns - set(backup.FIELDS[section]) - backup._DERIVED.get(section, set()) == set(), section
