"""The number of models, kept in a one-row table by triggers on `model`.

An unfiltered ListModels reports total_size; counting the rows costs O(models) on every page (several
milliseconds at 100,000 models), reading this row costs O(1). Triggers, not the store, keep it: every
writer of `model` (the store, export/import, direct SQL) updates it in its own transaction, so it is
always exact. On PostgreSQL the row is locked by each model insert or delete until commit, which
serialises CreateModel and DeleteModel; on SQLite they are serialised anyway.
"""

import peewee as pw


def up(migrator, db):
    class ModelCount(pw.Model):
        models = pw.BigIntegerField()

        class Meta:
            database = db
            table_name = "model_count"

    db.create_tables([ModelCount])
    db.execute_sql("INSERT INTO model_count (id, models) SELECT 1, COUNT(*) FROM model")
    if isinstance(db, pw.SqliteDatabase):
        db.execute_sql(
            "CREATE TRIGGER model_count_insert AFTER INSERT ON model "
            "BEGIN UPDATE model_count SET models = models + 1; END"
        )
        db.execute_sql(
            "CREATE TRIGGER model_count_delete AFTER DELETE ON model "
            "BEGIN UPDATE model_count SET models = models - 1; END"
        )
        return
    # Statement-level with transition tables: one UPDATE per statement, however many rows it writes.
    for event, table, sign in (("INSERT", "NEW", "+"), ("DELETE", "OLD", "-")):
        name = f"model_count_{event.lower()}"
        db.execute_sql(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"UPDATE model_count SET models = models {sign} (SELECT COUNT(*) FROM changed); RETURN NULL; END $$"
        )
        db.execute_sql(
            f"CREATE TRIGGER {name} AFTER {event} ON model REFERENCING {table} TABLE AS changed "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )
