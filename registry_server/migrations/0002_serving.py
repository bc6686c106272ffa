"""Serving workflows: model aliases and their history, the event log with its sequence counter, and
the request ids of idempotent creates.

The tables are a frozen copy of registry_server.tables as of this migration."""

import peewee as pw


def up(migrator, db):
    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Model(Base):  # only as the target of foreign keys: the table exists already
        class Meta:
            table_name = "model"

    class ModelAlias(Base):
        model = pw.ForeignKeyField(Model, on_delete="CASCADE")
        alias = pw.CharField(max_length=128)  # type: ignore[assignment]  # a column named as peewee's Model.alias()
        version = pw.IntegerField()

        class Meta:
            table_name = "model_alias"
            indexes = ((("model", "alias"), True), (("model", "version"), False))

    class AliasChange(Base):
        model = pw.ForeignKeyField(Model, on_delete="CASCADE")
        alias = pw.CharField(max_length=128)  # type: ignore[assignment]  # a column named as peewee's Model.alias()
        previous_version = pw.IntegerField()
        version = pw.IntegerField()
        time = pw.BigIntegerField()
        principal = pw.CharField(max_length=256, default="")

        class Meta:
            table_name = "alias_change"
            indexes = ((("model", "alias", "id"), False),)

    class Event(Base):
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

    class EventCounter(Base):
        last_sequence = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "event_counter"

    class RequestRecord(Base):
        request_id = pw.CharField(max_length=128, unique=True)
        method = pw.CharField(max_length=64)
        fingerprint = pw.CharField(max_length=64)
        result_id = pw.BigIntegerField()
        creation_time = pw.BigIntegerField(index=True)

        class Meta:
            table_name = "request_record"

    db.create_tables([ModelAlias, AliasChange, Event, EventCounter, RequestRecord])
    EventCounter.insert(id=1, last_sequence=0).execute()
