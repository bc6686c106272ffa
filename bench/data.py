"""Bulk loading straight into the tables (not 100,000 RPCs), in the shape the store itself writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import peewee as pw
from modelregistry.v1.checkpoint_pb2 import CHECKPOINT_STATE_COMPLETED as STATE_COMPLETED

from registry_server import db as database
from registry_server.tables import Checkpoint, Model, ModelAlias, ModelVersion, now_us
from registry_server.validation import name_key

CHUNK = 2000
FILTER_MATCHES = 20  # models named "findme-NN": the name filter matches these, at every size


def _chunks(rows: Iterable[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Loader:
    """Writes rows into the database the server under test is serving."""

    def __init__(self, database_url: str) -> None:
        self.db = database.connect(database_url, max_connections=2)

    def close(self) -> None:
        self.db.close_all()

    def _insert(self, table: type[pw.Model], rows: Iterable[dict[str, Any]]) -> None:
        with self.db.connection_context():
            for chunk in _chunks(rows):
                with self.db.atomic():
                    table.insert_many(chunk).execute()

    def checkpoint(self) -> str:
        """A COMPLETED checkpoint that every loaded version points at; returns its uuid."""
        now = now_us()
        checkpoint_uuid = str(uuid.uuid4())
        self._insert(
            Checkpoint,
            [{"uuid": checkpoint_uuid, "state": STATE_COMPLETED, "report_time": now, "creation_time": now,
              "metrics": {"loss": 0.1}, "experiment_id": 1, "trial_id": 1}],
        )
        return checkpoint_uuid

    def models(self, names: Iterable[str]) -> None:
        now = now_us()
        self._insert(
            Model,
            ({"name": name, "name_key": name_key(name), "description": "loaded by the benchmark",
              "metadata": {"team": "bench"}, "creation_time": now, "last_updated_time": now} for name in names),
        )

    def versions(self, model_ids: list[int], per_model: int, checkpoint_uuid: str) -> None:
        """`per_model` versions on each model, numbered 1..per_model, with the model's counters set."""
        now = now_us()
        with self.db.connection_context():
            checkpoint_id = Checkpoint.get(Checkpoint.uuid == checkpoint_uuid).id
            for start in range(0, len(model_ids), CHUNK):
                with self.db.atomic():
                    Model.update(num_versions=per_model, latest_version=per_model, last_assigned_version=per_model).where(
                        Model.id.in_(model_ids[start:start + CHUNK])
                    ).execute()
        self._insert(
            ModelVersion,
            ({"model": model_id, "version": v, "checkpoint": checkpoint_id, "metadata": {"step": v},
              "creation_time": now, "last_updated_time": now}
             for model_id in model_ids for v in range(1, per_model + 1)),
        )

    def alias(self, model_name: str, alias: str, version: int) -> None:
        with self.db.connection_context():
            model_id = Model.get(Model.name == model_name).id
        self._insert(ModelAlias, [{"model": model_id, "alias": alias, "version": version}])

    def model_ids(self, prefix: str, limit: int) -> list[int]:
        with self.db.connection_context():
            query = Model.select(Model.id).where(Model.name.startswith(prefix)).order_by(Model.id).limit(limit)
            return [row.id for row in query]

    def delete_models(self, prefix: str) -> int:
        """Removes the models (and their versions) that the write benchmarks created."""
        with self.db.connection_context(), self.db.atomic():
            return Model.delete().where(Model.name.startswith(prefix)).execute()
