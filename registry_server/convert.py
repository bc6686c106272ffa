"""Rows become protobuf messages here, one function per message; and Struct becomes plain JSON."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from modelregistry import structs
from modelregistry.v1 import checkpoint_pb2, event_pb2, model_pb2

from . import rows, tables
from .errors import invalid


def timestamp(micros: int | None) -> timestamp_pb2.Timestamp | None:
    if micros is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799  # 0001-01-01 to 9999-12-31, as Timestamp allows


def micros(ts: timestamp_pb2.Timestamp) -> int:
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < 1_000_000_000):
        raise invalid("INVALID_TIMESTAMP", "timestamp out of range", seconds=ts.seconds, nanos=ts.nanos)
    return ts.ToMicroseconds()


def from_struct(struct: struct_pb2.Struct, field: str) -> dict[str, Any]:
    try:
        return structs.to_dict(struct)
    except ValueError:  # NaN and infinities have no JSON form
        raise invalid("INVALID_JSON", f"{field} must not hold NaN or infinite numbers", field=field) from None


def to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def model(row: rows.ModelRow | tables.Model) -> model_pb2.Model:
    return model_pb2.Model(
        name=row.name,
        description=row.description,
        metadata=to_struct(row.metadata),
        labels=row.labels,
        notes=row.notes,
        archived=row.archived,
        owner=row.owner,
        editors=row.editors,
        creation_time=timestamp(row.creation_time),
        last_updated_time=timestamp(row.last_updated_time),
        num_versions=row.num_versions,
        latest_version=row.latest_version,
    )


def checkpoint(row: rows.CheckpointRow | tables.Checkpoint) -> checkpoint_pb2.Checkpoint:
    return checkpoint_pb2.Checkpoint(
        uuid=row.uuid,
        experiment_id=row.experiment_id,
        trial_id=row.trial_id,
        batch_number=row.batch_number,
        experiment_config=to_struct(row.experiment_config),
        hparams=to_struct(row.hparams),
        resources=row.resources,
        metadata=to_struct(row.metadata),
        framework=row.framework,
        format=row.format,
        metrics=to_struct(row.metrics),
        state=checkpoint_pb2.CheckpointState.ValueType(row.state),
        storage_uri=row.storage_uri,
        report_time=timestamp(row.report_time),
        owner=row.owner,
    )


def model_version(row: rows.VersionRow) -> model_pb2.ModelVersion:
    return model_pb2.ModelVersion(
        model_name=row.model_name,
        version=row.version,
        checkpoint=checkpoint(row.checkpoint),
        name=row.name,
        comment=row.comment,
        labels=row.labels,
        metadata=to_struct(row.metadata),
        notes=row.notes,
        owner=row.owner,
        creation_time=timestamp(row.creation_time),
        last_updated_time=timestamp(row.last_updated_time),
        aliases=row.aliases,
    )


def alias_change(row: Any) -> model_pb2.AliasChange:
    """A history row (tables.AliasChange) with `model_name` selected too (store.list_alias_history)."""
    return model_pb2.AliasChange(
        model_name=row.model_name,
        alias=row.alias,
        previous_version=row.previous_version,
        version=row.version,
        time=timestamp(row.time),
        principal=row.principal,
    )


def event(row: tables.Event) -> event_pb2.Event:
    return event_pb2.Event(
        sequence=row.sequence,
        time=timestamp(row.time),
        principal=row.principal,
        kind=event_pb2.EventKind.ValueType(row.kind),
        model_name=row.model_name,
        version=row.version,
        alias=row.alias,
        previous_version=row.previous_version,
        checkpoint_uuid=row.checkpoint_uuid,
        new_model_name=row.new_model_name,
    )


def checkpoint_values(message: checkpoint_pb2.Checkpoint) -> dict[str, Any]:
    """The fields of a Checkpoint message as the store takes them."""
    return {
        "uuid": message.uuid,
        "experiment_id": message.experiment_id,
        "trial_id": message.trial_id,
        "batch_number": message.batch_number,
        "experiment_config": from_struct(message.experiment_config, "experiment_config"),
        "hparams": from_struct(message.hparams, "hparams"),
        "resources": dict(message.resources),
        "metadata": from_struct(message.metadata, "metadata"),
        "framework": message.framework,
        "format": message.format,
        "metrics": from_struct(message.metrics, "metrics"),
        "state": message.state,
        "storage_uri": message.storage_uri,
        "report_time": micros(message.report_time) if message.HasField("report_time") else None,
    }
