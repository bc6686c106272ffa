"""Statements built once and run many times.

Measured on this machine, peewee spends ~200 us building the SQL of a point select and ~10 us running
it, and reading a row into a model instance costs about as much again. The hot paths therefore build
their statements with peewee once per store, with named placeholders where the request's values go;
each call binds the values, runs the SQL and gets the cursor's tuples (rows.py turns them into
named tuples, convert.py into messages)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import peewee as pw


def tuples(query: Any) -> list[tuple[Any, ...]]:
    """The rows of a peewee query as tuples (peewee's own `.tuples()`, typed as such)."""
    return list(query.tuples())


class Param:
    """A placeholder in a prepared query, filled by name (and converted for the driver) when it runs."""

    __slots__ = ("name", "convert", "default")

    def __init__(self, name: str, convert: Callable[[Any], Any] | None = None, default: Any = KeyError) -> None:
        self.name = name
        self.convert = convert
        self.default = default  # a value, or a callable that makes one, for a run that gives none

    def bind(self, values: dict[str, Any]) -> Any:
        if self.name in values:
            value = values[self.name]
        elif self.default is KeyError:
            raise KeyError(f"no value for the placeholder {self.name!r}")
        else:
            value = self.default() if callable(self.default) else self.default
        return value if self.convert is None else self.convert(value)


def param(name: str, field: pw.Field | None = None) -> pw.Node:
    """A value node that peewee passes through unconverted, so that it lands in the SQL's parameters;
    with `field`, the value is converted as that field converts it (JSON: json(?) with the text on
    SQLite, the driver's Json adapter on PostgreSQL)."""
    if field is None:
        return pw.Value(Param(name), converter=False)
    default = KeyError if field.default is None else field.default
    if isinstance(field, pw.JSONField):
        dumps = getattr(field, "_dumps", json.dumps)
        database = field.model._meta.database
        if isinstance(getattr(database, "obj", database), pw.SqliteDatabase):  # through the tables' proxy
            return pw.fn.json(pw.Value(Param(name, dumps, default), converter=False))
        from psycopg2.extras import Json

        return pw.Value(Param(name, lambda value: Json(value, dumps=dumps), default), converter=False)
    return pw.Value(Param(name, field.db_value, default), converter=False)


def insert(table: type[pw.Model], *returning: pw.Node) -> PreparedQuery:
    """INSERT of one row of `table`: a placeholder per column (named as its field, the field's default
    when a run gives no value) but an automatic id."""
    fields = [f for f in table._meta.sorted_fields if not isinstance(f, pw.AutoField)]
    query = table.insert({f: param(f.name, f) for f in fields})
    return PreparedQuery(query.returning(*returning) if returning else query)


class PreparedQuery:
    """A statement whose SQL is rendered once, for the database it was built on; each run only binds
    its placeholders and hands back the cursor's raw rows (rows.py reads them)."""

    def __init__(self, query: pw.Query) -> None:
        self.sql, self._params = query.sql()

    def _bind(self, values: dict[str, Any]) -> list[Any]:
        return [p.bind(values) if isinstance(p, Param) else p for p in self._params]

    def rows(self, db: pw.Database, **values: Any) -> list[tuple[Any, ...]]:
        """Every row for these placeholder values."""
        cursor = db.execute_sql(self.sql, self._bind(values))
        try:
            return cursor.fetchall()
        finally:
            cursor.close()  # ends SQLite's read snapshot now, not when the cursor is collected

    def first(self, db: pw.Database, **values: Any) -> tuple[Any, ...] | None:
        """The first row for these placeholder values, or None."""
        cursor = db.execute_sql(self.sql, self._bind(values))
        try:
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row
        finally:
            cursor.close()

    def value(self, db: pw.Database, **values: Any) -> Any:
        """The first column of the first row, for a statement that always returns one (a COUNT, an
        INSERT or UPDATE ... RETURNING of a row known to exist)."""
        row = self.first(db, **values)
        if row is None:
            raise LookupError(f"no row from {self.sql}")
        return row[0]

    def execute(self, db: pw.Database, **values: Any) -> int:
        """Runs a write; the number of rows it changed."""
        cursor = db.execute_sql(self.sql, self._bind(values))
        try:
            count: int = cursor.rowcount
            return count
        finally:
            cursor.close()
