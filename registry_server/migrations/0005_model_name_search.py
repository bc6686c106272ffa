"""SQLite: a trigram index of model names, so that ListModels' name filter (a case-insensitive
substring) looks up the matching models instead of scanning every name.

FTS5's trigram tokenizer answers `name LIKE '%text%'` from its index when the text has at least three
characters. The index is an external-content table over `model`, kept by triggers in the transaction
that inserts, renames or deletes a model. PostgreSQL's analogue, a pg_trgm GIN index, needs an
extension that the operator must allow, so PostgreSQL keeps the plain ILIKE scan.
"""

import peewee as pw


def up(migrator, db):
    if not isinstance(db, pw.SqliteDatabase):
        return
    for statement in (
        "CREATE VIRTUAL TABLE model_name_search USING fts5("
        "name, content='model', content_rowid='id', tokenize='trigram')",
        "INSERT INTO model_name_search (model_name_search) VALUES ('rebuild')",
        "CREATE TRIGGER model_name_search_insert AFTER INSERT ON model BEGIN "
        "INSERT INTO model_name_search (rowid, name) VALUES (new.id, new.name); END",
        "CREATE TRIGGER model_name_search_delete AFTER DELETE ON model BEGIN "
        "INSERT INTO model_name_search (model_name_search, rowid, name) VALUES ('delete', old.id, old.name); END",
        "CREATE TRIGGER model_name_search_rename AFTER UPDATE OF name ON model BEGIN "
        "INSERT INTO model_name_search (model_name_search, rowid, name) VALUES ('delete', old.id, old.name); "
        "INSERT INTO model_name_search (rowid, name) VALUES (new.id, new.name); END",
    ):
        db.execute_sql(statement)
