"""Rows as the store hands them out: plain named tuples read straight from the database's cursor,
with JSON decoded, in a column order defined once here (and selected by peewee-built SQL in that
order). No peewee model instance is made on a read path: building one, with its field converters,
cost as much as the query itself (see prepared.py). convert.py turns these into messages."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import peewee as pw

from .tables import Checkpoint, Model, ModelVersion


class ModelRow(NamedTuple):
    id: int
    name: str
    description: str
    metadata: dict[str, Any]
    labels: list[str]
    notes: str
    archived: bool
    owner: str
    editors: list[str]
    creation_time: int
    last_updated_time: int
    num_versions: int
    latest_version: int


class CheckpointRow(NamedTuple):
    id: int
    uuid: str
    experiment_id: int
    trial_id: int
    batch_number: int
    experiment_config: dict[str, Any]
    hparams: dict[str, Any]
    resources: dict[str, int]
    metadata: dict[str, Any]
    framework: str
    format: str
    metrics: dict[str, Any]
    state: int
    storage_uri: str
    report_time: int
    owner: str


class VersionRow(NamedTuple):
    id: int
    model_id: int
    version: int
    name: str
    comment: str
    labels: list[str]
    metadata: dict[str, Any]
    notes: str
    owner: str
    creation_time: int
    last_updated_time: int
    model_name: str
    checkpoint: CheckpointRow
    aliases: list[str]


MODEL_COLUMNS: tuple[pw.Field, ...] = tuple(getattr(Model, name) for name in ModelRow._fields)
CHECKPOINT_COLUMNS: tuple[pw.Field, ...] = tuple(getattr(Checkpoint, name) for name in CheckpointRow._fields)
_VERSION_OWN = VersionRow._fields[:11]  # the version's own columns, before model_name
VERSION_COLUMNS: tuple[pw.Node, ...] = (
    *(ModelVersion.model if name == "model_id" else getattr(ModelVersion, name) for name in _VERSION_OWN),
    Model.name,
    *CHECKPOINT_COLUMNS,
)
_JSON_FIELDS = {"metadata", "labels", "editors", "experiment_config", "hparams", "resources", "metrics"}


def _reader(fields: Sequence[str], json_is_text: bool) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A function from a raw row (in `fields` order) to its values with JSON decoded and booleans
    made booleans: SQLite keeps JSON as text and booleans as 0/1, PostgreSQL's driver decodes both."""
    json_at = [i for i, name in enumerate(fields) if name in _JSON_FIELDS]
    bool_at = [i for i, name in enumerate(fields) if name == "archived"]
    if not json_is_text:
        return tuple
    loads = json.loads

    def read(raw: Sequence[Any]) -> tuple[Any, ...]:
        values = list(raw)
        for i in json_at:
            value = values[i]
            if isinstance(value, str):  # empty objects and lists are most of them: no parse for those
                values[i] = {} if value == "{}" else [] if value == "[]" else loads(value)
        for i in bool_at:
            values[i] = bool(values[i])
        return tuple(values)

    return read


class RowReaders:
    """The readers of one database's raw rows into ModelRow, CheckpointRow and VersionRow."""

    def __init__(self, db: pw.Database) -> None:
        text = isinstance(db, pw.SqliteDatabase)
        self._model = _reader(ModelRow._fields, text)
        self._checkpoint = _reader(CheckpointRow._fields, text)
        self._version = _reader(_VERSION_OWN, text)

    def model(self, raw: Sequence[Any]) -> ModelRow:
        return ModelRow._make(self._model(raw))

    def checkpoint(self, raw: Sequence[Any]) -> CheckpointRow:
        """A row of CHECKPOINT_COLUMNS (anything after them, e.g. a sort value, is left out)."""
        return CheckpointRow._make(self._checkpoint(raw[: len(CheckpointRow._fields)]))

    def version(self, raw: Sequence[Any]) -> VersionRow:
        """A row of VERSION_COLUMNS followed by the aliases (a comma-separated string or NULL)."""
        own = len(_VERSION_OWN)
        checkpoint_end = own + 1 + len(CHECKPOINT_COLUMNS)
        aliases = raw[checkpoint_end] if len(raw) > checkpoint_end else None
        return VersionRow._make(
            (*self._version(raw[:own]), raw[own], self.checkpoint(raw[own + 1 : checkpoint_end]), aliases.split(",") if aliases else [])
        )


def checkpoint_of(checkpoint: Checkpoint) -> CheckpointRow:
    """The row of a checkpoint just written, from its instance (no read back)."""
    return CheckpointRow._make(getattr(checkpoint, name) for name in CheckpointRow._fields)


def version_row(
    row_id: int, values: dict[str, Any], model_name: str, checkpoint: CheckpointRow, aliases: list[str]
) -> VersionRow:
    """The row of a version just inserted with `values` (ModelVersion's fields), without a read back."""
    own = {**values, "id": row_id, "model_id": values["model"]}
    return VersionRow._make((*(own[name] for name in _VERSION_OWN), model_name, checkpoint, aliases))


def aliases_of_version(sqlite: bool) -> pw.Node:
    """The names of the aliases pointing at the selected version, sorted, comma-separated (alias names
    hold no comma), in one correlated subquery: one statement reads a version with its aliases."""
    if sqlite:
        opening = "(SELECT group_concat(alias, ',') FROM (SELECT alias FROM model_alias AS a WHERE a.model_id = "
        closing = " ORDER BY alias))"
    else:
        opening = "(SELECT string_agg(alias, ',' ORDER BY alias) FROM model_alias AS a WHERE a.model_id = "
        closing = ")"
    return pw.NodeList(
        (pw.SQL(opening), ModelVersion.model, pw.SQL(" AND a.version = "), ModelVersion.version, pw.SQL(closing)),
        glue="",
    ).alias("aliases")
