"""Initial schema: models, their labels, checkpoints and model versions.

The tables are a frozen copy of registry_server.tables as of this migration: later changes to the
application models must come as new migrations, never as edits here.
"""

import peewee as pw


def up(migrator, db):
    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Model(Base):
        name = pw.CharField(max_length=256, unique=True)
        description = pw.TextField(default="")
        metadata = pw.JSONField(default=dict)
        labels = pw.JSONField(default=list)
        notes = pw.TextField(default="")
        archived = pw.BooleanField(default=False)
        owner = pw.CharField(max_length=256, default="")
        creation_time = pw.BigIntegerField()
        last_updated_time = pw.BigIntegerField()
        num_versions = pw.IntegerField(default=0)
        latest_version = pw.IntegerField(default=0)
        last_assigned_version = pw.IntegerField(default=0)

        class Meta:
            table_name = "model"
            indexes = (
                (("description", "id"), False),
                (("creation_time", "id"), False),
                (("last_updated_time", "id"), False),
                (("num_versions", "id"), False),
                (("owner", "id"), False),
            )

    class ModelLabel(Base):
        model = pw.ForeignKeyField(Model, on_delete="CASCADE")
        label = pw.CharField(max_length=128)

        class Meta:
            table_name = "model_label"
            indexes = ((("model", "label"), True), (("label", "model"), False))

    class Checkpoint(Base):
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

        class Meta:
            table_name = "checkpoint"
            indexes = ((("experiment_id", "trial_id", "id"), False), (("trial_id", "id"), False))

    class ModelVersion(Base):
        model = pw.ForeignKeyField(Model, on_delete="CASCADE")
        version = pw.IntegerField()
        checkpoint = pw.ForeignKeyField(Checkpoint, on_delete="RESTRICT")
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

    db.create_tables([Model, ModelLabel, Checkpoint, ModelVersion])
