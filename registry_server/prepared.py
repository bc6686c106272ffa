"""Statements built once and run many times.

Measured on this machine, peewee spends ~200 us building the SQL of a point select and ~10 us running
it, and reading a row into a model instance costs about as much again. The hot paths therefore build
their statements with peewee once per store, with named placeholders where the request's values go;
each call binds the values, runs the SQL and gets the cursor's tuples (rows.py turns them into
named tuples, convert.py into messages)."""

from __future__ import annotations

from typing import Any

import peewee as pw


class Param:
    """A placeholder in a prepared query, filled by name when it runs."""

    def __init__(self, name: str) -> None:
        self.name = name

    def bind(self, values: dict[str, Any]) -> Any:
        return values[self.name]


def param(name: str) -> pw.Value:
    """A value node that peewee passes through unconverted, so that it lands in the SQL's parameters."""
    return pw.Value(Param(name), converter=False)


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

    def execute(self, db: pw.Database, **values: Any) -> int:
        """Runs a write; the number of rows it changed."""
        cursor = db.execute_sql(self.sql, self._bind(values))
        count: int = cursor.rowcount
        return count
