"""Model, ModelVersion and Checkpoint: Python views of the registry's protobuf messages."""

from __future__ import annotations

import datetime
import enum
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import field_mask_pb2, json_format, struct_pb2
from google.protobuf.message import Message

from modelregistry.v1 import checkpoint_pb2, event_pb2, model_pb2, registry_service_pb2 as pb

from .errors import NotFoundError
from .loading import load_checkpoint_dir

if TYPE_CHECKING:
    from .client import Registry


class ModelSortBy(enum.IntEnum):
    """Key that Registry.get_models sorts by."""

    NAME = model_pb2.MODEL_SORT_BY_NAME
    DESCRIPTION = model_pb2.MODEL_SORT_BY_DESCRIPTION
    CREATION_TIME = model_pb2.MODEL_SORT_BY_CREATION_TIME
    LAST_UPDATED_TIME = model_pb2.MODEL_SORT_BY_LAST_UPDATED_TIME
    NUM_VERSIONS = model_pb2.MODEL_SORT_BY_NUM_VERSIONS


class ModelOrderBy(enum.IntEnum):
    """Direction of a sort."""

    ASC = model_pb2.ORDER_BY_ASC
    DESC = model_pb2.ORDER_BY_DESC


class CheckpointState(enum.IntEnum):
    """Lifecycle state of a checkpoint's stored files."""

    # Kept so that a message without a state still converts instead of raising.
    UNSPECIFIED = checkpoint_pb2.CHECKPOINT_STATE_UNSPECIFIED
    ACTIVE = checkpoint_pb2.CHECKPOINT_STATE_ACTIVE
    COMPLETED = checkpoint_pb2.CHECKPOINT_STATE_COMPLETED
    ERROR = checkpoint_pb2.CHECKPOINT_STATE_ERROR
    DELETED = checkpoint_pb2.CHECKPOINT_STATE_DELETED
    PARTIALLY_DELETED = checkpoint_pb2.CHECKPOINT_STATE_PARTIALLY_DELETED


class EventKind(enum.IntEnum):
    """What a change of the registry did (Event.kind)."""

    MODEL_CREATED = event_pb2.EVENT_KIND_MODEL_CREATED
    MODEL_UPDATED = event_pb2.EVENT_KIND_MODEL_UPDATED
    MODEL_RENAMED = event_pb2.EVENT_KIND_MODEL_RENAMED
    MODEL_ARCHIVED = event_pb2.EVENT_KIND_MODEL_ARCHIVED
    MODEL_UNARCHIVED = event_pb2.EVENT_KIND_MODEL_UNARCHIVED
    MODEL_DELETED = event_pb2.EVENT_KIND_MODEL_DELETED
    MODEL_VERSION_CREATED = event_pb2.EVENT_KIND_MODEL_VERSION_CREATED
    MODEL_VERSION_UPDATED = event_pb2.EVENT_KIND_MODEL_VERSION_UPDATED
    MODEL_VERSION_DELETED = event_pb2.EVENT_KIND_MODEL_VERSION_DELETED
    CHECKPOINT_CREATED = event_pb2.EVENT_KIND_CHECKPOINT_CREATED
    CHECKPOINT_DELETED = event_pb2.EVENT_KIND_CHECKPOINT_DELETED
    ALIAS_SET = event_pb2.EVENT_KIND_ALIAS_SET
    ALIAS_DELETED = event_pb2.EVENT_KIND_ALIAS_DELETED
    CHECKPOINT_FILES_UPLOADED = event_pb2.EVENT_KIND_CHECKPOINT_FILES_UPLOADED


def _plain_numbers(value: Any) -> Any:
    """Turn integral floats back into ints, recursively: Struct stores every number as a double."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    return value


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Convert a protobuf Struct to a plain dict, so {"epochs": 10} round-trips as 10, not 10.0."""
    return _plain_numbers(json_format.MessageToDict(struct))


def dict_to_struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    """Convert a JSON-serialisable mapping to a protobuf Struct (None gives an empty one)."""
    if value is not None and not isinstance(value, Mapping):
        # Catches e.g. {"key", "value"} (a set) before it turns into an obscure protobuf error.
        raise TypeError(f"expected a dict of JSON values, got {type(value).__name__}: {value!r}")
    struct = struct_pb2.Struct()
    struct.update(dict(value or {}))
    return struct


def checkpoint_message(
    uuid: str | None = None,
    experiment_id: int = 0,
    trial_id: int = 0,
    batch_number: int = 0,
    experiment_config: Mapping[str, Any] | None = None,
    hparams: Mapping[str, Any] | None = None,
    resources: Mapping[str, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
    framework: str = "",
    format: str = "",
    metrics: Mapping[str, Any] | None = None,
    state: CheckpointState | None = None,
    storage_uri: str = "",
    report_time: datetime.datetime | None = None,
) -> checkpoint_pb2.Checkpoint:
    """A Checkpoint message from the arguments of Registry.create_checkpoint."""
    checkpoint = checkpoint_pb2.Checkpoint(
        uuid=uuid or "",
        experiment_id=experiment_id,
        trial_id=trial_id,
        batch_number=batch_number,
        experiment_config=dict_to_struct(experiment_config),
        hparams=dict_to_struct(hparams),
        resources=dict(resources or {}),
        metadata=dict_to_struct(metadata),
        framework=framework,
        format=format,
        metrics=dict_to_struct(metrics),
        state=state or 0,
        storage_uri=storage_uri,
    )
    if report_time is not None:
        checkpoint.report_time.FromDatetime(report_time)  # naive datetimes are taken as UTC
    return checkpoint


def timestamp_to_datetime(message: Message, field_name: str) -> datetime.datetime | None:
    """Return message.<field_name> as a timezone-aware UTC datetime, or None when it is unset."""
    if not message.HasField(field_name):
        return None
    return getattr(message, field_name).ToDatetime(tzinfo=datetime.timezone.utc)


def message_to_dict(message: Message) -> dict[str, Any]:
    """The protobuf JSON form of a message, with defaults shown and int64 values as JSON numbers.

    Integral Struct numbers print as 10, not 10.0, as protobuf's C++ and Go JSON printers (grpcurl) do.
    """
    return _plain_numbers(
        json_format.MessageToDict(
            message, always_print_fields_with_no_presence=True, unquote_int64_if_possible=True
        )
    )


@dataclass(eq=False)
class Checkpoint:
    """A saved training state: origin, hyperparameters, metrics and where its files are stored."""

    uuid: str
    experiment_id: int
    trial_id: int
    batch_number: int
    experiment_config: dict[str, Any]
    hparams: dict[str, Any]
    resources: dict[str, int]
    metadata: dict[str, Any]
    framework: str
    format: str
    metrics: dict[str, Any]
    state: CheckpointState
    storage_uri: str
    report_time: datetime.datetime | None
    _registry: Registry = field(repr=False)
    _proto: checkpoint_pb2.Checkpoint = field(repr=False)

    @classmethod
    def from_proto(cls, proto: checkpoint_pb2.Checkpoint, registry: Registry) -> Checkpoint:
        """Build a Checkpoint from its protobuf message."""
        return cls(
            uuid=proto.uuid,
            experiment_id=proto.experiment_id,
            trial_id=proto.trial_id,
            batch_number=proto.batch_number,
            experiment_config=struct_to_dict(proto.experiment_config),
            hparams=struct_to_dict(proto.hparams),
            resources=dict(proto.resources),
            metadata=struct_to_dict(proto.metadata),
            framework=proto.framework,
            format=proto.format,
            metrics=struct_to_dict(proto.metrics),
            state=CheckpointState(proto.state),
            storage_uri=proto.storage_uri,
            report_time=timestamp_to_datetime(proto, "report_time"),
            _registry=registry,
            _proto=proto,
        )

    def to_dict(self) -> dict[str, Any]:
        """The protobuf JSON form of this checkpoint."""
        return message_to_dict(self._proto)

    def delete(self) -> None:
        """Delete this checkpoint and its stored files (refused while a model version uses it)."""
        self._registry.delete_checkpoint(self.uuid)

    def download(
        self, path: str | os.PathLike[str] | None = None, *, paths: Iterable[str] | None = None, progress: Any = None
    ) -> Path:
        """Download the checkpoint's stored files (or only `paths`) into the directory `path`, by
        default checkpoints/<uuid>; every file's SHA-256 is checked. Returns the directory."""
        directory = Path(path) if path is not None else Path("checkpoints", self.uuid)
        return self._registry.download_checkpoint(self.uuid, directory, paths, progress=progress)

    def load(self, path: str | os.PathLike[str] | None = None, *, file: str | None = None) -> Any:
        """Download the checkpoint (into `path`, as download does) and load its model: PyTorch .pt/.pth
        (torch.load with weights_only=True), joblib, pickle (e.g. scikit-learn), Keras .keras/.h5,
        TensorFlow SavedModel, ONNX. `file` picks one file when several could be loaded. Raises
        ModuleNotFoundError naming the package to install when the framework is missing.

        Pickle and joblib files can run code when loaded: load only checkpoints you trust."""
        return load_checkpoint_dir(self.download(path), file=file, format=self.format)

    def __repr__(self) -> str:
        return (
            f"Checkpoint(uuid={self.uuid!r}, experiment_id={self.experiment_id}, "
            f"trial_id={self.trial_id}, batch_number={self.batch_number}, state={self.state.name})"
        )


@dataclass(eq=False)
class ModelVersion:
    """One numbered version of a model, pointing at one checkpoint."""

    model_name: str
    version: int
    checkpoint: Checkpoint
    name: str
    comment: str
    labels: list[str]
    metadata: dict[str, Any]
    notes: str
    owner: str
    creation_time: datetime.datetime | None
    last_updated_time: datetime.datetime | None
    aliases: list[str]
    _registry: Registry = field(repr=False)
    _proto: model_pb2.ModelVersion = field(repr=False)

    @classmethod
    def from_proto(cls, proto: model_pb2.ModelVersion, registry: Registry) -> ModelVersion:
        """Build a ModelVersion (with its Checkpoint) from its protobuf message."""
        return cls(
            model_name=proto.model_name,
            version=proto.version,
            checkpoint=Checkpoint.from_proto(proto.checkpoint, registry),
            name=proto.name,
            comment=proto.comment,
            labels=list(proto.labels),
            metadata=struct_to_dict(proto.metadata),
            notes=proto.notes,
            owner=proto.owner,
            creation_time=timestamp_to_datetime(proto, "creation_time"),
            last_updated_time=timestamp_to_datetime(proto, "last_updated_time"),
            aliases=list(proto.aliases),
            _registry=registry,
            _proto=proto,
        )

    def to_dict(self) -> dict[str, Any]:
        """The protobuf JSON form of this version, checkpoint included."""
        return message_to_dict(self._proto)

    def _update(self, field_name: str, new_values: model_pb2.ModelVersion) -> ModelVersion:
        response = self._registry._call(
            "UpdateModelVersion",
            pb.UpdateModelVersionRequest(
                model_name=self.model_name,
                version=self.version,
                model_version=new_values,
                update_mask=field_mask_pb2.FieldMask(paths=[field_name]),
            ),
        )
        self.__dict__.update(ModelVersion.from_proto(response.model_version, self._registry).__dict__)
        return self

    def set_name(self, name: str) -> ModelVersion:
        """Replace the version's human-readable name."""
        return self._update("name", model_pb2.ModelVersion(name=name))

    def set_comment(self, comment: str) -> ModelVersion:
        """Replace the version's comment."""
        return self._update("comment", model_pb2.ModelVersion(comment=comment))

    def set_labels(self, labels: Iterable[str]) -> ModelVersion:
        """Replace the version's labels."""
        return self._update("labels", model_pb2.ModelVersion(labels=list(labels)))

    def set_metadata(self, metadata: Mapping[str, Any]) -> ModelVersion:
        """Replace the version's whole metadata."""
        return self._update("metadata", model_pb2.ModelVersion(metadata=dict_to_struct(metadata)))

    def set_notes(self, notes: str) -> ModelVersion:
        """Replace the version's notes."""
        return self._update("notes", model_pb2.ModelVersion(notes=notes))

    def delete(self) -> None:
        """Delete this version; its number is never handed out again."""
        self._registry._call(
            "DeleteModelVersion",
            pb.DeleteModelVersionRequest(model_name=self.model_name, version=self.version),
        )

    def __repr__(self) -> str:
        return (
            f"ModelVersion(model_name={self.model_name!r}, version={self.version}, "
            f"checkpoint_uuid={self.checkpoint.uuid!r}, name={self.name!r}, aliases={self.aliases!r})"
        )


@dataclass(eq=False)
class Model:
    """A named group of model versions, with description, metadata, labels and notes."""

    name: str
    description: str
    metadata: dict[str, Any]
    labels: list[str]
    notes: str
    archived: bool
    owner: str
    creation_time: datetime.datetime | None
    last_updated_time: datetime.datetime | None
    num_versions: int
    latest_version: int
    _registry: Registry = field(repr=False)
    _proto: model_pb2.Model = field(repr=False)

    @classmethod
    def from_proto(cls, proto: model_pb2.Model, registry: Registry) -> Model:
        """Build a Model from its protobuf message."""
        return cls(
            name=proto.name,
            description=proto.description,
            metadata=struct_to_dict(proto.metadata),
            labels=list(proto.labels),
            notes=proto.notes,
            archived=proto.archived,
            owner=proto.owner,
            creation_time=timestamp_to_datetime(proto, "creation_time"),
            last_updated_time=timestamp_to_datetime(proto, "last_updated_time"),
            num_versions=proto.num_versions,
            latest_version=proto.latest_version,
            _registry=registry,
            _proto=proto,
        )

    def to_dict(self) -> dict[str, Any]:
        """The protobuf JSON form of this model."""
        return message_to_dict(self._proto)

    def _refresh(self, rpc: str, request: Message) -> Model:
        """Call an RPC answering with the model and take every attribute from that answer."""
        response = self._registry._call(rpc, request)
        self.__dict__.update(Model.from_proto(response.model, self._registry).__dict__)
        return self

    def _update(self, field_name: str, new_values: model_pb2.Model) -> Model:
        mask = field_mask_pb2.FieldMask(paths=[field_name])
        return self._refresh(
            "UpdateModel", pb.UpdateModelRequest(name=self.name, model=new_values, update_mask=mask)
        )

    def reload(self) -> Model:
        """Fetch the model again, e.g. to see versions registered since."""
        return self._refresh("GetModel", pb.GetModelRequest(name=self.name))

    def add_metadata(self, metadata: Mapping[str, Any]) -> Model:
        """Merge top-level keys into the metadata on the server (a key's old value is replaced)."""
        return self._refresh(
            "UpdateModelMetadata",
            pb.UpdateModelMetadataRequest(name=self.name, merge=dict_to_struct(metadata)),
        )

    def remove_metadata(self, keys: Iterable[str]) -> Model:
        """Remove top-level metadata keys on the server; absent keys are ignored."""
        if isinstance(keys, str):
            keys = [keys]  # remove_metadata("key") would otherwise remove "k", "e" and "y"
        return self._refresh(
            "UpdateModelMetadata", pb.UpdateModelMetadataRequest(name=self.name, remove_keys=keys)
        )

    def set_description(self, description: str) -> Model:
        """Replace the description."""
        return self._update("description", model_pb2.Model(description=description))

    def set_labels(self, labels: Iterable[str]) -> Model:
        """Replace the labels."""
        return self._update("labels", model_pb2.Model(labels=list(labels)))

    def set_notes(self, notes: str) -> Model:
        """Replace the notes."""
        return self._update("notes", model_pb2.Model(notes=notes))

    def rename(self, new_name: str) -> Model:
        """Rename the model; its versions follow it."""
        return self._refresh("RenameModel", pb.RenameModelRequest(name=self.name, new_name=new_name))

    def archive(self) -> Model:
        """Make the model read-only: it refuses new versions and edits until unarchived."""
        return self._refresh("ArchiveModel", pb.ArchiveModelRequest(name=self.name))

    def unarchive(self) -> Model:
        """Make an archived model editable again."""
        return self._refresh("UnarchiveModel", pb.UnarchiveModelRequest(name=self.name))

    def delete(self) -> None:
        """Delete the model and all its versions; the checkpoints stay."""
        self._registry.delete_model(self.name)

    def register_version(
        self,
        checkpoint_uuid: str | None = None,
        name: str = "",
        comment: str = "",
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        notes: str = "",
        *,
        checkpoint: Mapping[str, Any] | None = None,
        aliases: Iterable[str] = (),
        request_id: str | None = None,
    ) -> ModelVersion:
        """Register a COMPLETED checkpoint as the model's next version (1, 2, 3, ...); see
        Registry.register_version for `checkpoint`, `aliases` and `request_id`.

        The model's own num_versions and latest_version are not refreshed; call reload() for them.
        """
        return self._registry.register_version(
            self.name,
            checkpoint_uuid,
            name=name,
            comment=comment,
            labels=labels,
            metadata=metadata,
            notes=notes,
            checkpoint=checkpoint,
            aliases=aliases,
            request_id=request_id,
        )

    def get_version(self, n: int | None = None, alias: str | None = None) -> ModelVersion | None:
        """Return version n, the version `alias` points at, or the latest version when neither is given
        (None if the model has no version yet)."""
        try:
            response = self._registry._call(
                "GetModelVersion",
                pb.GetModelVersionRequest(model_name=self.name, version=n or 0, alias=alias or ""),
            )
        except NotFoundError as err:
            # A missing model (MODEL_NOT_FOUND), version or alias still raises.
            if not n and not alias and err.reason == "MODEL_VERSION_NOT_FOUND":
                return None
            raise
        return ModelVersion.from_proto(response.model_version, self._registry)

    def set_alias(self, alias: str, version: int) -> ModelVersion:
        """Point `alias` (e.g. "production") at a version, creating or moving it in one atomic step."""
        response = self._registry._call(
            "SetModelAlias", pb.SetModelAliasRequest(model_name=self.name, alias=alias, version=version)
        )
        return ModelVersion.from_proto(response.model_version, self._registry)

    def delete_alias(self, alias: str) -> None:
        """Remove an alias; its history stays."""
        self._registry._call("DeleteModelAlias", pb.DeleteModelAliasRequest(model_name=self.name, alias=alias))

    def get_alias_history(self, alias: str | None = None, limit: int | None = None) -> list[AliasChange]:
        """Every move of the model's aliases (or of one alias), oldest first."""
        request = pb.ListAliasHistoryRequest(model_name=self.name, alias=alias or "")
        return [AliasChange.from_proto(c) for c in self._registry._list_all("ListAliasHistory", request, "changes", limit)]

    def get_versions(
        self, order_by: ModelOrderBy | None = None, limit: int | None = None
    ) -> list[ModelVersion]:
        """Return the model's versions, newest first unless order_by says otherwise; all pages."""
        request = pb.ListModelVersionsRequest(model_name=self.name, order_by=order_by or 0)
        return [
            ModelVersion.from_proto(v, self._registry)
            for v in self._registry._list_all("ListModelVersions", request, "model_versions", limit)
        ]

    def __repr__(self) -> str:
        return (
            f"Model(name={self.name!r}, description={self.description!r}, "
            f"num_versions={self.num_versions}, archived={self.archived})"
        )


@dataclass
class AliasChange:
    """One move of an alias: from previous_version (0: newly set) to version (0: deleted)."""

    model_name: str
    alias: str
    previous_version: int
    version: int
    time: datetime.datetime | None
    principal: str

    @classmethod
    def from_proto(cls, proto: model_pb2.AliasChange) -> AliasChange:
        return cls(
            model_name=proto.model_name,
            alias=proto.alias,
            previous_version=proto.previous_version,
            version=proto.version,
            time=timestamp_to_datetime(proto, "time"),
            principal=proto.principal,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "time": self.time.isoformat() if self.time else None}


@dataclass
class Event:
    """One change of the registry, as Registry.watch yields it; `sequence` resumes a watch."""

    sequence: int
    time: datetime.datetime | None
    principal: str
    kind: EventKind
    model_name: str
    version: int
    alias: str
    previous_version: int
    checkpoint_uuid: str
    new_model_name: str

    @classmethod
    def from_proto(cls, proto: event_pb2.Event) -> Event:
        return cls(
            sequence=proto.sequence,
            time=timestamp_to_datetime(proto, "time"),
            principal=proto.principal,
            kind=EventKind(proto.kind),
            model_name=proto.model_name,
            version=proto.version,
            alias=proto.alias,
            previous_version=proto.previous_version,
            checkpoint_uuid=proto.checkpoint_uuid,
            new_model_name=proto.new_model_name,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "kind": self.kind.name, "time": self.time.isoformat() if self.time else None}
