"""Backups: the whole registry in one archive, restored into an empty registry on either database and
any storage.

The archive is a tar stream (gzip-compressed or not): `model-registry-export.json` first, the records
(every field kept exactly: times in microseconds, version counters, owners, aliases and their history,
the event log and its counter; not request ids, which only guard retries against the registry that
answered them, nor surrogate ids, which the target hands out anew), then `blobs/<sha256>` for the
bytes of every checkpoint file, unless it was made without files.

An import trusts nothing in it. Every row goes through the validators of the RPCs (validation.py and
the store's rules), the document is checked as a whole (references, counters, duplicates and twins),
and each blob's digest is checked while it is copied into the storage; only then is anything
recorded, in one transaction, with the blobs placed and held as an upload holds them (files.py).
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import io
import json
import tarfile
import tempfile
import uuid as uuidlib
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

import peewee as pw
from modelregistry.v1 import checkpoint_pb2, event_pb2

from . import convert, validation
from .checkpoint_files import CheckpointFileStore, ancestors
from .errors import DataLoss, FailedPrecondition, InvalidArgument, RegistryError
from .files import CheckpointFiles
from .storage import PendingFile, Storage, is_digest
from .store import MODEL_FIELDS, VERSION_FIELDS, RegistryStore, _checkpoint_uuid
from .tables import (
    AliasChange,
    BlobHold,
    Checkpoint,
    CheckpointFile,
    Event,
    EventCounter,
    Model,
    ModelAlias,
    ModelLabel,
    ModelVersion,
)

FORMAT = "model-registry-export"
FORMAT_VERSION = 4
# Version 1 had no aliases, alias history or events; versions 1 and 2 kept the digests of stored
# files in each checkpoint's "file_digests" (path -> sha256) instead of "checkpoint_files"; versions
# 1 to 3 were bare JSON documents (without blobs), which an import still reads.
READABLE_VERSIONS = (1, 2, 3, 4)
DOCUMENT = "model-registry-export.json"
BLOBS = "blobs/"
GZIP_LEVEL = 6
_BATCH = 500
_CHUNK = 1024 * 1024
_SPOOL_BYTES = 64 * 1024 * 1024  # a larger document goes to a temporary file while it is written
_TIME = (convert._MIN_SECONDS * 1_000_000, convert._MAX_SECONDS * 1_000_000 + 999_999)  # what a Timestamp holds

_REQUIRED = object()
# The fields of each section's rows, with their JSON type and the value a row without them gets
# (documents of earlier versions lack some). "model_name" and "checkpoint_uuid" name the row a row
# belongs to; nothing refers to a row by its id.
FIELDS: dict[str, dict[str, tuple[type, Any]]] = {
    "checkpoints": {
        "uuid": (str, _REQUIRED), "experiment_id": (int, 0), "trial_id": (int, 0), "batch_number": (int, 0),
        "experiment_config": (dict, {}), "hparams": (dict, {}), "resources": (dict, {}), "metadata": (dict, {}),
        "framework": (str, ""), "format": (str, ""), "metrics": (dict, {}), "state": (int, _REQUIRED),
        "storage_uri": (str, ""), "report_time": (int, _REQUIRED), "creation_time": (int, _REQUIRED),
        "owner": (str, ""),
    },
    "checkpoint_files": {"checkpoint_uuid": (str, _REQUIRED), "path": (str, _REQUIRED), "size": (int, _REQUIRED), "sha256": (str, _REQUIRED)},
    "models": {
        "name": (str, _REQUIRED), "description": (str, ""), "metadata": (dict, {}), "labels": (list, []),
        "notes": (str, ""), "archived": (bool, False), "owner": (str, ""), "editors": (list, []),
        "creation_time": (int, _REQUIRED), "last_updated_time": (int, _REQUIRED), "last_assigned_version": (int, _REQUIRED),
    },
    "model_versions": {
        "model_name": (str, _REQUIRED), "version": (int, _REQUIRED), "checkpoint_uuid": (str, _REQUIRED),
        "name": (str, ""), "comment": (str, ""), "labels": (list, []), "metadata": (dict, {}), "notes": (str, ""),
        "owner": (str, ""), "creation_time": (int, _REQUIRED), "last_updated_time": (int, _REQUIRED),
    },
    "model_aliases": {"model_name": (str, _REQUIRED), "alias": (str, _REQUIRED), "version": (int, _REQUIRED)},
    "alias_changes": {
        "model_name": (str, _REQUIRED), "alias": (str, _REQUIRED), "previous_version": (int, _REQUIRED),
        "version": (int, _REQUIRED), "time": (int, _REQUIRED), "principal": (str, ""),
    },
    "events": {
        "sequence": (int, _REQUIRED), "time": (int, _REQUIRED), "principal": (str, ""), "kind": (int, _REQUIRED),
        "model_name": (str, ""), "version": (int, 0), "alias": (str, ""), "previous_version": (int, 0),
        "checkpoint_uuid": (str, ""), "new_model_name": (str, ""),
    },
}
# Fields earlier versions wrote that the registry derives from other rows: read and dropped.
_DERIVED = {"models": {"name_key", "num_versions", "latest_version"}, "checkpoints": {"file_digests"}}
SECTIONS = tuple(FIELDS)


class Refused(InvalidArgument):
    """An archive that is not imported: one line naming the row and what is wrong with it."""

    def __init__(self, where: str, problem: str) -> None:
        line = f"{where}: {problem}" if where else problem
        super().__init__("INVALID_EXPORT", " ".join(line.split())[:2000])


@contextlib.contextmanager
def _at(where: str) -> Iterator[None]:
    """Validators' refusals, as a refusal of the row at `where` (and of the field they name)."""
    try:
        yield
    except RegistryError as error:
        named = error.metadata.get("field")
        raise Refused(f"{where}.{named}" if named and not where.endswith(named) else where, error.message) from None
    except (TypeError, ValueError, AttributeError, KeyError) as error:
        raise Refused(where, str(error)) from None


# Export --------------------------------------------------------------------------------------------


def _columns(section: str) -> list[pw.Node]:
    table = {
        "checkpoints": Checkpoint, "checkpoint_files": CheckpointFile, "models": Model, "model_versions": ModelVersion,
        "model_aliases": ModelAlias, "alias_changes": AliasChange, "events": Event,
    }[section]
    joined = {"model_name": Model.name, "checkpoint_uuid": Checkpoint.uuid} if section != "events" else {}
    return [joined[name].alias(name) if name in joined else getattr(table, name) for name in FIELDS[section]]


def _queries() -> dict[str, Any]:
    return {
        "checkpoints": Checkpoint.select(*_columns("checkpoints")).order_by(Checkpoint.id),
        "checkpoint_files": CheckpointFile.select(*_columns("checkpoint_files")).join(Checkpoint).order_by(CheckpointFile.id),
        "models": Model.select(*_columns("models")).order_by(Model.id),
        "model_versions": ModelVersion.select(*_columns("model_versions"))
        .join(Model)
        .switch(ModelVersion)
        .join(Checkpoint)
        .order_by(ModelVersion.id),
        "model_aliases": ModelAlias.select(*_columns("model_aliases")).join(Model).order_by(ModelAlias.id),
        "alias_changes": AliasChange.select(*_columns("alias_changes")).join(Model).order_by(AliasChange.id),
        "events": Event.select(*_columns("events")).order_by(Event.sequence),
    }


def write_document(store: RegistryStore, out: IO[str], storage_uri: str = "", files: bool = False) -> tuple[dict[str, int], dict[str, int]]:
    """Writes the records as JSON to `out`, one row at a time, from one snapshot (one read
    transaction; REPEATABLE READ on PostgreSQL). Returns the counts of each section, and the blobs
    the stored files name (sha256 -> size)."""
    counts: dict[str, int] = {}
    blobs: dict[str, int] = {}
    with store.db.atomic():
        if not isinstance(store.db, pw.SqliteDatabase):
            store.db.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        last_sequence = EventCounter.select(EventCounter.last_sequence).scalar() or 0
        head = {"format": FORMAT, "format_version": FORMAT_VERSION, "files": files, "storage_uri": storage_uri,
                "last_event_sequence": last_sequence}
        out.write(json.dumps(head)[:-1])
        for section, query in _queries().items():
            out.write(f', "{section}": [')
            count = 0
            for row in query.dicts().iterator():
                out.write((",\n" if count else "\n") + json.dumps(row, sort_keys=True, ensure_ascii=False))
                count += 1
                if section == "checkpoint_files":
                    blobs.setdefault(row["sha256"], row["size"])
            out.write("\n]")
            counts[section] = count
        out.write("}\n")
    return counts, blobs


class _Reading:
    """A blob's bytes as they are copied, hashed on the way."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.digest.update(data)
        self.count += len(data)
        return data


def _open_blob(storage: Storage, digest: str) -> BinaryIO | None:
    """The blob, else the copy a garbage collector has set aside for a moment."""
    for attempt in (storage.open, storage.open_trashed, storage.open):
        with contextlib.suppress(FileNotFoundError):
            file = attempt(digest)
            if file is not None:
                return file
    return None


def export_registry(
    store: RegistryStore, out: BinaryIO, storage: Storage, *, files: bool = True, compress: bool = False
) -> dict[str, int]:
    """Writes the archive to `out`: the records from one snapshot, then (with `files`) each blob they
    name, its digest checked as it is read. Returns counts, "blobs" and "blob_bytes" included."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        text = io.TextIOWrapper(spool, encoding="utf-8")
        counts, blobs = write_document(store, text, storage.uri(), files)
        text.flush()
        size = spool.tell()
        spool.seek(0)
        zipped = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) if compress else None
        with tarfile.open(fileobj=zipped or out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_member(DOCUMENT, size), spool)
            if files:
                for digest, blob_size in sorted(blobs.items()):
                    _add_blob(tar, storage, digest, blob_size)
        text.detach()
        if zipped is not None:
            zipped.close()
        out.flush()
    counts["blobs"] = len(blobs) if files else 0
    counts["blob_bytes"] = sum(blobs.values()) if files else 0
    return counts


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o600
    return info


def _add_blob(tar: tarfile.TarFile, storage: Storage, digest: str, size: int) -> None:
    file = _open_blob(storage, digest)
    if file is None:
        raise DataLoss(
            "CHECKPOINT_FILE_MISSING",
            f"blob {digest} is missing from the storage {storage.uri()} (its checkpoint was deleted during the "
            "export? export again)",
        )
    with file:
        reading = _Reading(file)
        try:
            tar.addfile(_member(BLOBS + digest, size), reading)
        except OSError:
            if reading.count >= size:
                raise  # the output failed, not the blob
        if reading.count != size or file.read(1) or reading.digest.hexdigest() != digest:
            raise DataLoss(
                "CHECKPOINT_FILE_MISSING",
                f"blob {digest} in the storage {storage.uri()} is damaged: its bytes do not match their digest "
                f"or recorded size {size}",
            )


# Import: the document ------------------------------------------------------------------------------


@dataclass
class Plan:
    """A document checked through and through: the rows to insert, in order, and the blobs they name."""

    sections: dict[str, list[dict[str, Any]]]
    last_event_sequence: int
    storage_uri: str
    files: bool  # the archive carries the blobs
    blobs: dict[str, tuple[int, str]] = field(default_factory=dict)  # sha256 -> (size, where it is named)

    def counts(self) -> dict[str, int]:
        return {section: len(rows) for section, rows in self.sections.items()}


def _shape(section: str, index: int, row: Any) -> dict[str, Any]:
    """A row with every field of its section, each of its JSON type; ids and unknown fields refused."""
    where = f"{section}[{index}]"
    if not isinstance(row, dict):
        raise Refused(where, "must be a JSON object")
    values = {}
    for name, (kind, default) in FIELDS[section].items():
        value = row.get(name, default)
        if value is _REQUIRED:
            raise Refused(f"{where}.{name}", "is missing")
        value = copy.deepcopy(value) if value is default else value
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise Refused(f"{where}.{name}", f"must be a JSON {_JSON_TYPES[kind]}, not {_json_type(value)}")
        values[name] = value
    for name in row:
        if name == "id" or name.endswith("_id") and name not in FIELDS[section]:
            raise Refused(f"{where}.{name}", "ids are not imported: the registry hands them out anew")
        if name not in FIELDS[section] and name not in _DERIVED.get(section, ()):
            raise Refused(f"{where}.{name}", f"is not a field of {section}")
    return values


_JSON_TYPES = {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _JSON_TYPES.items() if isinstance(value, kind)), type(value).__name__)


def _time(value: int, where: str) -> None:
    with _at(where):
        validation.integer(value, where.rsplit(".", 1)[-1], *_TIME)


def _principal(value: str, where: str) -> None:
    """An owner or principal: empty (written without authentication) or a principal's name."""
    if value:
        with _at(where):
            validation.principals([value], where.rsplit(".", 1)[-1])


def _uuid(value: str, where: str) -> str:
    with _at(where):
        canonical = _checkpoint_uuid(value)
    if canonical != value:
        raise Refused(where, f"{value[:64]!r} is not a UUID in its lower-case canonical form (as the registry writes them)")
    return value


def read_document(data: Any) -> Plan:
    """Checks a parsed document as the RPCs check what they store, then as a whole; raises Refused
    naming the first row that is wrong. Writes nothing."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise Refused("", f"not a {FORMAT} document")
    version = data.get("format_version")
    if version not in READABLE_VERSIONS:
        raise Refused("format_version", f"{str(version)[:16]} is not one this release reads ({', '.join(map(str, READABLE_VERSIONS))})")
    sections = {}
    for section in SECTIONS:
        rows = data.get(section, [])
        if not isinstance(rows, list):
            raise Refused(section, "must be a JSON array")
        sections[section] = [_shape(section, index, row) for index, row in enumerate(rows)]
    legacy_files = []
    for index, row in enumerate(data.get("checkpoints", [])):  # versions 1 and 2
        digests = row.get("file_digests") or {}
        if not isinstance(digests, dict):
            raise Refused(f"checkpoints[{index}].file_digests", "must be a JSON object")
        sizes = row.get("resources") or {}
        legacy_files += [
            {"checkpoint_uuid": row.get("uuid"), "path": path, "size": sizes.get(path, 0), "sha256": digest}
            for path, digest in digests.items()
        ]
    offset = len(sections["checkpoint_files"])
    sections["checkpoint_files"] += [_shape("checkpoint_files", offset + i, row) for i, row in enumerate(legacy_files)]
    last_sequence = data.get("last_event_sequence", 0)
    with _at("last_event_sequence"):
        validation.integer(last_sequence, "last_event_sequence", 0, validation.INT64_MAX)
    storage_uri = data.get("storage_uri", "")
    if not isinstance(storage_uri, str):
        raise Refused("storage_uri", "must be a JSON string")
    plan = Plan(sections, last_sequence, storage_uri, data.get("files") is True)
    _check(plan)
    return plan


def _check(plan: Plan) -> None:
    """The rows of each section, each as the RPCs check it, then the document as a whole."""
    checkpoints = _check_checkpoints(plan.sections["checkpoints"])
    _check_files(plan, checkpoints)
    models = _check_models(plan.sections["models"])
    versions = _check_versions(plan.sections["model_versions"], models, checkpoints)
    _check_aliases(plan.sections["model_aliases"], models, versions)
    _check_alias_changes(plan.sections["alias_changes"], models)
    _check_events(plan.sections["events"], plan.last_event_sequence)


def _check_checkpoints(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    checkpoints: dict[str, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        where = f"checkpoints[{index}]"
        uuid = _uuid(row["uuid"], f"{where}.uuid")
        if uuid in checkpoints:
            raise Refused(f"{where}.uuid", f"checkpoint {uuid} is in the backup twice")
        if not row["state"]:
            raise Refused(f"{where}.state", "must be a checkpoint state")
        with _at(where):
            RegistryStore._checkpoint_values(row)  # the store's rules: ranges, JSON, texts, resources, state
        for column in ("report_time", "creation_time"):
            _time(row[column], f"{where}.{column}")
        _principal(row["owner"], f"{where}.owner")
        with _at(where):
            convert.checkpoint(Checkpoint(**row))  # what is stored can be answered
        checkpoints[uuid] = row
    return checkpoints


def _check_files(plan: Plan, checkpoints: dict[str, dict[str, Any]]) -> None:
    """Stored files: paths confined to their checkpoint, none both a file and a directory, the caps
    per checkpoint; one size per blob. Fills plan.blobs."""
    paths: dict[str, dict[str, int]] = defaultdict(dict)
    for index, row in enumerate(plan.sections["checkpoint_files"]):
        where = f"checkpoint_files[{index}]"
        uuid = _uuid(row["checkpoint_uuid"], f"{where}.checkpoint_uuid")
        if uuid not in checkpoints:
            raise Refused(f"{where}.checkpoint_uuid", f"no checkpoint {uuid} in the backup")
        with _at(f"{where}.path"):
            validation.file_path(row["path"], portable=False)  # files stored before the Windows rules stay
        with _at(f"{where}.size"):
            validation.integer(row["size"], "size", 0, validation.INT64_MAX)
        if not is_digest(row["sha256"]):
            raise Refused(f"{where}.sha256", "must be 64 lower-case hexadecimal digits")
        if row["path"] in paths[uuid]:
            raise Refused(f"{where}.path", f"checkpoint {uuid} lists {row['path']!r} twice")
        paths[uuid][row["path"]] = index
        size, named = plan.blobs.setdefault(row["sha256"], (row["size"], where))
        if size != row["size"]:
            raise Refused(f"{where}.size", f"{row['size']} differs from the size of the same blob in {named} ({size})")
    for uuid, stored in paths.items():
        directories = {directory for path in stored for directory in ancestors(path)}
        for path in stored.keys() & directories:
            raise Refused(f"checkpoint_files[{stored[path]}].path", f"{path!r} is both a file and a directory of checkpoint {uuid}")
        with _at(f"checkpoint {uuid}"):
            validation.resource_budget(len(stored), sum(len(path.encode()) for path in stored))


def _check_models(rows: list[dict[str, Any]]) -> dict[str, tuple[int, dict[str, Any]]]:
    """Models by name (with their index); each gets its name_key, and version counts to come."""
    models: dict[str, tuple[int, dict[str, Any]]] = {}
    keys: dict[str, int] = {}
    for index, row in enumerate(rows):
        where = f"models[{index}]"
        with _at(f"{where}.name"):
            name = validation.name(row["name"])
        if name != row["name"]:
            raise Refused(f"{where}.name", "must be in Unicode NFC, as the registry stores names")
        key = validation.name_key(name)
        if key in keys:
            other = rows[keys[key]]["name"]
            same = "is" if other == name else f"and {other!r} (models[{keys[key]}]) are"
            raise Refused(
                f"{where}.name",
                f"{name!r} {same} in the backup twice (names that differ only by case or Unicode form are the same name)",
            )
        keys[key] = index
        with _at(where):
            RegistryStore._validated_changes({f: row[f] for f in MODEL_FIELDS}, MODEL_FIELDS)
        _principal(row["owner"], f"{where}.owner")
        for column in ("creation_time", "last_updated_time"):
            _time(row[column], f"{where}.{column}")
        with _at(f"{where}.last_assigned_version"):
            validation.integer(row["last_assigned_version"], "last_assigned_version")
        row["labels"] = validation.labels(row["labels"])
        row["editors"] = validation.principals(row["editors"], "editors")
        row.update(name_key=key, num_versions=0, latest_version=0)
        models[name] = (index, row)
    return models


def _model_of(models: dict[str, tuple[int, dict[str, Any]]], row: dict[str, Any], where: str) -> dict[str, Any]:
    if row["model_name"] not in models:
        raise Refused(f"{where}.model_name", f"no model {row['model_name'][:256]!r} in the backup")
    return models[row["model_name"]][1]


def _check_versions(
    rows: list[dict[str, Any]], models: dict[str, tuple[int, dict[str, Any]]], checkpoints: dict[str, dict[str, Any]]
) -> set[tuple[str, int]]:
    """Versions of existing models and COMPLETED checkpoints; each model's counters follow them,
    and its last_assigned_version must not hand out a number again. Returns (model, version)s."""
    versions: set[tuple[str, int]] = set()
    for index, row in enumerate(rows):
        where = f"model_versions[{index}]"
        model = _model_of(models, row, where)
        with _at(f"{where}.version"):
            validation.version(validation.integer(row["version"], "version"))
        if (model["name"], row["version"]) in versions:
            raise Refused(f"{where}.version", f"version {row['version']} of model {model['name']!r} is in the backup twice")
        versions.add((model["name"], row["version"]))
        uuid = _uuid(row["checkpoint_uuid"], f"{where}.checkpoint_uuid")
        if uuid not in checkpoints:
            raise Refused(f"{where}.checkpoint_uuid", f"no checkpoint {uuid} in the backup")
        if checkpoints[uuid]["state"] != checkpoint_pb2.CHECKPOINT_STATE_COMPLETED:
            raise Refused(f"{where}.checkpoint_uuid", f"checkpoint {uuid} is not COMPLETED, and only those are registered")
        with _at(where):
            RegistryStore._validated_changes({f: row[f] for f in VERSION_FIELDS}, VERSION_FIELDS)
        row["labels"] = validation.labels(row["labels"])
        _principal(row["owner"], f"{where}.owner")
        for column in ("creation_time", "last_updated_time"):
            _time(row[column], f"{where}.{column}")
        model["num_versions"] += 1
        model["latest_version"] = max(model["latest_version"], row["version"])
    for index, model in models.values():
        if model["last_assigned_version"] < model["latest_version"]:
            raise Refused(
                f"models[{index}].last_assigned_version",
                f"{model['last_assigned_version']} is below version {model['latest_version']} of the model: the "
                "registry would hand out a number it has given already",
            )
    return versions


def _check_aliases(
    rows: list[dict[str, Any]], models: dict[str, tuple[int, dict[str, Any]]], versions: set[tuple[str, int]]
) -> None:
    per_model: Counter[str] = Counter()
    named: set[tuple[str, str]] = set()
    for index, row in enumerate(rows):
        where = f"model_aliases[{index}]"
        model = _model_of(models, row, where)
        with _at(f"{where}.alias"):
            validation.alias(row["alias"])
        if (model["name"], row["alias"]) in named:
            raise Refused(f"{where}.alias", f"alias {row['alias']!r} of model {model['name']!r} is in the backup twice")
        named.add((model["name"], row["alias"]))
        if (model["name"], row["version"]) not in versions:
            raise Refused(f"{where}.version", f"model {model['name']!r} has no version {row['version']} in the backup")
        per_model[model["name"]] += 1
        if per_model[model["name"]] > validation.MAX_ALIASES_PER_MODEL:
            raise Refused(where, f"model {model['name']!r} has more than {validation.MAX_ALIASES_PER_MODEL} aliases")


def _check_alias_changes(rows: list[dict[str, Any]], models: dict[str, tuple[int, dict[str, Any]]]) -> None:
    for index, row in enumerate(rows):
        where = f"alias_changes[{index}]"
        _model_of(models, row, where)
        with _at(f"{where}.alias"):
            validation.alias(row["alias"])
        for column in ("previous_version", "version"):
            with _at(f"{where}.{column}"):
                validation.integer(row[column], column)  # 0: none
        _time(row["time"], f"{where}.time")
        _principal(row["principal"], f"{where}.principal")


def _check_events(rows: list[dict[str, Any]], last_event_sequence: int) -> None:
    """Events: unique sequences, known kinds, values that read back; the counter at or past the last."""
    sequences: set[int] = set()
    kinds = set(event_pb2.EventKind.values()) - {0}
    for index, row in enumerate(rows):
        where = f"events[{index}]"
        with _at(f"{where}.sequence"):
            validation.integer(row["sequence"], "sequence", 1, validation.INT64_MAX)
        if row["sequence"] in sequences:
            raise Refused(f"{where}.sequence", f"event {row['sequence']} is in the backup twice")
        sequences.add(row["sequence"])
        if row["kind"] not in kinds:
            raise Refused(f"{where}.kind", f"{row['kind']} is not an event kind")
        _time(row["time"], f"{where}.time")
        _principal(row["principal"], f"{where}.principal")
        for column in ("model_name", "new_model_name"):
            with _at(f"{where}.{column}"):
                validation.text(row[column], column, validation.MAX_NAME_LENGTH)  # names as they were then
        for column in ("version", "previous_version"):
            with _at(f"{where}.{column}"):
                validation.integer(row[column], column)
        if row["alias"]:
            with _at(f"{where}.alias"):
                validation.alias(row["alias"])
        if row["checkpoint_uuid"]:
            _uuid(row["checkpoint_uuid"], f"{where}.checkpoint_uuid")
        with _at(where):
            convert.event(Event(**row))
    highest = max(sequences, default=0)
    if last_event_sequence < highest:
        raise Refused(
            "last_event_sequence",
            f"{last_event_sequence} is below the highest event's sequence ({highest}): the registry would "
            "number new events with numbers it has given already",
        )


# Import: the archive -------------------------------------------------------------------------------


def _refuse_not_empty() -> None:
    if Model.select().exists() or Checkpoint.select().exists() or Event.select().exists():
        raise FailedPrecondition("REGISTRY_NOT_EMPTY", "import loads into an empty registry only")


def open_archive(source: IO[bytes]) -> tuple[Plan, Iterator[tuple[str, int, IO[bytes]]]]:
    """Reads the document of an archive (or a bare JSON document of versions 1 to 3) and checks it;
    returns the plan and the archive's blobs still to read, as (name, size, bytes)."""
    raw: Any = source
    reader = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    head = reader.peek(512)[:512]
    if head.lstrip()[:1] == b"{":
        return read_document(_parse(reader)), iter(())
    try:
        tar = tarfile.open(fileobj=reader, mode="r|*")  # noqa: SIM115 (read by the generator below)
        first = tar.next()
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise Refused("", f"not an export archive (a tar, optionally gzip-compressed, or a JSON document): {error}") from None
    if first is None or first.name != DOCUMENT or not first.isreg():
        raise Refused("", f"not an export archive: its first member is not {DOCUMENT}")
    plan = read_document(_parse(tar.extractfile(first)))  # type: ignore[arg-type]

    def blobs() -> Iterator[tuple[str, int, IO[bytes]]]:
        try:
            while (member := tar.next()) is not None:
                if not member.isreg():
                    raise Refused(member.name[:300], "is not a regular file")
                yield member.name, member.size, tar.extractfile(member)  # type: ignore[misc]
        except (tarfile.TarError, EOFError, zlib.error) as error:
            raise Refused("", f"the archive is damaged or truncated: {error}") from None

    return plan, blobs()


def _parse(file: IO[bytes]) -> Any:
    try:
        return json.loads(file.read())
    except (ValueError, EOFError, tarfile.TarError, zlib.error) as error:
        raise Refused(DOCUMENT, f"not a JSON document: {error}") from None


def import_registry(store: RegistryStore, source: IO[bytes], storage: Storage) -> dict[str, int]:
    """Loads an archive into an empty registry: the document is checked, then every blob is copied
    into `storage` under a temporary name and its digest checked, every blob the records name must
    be there (in the archive, or in the storage already), and only then are the blobs placed and the
    records written, in one transaction. A refusal leaves the registry and the storage as they were."""
    with store.db.connection_context():
        _refuse_not_empty()
    plan, members = open_archive(source)
    upload = uuidlib.uuid4().hex  # (blob_hold.upload holds 32 characters)
    pending: list[tuple[PendingFile, str]] = []
    try:
        received = _receive(plan, members, storage, upload, pending)
        _check_present(plan, received, storage)
        return _write(store, plan, storage, upload, pending)
    finally:
        for file, _ in pending:
            file.discard()
        storage.remove_upload(upload)


def _receive(
    plan: Plan, members: Iterator[tuple[str, int, IO[bytes]]], storage: Storage, upload: str, pending: list[tuple[PendingFile, str]]
) -> set[str]:
    received: set[str] = set()
    for name, size, data in members:
        digest = name[len(BLOBS):] if name.startswith(BLOBS) else ""
        if not is_digest(digest):
            raise Refused(name[:300], "is not a member of an export archive")
        if digest not in plan.blobs:
            raise Refused(name, "is not a file any checkpoint of the backup holds")
        if digest in received:
            raise Refused(name, "is in the archive twice")
        if size != plan.blobs[digest][0]:
            raise Refused(name, f"holds {size} bytes where {plan.blobs[digest][1]} says {plan.blobs[digest][0]}")
        file = storage.create(upload)
        pending.append((file, digest))
        hashed = hashlib.sha256()
        try:
            while chunk := data.read(_CHUNK):
                hashed.update(chunk)
                file.write(chunk)
        except (tarfile.TarError, EOFError, zlib.error) as error:
            raise Refused(name, f"the archive is damaged or truncated: {error}") from None
        if hashed.hexdigest() != digest:
            raise Refused(name, "its bytes do not match their sha256: the archive was damaged or altered")
        file.seal()
        received.add(digest)
    return received


def _check_present(plan: Plan, received: set[str], storage: Storage) -> None:
    for digest, (_, where) in plan.blobs.items():
        if digest in received:
            continue
        file = _open_blob(storage, digest)
        if file is None:
            hint = (
                "" if plan.files else
                " (the backup was exported with --no-files: copy the blobs/ of the old storage into the new one first)"
            )
            raise Refused(f"{where}.sha256", f"blob {digest} is neither in the archive nor in the storage {storage.uri()}{hint}")
        file.close()


def _write(
    store: RegistryStore, plan: Plan, storage: Storage, upload: str, pending: list[tuple[PendingFile, str]]
) -> dict[str, int]:
    """Holds and places the blobs (as an upload does: files.py), then writes every row in one
    transaction, which drops the holds; on failure, the blobs placed go again."""
    files = CheckpointFileStore(store)
    digests = {digest for _, digest in pending}
    with store.db.connection_context():
        if digests:
            files.hold(upload, digests)
        try:
            if pending:
                storage.place(pending)
                pending.clear()
            with store.tx.write():
                _refuse_not_empty()
                _insert_rows(plan, storage.uri())
                BlobHold.delete().where(BlobHold.upload == upload).execute()
        except BaseException:
            with contextlib.suppress(Exception):
                files.release(upload)
                CheckpointFiles(store, storage)._collect(digests)
            raise
    counts = plan.counts()
    counts["blobs"] = len(digests)
    return counts


def _insert_rows(plan: Plan, storage_uri: str) -> None:
    s = plan.sections
    for row in s["checkpoints"]:
        if plan.storage_uri and row["storage_uri"] == plan.storage_uri:
            row["storage_uri"] = storage_uri  # the files are in this registry's storage now
    _insert(Checkpoint, s["checkpoints"])
    checkpoint_ids = _ids(Checkpoint.select(Checkpoint.uuid, Checkpoint.id))
    _insert(CheckpointFile, [_refer(row, checkpoint=checkpoint_ids.get) for row in s["checkpoint_files"]])
    _insert(Model, s["models"])
    model_ids = _ids(Model.select(Model.name, Model.id))
    _insert(ModelLabel, [{"model": model_ids[row["name"]], "label": label} for row in s["models"] for label in row["labels"]])
    _insert(ModelVersion, [_refer(row, model=model_ids.get, checkpoint=checkpoint_ids.get) for row in s["model_versions"]])
    _insert(ModelAlias, [_refer(row, model=model_ids.get) for row in s["model_aliases"]])
    _insert(AliasChange, [_refer(row, model=model_ids.get) for row in s["alias_changes"]])
    _insert(Event, s["events"])
    EventCounter.update(last_sequence=plan.last_event_sequence).execute()


def _ids(query: Any) -> dict[str, int]:
    """The target's ids of the rows just inserted, by name or uuid."""
    return dict(query.tuples())


def _refer(row: dict[str, Any], **ids: Callable[[str], int | None]) -> dict[str, Any]:
    """A row with the model and checkpoint it names by name and uuid given by the target's ids."""
    names = {"model": "model_name", "checkpoint": "checkpoint_uuid"}
    values = {k: v for k, v in row.items() if k not in names.values()}
    values.update({column: lookup(row[names[column]]) for column, lookup in ids.items()})
    return values


def _insert(table: type[pw.Model], rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), _BATCH):
        table.insert_many(rows[start : start + _BATCH]).execute()
