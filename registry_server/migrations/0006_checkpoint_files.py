"""Checkpoint files become rows: (checkpoint, path, size, sha256), the digest naming the blob that
holds the bytes (content-addressed storage, see registry_server/storage.py), in place of the JSON
column checkpoint.file_digests, whose entries move into them. blob_hold records the blobs uploads in
flight are about to record, which the garbage collector keeps (registry_server/files.py).

The files themselves move from <root>/<uuid>/<path> to blobs when the server starts
(CheckpointFiles.adopt_legacy_files): a migration has no storage to work on.

The tables are a frozen copy of registry_server.tables as of this migration.
"""

import json
import sqlite3

import peewee as pw

BATCH = 500


def up(migrator, db):
    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Checkpoint(Base):  # only as the target of a foreign key: the table exists already
        class Meta:
            table_name = "checkpoint"

    class CheckpointFile(Base):
        checkpoint = pw.ForeignKeyField(Checkpoint, on_delete="CASCADE")
        path = pw.TextField()
        size = pw.BigIntegerField()
        sha256 = pw.CharField(max_length=64)

        class Meta:
            table_name = "checkpoint_file"
            indexes = ((("checkpoint", "path"), True), (("sha256",), False))

    class BlobHold(Base):
        upload = pw.CharField(max_length=32)
        sha256 = pw.CharField(max_length=64)
        creation_time = pw.BigIntegerField()

        class Meta:
            table_name = "blob_hold"
            indexes = ((("upload",), False), (("sha256",), False), (("creation_time",), False))

    db.create_tables([CheckpointFile, BlobHold])

    last_id = 0
    while True:
        rows = db.execute_sql(
            f"SELECT id, resources, file_digests FROM checkpoint WHERE id > {db.param} ORDER BY id LIMIT {BATCH}", (last_id,)
        ).fetchall()
        if not rows:
            break
        files = []
        for checkpoint_id, resources, digests in rows:
            resources = json.loads(resources) if isinstance(resources, str) else resources
            digests = json.loads(digests) if isinstance(digests, str) else digests
            files += [
                {"checkpoint": checkpoint_id, "path": path, "size": int(resources.get(path, 0)), "sha256": digest}
                for path, digest in (digests or {}).items()
            ]
        for start in range(0, len(files), BATCH):
            CheckpointFile.insert_many(files[start : start + BATCH]).execute()
        last_id = rows[-1][0]

    if isinstance(db, pw.SqliteDatabase) and sqlite3.sqlite_version_info < (3, 35, 0):
        # No ALTER TABLE ... DROP COLUMN before SQLite 3.35, and rebuilding a table that others
        # reference is a risk not worth a column nobody reads: empty it, and leave it.
        db.execute_sql("UPDATE checkpoint SET file_digests = '{}'")
    else:
        migrator.migrate(migrator.drop_column("checkpoint", "file_digests"))
