"""Checkpoint files: the SHA-256 of every file stored in the registry, path -> hex digest.

A NOT NULL column with a DEFAULT in the DDL itself, so that both SQLite and PostgreSQL add it in one
ALTER TABLE (no table rebuild under the checkpoint table's foreign keys) and old rows read as {}.
"""

import peewee as pw


def up(migrator, db):
    column = pw.JSONField(default=dict, constraints=[pw.SQL("DEFAULT '{}'")])
    migrator.migrate(migrator.add_column("checkpoint", "file_digests", column, allow_not_null=True))
