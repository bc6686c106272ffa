"""Every query and transaction of the registry. Knows nothing of gRPC: it takes and returns Python
values and table rows, and raises the domain errors of `errors`."""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import peewee as pw

from . import paging, validation
from .prepared import PreparedQuery, insert_returning, param
from .db import is_sqlite
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    checkpoint_not_found,
    invalid,
    model_not_found,
    version_not_found,
)
from .tables import Checkpoint, Model, ModelCount, ModelLabel, ModelVersion

# Checkpoint states, as numbered in checkpoint.proto (the store keeps the numbers, not the names).
STATE_UNSPECIFIED, STATE_ACTIVE, STATE_COMPLETED = 0, 1, 2
KNOWN_STATES = range(1, 6)

MODEL_SORT_KEYS = {
    "name": Model.name,
    "description": Model.description,
    "creation_time": Model.creation_time,
    "last_updated_time": Model.last_updated_time,
    "num_versions": Model.num_versions,
}
MODEL_FIELDS = ("description", "metadata", "labels", "notes")
VERSION_FIELDS = ("name", "comment", "labels", "metadata", "notes")


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class ModelQuery:
    """Filters and sort of ListModels, as plain values."""

    sort_by: str = "name"
    descending: bool = False
    name: str = ""
    description: str = ""
    labels: list[str] = field(default_factory=list)
    archived: bool | None = None
    owner: str = ""


@dataclass
class CheckpointQuery:
    """Filters and sort of ListCheckpoints, as plain values."""

    experiment_id: int | None = None
    trial_id: int | None = None
    sort_by_metric: str = ""
    smaller_is_better: bool = False


def _after(columns: list[Any], values: list[Any], descending: bool) -> pw.Expression:
    """Rows after `values` in the order of `columns`: one row-value comparison, an index range."""
    if len(columns) == 1:
        return columns[0] < values[0] if descending else columns[0] > values[0]
    left, right = pw.Tuple(*columns), pw.Tuple(*values)
    return left < right if descending else left > right


class RegistryStore:
    """The registry's data, on one peewee database (SQLite or PostgreSQL)."""

    def __init__(self, db: pw.Database) -> None:
        self.db = db
        self._sqlite = is_sqlite(db)
        # SQLite takes one writer at a time, and a writer that finds the lock taken polls for it with
        # sleeps of up to 100 ms (busy_timeout): at 16 writes in flight that cut throughput ~5-fold.
        # Writers of this process queue on a lock instead; other processes still meet busy_timeout.
        self._write_lock = threading.Lock() if self._sqlite else contextlib.nullcontext()
        # The hot reads, built once (see prepared.py); the tables must be bound to `db` already.
        self._model_by_name = PreparedQuery(Model.select().where(Model.name == param("name")).limit(1))
        versions = self._versions().where(Model.name == param("model_name"))
        # The model row knows its latest number: one (model, version) index lookup, where ORDER BY
        # version DESC LIMIT 1 made PostgreSQL read and sort all of the model's versions.
        self._latest_version = PreparedQuery(versions.where(ModelVersion.version == Model.latest_version).limit(1))
        self._version = PreparedQuery(versions.where(ModelVersion.version == param("version")).limit(1))
        self._checkpoint_by_uuid = PreparedQuery(Checkpoint.select().where(Checkpoint.uuid == param("uuid")).limit(1))
        # The hot writes: CreateModel and CreateModelVersion.
        self._insert_model = insert_returning(
            Model, [getattr(Model, f) for f in ("name", "owner", "creation_time", "last_updated_time", *MODEL_FIELDS)]
        )
        self._insert_version = insert_returning(
            ModelVersion,
            [getattr(ModelVersion, f) for f in
             ("model", "version", "checkpoint", "owner", "creation_time", "last_updated_time", *VERSION_FIELDS)],
        )
        next_version = Model.last_assigned_version + 1
        self._take_version_number = PreparedQuery(
            Model.update(
                last_assigned_version=next_version,
                latest_version=next_version,
                num_versions=Model.num_versions + 1,
                last_updated_time=param("now", Model.last_updated_time),
            ).where(Model.name == param("name")).returning(Model)
        )

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction. On SQLite it takes the write lock at BEGIN, so that two writers never
        read the same state and then collide on upgrading their locks."""
        with self._write_lock, self.db.atomic(**({"lock_type": "IMMEDIATE"} if self._sqlite else {})):
            yield

    # Models -------------------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        labels: list[str] | None = None,
        notes: str = "",
        owner: str = "",
    ) -> Model:
        values = {
            "name": validation.name(name),
            "description": validation.text(description, "description"),
            "metadata": validation.json_object(metadata or {}, "metadata"),
            "labels": validation.labels(labels or []),
            "notes": validation.notes(notes),
            "owner": owner,
        }
        now = now_us()
        try:
            with self._write():
                model = self._insert_model.first(self.db, creation_time=now, last_updated_time=now, **values)
                self._add_label_rows(model.id, values["labels"])
        except pw.IntegrityError:
            raise AlreadyExists("MODEL_ALREADY_EXISTS", f"model {name!r} already exists", model_name=name)
        return model

    def get_model(self, name: str) -> Model:
        model = self._model_by_name.first(self.db, name=name)
        if model is None:
            raise model_not_found(name)
        return model

    def list_models(self, query: ModelQuery, page_size: int = 0, page_token: str = "") -> paging.Page[Model]:
        size = validation.page_size(page_size)
        key = MODEL_SORT_KEYS[query.sort_by]
        # Names are unique, so they order alone; other keys are made unique with the id.
        columns = [key] if key is Model.name else [key, Model.id]
        types = [str] if key is Model.name else [str if key is Model.description else int, int]
        fingerprint = ["models", query.__dict__]
        after = paging.decode(page_token, fingerprint, types)

        filters = []
        if query.name:
            filters.append(self._name_contains(query.name))
        if query.description:
            filters.append(Model.description.contains(query.description))
        for label in query.labels:
            filters.append(Model.id.in_(ModelLabel.select(ModelLabel.model).where(ModelLabel.label == label)))
        if query.archived is not None:
            filters.append(Model.archived == query.archived)
        if query.owner:
            filters.append(Model.owner == query.owner)

        def select() -> pw.ModelSelect:
            return Model.select().where(*filters) if filters else Model.select()

        rows_query = select()
        if after is not None:
            rows_query = rows_query.where(_after(columns, after, query.descending))
        order = [c.desc() if query.descending else c.asc() for c in columns]
        rows = list(rows_query.order_by(*order).limit(size + 1))
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = paging.encode(fingerprint, [getattr(rows[-1], c.name) for c in columns])
        # Unfiltered: the count the triggers keep, O(1). Filtered: an exact COUNT over the matches,
        # which costs what the filter's scan costs (a name or description substring scans every row).
        total = select().count() if filters else ModelCount.select(ModelCount.models).scalar()
        return paging.Page(rows, token, total)

    def _name_contains(self, text: str) -> pw.Expression:
        """Models whose name contains `text`, case-insensitively. On SQLite, texts of three or more
        characters are looked up in the trigram index of migration 0003 (its LIKE takes no ESCAPE, so
        texts with LIKE wildcards take the scan)."""
        if self._sqlite and len(text) >= 3 and not any(c in text for c in "%_\\"):
            return Model.id.in_(pw.SQL("(SELECT rowid FROM model_name_search WHERE name LIKE ?)", [f"%{text}%"]))
        return Model.name.contains(text)

    def _lock_model(
        self, model_name: str, *, editable: bool = True, prepared: PreparedQuery | None = None, **changes: Any
    ) -> Model:
        """Updates the model row first, so that the row (PostgreSQL) or the database (SQLite) is locked
        before anything is read; returns the row as updated. Refuses archived models when `editable`.
        `prepared`: an UPDATE built once, run with `changes` as its values. Call inside a write
        transaction: raising rolls the update back."""
        if prepared is not None:
            model = prepared.first(self.db, name=model_name, **changes)
        else:
            changes.setdefault("last_updated_time", now_us())
            model = next(iter(Model.update(**changes).where(Model.name == model_name).returning(Model).execute()), None)
        if model is None:
            raise model_not_found(model_name)
        if editable and model.archived:
            raise FailedPrecondition(
                "MODEL_ARCHIVED", f"model {model_name!r} is archived; unarchive it first", model_name=model_name
            )
        return model

    def _set_label_rows(self, model_id: int, labels: list[str]) -> None:
        ModelLabel.delete().where(ModelLabel.model == model_id).execute()
        self._add_label_rows(model_id, labels)

    def _add_label_rows(self, model_id: int, labels: list[str]) -> None:
        if labels:
            ModelLabel.insert_many([(model_id, label) for label in labels], [ModelLabel.model, ModelLabel.label]).execute()

    def update_model(self, name: str, changes: dict[str, Any]) -> Model:
        """Replaces the given fields (of MODEL_FIELDS)."""
        values = self._validated_changes(changes, MODEL_FIELDS)
        with self._write():
            model = self._lock_model(name, **values)
            if "labels" in values:
                self._set_label_rows(model.id, values["labels"])
        return model

    def rename_model(self, name: str, new_name: str) -> Model:
        validation.name(new_name, "new_name")
        try:
            with self._write():
                return self._lock_model(name, name=new_name)
        except pw.IntegrityError:
            raise AlreadyExists(
                "MODEL_ALREADY_EXISTS", f"model {new_name!r} already exists", model_name=new_name
            )

    def update_model_metadata(self, name: str, merge: dict[str, Any], remove_keys: list[str]) -> Model:
        """Top-level keys of `merge` replace or add, then `remove_keys` go: one step under the row lock,
        so concurrent merges of different keys never lose each other's."""
        validation.json_object(merge, "merge")
        remove_keys = validation.metadata_keys(remove_keys)
        with self._write():
            model = self._lock_model(name)
            metadata = {**model.metadata, **merge}
            for key in remove_keys:
                metadata.pop(key, None)
            model.metadata = validation.json_object(metadata, "metadata")
            Model.update(metadata=model.metadata).where(Model.id == model.id).execute()
        return model

    def set_archived(self, name: str, archived: bool) -> Model:
        with self._write():
            return self._lock_model(name, editable=False, archived=archived)

    def delete_model(self, name: str) -> None:
        """Deletes the model; its versions and labels go with it (ON DELETE CASCADE)."""
        with self._write():
            if not Model.delete().where(Model.name == name).execute():
                raise model_not_found(name)

    def list_model_labels(self) -> list[str]:
        uses = pw.fn.COUNT(ModelLabel.id)
        query = ModelLabel.select(ModelLabel.label).group_by(ModelLabel.label).order_by(uses.desc(), ModelLabel.label)
        return [label for (label,) in query.tuples()]

    # Model versions -----------------------------------------------------------------------------

    def create_version(
        self,
        model_name: str,
        checkpoint_uuid: str,
        name: str = "",
        comment: str = "",
        labels: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        notes: str = "",
        owner: str = "",
    ) -> ModelVersion:
        values = self._validated_changes(
            {"name": name, "comment": comment, "labels": labels or [], "metadata": metadata or {}, "notes": notes},
            VERSION_FIELDS,
        )
        checkpoint_uuid = _checkpoint_uuid(checkpoint_uuid)
        now = now_us()
        with self._write():
            # The counter is bumped by the UPDATE that locks the row: two registrations cannot read
            # the same number, and a number is never handed out twice, even after deletes.
            model = self._lock_model(model_name, prepared=self._take_version_number, now=now)
            checkpoint = self._checkpoint_by_uuid.first(self.db, uuid=checkpoint_uuid)
            if checkpoint is None:
                raise checkpoint_not_found(checkpoint_uuid)
            if checkpoint.state != STATE_COMPLETED:
                raise FailedPrecondition(
                    "CHECKPOINT_NOT_COMPLETED",
                    f"checkpoint {checkpoint_uuid!r} is not COMPLETED",
                    checkpoint_uuid=checkpoint_uuid,
                )
            version = self._insert_version.first(
                self.db,
                model=model.id,
                version=model.last_assigned_version,
                checkpoint=checkpoint.id,
                owner=owner,
                creation_time=now,
                last_updated_time=now,
                **values,
            )
        version.model, version.checkpoint = model, checkpoint
        return version

    def _versions(self) -> pw.ModelSelect:
        return ModelVersion.select(ModelVersion, Model.name, Checkpoint).join(Model).switch(ModelVersion).join(Checkpoint)

    def get_version(self, model_name: str, version: int = 0) -> ModelVersion:
        """One version; version 0 is the latest (highest live number)."""
        validation.version(version, allow_latest=True)
        if version:
            row = self._version.first(self.db, model_name=model_name, version=version)
        else:
            row = self._latest_version.first(self.db, model_name=model_name)
        if row is None:
            self.get_model(model_name)  # MODEL_NOT_FOUND rather than MODEL_VERSION_NOT_FOUND
            raise version_not_found(model_name, version)
        return row

    def list_versions(
        self, model_name: str, page_size: int = 0, page_token: str = "", descending: bool = True
    ) -> paging.Page[ModelVersion]:
        size = validation.page_size(page_size)
        fingerprint = ["versions", model_name, descending]
        after = paging.decode(page_token, fingerprint, [int])
        model = self.get_model(model_name)
        query = self._versions().where(ModelVersion.model == model.id)
        if after is not None:
            query = query.where(_after([ModelVersion.version], after, descending))
        order = ModelVersion.version.desc() if descending else ModelVersion.version.asc()
        rows = list(query.order_by(order).limit(size + 1))
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = paging.encode(fingerprint, [rows[-1].version])
        return paging.Page(rows, token, model.num_versions)

    def update_version(self, model_name: str, version: int, changes: dict[str, Any]) -> ModelVersion:
        """Replaces the given fields (of VERSION_FIELDS)."""
        validation.version(version)
        values = self._validated_changes(changes, VERSION_FIELDS)
        now = now_us()
        with self._write():
            model = self._lock_model(model_name, last_updated_time=now)
            updated = (
                ModelVersion.update(last_updated_time=now, **values)
                .where(ModelVersion.model == model.id, ModelVersion.version == version)
                .execute()
            )
            if not updated:
                raise version_not_found(model_name, version)
        return self.get_version(model_name, version)

    def delete_version(self, model_name: str, version: int) -> None:
        validation.version(version)
        with self._write():
            model = self._lock_model(model_name)
            deleted = (
                ModelVersion.delete()
                .where(ModelVersion.model == model.id, ModelVersion.version == version)
                .execute()
            )
            if not deleted:
                raise version_not_found(model_name, version)
            latest = (
                ModelVersion.select(pw.fn.MAX(ModelVersion.version))
                .where(ModelVersion.model == model.id)
                .scalar()
            )
            Model.update(num_versions=Model.num_versions - 1, latest_version=latest or 0).where(
                Model.id == model.id
            ).execute()

    # Checkpoints --------------------------------------------------------------------------------

    def create_checkpoint(self, values: dict[str, Any]) -> Checkpoint:
        """Records a checkpoint from a dict of Checkpoint fields; uuid and state get their defaults."""
        values = dict(values)
        values["uuid"] = _checkpoint_uuid(values.get("uuid") or str(uuidlib.uuid4()))
        state = values.get("state") or STATE_COMPLETED
        if state not in KNOWN_STATES:
            raise invalid("INVALID_CHECKPOINT_STATE", f"unknown checkpoint state {state}", state=state)
        values["state"] = state
        for key in ("experiment_id", "trial_id", "batch_number"):
            validation.non_negative(values.get(key, 0), key)
        for key in ("experiment_config", "hparams", "metadata", "metrics"):
            validation.json_object(values.get(key) or {}, key, validation.MAX_CHECKPOINT_JSON_BYTES)
        for key in ("framework", "format", "storage_uri"):
            validation.text(values.get(key, ""), key)
        validation.resources(values.get("resources") or {})
        now = now_us()
        values.setdefault("report_time", None)
        values["report_time"] = values["report_time"] or now
        try:
            with self._write():
                return Checkpoint.create(creation_time=now, **values)
        except pw.IntegrityError:
            raise AlreadyExists(
                "CHECKPOINT_ALREADY_EXISTS",
                f"checkpoint {values['uuid']!r} already exists",
                checkpoint_uuid=values["uuid"],
            )

    def get_checkpoint(self, uuid: str) -> Checkpoint:
        uuid = _checkpoint_uuid(uuid)
        checkpoint = self._checkpoint_by_uuid.first(self.db, uuid=uuid)
        if checkpoint is None:
            raise checkpoint_not_found(uuid)
        return checkpoint

    def list_checkpoints(
        self, query: CheckpointQuery, page_size: int = 0, page_token: str = ""
    ) -> paging.Page[Checkpoint]:
        size = validation.page_size(page_size)
        filters = []
        if query.experiment_id is not None:
            filters.append(Checkpoint.experiment_id == query.experiment_id)
        if query.trial_id is not None:
            filters.append(Checkpoint.trial_id == query.trial_id)
        fingerprint = ["checkpoints", query.__dict__]

        def select(*columns: Any) -> pw.ModelSelect:
            rows = Checkpoint.select(*columns)
            return rows.where(*filters) if filters else rows

        if not query.sort_by_metric:
            after = paging.decode(page_token, fingerprint, [int])
            rows_query = select().order_by(Checkpoint.id)
            if after is not None:
                rows_query = rows_query.where(Checkpoint.id > after[0])
            rows = list(rows_query.limit(size + 1))
            position = lambda row: [row.id]  # noqa: E731
        else:
            # Best first by one metric; checkpoints without a numeric value for it come last.
            metric = self._numeric_metric(validation.text(query.sort_by_metric, "sort_by_metric", 256))
            after = paging.decode(page_token, fingerprint, [int, (int, float, type(None)), int])
            missing = pw.Case(None, [(metric.is_null(), 1)], 0)
            descending = not query.smaller_is_better
            rows_query = select(Checkpoint, metric.alias("sort_value")).order_by(
                missing, metric.desc() if descending else metric.asc(), Checkpoint.id
            )
            if after is not None:
                was_missing, value, last_id = after
                if was_missing:
                    rows_query = rows_query.where(metric.is_null(), Checkpoint.id > last_id)
                elif value is None or (isinstance(value, float) and not math.isfinite(value)):
                    raise invalid("INVALID_PAGE_TOKEN", "page_token is not one this registry handed out")
                else:
                    better = metric < value if descending else metric > value
                    rows_query = rows_query.where(
                        metric.is_null()
                        | better
                        | ((metric == value) & (Checkpoint.id > last_id))
                    )
            rows = list(rows_query.limit(size + 1))
            position = lambda row: [int(row.sort_value is None), row.sort_value, row.id]  # noqa: E731
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = paging.encode(fingerprint, position(rows[-1]))
        return paging.Page(rows, token, select().count())

    def _numeric_metric(self, key: str) -> pw.Node:
        """The value of metrics[key] when it is a number, else NULL, in the database's JSON dialect."""
        if self._sqlite:
            path = '$."' + key.replace('"', '""') + '"'
            return pw.SQL(
                "(CASE WHEN json_type(metrics, ?) IN ('integer', 'real') THEN json_extract(metrics, ?) END)",
                (path, path),
            )
        return pw.SQL(
            "(CASE WHEN jsonb_typeof(metrics -> %s) = 'number' THEN (metrics ->> %s)::float8 END)", (key, key)
        )

    def delete_checkpoint(self, uuid: str) -> None:
        uuid = _checkpoint_uuid(uuid)
        try:
            with self._write():
                checkpoint = Checkpoint.get_or_none(Checkpoint.uuid == uuid)
                if checkpoint is None:
                    raise checkpoint_not_found(uuid)
                user = ModelVersion.select(ModelVersion.version, Model.name).join(Model).where(
                    ModelVersion.checkpoint == checkpoint.id
                ).first()
                if user is not None:
                    raise _checkpoint_in_use(uuid, user.model.name, user.version)
                checkpoint.delete_instance()
        except pw.IntegrityError:
            # A version registered it between our check and the delete (PostgreSQL's RESTRICT).
            raise _checkpoint_in_use(uuid, "", 0)

    # Helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _validated_changes(changes: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
        """Checks the fields of an update against their limits; unknown fields are refused."""
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in allowed:
                raise invalid(
                    "INVALID_UPDATE_MASK",
                    f"{key!r} cannot be updated; updatable fields: {', '.join(allowed)}",
                    field=key,
                )
            if key == "labels":
                values[key] = validation.labels(value)
            elif key == "metadata":
                values[key] = validation.json_object(value, key)
            elif key == "notes":
                values[key] = validation.notes(value)
            else:
                values[key] = validation.text(value, key)
        return values


def _checkpoint_uuid(value: str) -> str:
    """Checkpoint ids are UUIDs, kept in their canonical lower-case form."""
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise invalid("INVALID_UUID", "checkpoint uuid must be a UUID", checkpoint_uuid=str(value)[:64])


def _checkpoint_in_use(uuid: str, model_name: str, version: int) -> FailedPrecondition:
    return FailedPrecondition(
        "CHECKPOINT_IN_USE",
        f"checkpoint {uuid!r} is used by a model version" + (f" ({model_name} v{version})" if model_name else ""),
        checkpoint_uuid=uuid,
        model_name=model_name,
        version=version,
    )
