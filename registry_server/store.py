"""Every query and transaction of the registry. Knows nothing of gRPC: it takes and returns Python
values and table rows, and raises the domain errors of `errors`."""

from __future__ import annotations

import hashlib
import math
import unicodedata
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

import peewee as pw
from modelregistry.v1 import checkpoint_pb2 as cp
from modelregistry.v1 import event_pb2 as ev

from . import paging, prepared, rows, validation
from .db import is_sqlite
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    checkpoint_not_found,
    invalid,
    model_not_found,
    version_not_found,
)
from .events import EventLog
from .prepared import PreparedQuery, param
from .rows import CHECKPOINT_COLUMNS, MODEL_COLUMNS, VERSION_COLUMNS, CheckpointRow, ModelRow, RowReaders, VersionRow
from .tables import (
    AliasChange,
    Checkpoint,
    Model,
    ModelAlias,
    ModelCount,
    ModelLabel,
    ModelVersion,
    RegistrySecret,
    now_us,
)
from .transactions import RequestKey, Transactions

MODEL_SORT_KEYS: dict[str, pw.Field[Any]] = {
    "name": Model.name,
    "description": Model.description,
    "creation_time": Model.creation_time,
    "last_updated_time": Model.last_updated_time,
    "num_versions": Model.num_versions,
}
MODEL_FIELDS = ("description", "metadata", "labels", "notes", "editors")
VERSION_FIELDS = ("name", "comment", "labels", "metadata", "notes")


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

    def __init__(self, db: pw.Database, events: EventLog | None = None) -> None:
        self.db = db
        self._sqlite = is_sqlite(db)
        self._tokens: paging.PageTokens | None = None
        self.events = events if events is not None else EventLog(db)
        self.tx = Transactions(db, self.events)
        self.acting_as = self.tx.acting_as
        self.read = RowReaders(db)
        # The hot reads, built once (see prepared.py); the tables must be bound to `db` already.
        self._model_by_name = PreparedQuery(Model.select(*MODEL_COLUMNS).where(Model.name == param("name")).limit(1))
        versions = self._versions().where(Model.name == param("model_name"))
        # The model row knows its latest number: one (model, version) index lookup, where ORDER BY
        # version DESC LIMIT 1 made PostgreSQL read and sort all of the model's versions.
        self._latest_version = PreparedQuery(versions.where(ModelVersion.version == Model.latest_version).limit(1))
        self._version = PreparedQuery(versions.where(ModelVersion.version == param("version")).limit(1))
        self._version_by_alias = PreparedQuery(
            versions.join(ModelAlias, on=(ModelAlias.model == ModelVersion.model) & (ModelAlias.version == ModelVersion.version))
            .where(ModelAlias.alias == param("alias"))
            .limit(1)
        )
        checkpoint_by_uuid = Checkpoint.select(*CHECKPOINT_COLUMNS).where(Checkpoint.uuid == param("uuid")).limit(1)
        self._checkpoint_by_uuid = PreparedQuery(checkpoint_by_uuid)
        # Pages of a model's versions, by (newest first, after a position).
        self._version_pages = {
            (descending, after): PreparedQuery(self._version_page(descending, after))
            for descending in (True, False)
            for after in (True, False)
        }
        # The hot writes. A registration reads its checkpoint locked (shared) until commit: an upload
        # recording files to it (which takes the row lock) comes wholly before it or is refused after
        # it (CHECKPOINT_IN_USE). SQLite's one writer at a time gives the same.
        self._checkpoint_to_register = PreparedQuery(
            checkpoint_by_uuid if self._sqlite else checkpoint_by_uuid.for_update("FOR SHARE")  # type: ignore[arg-type]  # peewee takes the clause as text
        )
        locked_columns = (*MODEL_COLUMNS, Model.last_assigned_version)
        by_name = Model.name == param("name")
        self._touch_model = PreparedQuery(
            Model.update(last_updated_time=param("now")).where(by_name).returning(*locked_columns)
        )
        # The counter is bumped by the UPDATE that locks the row: two registrations cannot read the
        # same number, and a number is never handed out twice, even after deletes.
        self._bump_model = PreparedQuery(
            Model.update(
                last_assigned_version=Model.last_assigned_version + 1,
                latest_version=Model.last_assigned_version + 1,
                num_versions=Model.num_versions + 1,
                last_updated_time=param("now"),
            )
            .where(by_name)
            .returning(*locked_columns)
        )
        self._set_metadata = PreparedQuery(
            Model.update(metadata=param("metadata", Model.metadata)).where(Model.id == param("id"))
        )
        self._insert_model_row = prepared.insert(Model, *MODEL_COLUMNS)
        self._insert_label = prepared.insert(ModelLabel)
        self._twin = PreparedQuery(
            Model.select(Model.name)
            .where((Model.name_key == param("key")) & (Model.name != param("name")) & (Model.id != param("id")))
            .limit(1)
        )
        self._insert_version = prepared.insert(ModelVersion, ModelVersion.id)
        self._version_exists = PreparedQuery(
            ModelVersion.select(ModelVersion.id)
            .where((ModelVersion.model == param("model")) & (ModelVersion.version == param("version")))
            .limit(1)
        )
        self._alias_at = PreparedQuery(
            ModelAlias.select(ModelAlias.id, ModelAlias.version)
            .where((ModelAlias.model == param("model")) & (ModelAlias.alias == param("alias")))
            .limit(1)
        )
        self._alias_count = PreparedQuery(
            ModelAlias.select(pw.fn.COUNT(ModelAlias.id)).where(ModelAlias.model == param("model"))
        )
        self._insert_alias = prepared.insert(ModelAlias)
        self._move_alias = PreparedQuery(
            ModelAlias.update(version=param("version")).where(ModelAlias.id == param("id"))
        )
        self._insert_alias_change = prepared.insert(AliasChange)

    def _page_tokens(self) -> paging.PageTokens:
        """Page tokens signed with this database's key (migration 0007), read once."""
        if self._tokens is None:
            key = RegistrySecret.get(RegistrySecret.name == "page_tokens").value
            self._tokens = paging.PageTokens(bytes.fromhex(key))
        return self._tokens

    def _may_change(self, model: Model | ModelRow, version: ModelVersion | None = None) -> None:
        """Changes to a model, its versions and aliases are for its owner, the editors it names, and
        admins; changes to one version also for that version's owner."""
        actor = self.tx.actor()
        owners = (model.owner, version.owner if version is not None else None)
        if not (actor.admin or actor.name in owners or actor.name in model.editors):
            raise PermissionDenied(
                "NOT_MODEL_EDITOR",
                f"{actor.name!r} may not change model {model.name!r}: it is owned by {model.owner!r}, who may "
                "name editors",
                principal=actor.name,
                owner=model.owner,
                model_name=model.name,
            )

    def must_own(self, what: str, *rows: Model | ModelRow | ModelVersion | Checkpoint | CheckpointRow, **names: object) -> None:
        """Deleting, renaming, archiving, naming editors, uploading files: for an owner of one of
        `rows` (e.g. a version or its model), or an admin."""
        actor = self.tx.actor()
        if not (actor.admin or actor.name in {row.owner for row in rows}):
            raise PermissionDenied(
                "NOT_OWNER",
                f"{actor.name!r} may not {what}: only its owner ({rows[0].owner!r}) or an admin may",
                principal=actor.name,
                owner=rows[0].owner,
                **names,
            )

    # Models -------------------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        labels: list[str] | None = None,
        notes: str = "",
        owner: str | None = None,
        request: RequestKey | None = None,
        editors: list[str] | None = None,
    ) -> ModelRow:
        """Creates a model owned by `owner` (by default the principal acting)."""
        name = validation.name(name)
        values = {
            "name": name,
            "description": validation.text(description, "description"),
            "metadata": validation.json_object(metadata or {}, "metadata"),
            "labels": validation.labels(labels or []),
            "notes": validation.notes(notes),
            "owner": self.tx.actor().name if owner is None else owner,
            "editors": validation.principals(editors or [], "editors"),
        }
        return self.tx.create_once(
            request,
            lambda: self._insert_model(values),
            self._created_model,
            lambda: AlreadyExists("MODEL_ALREADY_EXISTS", f"model {name!r} already exists", model_name=name),
        )

    def _created_model(self, row_id: int) -> ModelRow:
        raw = Model.select(*MODEL_COLUMNS).where(Model.id == row_id).tuples().first()
        if raw is None:
            raise _result_deleted("model")
        return self.read.model(raw)

    def _insert_model(self, values: dict[str, Any], *, if_missing: bool = False) -> ModelRow | None:
        """Inserts a model of validated values; with `if_missing`, None when the name is taken.
        A name that differs from a taken one only by case or Unicode form is refused."""
        now = now_us()
        key = validation.name_key(values["name"])
        self._refuse_twin(values["name"], key)
        if if_missing:
            query = Model.insert(creation_time=now, last_updated_time=now, name_key=key, **values)
            raw = query.on_conflict_ignore().returning(*MODEL_COLUMNS).tuples().execute()
            inserted = next(iter(raw), None)
        else:
            inserted = self._insert_model_row.first(
                self.db, creation_time=now, last_updated_time=now, name_key=key, **values
            )
        if inserted is None:
            return None
        model = self.read.model(inserted)
        for label in values["labels"]:
            self._insert_label.execute(self.db, model=model.id, label=label)
        self.tx.event(ev.EVENT_KIND_MODEL_CREATED, values["name"])
        return model

    def _refuse_twin(self, name: str, key: str, model_id: int = 0) -> None:
        """Within a write: refuses `name` when another model (not `model_id`) has a different name that
        compares equal to it (same name_key); the same name is the unique index's to refuse. On
        PostgreSQL a transaction lock on the key serialises the check with a concurrent twin's insert;
        SQLite serialises writers anyway."""
        if not self._sqlite:
            lock = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
            self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (lock,))
        twin = self._twin.first(self.db, key=key, name=name, id=model_id)
        if twin is not None:
            raise AlreadyExists(
                "MODEL_ALREADY_EXISTS",
                f"model {twin[0]!r} exists, and names that differ only by case or Unicode form are the same name",
                model_name=name,
                existing_name=twin[0],
            )

    def get_model(self, name: str) -> ModelRow:
        raw = self._model_by_name.first(self.db, name=_nfc(name))
        if raw is None:
            raise model_not_found(name)
        return self.read.model(raw)

    def list_models(self, query: ModelQuery, page_size: int = 0, page_token: str = "") -> paging.Page[ModelRow]:
        size = validation.page_size(page_size)
        key = MODEL_SORT_KEYS[query.sort_by]
        # Names are unique, so they order alone; other keys are made unique with the id.
        columns = [key] if key is Model.name else [key, Model.id]
        types = [str] if key is Model.name else [str if key is Model.description else int, int]
        fingerprint = ["models", query.__dict__]
        after = self._page_tokens().decode(page_token, fingerprint, types)

        filters = []
        if query.name:
            filters.append(self._name_contains(query.name))
        if query.description:
            filters.append(Model.description.contains(query.description))
        if query.labels:
            # One subquery for any number of labels (a nest of one per label overflowed SQLite's parser).
            labels = list(dict.fromkeys(query.labels))
            carrying_all = (
                ModelLabel.select(ModelLabel.model)
                .where(ModelLabel.label.in_(labels))
                .group_by(ModelLabel.model)
                .having(pw.fn.COUNT(ModelLabel.id) == len(labels))
            )
            filters.append(Model.id.in_(carrying_all))
        if query.archived is not None:
            filters.append(Model.archived == query.archived)
        if query.owner:
            filters.append(Model.owner == query.owner)

        def select(*columns: pw.Field) -> pw.ModelSelect[Any]:
            return Model.select(*columns).where(*filters) if filters else Model.select(*columns)

        rows_query = select(*MODEL_COLUMNS)
        if after is not None:
            rows_query = rows_query.where(_after(columns, after, query.descending))
        order = [c.desc() if query.descending else c.asc() for c in columns]
        # Unfiltered: the count the triggers keep, O(1). Filtered: an exact COUNT over the matches,
        # which costs what the filter's scan costs (a name or description substring scans every row).
        return paging.fetch(
            rows_query.order_by(*order),
            size,
            lambda: select().count() if filters else ModelCount.select(ModelCount.models).scalar(),
            self._page_tokens(),
            fingerprint,
            lambda raw: [raw[ModelRow._fields.index(c.name)] for c in columns],
            self.read.model,
        )

    def _name_contains(self, text: str) -> pw.Expression:
        """Models whose name contains `text`, ignoring case the same way on both databases: the folded
        text within the folded name (name_key). On SQLite, texts of three or more characters are looked
        up in the trigram index of migrations 0005/0007 (its LIKE takes no ESCAPE, so texts with LIKE
        wildcards take the scan)."""
        folded = validation.name_key(text)
        if self._sqlite and len(folded) >= 3 and not any(c in folded for c in "%_\\"):
            return Model.id.in_(pw.SQL("(SELECT rowid FROM model_name_search WHERE name_key LIKE ?)", [f"%{folded}%"]))
        # Both sides are folded already: PostgreSQL compares them with LIKE (its ILIKE would fold
        # again, by rules of its own); peewee spells SQLite's LIKE (which folds ASCII only) "ILIKE".
        operator = pw.OP.ILIKE if self._sqlite else pw.OP.LIKE
        return pw.Expression(Model.name_key, operator, Model.name_key._escape_like_expr(folded, "%%%s%%"))  # type: ignore[attr-defined]

    def _lock_model(self, model_name: str, *, editable: bool = True, **changes: Any) -> Model:
        """Updates the model row first, so that the row (PostgreSQL) or the database (SQLite) is locked
        before anything is read; returns the row as updated. Refuses archived models when `editable`.
        Call inside a write transaction: raising rolls the update back (ownership is checked by the
        caller on the row returned, under the same lock)."""
        changes.setdefault("last_updated_time", now_us())
        query = Model.update(**changes).where(Model.name == _nfc(model_name)).returning(Model)
        model = next(iter(query.execute()), None)
        if model is None:
            raise model_not_found(model_name)
        if editable and model.archived:
            raise _archived(model_name)
        return model

    def _locked(self, statement: PreparedQuery, model_name: str, *, editable: bool = True) -> tuple[ModelRow, int]:
        """As _lock_model, by a prepared UPDATE (_touch_model or _bump_model): the model's row as
        updated, and its last assigned version number."""
        raw = statement.first(self.db, name=_nfc(model_name), now=now_us())
        if raw is None:
            raise model_not_found(model_name)
        model = self.read.model(raw[:-1])
        if editable and model.archived:
            raise _archived(model_name)
        return model, raw[-1]

    def _set_label_rows(self, model_id: int, labels: list[str]) -> None:
        ModelLabel.delete().where(ModelLabel.model == model_id).execute()
        if labels:
            ModelLabel.insert_many([(model_id, label) for label in labels], [ModelLabel.model, ModelLabel.label]).execute()

    def update_model(self, name: str, changes: dict[str, Any]) -> Model:
        """Replaces the given fields (of MODEL_FIELDS); `editors` only by the owner or an admin."""
        values = self._validated_update(changes, MODEL_FIELDS)
        with self.tx.write():
            model = self._lock_model(name)  # checked as it was, not as the update would leave it
            self._may_change(model)
            if "editors" in values:
                self.must_own(f"name the editors of model {model.name!r}", model, model_name=model.name)
            Model.update(**values).where(Model.id == model.id).execute()
            model.__data__.update(values)
            if "labels" in values:
                self._set_label_rows(model.id, values["labels"])
            self.tx.event(ev.EVENT_KIND_MODEL_UPDATED, name)
        return model

    def rename_model(self, name: str, new_name: str) -> Model:
        """Renames a model (its owner or an admin): pipelines and alias lookups resolve names, so a
        rename is as consequential as a delete."""
        new_name = validation.name(new_name, "new_name")
        key = validation.name_key(new_name)
        try:
            with self.tx.write():
                model = self._lock_model(name, name=new_name, name_key=key)
                self.must_own(f"rename model {name!r}", model, model_name=name)
                self._refuse_twin(new_name, key, model.id)
                self.tx.event(ev.EVENT_KIND_MODEL_RENAMED, _nfc(name), new_model_name=new_name)
                return model
        except pw.IntegrityError:
            raise AlreadyExists(
                "MODEL_ALREADY_EXISTS", f"model {new_name!r} already exists", model_name=new_name
            ) from None

    def update_model_metadata(self, name: str, merge: dict[str, Any], remove_keys: list[str]) -> ModelRow:
        """Top-level keys of `merge` replace or add, then `remove_keys` go: one step under the row lock,
        so concurrent merges of different keys never lose each other's."""
        validation.json_object(merge, "merge")
        remove_keys = validation.metadata_keys(remove_keys)
        with self.tx.write():
            model, _ = self._locked(self._touch_model, name)
            self._may_change(model)
            metadata = {**model.metadata, **merge}
            for key in remove_keys:
                metadata.pop(key, None)
            model = model._replace(metadata=validation.json_object(metadata, "metadata"))
            self._set_metadata.execute(self.db, metadata=model.metadata, id=model.id)
            self.tx.event(ev.EVENT_KIND_MODEL_UPDATED, name)
        return model

    def set_archived(self, name: str, archived: bool) -> Model:
        """Archives or unarchives a model (its owner or an admin)."""
        with self.tx.write():
            model = self._lock_model(name, editable=False, archived=archived)
            self.must_own(f"{'archive' if archived else 'unarchive'} model {model.name!r}", model, model_name=model.name)
            self.tx.event(ev.EVENT_KIND_MODEL_ARCHIVED if archived else ev.EVENT_KIND_MODEL_UNARCHIVED, model.name)
            return model

    def delete_model(self, name: str) -> None:
        """Deletes the model (its owner or an admin); its versions and labels go with it (ON DELETE CASCADE)."""
        with self.tx.write():
            model = self._lock_model(name, editable=False)
            self.must_own(f"delete model {model.name!r}", model, model_name=model.name)
            Model.delete().where(Model.id == model.id).execute()
            self.tx.event(ev.EVENT_KIND_MODEL_DELETED, model.name)

    def list_model_labels(self) -> list[str]:
        uses = pw.fn.COUNT(ModelLabel.id)
        query = ModelLabel.select(ModelLabel.label).group_by(ModelLabel.label).order_by(uses.desc(), ModelLabel.label)
        return list(query.scalars())

    # Model versions -----------------------------------------------------------------------------

    def create_version(
        self,
        model_name: str,
        checkpoint_uuid: str = "",
        name: str = "",
        comment: str = "",
        labels: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        notes: str = "",
        owner: str | None = None,
        *,
        checkpoint: dict[str, Any] | None = None,
        create_model_if_missing: bool = False,
        aliases: list[str] | None = None,
        request: RequestKey | None = None,
    ) -> VersionRow:
        """Registers a checkpoint as the model's next version. With `checkpoint` (Checkpoint fields, in
        place of `checkpoint_uuid`) the checkpoint is recorded, with `create_model_if_missing` the model
        is created, and `aliases` are pointed at the new version: all in one transaction. The version
        is owned by `owner` (by default the principal acting), which must be allowed to change the model."""
        owner = self.tx.actor().name if owner is None else owner
        values = self._validated_changes(
            {"name": name, "comment": comment, "labels": labels or [], "metadata": metadata or {}, "notes": notes},
            VERSION_FIELDS,
        )
        if (checkpoint is None) == (not checkpoint_uuid):
            raise invalid("CHECKPOINT_REQUIRED", "give exactly one of checkpoint_uuid and checkpoint")
        checkpoint_values = self._checkpoint_values(checkpoint) if checkpoint is not None else None
        if checkpoint_values is None:
            checkpoint_uuid = _checkpoint_uuid(checkpoint_uuid)
        aliases = [validation.alias(alias) for alias in dict.fromkeys(aliases or [])]
        new_model = None
        if create_model_if_missing:
            model_name = validation.name(model_name, "model_name")
            new_model = {"name": model_name, "labels": [], "owner": owner, "editors": []}

        def create() -> VersionRow:
            if new_model is not None:
                self._insert_model(new_model, if_missing=True)
            model, number = self._locked(self._bump_model, model_name)
            self._may_change(model)
            if checkpoint_values is not None:
                checkpoint_row = rows.checkpoint_of(self._insert_checkpoint(checkpoint_values))
            else:
                raw = self._checkpoint_to_register.first(self.db, uuid=checkpoint_uuid)
                if raw is None:
                    raise checkpoint_not_found(checkpoint_uuid)
                checkpoint_row = self.read.checkpoint(raw)
            if checkpoint_row.state != cp.CHECKPOINT_STATE_COMPLETED:
                raise FailedPrecondition(
                    "CHECKPOINT_NOT_COMPLETED",
                    f"checkpoint {checkpoint_row.uuid!r} is not COMPLETED",
                    checkpoint_uuid=checkpoint_row.uuid,
                )
            now = model.last_updated_time
            own = {"model": model.id, "version": number, "checkpoint": checkpoint_row.id, "owner": owner,
                   "creation_time": now, "last_updated_time": now, **values}
            row_id = self._insert_version.value(self.db, **own)
            self.tx.event(ev.EVENT_KIND_MODEL_VERSION_CREATED, model.name, version=number, checkpoint_uuid=checkpoint_row.uuid)
            for alias in aliases:
                self._point_alias(model, alias, number)
            return rows.version_row(row_id, own, model.name, checkpoint_row, sorted(aliases))

        def conflict() -> Exception | None:
            return _checkpoint_exists(checkpoint_values["uuid"]) if checkpoint_values is not None else None

        return self.tx.create_once(request, create, self._version_by_id, conflict)

    def _versions(self) -> pw.ModelSelect[Any]:
        """Versions with their model's name, their checkpoint and their aliases: rows.VERSION_COLUMNS."""
        return (
            ModelVersion.select(*VERSION_COLUMNS, rows.aliases_of_version(self._sqlite))
            .join(Model)
            .switch(ModelVersion)
            .join(Checkpoint)
        )

    def _version_page(self, descending: bool, after: bool) -> pw.ModelSelect[Any]:
        query = self._versions().where(ModelVersion.model == param("model"))
        if after:
            query = query.where(_after([ModelVersion.version], [param("after")], descending))
        order = ModelVersion.version.desc() if descending else ModelVersion.version.asc()
        return query.order_by(order).limit(param("limit"))

    def _version_by_id(self, row_id: int) -> VersionRow:
        raw = self._versions().where(ModelVersion.id == row_id).tuples().first()
        if raw is None:
            raise _result_deleted("model version")
        return self.read.version(raw)

    def get_version(self, model_name: str, version: int = 0, alias: str = "") -> VersionRow:
        """One version, by number or by alias; version 0 without alias is the latest (highest live)."""
        validation.version(version, allow_latest=True)
        name = _nfc(model_name)
        if alias:
            if version:
                raise invalid("ALIAS_AND_VERSION", "give a version or an alias, not both", version=version, alias=alias)
            raw = self._version_by_alias.first(self.db, model_name=name, alias=validation.alias(alias))
        elif version:
            raw = self._version.first(self.db, model_name=name, version=version)
        else:
            raw = self._latest_version.first(self.db, model_name=name)
        if raw is None:
            self.get_model(model_name)  # MODEL_NOT_FOUND rather than MODEL_VERSION_NOT_FOUND
            raise _alias_not_found(model_name, alias) if alias else version_not_found(model_name, version)
        return self.read.version(raw)

    def list_versions(
        self, model_name: str, page_size: int = 0, page_token: str = "", descending: bool = True
    ) -> paging.Page[VersionRow]:
        size = validation.page_size(page_size)
        fingerprint = ["versions", model_name, descending]
        after = self._page_tokens().decode(page_token, fingerprint, [int])
        model = self.get_model(model_name)
        statement = self._version_pages[descending, after is not None]
        version_at = VersionRow._fields.index("version")
        raw = statement.rows(self.db, model=model.id, after=after[0] if after else 0, limit=size + 1)
        return paging.page_of(
            raw, size, model.num_versions, self._page_tokens(), fingerprint, lambda raw: [raw[version_at]], self.read.version
        )

    def update_version(self, model_name: str, version: int, changes: dict[str, Any]) -> VersionRow:
        """Replaces the given fields (of VERSION_FIELDS): by whoever may change the model, or the
        version's own owner."""
        validation.version(version)
        values = self._validated_update(changes, VERSION_FIELDS)
        now = now_us()
        with self.tx.write():
            model = self._lock_model(model_name, last_updated_time=now)
            row = self._version_row(model, version)
            self._may_change(model, row)
            ModelVersion.update(last_updated_time=now, **values).where(ModelVersion.id == row.id).execute()
            self.tx.event(ev.EVENT_KIND_MODEL_VERSION_UPDATED, model.name, version=version)
        return self.get_version(model.name, version)

    @staticmethod
    def _version_row(model: Model, version: int) -> ModelVersion:
        row = ModelVersion.get_or_none(ModelVersion.model == model.id, ModelVersion.version == version)
        if row is None:
            raise version_not_found(model.name, version)
        return row

    def delete_version(self, model_name: str, version: int) -> None:
        """Deletes a version: its owner's, its model owner's or an admin's to delete."""
        validation.version(version)
        with self.tx.write():
            model = self._lock_model(model_name)
            row = self._version_row(model, version)
            self.must_own(f"delete version {version} of model {model.name!r}", row, model, model_name=model.name, version=version)
            # Aliases are moved under the same model row lock, so none can start pointing here now.
            pointing = list(ModelAlias.select(ModelAlias.alias).where(
                ModelAlias.model == model.id, ModelAlias.version == version
            ).order_by(ModelAlias.alias).scalars())
            if pointing:
                raise FailedPrecondition(
                    "VERSION_HAS_ALIASES",
                    f"version {version} of {model_name!r} is what {', '.join(pointing)} point(s) at; "
                    "move or delete those aliases first",
                    model_name=model_name,
                    version=version,
                    aliases=",".join(pointing),
                )
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
            self.tx.event(ev.EVENT_KIND_MODEL_VERSION_DELETED, model_name, version=version)

    # Aliases ------------------------------------------------------------------------------------

    def set_alias(self, model_name: str, alias: str, version: int) -> VersionRow:
        """Points `alias` at an existing version: one atomic step under the model's row lock, so that
        concurrent moves are serialised and each history entry starts where the previous one ended."""
        alias = validation.alias(alias)
        validation.version(version)
        with self.tx.write():
            model, _ = self._locked(self._touch_model, model_name)
            self._may_change(model)
            if self._version_exists.first(self.db, model=model.id, version=version) is None:
                raise version_not_found(model.name, version)
            self._point_alias(model, alias, version)
        return self.get_version(model.name, version)

    def delete_alias(self, model_name: str, alias: str) -> None:
        alias = validation.alias(alias)
        with self.tx.write():
            model = self._lock_model(model_name)
            self._may_change(model)
            current = ModelAlias.get_or_none(ModelAlias.model == model.id, ModelAlias.alias == alias)
            if current is None:
                raise _alias_not_found(model_name, alias)
            current.delete_instance()
            self._alias_moved(model, alias, current.version, 0)

    def _point_alias(self, model: Model | ModelRow, alias: str, version: int) -> None:
        """Within a write that holds the model's row lock: creates or moves the alias."""
        current = self._alias_at.first(self.db, model=model.id, alias=alias)
        if current is not None and current[1] == version:
            return
        if current is None:
            if self._alias_count.value(self.db, model=model.id) >= validation.MAX_ALIASES_PER_MODEL:
                raise FailedPrecondition(
                    "MODEL_ALIAS_LIMIT",
                    f"model {model.name!r} has {validation.MAX_ALIASES_PER_MODEL} aliases already; delete one first",
                    model_name=model.name,
                    limit=validation.MAX_ALIASES_PER_MODEL,
                )
            self._insert_alias.execute(self.db, model=model.id, alias=alias, version=version)
        else:
            self._move_alias.execute(self.db, version=version, id=current[0])
        self._alias_moved(model, alias, current[1] if current else 0, version)

    def _alias_moved(self, model: Model | ModelRow, alias: str, previous: int, version: int) -> None:
        """Records a move (version 0: a removal) in the alias's history and in the event log."""
        self._insert_alias_change.execute(
            self.db, model=model.id, alias=alias, previous_version=previous, version=version, time=now_us(),
            principal=self.tx.actor().name,
        )
        kind = ev.EVENT_KIND_ALIAS_SET if version else ev.EVENT_KIND_ALIAS_DELETED
        self.tx.event(kind, model.name, alias=alias, version=version, previous_version=previous)

    def list_alias_history(
        self, model_name: str, alias: str = "", page_size: int = 0, page_token: str = ""
    ) -> paging.Page[AliasChange]:
        """Moves of the model's aliases (or of one), oldest first."""
        size = validation.page_size(page_size)
        fingerprint = ["alias_history", model_name, alias]
        after = self._page_tokens().decode(page_token, fingerprint, [int])
        model = self.get_model(model_name)
        filters = [AliasChange.model == model.id]
        if alias:
            filters.append(AliasChange.alias == validation.alias(alias))
        query = AliasChange.select().where(*filters)
        if after is not None:
            query = query.where(AliasChange.id > after[0])
        page = paging.fetch(
            query.order_by(AliasChange.id),
            size,
            lambda: AliasChange.select().where(*filters).count(),
            self._page_tokens(),
            fingerprint,
            lambda row: [row.id],
        )
        for row in page.rows:
            row.model_name = model.name
        return page

    # Checkpoints --------------------------------------------------------------------------------

    def create_checkpoint(self, values: dict[str, Any], request: RequestKey | None = None) -> Checkpoint:
        """Records a checkpoint from a dict of Checkpoint fields; uuid and state get their defaults."""
        values = self._checkpoint_values(values)
        return self.tx.create_once(
            request,
            lambda: self._insert_checkpoint(values),
            self._created_checkpoint,
            lambda: _checkpoint_exists(values["uuid"]),
        )

    @staticmethod
    def _created_checkpoint(row_id: int) -> Checkpoint:
        checkpoint = Checkpoint.get_or_none(Checkpoint.id == row_id)
        if checkpoint is None:
            raise _result_deleted("checkpoint")
        return checkpoint

    @staticmethod
    def _checkpoint_values(values: dict[str, Any]) -> dict[str, Any]:
        """Checkpoint fields, checked against their limits, with the defaults of uuid and state."""
        values = dict(values)
        values["uuid"] = _checkpoint_uuid(values.get("uuid") or str(uuidlib.uuid4()))
        state = values.get("state") or cp.CHECKPOINT_STATE_COMPLETED
        if state not in cp.CheckpointState.values():
            raise invalid("INVALID_ENUM_VALUE", f"unknown checkpoint.state value {state}", field="checkpoint.state", value=state)
        values["state"] = state
        for key in ("experiment_id", "trial_id", "batch_number"):
            validation.integer(values.get(key, 0), key)  # int32 in the protos
        for key in ("experiment_config", "hparams", "metadata", "metrics"):
            validation.json_object(values.get(key) or {}, key, validation.MAX_CHECKPOINT_JSON_BYTES)
        for key in ("framework", "format", "storage_uri"):
            validation.text(values.get(key, ""), key)
        validation.resources(values.get("resources") or {})
        return values

    def _insert_checkpoint(self, values: dict[str, Any]) -> Checkpoint:
        now = now_us()
        checkpoint = Checkpoint.create(
            creation_time=now, owner=self.tx.actor().name, **{**values, "report_time": values.get("report_time") or now}
        )
        self.tx.event(ev.EVENT_KIND_CHECKPOINT_CREATED, checkpoint_uuid=checkpoint.uuid)
        return checkpoint

    def get_checkpoint(self, uuid: str) -> CheckpointRow:
        uuid = _checkpoint_uuid(uuid)
        raw = self._checkpoint_by_uuid.first(self.db, uuid=uuid)
        if raw is None:
            raise checkpoint_not_found(uuid)
        return self.read.checkpoint(raw)

    def list_checkpoints(
        self, query: CheckpointQuery, page_size: int = 0, page_token: str = ""
    ) -> paging.Page[CheckpointRow]:
        size = validation.page_size(page_size)
        filters = []
        if query.experiment_id is not None:
            filters.append(Checkpoint.experiment_id == query.experiment_id)
        if query.trial_id is not None:
            filters.append(Checkpoint.trial_id == query.trial_id)
        fingerprint = ["checkpoints", query.__dict__]

        def select(*columns: Any) -> pw.ModelSelect[Any]:
            rows = Checkpoint.select(*columns)
            return rows.where(*filters) if filters else rows

        tokens = self._page_tokens()
        if not query.sort_by_metric:
            after = tokens.decode(page_token, fingerprint, [int])
            rows_query = select(*CHECKPOINT_COLUMNS).order_by(Checkpoint.id)
            if after is not None:
                rows_query = rows_query.where(Checkpoint.id > after[0])
            position = lambda raw: [raw[0]]  # noqa: E731 (the id)
        else:
            # Best first by one metric; checkpoints without a numeric value for it come last.
            metric = self._numeric_metric(validation.text(query.sort_by_metric, "sort_by_metric", 256))
            after = tokens.decode(page_token, fingerprint, [int, (int, float, type(None)), int])
            missing = pw.Case(None, [(metric.is_null(), 1)], 0)
            descending = not query.smaller_is_better
            rows_query = select(*CHECKPOINT_COLUMNS, metric).order_by(
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
            value_at = len(CHECKPOINT_COLUMNS)  # the sort value follows the checkpoint's columns
            position = lambda raw: [int(raw[value_at] is None), raw[value_at], raw[0]]  # noqa: E731
        return paging.fetch(
            rows_query, size, lambda: select().count(), tokens, fingerprint, position, self.read.checkpoint
        )

    def _numeric_metric(self, key: str) -> pw.ColumnBase:
        """The value of metrics[key] when it is a number, else NULL, in the database's JSON dialect.
        The key is a bound parameter, never part of a JSON path: any key (quotes, backslashes, any
        script) means itself on both databases."""
        if self._sqlite:
            return pw.NodeList(
                (
                    pw.SQL("(SELECT CASE WHEN type IN ('integer', 'real') THEN value END FROM json_each("),
                    Checkpoint.metrics,
                    pw.SQL(") WHERE key = ?)", (key,)),
                ),
                glue="",
            )
        return pw.SQL(
            "(CASE WHEN jsonb_typeof(metrics -> %s) = 'number' THEN (metrics ->> %s)::float8 END)", (key, key)
        )

    def delete_checkpoint(self, uuid: str) -> str:
        """Deletes the record of a checkpoint not used by any model version; returns its canonical uuid."""
        uuid = _checkpoint_uuid(uuid)
        try:
            with self.tx.write():
                checkpoint = Checkpoint.get_or_none(Checkpoint.uuid == uuid)
                if checkpoint is None:
                    raise checkpoint_not_found(uuid)
                self.must_own(f"delete checkpoint {uuid!r}", checkpoint, checkpoint_uuid=uuid)
                _refuse_in_use(checkpoint)
                checkpoint.delete_instance()
                self.tx.event(ev.EVENT_KIND_CHECKPOINT_DELETED, checkpoint_uuid=uuid)
        except pw.IntegrityError:
            # A version registered it between our check and the delete (PostgreSQL's RESTRICT).
            raise _checkpoint_in_use(uuid, "", 0) from None
        return uuid

    # Helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _validated_update(changes: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
        """The fields an update names (its update_mask), checked: at least one, each updatable."""
        if not changes:
            raise invalid("UPDATE_MASK_REQUIRED", f"update_mask must name the fields to replace: {', '.join(allowed)}")
        return RegistryStore._validated_changes(changes, allowed)

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
            elif key == "editors":
                values[key] = validation.principals(value, key)
            else:
                values[key] = validation.text(value, key)
        return values


def _checkpoint_uuid(value: str) -> str:
    """Checkpoint ids are UUIDs, kept in their canonical lower-case form."""
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise invalid("INVALID_UUID", "checkpoint uuid must be a UUID", checkpoint_uuid=str(value)[:64]) from None


def _refuse_in_use(checkpoint: Checkpoint | CheckpointRow) -> None:
    user = (
        ModelVersion.select(ModelVersion.version, Model.name)
        .join(Model)
        .where(ModelVersion.checkpoint == checkpoint.id)
        .first()
    )
    if user is not None:
        raise _checkpoint_in_use(checkpoint.uuid, user.model.name, user.version)
def _nfc(name: str) -> str:
    """Names are stored in NFC: a lookup in another Unicode form finds them too."""
    return unicodedata.normalize("NFC", name)


def _result_deleted(what: str) -> NotFound:
    return NotFound("REQUEST_RESULT_DELETED", f"the {what} this request created has been deleted since")


def _checkpoint_in_use(uuid: str, model_name: str, version: int) -> FailedPrecondition:
    return FailedPrecondition(
        "CHECKPOINT_IN_USE",
        f"checkpoint {uuid!r} is used by a model version" + (f" ({model_name} v{version})" if model_name else ""),
        checkpoint_uuid=uuid,
        model_name=model_name,
        version=version,
    )


def _checkpoint_exists(uuid: str) -> AlreadyExists:
    return AlreadyExists("CHECKPOINT_ALREADY_EXISTS", f"checkpoint {uuid!r} already exists", checkpoint_uuid=uuid)


def _archived(model_name: str) -> FailedPrecondition:
    return FailedPrecondition(
        "MODEL_ARCHIVED", f"model {model_name!r} is archived; unarchive it first", model_name=model_name
    )


def _alias_not_found(model_name: str, alias: str) -> NotFound:
    return NotFound("ALIAS_NOT_FOUND", f"model {model_name!r} has no alias {alias!r}", model_name=model_name, alias=alias)
