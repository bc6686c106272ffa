"""Trust boundaries between callers.

- request_record.principal: a request_id is remembered per principal, so one caller can neither block
  another's retries nor be handed another's objects by replaying its id.
- registry_secret: a random key per database (shared by every replica on it) that signs page tokens.
- model.name_key: the name as it is compared (NFC, case-folded): names that differ only by case or
  Unicode form are refused as twins, and the name filter matches on it the same way on both
  databases. Not unique, so that twins stored before this migration stay readable; the store refuses
  new ones under a lock. SQLite's trigram index now covers name_key.
- model.editors: principals the owner lets change the model besides itself.
- checkpoint.owner: the principal that created the checkpoint (uploads and deletes need it, or admin).

New columns are NOT NULL with a DEFAULT in the DDL itself, so that each is one ALTER TABLE on both
databases. Rows and tables below are a frozen copy of what this migration needs.
"""

import secrets
import unicodedata

import peewee as pw


def name_key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def up(migrator, db):
    sqlite = isinstance(db, pw.SqliteDatabase)
    def column(default: str) -> pw.Field:
        return pw.TextField(default=default, constraints=[pw.SQL(f"DEFAULT '{default}'")])

    # allow_not_null: the DEFAULT makes the column NOT NULL in one ALTER TABLE, where peewee would
    # otherwise rebuild SQLite's table (and lose its triggers) to add the constraint.
    migrator.migrate(
        migrator.add_column("request_record", "principal", column(""), allow_not_null=True),
        migrator.drop_index("request_record", "request_record_request_id"),
        migrator.add_index("request_record", ("principal", "request_id"), True),
        migrator.add_column("model", "name_key", column(""), allow_not_null=True),
        migrator.add_column("model", "editors", column("[]"), allow_not_null=True),
        migrator.add_column("checkpoint", "owner", column(""), allow_not_null=True),
    )
    if not sqlite:  # peewee's JSONField is jsonb on PostgreSQL
        db.execute_sql("ALTER TABLE model ALTER COLUMN editors DROP DEFAULT")
        db.execute_sql("ALTER TABLE model ALTER COLUMN editors TYPE jsonb USING editors::jsonb")
        db.execute_sql("ALTER TABLE model ALTER COLUMN editors SET DEFAULT '[]'::jsonb")
    for model_id, name in db.execute_sql("SELECT id, name FROM model").fetchall():
        db.execute_sql(f"UPDATE model SET name_key = {db.param} WHERE id = {db.param}", (name_key(name), model_id))
    migrator.migrate(migrator.add_index("model", ("name_key",), False))

    class RegistrySecret(pw.Model):
        name = pw.CharField(max_length=64, primary_key=True)
        value = pw.CharField(max_length=256)

        class Meta:
            database = db
            table_name = "registry_secret"

    db.create_tables([RegistrySecret])
    RegistrySecret.insert(name="page_tokens", value=secrets.token_hex(32)).execute()

    if sqlite:  # the trigram index of names (0005) now covers name_key
        for statement in (
            "DROP TRIGGER model_name_search_insert",
            "DROP TRIGGER model_name_search_delete",
            "DROP TRIGGER model_name_search_rename",
            "DROP TABLE model_name_search",
            "CREATE VIRTUAL TABLE model_name_search USING fts5("
            "name_key, content='model', content_rowid='id', tokenize='trigram')",
            "INSERT INTO model_name_search (model_name_search) VALUES ('rebuild')",
            "CREATE TRIGGER model_name_search_insert AFTER INSERT ON model BEGIN "
            "INSERT INTO model_name_search (rowid, name_key) VALUES (new.id, new.name_key); END",
            "CREATE TRIGGER model_name_search_delete AFTER DELETE ON model BEGIN "
            "INSERT INTO model_name_search (model_name_search, rowid, name_key) VALUES ('delete', old.id, old.name_key); END",
            "CREATE TRIGGER model_name_search_rename AFTER UPDATE OF name_key ON model BEGIN "
            "INSERT INTO model_name_search (model_name_search, rowid, name_key) VALUES ('delete', old.id, old.name_key); "
            "INSERT INTO model_name_search (rowid, name_key) VALUES (new.id, new.name_key); END",
        ):
            db.execute_sql(statement)
