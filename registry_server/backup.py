"""Export of the whole registry to one JSON document, and import of it into an empty registry, on
either database: every field is kept exactly (times in microseconds, version counters, owners)."""

from __future__ import annotations

import json
from typing import IO, Any, Iterator

import peewee as pw

from .errors import FailedPrecondition, invalid
from .store import RegistryStore
from .tables import Checkpoint, Model, ModelLabel, ModelVersion

FORMAT = "model-registry-export"
FORMAT_VERSION = 1
_BATCH = 500


def _rows(query: pw.ModelSelect) -> Iterator[dict[str, Any]]:
    for row in query.dicts().iterator():
        row.pop("id", None)
        yield row


def export_registry(store: RegistryStore, out: IO[str]) -> dict[str, int]:
    """Writes the registry as JSON to `out`, one row at a time, from one consistent snapshot."""
    sections = {
        "checkpoints": Checkpoint.select().order_by(Checkpoint.id),
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
    }
    counts = {}
    with store.db.atomic():  # one snapshot (a read transaction) for every section
        out.write('{"format": %s, "format_version": %d' % (json.dumps(FORMAT), FORMAT_VERSION))
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
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise invalid("INVALID_EXPORT", f"not a {FORMAT} document of version {FORMAT_VERSION}")
    with store._write():
        if Model.select().exists() or Checkpoint.select().exists():
            raise FailedPrecondition("REGISTRY_NOT_EMPTY", "import loads into an empty registry only")
        for start in range(0, len(data["checkpoints"]), _BATCH):
            Checkpoint.insert_many(data["checkpoints"][start : start + _BATCH]).execute()
        model_ids = {}
        for row in data["models"]:
            model_ids[row["name"]] = Model.insert(**row).execute()
            store._set_label_rows(model_ids[row["name"]], row["labels"])
        checkpoint_ids = dict(Checkpoint.select(Checkpoint.uuid, Checkpoint.id).tuples())
        versions = []
        for row in data["model_versions"]:
            row = dict(row)
            row["model"] = model_ids[row.pop("model_name")]
            row["checkpoint"] = checkpoint_ids[row.pop("checkpoint_uuid")]
            versions.append(row)
        for start in range(0, len(versions), _BATCH):
            ModelVersion.insert_many(versions[start : start + _BATCH]).execute()
    return {section: len(data[section]) for section in ("checkpoints", "models", "model_versions")}
