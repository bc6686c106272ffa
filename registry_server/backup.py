"""Export of the whole registry to one JSON document, and import of it into an empty registry, on
either database: every field is kept exactly (times in microseconds, version counters, owners,
aliases and their history, the event log and its counter). Request ids are not carried: they only
guard retries within 24 hours, against the registry that answered them."""

from __future__ import annotations

import json
from typing import IO, Any, Iterator

import peewee as pw

from .errors import FailedPrecondition, invalid
from .store import RegistryStore
from .tables import AliasChange, Checkpoint, CheckpointFile, Event, EventCounter, Model, ModelAlias, ModelVersion

FORMAT = "model-registry-export"
FORMAT_VERSION = 3
# Version 1 had no aliases, alias history or events; versions 1 and 2 kept the digests of stored
# files in each checkpoint's "file_digests" (path -> sha256) instead of "checkpoint_files".
READABLE_VERSIONS = (1, 2, 3)
_BATCH = 500


def _rows(query: pw.ModelSelect) -> Iterator[dict[str, Any]]:
    for row in query.dicts().iterator():
        row.pop("id", None)
        yield row


def _by_model_name(table: type[pw.Model]) -> pw.ModelSelect:
    """Rows of a table that belongs to a model, with the model's name in place of its id."""
    fields = [f for f in table._meta.sorted_fields if f.name not in ("id", "model")]
    return table.select(*fields, Model.name.alias("model_name")).join(Model).order_by(table.id)


def export_registry(store: RegistryStore, out: IO[str]) -> dict[str, int]:
    """Writes the registry as JSON to `out`, one row at a time, from one consistent snapshot."""
    sections = {
        "checkpoints": Checkpoint.select().order_by(Checkpoint.id),
        "checkpoint_files": CheckpointFile.select(
            Checkpoint.uuid.alias("checkpoint_uuid"), CheckpointFile.path, CheckpointFile.size, CheckpointFile.sha256
        )
        .join(Checkpoint)
        .order_by(CheckpointFile.id),
        "models": Model.select().order_by(Model.id),
        "model_versions": ModelVersion.select(
            *[f for f in ModelVersion._meta.sorted_fields if f.name not in ("id", "model", "checkpoint")],
            Model.name.alias("model_name"),
            Checkpoint.uuid.alias("checkpoint_uuid"),
        )
        .join(Model)
        .switch(ModelVersion)
        .join(Checkpoint)
        .order_by(ModelVersion.id),
        "model_aliases": _by_model_name(ModelAlias),
        "alias_changes": _by_model_name(AliasChange),
        "events": Event.select().order_by(Event.sequence),
    }
    counts = {}
    with store.db.atomic():  # one snapshot (a read transaction) for every section
        last_sequence = EventCounter.select(EventCounter.last_sequence).scalar() or 0
        out.write(
            '{"format": %s, "format_version": %d, "last_event_sequence": %d'
            % (json.dumps(FORMAT), FORMAT_VERSION, last_sequence)
        )
        for section, query in sections.items():
            out.write(', "%s": [' % section)
            count = 0
            for row in _rows(query):
                out.write((",\n" if count else "\n") + json.dumps(row, sort_keys=True, ensure_ascii=False))
                count += 1
            out.write("\n]")
            counts[section] = count
        out.write("}\n")
    return counts


def import_registry(store: RegistryStore, source: IO[str]) -> dict[str, int]:
    """Loads an export into an empty registry, in one transaction: all of it or nothing."""
    try:
        data = json.load(source)
    except ValueError as error:
        raise invalid("INVALID_EXPORT", f"not a JSON document: {error}")
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") not in READABLE_VERSIONS:
        raise invalid("INVALID_EXPORT", f"not a {FORMAT} document of version {', '.join(map(str, READABLE_VERSIONS))}")
    try:
        return _load(store, data)
    except (KeyError, TypeError, ValueError) as error:
        raise invalid("INVALID_EXPORT", f"malformed export document: {error!r}")


def _load(store: RegistryStore, data: dict[str, Any]) -> dict[str, int]:
    with store.tx.write():
        if Model.select().exists() or Checkpoint.select().exists() or Event.select().exists():
            raise FailedPrecondition("REGISTRY_NOT_EMPTY", "import loads into an empty registry only")
        checkpoints = [dict(row) for row in data["checkpoints"]]
        files = list(data.get("checkpoint_files", []))
        for row in checkpoints:  # versions 1 and 2
            sizes = row.get("resources") or {}
            files += [
                {"checkpoint_uuid": row["uuid"], "path": path, "size": sizes.get(path, 0), "sha256": digest}
                for path, digest in (row.pop("file_digests", None) or {}).items()
            ]
        _insert(Checkpoint, checkpoints)
        checkpoint_ids = dict(Checkpoint.select(Checkpoint.uuid, Checkpoint.id).tuples())
        _insert(CheckpointFile, [
            {"checkpoint": checkpoint_ids[f["checkpoint_uuid"]], "path": f["path"], "size": f["size"], "sha256": f["sha256"]}
            for f in files
        ])
        model_ids = {}
        for row in data["models"]:
            model_ids[row["name"]] = Model.insert(**row).execute()
            store._set_label_rows(model_ids[row["name"]], row["labels"])
        versions = []
        for row in data["model_versions"]:
            row = dict(row)
            row["model"] = model_ids[row.pop("model_name")]
            row["checkpoint"] = checkpoint_ids[row.pop("checkpoint_uuid")]
            versions.append(row)
        _insert(ModelVersion, versions)
        for table, section in ((ModelAlias, "model_aliases"), (AliasChange, "alias_changes")):
            rows = [{**row, "model": model_ids[row["model_name"]]} for row in data.get(section, [])]
            _insert(table, [{k: v for k, v in row.items() if k != "model_name"} for row in rows])
        _insert(Event, data.get("events", []))
        EventCounter.update(last_sequence=data.get("last_event_sequence", 0)).where(EventCounter.id == 1).execute()
    sections = ("checkpoints", "checkpoint_files", "models", "model_versions", "model_aliases", "alias_changes", "events")
    return {section: len(data.get(section, [])) for section in sections}


def _insert(table: type[pw.Model], rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), _BATCH):
        table.insert_many(rows[start : start + _BATCH]).execute()
