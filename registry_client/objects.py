"""Model, ModelVersion and Checkpoint: Python views of the registry's protobuf messages."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import math
import os
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from google.protobuf import field_mask_pb2, struct_pb2
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from modelregistry import structs
from modelregistry.v1 import checkpoint_pb2, event_pb2, model_pb2

from .loading import load_checkpoint_dir
from .transfer import Progress

if TYPE_CHECKING:
    from .client import Registry


C = TypeVar("C", bound="_Choice")
M = TypeVar("M", bound=Message)


class _Choice(enum.IntEnum):
    """A client enum mirroring a generated protobuf enum (see _mirrors): a member, its name in any case
    (e.g. "name"), the protobuf name (e.g. "MODEL_SORT_BY_NAME") or its number all choose a member."""

    @classmethod
    def coerce(cls: type[C], value: object, argument: str) -> C:
        """The member that `value` names; ValueError/TypeError naming `argument` otherwise."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().upper()
            for member in cls:
                if key in (member.name, _PROTO_NAMES[cls].get(member.value)):
                    return member
        elif isinstance(value, int) and not isinstance(value, bool):
            if value in {member.value for member in cls}:
                return cls(value)
        else:
            raise TypeError(f"{argument}: expected a {cls.__name__} or its name, got {type(value).__name__} {value!r}")
        names = ", ".join(member.name.lower() for member in cls)
        raise ValueError(f"{argument}: {value!r} is not a {cls.__name__}; expected one of {names}")


# Client enum -> its members' protobuf names by number, as _mirrors found them.
_PROTO_NAMES: dict[type[_Choice], dict[int, str]] = {}


class _ProtoEnum(Protocol):
    """A generated protobuf enum (its class, as mypy-protobuf types it)."""

    DESCRIPTOR: EnumDescriptor

    def items(self) -> Sequence[tuple[str, int]]: ...


def _mirrors(proto_enum: _ProtoEnum, prefix: str) -> Callable[[type[C]], type[C]]:
    """Class decorator: the client enum takes every number from the generated enum, and must name every
    value of it but UNSPECIFIED (import fails otherwise), so that it can never fall behind the proto."""

    def check(cls: type[C]) -> type[C]:
        generated = {name: number for name, number in proto_enum.items() if number != 0}
        mirrored = {prefix + member.name: member.value for member in cls if member.value != 0}
        if mirrored != generated:
            raise ImportError(f"{cls.__name__} differs from {proto_enum.DESCRIPTOR.full_name}: {mirrored} != {generated}")
        _PROTO_NAMES[cls] = {number: name for name, number in proto_enum.items()}
        return cls

    return check


@_mirrors(model_pb2.ModelSortBy, "MODEL_SORT_BY_")
class ModelSortBy(_Choice):
    """Key that Registry.get_models sorts by."""

    NAME = model_pb2.MODEL_SORT_BY_NAME
    DESCRIPTION = model_pb2.MODEL_SORT_BY_DESCRIPTION
    CREATION_TIME = model_pb2.MODEL_SORT_BY_CREATION_TIME
    LAST_UPDATED_TIME = model_pb2.MODEL_SORT_BY_LAST_UPDATED_TIME
    NUM_VERSIONS = model_pb2.MODEL_SORT_BY_NUM_VERSIONS


@_mirrors(model_pb2.OrderBy, "ORDER_BY_")
class ModelOrderBy(_Choice):
    """Direction of a sort."""

    ASC = model_pb2.ORDER_BY_ASC
    DESC = model_pb2.ORDER_BY_DESC


@_mirrors(checkpoint_pb2.CheckpointState, "CHECKPOINT_STATE_")
class CheckpointState(_Choice):
    """Lifecycle state of a checkpoint's stored files."""

    # Kept so that a message without a state still converts instead of raising.
    UNSPECIFIED = checkpoint_pb2.CHECKPOINT_STATE_UNSPECIFIED
    ACTIVE = checkpoint_pb2.CHECKPOINT_STATE_ACTIVE
    COMPLETED = checkpoint_pb2.CHECKPOINT_STATE_COMPLETED
    ERROR = checkpoint_pb2.CHECKPOINT_STATE_ERROR
    DELETED = checkpoint_pb2.CHECKPOINT_STATE_DELETED
    PARTIALLY_DELETED = checkpoint_pb2.CHECKPOINT_STATE_PARTIALLY_DELETED


@_mirrors(event_pb2.EventKind, "EVENT_KIND_")
class EventKind(_Choice):
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


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Convert a protobuf Struct to a plain dict, so {"epochs": 10} round-trips as 10, not 10.0
    (modelregistry.structs: the server reads Structs by the same rule)."""
    return structs.to_dict(struct)


MAX_EXACT_INTEGER = structs.MAX_EXACT_INTEGER


def _json_value(value: object, path: str) -> Any:
    """value as JSON, checked: TypeError or ValueError naming the key path (e.g. metadata['a'][0])
    of the first thing a Struct cannot hold exactly."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_EXACT_INTEGER:
            raise ValueError(
                f"{path}: {value} is beyond 2**53, where a JSON number (a double) loses digits; store it as a string"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value} is not a JSON number (NaN and infinities are refused)")
        return value
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{path}: keys must be strings, got {type(key).__name__} {key!r}")
        return {key: _json_value(item, f"{path}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"{path}: {type(value).__name__} {reprlib.repr(value)} is not a JSON value "
        "(dict, list, str, int, float, bool or None)"
    )


def dict_to_struct(value: Mapping[str, Any] | None, argument: str = "value") -> struct_pb2.Struct:
    """Convert a mapping of JSON values to a protobuf Struct (None gives an empty one); TypeError or
    ValueError naming `argument` and the key of anything it cannot hold exactly."""
    if value is not None and not isinstance(value, Mapping):
        # Catches e.g. {"key", "value"} (a set) before it turns into an obscure protobuf error.
        raise TypeError(f"{argument}: expected a dict of JSON values, got {type(value).__name__} {reprlib.repr(value)}")
    struct = struct_pb2.Struct()
    struct.update(_json_value(value or {}, argument))
    return struct


def _expected(field: Any) -> str:  # a FieldDescriptor (of the C or of the Python implementation)
    kind = {
        FieldDescriptor.CPPTYPE_STRING: "bytes" if field.type == FieldDescriptor.TYPE_BYTES else "str",
        FieldDescriptor.CPPTYPE_BOOL: "bool",
        FieldDescriptor.CPPTYPE_DOUBLE: "float",
        FieldDescriptor.CPPTYPE_FLOAT: "float",
        FieldDescriptor.CPPTYPE_MESSAGE: field.message_type.name if field.message_type else "message",
    }.get(field.cpp_type, "int")
    return f"a list of {kind}" if field.is_repeated else kind


def request(message_type: type[M], **fields: Any) -> M:
    """message_type(**fields), where a lone string for a repeated string field (labels="vision") is a
    list of one, and a value of the wrong type or range is a TypeError/ValueError naming its field
    (protobuf's own say only e.g. "'str' object cannot be interpreted as an integer")."""
    descriptors = message_type.DESCRIPTOR.fields_by_name
    for name, value in fields.items():
        field = descriptors[name]
        if isinstance(value, str) and field.is_repeated and field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
            fields[name] = [value]
    try:
        return message_type(**fields)
    except (TypeError, ValueError):
        for name, value in fields.items():
            try:
                message_type(**{name: value})
            except TypeError:
                raise TypeError(
                    f"{name}: expected {_expected(descriptors[name])}, got {type(value).__name__} {reprlib.repr(value)}"
                ) from None
            except ValueError as error:
                raise ValueError(f"{name}: {reprlib.repr(value)} is out of range ({error})") from None
        raise


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
    state: CheckpointState | str | None = None,
    storage_uri: str = "",
    report_time: datetime.datetime | None = None,
) -> checkpoint_pb2.Checkpoint:
    """A Checkpoint message from the arguments of Registry.create_checkpoint."""
    checkpoint = request(
        checkpoint_pb2.Checkpoint,
        uuid=uuid or "",
        experiment_id=experiment_id,
        trial_id=trial_id,
        batch_number=batch_number,
        experiment_config=dict_to_struct(experiment_config, "experiment_config"),
        hparams=dict_to_struct(hparams, "hparams"),
        resources=dict(resources or {}),
        metadata=dict_to_struct(metadata, "metadata"),
        framework=framework,
        format=format,
        metrics=dict_to_struct(metrics, "metrics"),
        state=CheckpointState.coerce(state, "state") if state is not None else None,
        storage_uri=storage_uri,
    )
    if report_time is not None:
        if not isinstance(report_time, datetime.datetime):
            raise TypeError(f"report_time: expected a datetime, got {type(report_time).__name__} {report_time!r}")
        checkpoint.report_time.FromDatetime(report_time)  # naive datetimes are taken as UTC
    return checkpoint


def _mask(changes: Mapping[str, Any]) -> field_mask_pb2.FieldMask:
    """The update_mask naming the fields of an update; ValueError for an update of nothing."""
    if not changes:
        raise ValueError("nothing to update: give at least one field")
    return field_mask_pb2.FieldMask(paths=list(changes))


def timestamp_to_datetime(message: Message, field_name: str) -> datetime.datetime | None:
    """Return message.<field_name> as a timezone-aware UTC datetime, or None when it is unset."""
    if not message.HasField(field_name):
        return None
    value: datetime.datetime = getattr(message, field_name).ToDatetime(tzinfo=datetime.timezone.utc)
    return value


def _plain(value: Any) -> Any:
    """A value of a to_dict(): times in ISO 8601, enums by name, objects as their dicts, copies of the rest."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, _Record):
        return value.to_dict()
    return copy.deepcopy(value)


class _Record:
    """Python-side dicts follow one convention: the keys are the object's attribute names (snake_case,
    the proto's field names), times are ISO 8601 strings in UTC, enums their names (e.g. "COMPLETED"),
    a nested object its own dict. (On the wire, proto3 JSON names the same fields in camelCase.)"""

    def to_dict(self) -> dict[str, Any]:
        """This object as a dict of JSON values, keyed by attribute name."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if not f.name.startswith("_")}  # type: ignore[arg-type]


@dataclass(eq=False)
class Checkpoint(_Record):
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
    owner: str
    _registry: Registry = field(repr=False)

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
            owner=proto.owner,
            _registry=registry,
        )

    def delete(self) -> None:
        """Delete this checkpoint and its stored files (refused while a model version uses it)."""
        self._registry.delete_checkpoint(self.uuid)

    def download(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        paths: Iterable[str] | None = None,
        progress: Progress | None = None,
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
class ModelVersion(_Record):
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
        )

    def download(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        paths: Iterable[str] | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Download this version's checkpoint: checkpoint.download (by default into checkpoints/<uuid>)."""
        return self.checkpoint.download(path, paths=paths, progress=progress)

    def load(self, path: str | os.PathLike[str] | None = None, *, file: str | None = None) -> Any:
        """Download this version's checkpoint and load its model: checkpoint.load, so that the seed's
        `model.get_version().load()` works. Load only checkpoints you trust (pickle can run code)."""
        return self.checkpoint.load(path, file=file)

    def update(
        self,
        *,
        name: str | None = None,
        comment: str | None = None,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        notes: str | None = None,
    ) -> ModelVersion:
        """Replace the fields given (not None), and only those, in one atomic call; metadata is replaced
        whole. Returns this object, updated from the server's answer."""
        changes = {"name": name, "comment": comment, "labels": labels, "notes": notes}
        changes = {key: value for key, value in changes.items() if value is not None}
        if metadata is not None:
            changes["metadata"] = dict_to_struct(metadata, "metadata")
        response = self._registry._call(
            "UpdateModelVersion",
            model_name=self.model_name,
            version=self.version,
            model_version=request(model_pb2.ModelVersion, **changes),
            update_mask=_mask(changes),
        )
        self.__dict__.update(ModelVersion.from_proto(response.model_version, self._registry).__dict__)
        return self

    def set_name(self, name: str) -> ModelVersion:
        """Replace the version's human-readable name."""
        return self.update(name=name)

    def set_comment(self, comment: str) -> ModelVersion:
        """Replace the version's comment."""
        return self.update(comment=comment)

    def set_labels(self, labels: Iterable[str]) -> ModelVersion:
        """Replace the version's labels."""
        return self.update(labels=labels)

    def set_metadata(self, metadata: Mapping[str, Any]) -> ModelVersion:
        """Replace the version's whole metadata."""
        return self.update(metadata=metadata)

    def set_notes(self, notes: str) -> ModelVersion:
        """Replace the version's notes."""
        return self.update(notes=notes)

    def delete(self) -> None:
        """Delete this version; its number is never handed out again."""
        self._registry._call("DeleteModelVersion", model_name=self.model_name, version=self.version)

    def __repr__(self) -> str:
        return (
            f"ModelVersion(model_name={self.model_name!r}, version={self.version}, "
            f"checkpoint_uuid={self.checkpoint.uuid!r}, name={self.name!r}, aliases={self.aliases!r})"
        )


@dataclass(eq=False)
class Model(_Record):
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
    editors: list[str]
    _registry: Registry = field(repr=False)

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
            editors=list(proto.editors),
            _registry=registry,
        )

    def _refresh(self, rpc: str, **fields: Any) -> Model:
        """Call an RPC answering with the model and take every attribute from that answer."""
        response = self._registry._call(rpc, **fields)
        self.__dict__.update(Model.from_proto(response.model, self._registry).__dict__)
        return self

    def update(
        self,
        *,
        description: str | None = None,
        labels: Iterable[str] | None = None,
        notes: str | None = None,
        editors: Iterable[str] | None = None,
    ) -> Model:
        """Replace the fields given (not None), and only those, in one atomic call (metadata has
        add_metadata and remove_metadata, the name rename). `editors`: the owner or an admin only."""
        changes = {"description": description, "labels": labels, "notes": notes, "editors": editors}
        changes = {key: value for key, value in changes.items() if value is not None}
        return self._refresh(
            "UpdateModel", name=self.name, model=request(model_pb2.Model, **changes), update_mask=_mask(changes)
        )

    def reload(self) -> Model:
        """Fetch the model again, e.g. to see versions registered since."""
        return self._refresh("GetModel", name=self.name)

    def add_metadata(self, metadata: Mapping[str, Any]) -> Model:
        """Merge top-level keys into the metadata on the server (a key's old value is replaced)."""
        return self._refresh("UpdateModelMetadata", name=self.name, merge=dict_to_struct(metadata, "metadata"))

    def remove_metadata(self, keys: Iterable[str]) -> Model:
        """Remove top-level metadata keys on the server; absent keys are ignored."""
        return self._refresh("UpdateModelMetadata", name=self.name, remove_keys=keys)

    def set_description(self, description: str) -> Model:
        """Replace the description."""
        return self.update(description=description)

    def set_labels(self, labels: Iterable[str]) -> Model:
        """Replace the labels."""
        return self.update(labels=labels)

    def set_notes(self, notes: str) -> Model:
        """Replace the notes."""
        return self.update(notes=notes)

    def set_editors(self, editors: Iterable[str]) -> Model:
        """Replace the principals allowed to change the model besides its owner: edit it, register
        and edit versions, move aliases (the owner or an admin only)."""
        return self.update(editors=editors)

    def rename(self, new_name: str) -> Model:
        """Rename the model; its versions follow it."""
        return self._refresh("RenameModel", name=self.name, new_name=new_name)

    def archive(self) -> Model:
        """Make the model read-only: it refuses new versions and edits until unarchived."""
        return self._refresh("ArchiveModel", name=self.name)

    def unarchive(self) -> Model:
        """Make an archived model editable again."""
        return self._refresh("UnarchiveModel", name=self.name)

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
        return self._registry.get_version(self.name, n, alias)

    def set_alias(self, alias: str, version: int) -> ModelVersion:
        """Point `alias` (e.g. "production") at a version, creating or moving it in one atomic step."""
        response = self._registry._call("SetModelAlias", model_name=self.name, alias=alias, version=version)
        return ModelVersion.from_proto(response.model_version, self._registry)

    def delete_alias(self, alias: str) -> None:
        """Remove an alias; its history stays."""
        self._registry._call("DeleteModelAlias", model_name=self.name, alias=alias)

    def get_alias_history(self, alias: str | None = None, limit: int | None = None) -> list[AliasChange]:
        """Every move of the model's aliases (or of one alias), oldest first."""
        changes = self._registry._list_all("ListAliasHistory", "changes", limit, model_name=self.name, alias=alias)
        return [AliasChange.from_proto(c) for c in changes]

    def get_versions(
        self, order_by: ModelOrderBy | str | None = None, limit: int | None = None
    ) -> list[ModelVersion]:
        """Return the model's versions, newest first unless order_by says otherwise; all pages."""
        versions = self._registry._list_all(
            "ListModelVersions", "model_versions", limit, model_name=self.name,
            order_by=ModelOrderBy.coerce(order_by, "order_by") if order_by is not None else None,
        )
        return [ModelVersion.from_proto(v, self._registry) for v in versions]

    def __repr__(self) -> str:
        return (
            f"Model(name={self.name!r}, description={self.description!r}, "
            f"num_versions={self.num_versions}, archived={self.archived})"
        )


@dataclass
class AliasChange(_Record):
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


@dataclass
class Event(_Record):
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
