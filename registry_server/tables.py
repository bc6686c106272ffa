"""The database tables, as peewee models bound at run time through one DatabaseProxy."""

from __future__ import annotations

import time

import peewee as pw

database = pw.DatabaseProxy()


def now_us() -> int:
    """Now, as the tables keep times: microseconds since the epoch, UTC (exact and sortable)."""
    return time.time_ns() // 1000


class Table(pw.Model):
    # Every table but Event has peewee's implicit auto-increment id; declared for the type checker only.
    id: pw.AutoField[int]

    class Meta:
        database = database
        legacy_table_names = False


class Model(Table):
    """A registered model. Counters live on the row so that a version number is taken by one UPDATE."""

    name = pw.CharField(max_length=256, unique=True)
    # The name as it is compared: NFC and case-folded (validation.name_key). Twins are refused by the
    # store; the name filter matches on it.
    name_key = pw.TextField(default="", index=True)
    description = pw.TextField(default="")
    metadata = pw.JSONField(default=dict)
    labels = pw.JSONField(default=list)
    notes = pw.TextField(default="")
    archived = pw.BooleanField(default=False)
    owner = pw.CharField(max_length=256, default="")
    editors = pw.JSONField(default=list)  # principals the owner lets change the model besides itself
    creation_time = pw.BigIntegerField()  # microseconds since the epoch, UTC: exact and sortable
    last_updated_time = pw.BigIntegerField()
    num_versions = pw.IntegerField(default=0)
    latest_version = pw.IntegerField(default=0)
    last_assigned_version = pw.IntegerField(default=0)

    class Meta:
        table_name = "model"
        # One (key, id) index per sort key, so that every page is an index range scan.
        indexes = (
            (("description", "id"), False),
            (("creation_time", "id"), False),
            (("last_updated_time", "id"), False),
            (("num_versions", "id"), False),
            (("owner", "id"), False),
        )


class ModelLabel(Table):
    """One row per (model, label): label filters and label counts without scanning JSON."""

    model = pw.ForeignKeyField(Model, on_delete="CASCADE", backref="label_rows")
    label = pw.CharField(max_length=128)

    class Meta:
        table_name = "model_label"
        indexes = ((("model", "label"), True), (("label", "model"), False))


class Checkpoint(Table):
    uuid = pw.CharField(max_length=36, unique=True)
    experiment_id = pw.BigIntegerField(default=0)
    trial_id = pw.BigIntegerField(default=0)
    batch_number = pw.BigIntegerField(default=0)
    experiment_config = pw.JSONField(default=dict)
    hparams = pw.JSONField(default=dict)
    resources = pw.JSONField(default=dict)
    metadata = pw.JSONField(default=dict)
    framework = pw.TextField(default="")
    format = pw.TextField(default="")
    metrics = pw.JSONField(default=dict)
    state = pw.SmallIntegerField()
    storage_uri = pw.TextField(default="")
    report_time = pw.BigIntegerField()
    creation_time = pw.BigIntegerField()
    owner = pw.CharField(max_length=256, default="")  # the principal that created it

    class Meta:
        table_name = "checkpoint"
        indexes = ((("experiment_id", "trial_id", "id"), False), (("trial_id", "id"), False))


class CheckpointFile(Table):
    """A file stored in the registry for a checkpoint: its path, size and SHA-256, which names the
    blob holding its bytes (storage.py). `resources` of the checkpoint lists the same paths and sizes."""

    checkpoint = pw.ForeignKeyField(Checkpoint, on_delete="CASCADE", backref="files")
    path = pw.TextField()
    size = pw.BigIntegerField()
    sha256 = pw.CharField(max_length=64)

    class Meta:
        table_name = "checkpoint_file"
        indexes = ((("checkpoint", "path"), True), (("sha256",), False))


class BlobHold(Table):
    """A blob an upload in flight is about to record: the garbage collector keeps it (files.py)."""

    upload = pw.CharField(max_length=32)
    sha256 = pw.CharField(max_length=64)
    creation_time = pw.BigIntegerField()

    class Meta:
        table_name = "blob_hold"
        indexes = ((("upload",), False), (("sha256",), False), (("creation_time",), False))


class ModelVersion(Table):
    model = pw.ForeignKeyField(Model, on_delete="CASCADE", backref="versions")
    version = pw.IntegerField()
    # RESTRICT: a checkpoint in use by a version cannot be deleted, even by a racing transaction.
    checkpoint = pw.ForeignKeyField(Checkpoint, on_delete="RESTRICT", backref="versions")
    name = pw.TextField(default="")
    comment = pw.TextField(default="")
    labels = pw.JSONField(default=list)
    metadata = pw.JSONField(default=dict)
    notes = pw.TextField(default="")
    owner = pw.CharField(max_length=256, default="")
    creation_time = pw.BigIntegerField()
    last_updated_time = pw.BigIntegerField()

    class Meta:
        table_name = "model_version"
        indexes = ((("model", "version"), True),)


class ModelAlias(Table):
    """Where each alias of a model points now: one row per (model, alias), moved by one UPDATE."""

    model = pw.ForeignKeyField(Model, on_delete="CASCADE", backref="aliases")
    alias = pw.CharField(max_length=128)  # type: ignore[assignment]  # a column named as peewee's Model.alias()
    version = pw.IntegerField()

    class Meta:
        table_name = "model_alias"
        indexes = ((("model", "alias"), True), (("model", "version"), False))


class AliasChange(Table):
    """Every move of an alias, oldest first by id; it follows its model through renames."""

    model = pw.ForeignKeyField(Model, on_delete="CASCADE")
    alias = pw.CharField(max_length=128)  # type: ignore[assignment]  # a column named as peewee's Model.alias()
    previous_version = pw.IntegerField()  # 0: the alias was newly set
    version = pw.IntegerField()  # 0: the alias was deleted
    time = pw.BigIntegerField()
    principal = pw.CharField(max_length=256, default="")

    class Meta:
        table_name = "alias_change"
        indexes = ((("model", "alias", "id"), False),)


class Event(Table):
    """The registry's event log. `sequence` is taken from EventCounter at the end of the writing
    transaction (see RegistryStore._write), so numbers become visible in order."""

    sequence = pw.BigIntegerField(primary_key=True)
    time = pw.BigIntegerField()
    principal = pw.CharField(max_length=256, default="")
    kind = pw.SmallIntegerField()
    model_name = pw.CharField(max_length=256, default="")
    version = pw.IntegerField(default=0)
    alias = pw.CharField(max_length=128, default="")  # type: ignore[assignment]  # a column named as peewee's Model.alias()
    previous_version = pw.IntegerField(default=0)
    checkpoint_uuid = pw.CharField(max_length=36, default="")
    new_model_name = pw.CharField(max_length=256, default="")

    class Meta:
        table_name = "event"


class EventCounter(Table):
    """One row: the last event sequence number handed out."""

    last_sequence = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "event_counter"


class RequestRecord(Table):
    """A create that carried a request_id, so that a retry returns its result instead of creating again."""

    principal = pw.CharField(max_length=256, default="")  # ids are scoped by the caller that sent them
    request_id = pw.CharField(max_length=128)
    method = pw.CharField(max_length=64)
    fingerprint = pw.CharField(max_length=64)  # hash of the request, request_id left out
    result_id = pw.BigIntegerField()  # id of the created row (model, model version or checkpoint)
    creation_time = pw.BigIntegerField(index=True)

    class Meta:
        table_name = "request_record"
        indexes = ((("principal", "request_id"), True),)


class ModelCount(Table):
    """One row: the number of models, kept by triggers on `model` (migration 0004), so that an
    unfiltered ListModels need not count 100,000 rows for its total_size."""

    models = pw.BigIntegerField()

    class Meta:
        table_name = "model_count"


class RegistrySecret(Table):
    """Secrets of this database, shared by every replica on it (e.g. the key that signs page tokens)."""

    name = pw.CharField(max_length=64, primary_key=True)
    value = pw.CharField(max_length=256)

    class Meta:
        table_name = "registry_secret"
