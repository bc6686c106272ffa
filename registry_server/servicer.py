"""The gRPC servicer: translates requests into store calls and rows into responses; maps errors to
status codes in one place (`_rpc`)."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Iterator

import grpc
import peewee as pw
from google.protobuf import any_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from modelregistry.v1 import checkpoint_pb2, model_pb2, registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from . import auth, convert, errors
from . import db as database
from .errors import invalid
from .store import CheckpointQuery, ModelQuery, RegistryStore

log = logging.getLogger(__name__)

ERROR_DOMAIN = "modelregistry.v1"
STATUS_CODES: dict[type[errors.RegistryError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Aborted: grpc.StatusCode.ABORTED,
}
SORT_KEYS = {
    model_pb2.MODEL_SORT_BY_UNSPECIFIED: "name",
    model_pb2.MODEL_SORT_BY_NAME: "name",
    model_pb2.MODEL_SORT_BY_DESCRIPTION: "description",
    model_pb2.MODEL_SORT_BY_CREATION_TIME: "creation_time",
    model_pb2.MODEL_SORT_BY_LAST_UPDATED_TIME: "last_updated_time",
    model_pb2.MODEL_SORT_BY_NUM_VERSIONS: "num_versions",
}


def _database_error(error: pw.PeeweeException) -> errors.RegistryError:
    """What a database failure means to the caller. Only faults of the database itself (unreachable,
    locked, restarted) are UNAVAILABLE; a conflict between transactions is ABORTED."""
    if isinstance(error, pw.IntegrityError):
        return errors.Aborted("TRANSACTION_CONFLICT", "the request conflicted with another one; retry it")
    if isinstance(error, pw.DataError):
        return invalid("VALUE_REFUSED_BY_DATABASE", "a value of the request is out of the database's range")
    if "locked" in str(error) or "busy" in str(error):
        return errors.Unavailable("DATABASE_BUSY", "the registry's database is busy; retry later")
    return errors.Unavailable("DATABASE_UNAVAILABLE", "the registry's database is unavailable; retry later")


def rich_status(error: errors.RegistryError) -> grpc.Status:
    """The status of a refusal: its code, message, and an ErrorInfo detail in the trailing metadata."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    code = STATUS_CODES[type(error)]
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=error.message, details=[detail]))


def _abort(context: grpc.ServicerContext, error: errors.RegistryError) -> None:
    status = rich_status(error)
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def _strings(message: Message, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string a message holds (map keys and Struct values too), with the path of its field."""
    for field, value in message.ListFields():
        name = path + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                yield name, key
                yield from _strings(item, f"{name}.") if isinstance(item, Message) else _scalar(name, item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if field.is_repeated else [value]:
                yield from _strings(item, f"{name}.")
        elif field.type == FieldDescriptor.TYPE_STRING:
            for item in value if field.is_repeated else [value]:
                yield name, item


def _scalar(name: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield name, value


def _refuse_nul(request: Message) -> None:
    """No stored value holds NUL, and PostgreSQL refuses it even in a lookup: refuse it up front."""
    for path, value in _strings(request):
        if "\x00" in value:
            raise invalid("INVALID_CHARACTER", f"{path} must not contain NUL characters", field=path)


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Runs a handler on one pooled database connection and turns every refusal into a status with an
    ErrorInfo detail. (abort_with_status would end the call UNKNOWN under grpcio-testing.)"""
    response_type = getattr(pb, method.__name__ + "Response")

    @functools.wraps(method)
    def handler(self: "ModelRegistryServicer", request: Any, context: grpc.ServicerContext) -> Any:
        try:
            _refuse_nul(request)
            with self.store.db.connection_context():
                return method(self, request, context)
        except errors.RegistryError as error:
            _abort(context, error)
        except pw.PeeweeException as error:
            log.warning("%s: database error: %s", method.__name__, error)
            if isinstance(error, (pw.OperationalError, pw.InterfaceError)):
                database.discard_idle_connections(self.store.db)
            _abort(context, _database_error(error))
        return response_type()

    return handler


def _enum(value: int, allowed: Any, field: str) -> int:
    if value not in allowed:
        raise invalid("INVALID_ENUM_VALUE", f"unknown {field} value {value}", field=field, value=value)
    return value


def _changes(mask_paths: list[str], message: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The values of the masked fields of `message`, as the store takes them."""
    if not mask_paths:
        raise invalid("UPDATE_MASK_REQUIRED", f"update_mask must name the fields to replace: {', '.join(fields)}")
    changes: dict[str, Any] = {}
    for path in mask_paths:
        if path not in fields:
            raise invalid(
                "INVALID_UPDATE_MASK", f"{path!r} cannot be updated; updatable fields: {', '.join(fields)}", field=path
            )
        value = getattr(message, path)
        if path == "metadata":
            value = convert.from_struct(value, path)
        elif path == "labels":
            value = list(value)
        changes[path] = value
    return changes


class ModelRegistryServicer(pb_grpc.ModelRegistryServiceServicer):
    """ModelRegistryService over a RegistryStore."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def _owner(self, context: grpc.ServicerContext) -> str:
        """The principal making the call; empty on servers that do not authenticate callers."""
        return auth.current().name

    def _only_owner(self, context: grpc.ServicerContext) -> str | None:
        """Whose objects the caller may delete: its own (editors), or anyone's (None: admins)."""
        principal = auth.current()
        return principal.name if principal.deletes_only_own else None

    # Models

    @_rpc
    def CreateModel(self, request: pb.CreateModelRequest, context: grpc.ServicerContext) -> pb.CreateModelResponse:
        row = self.store.create_model(
            request.name,
            request.description,
            convert.from_struct(request.metadata, "metadata"),
            list(request.labels),
            request.notes,
            owner=self._owner(context),
        )
        return pb.CreateModelResponse(model=convert.model(row))

    @_rpc
    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.GetModelResponse:
        return pb.GetModelResponse(model=convert.model(self.store.get_model(request.name)))

    @_rpc
    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        query = ModelQuery(
            sort_by=SORT_KEYS[_enum(request.sort_by, SORT_KEYS, "sort_by")],
            descending=_enum(request.order_by, model_pb2.OrderBy.values(), "order_by") == model_pb2.ORDER_BY_DESC,
            name=request.name,
            description=request.description,
            labels=list(request.labels),
            archived=request.archived if request.HasField("archived") else None,
            owner=request.owner,
        )
        page = self.store.list_models(query, request.page_size, request.page_token)
        return pb.ListModelsResponse(
            models=[convert.model(row) for row in page.rows],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    @_rpc
    def UpdateModel(self, request: pb.UpdateModelRequest, context: grpc.ServicerContext) -> pb.UpdateModelResponse:
        changes = _changes(list(request.update_mask.paths), request.model, ("description", "metadata", "labels", "notes"))
        return pb.UpdateModelResponse(model=convert.model(self.store.update_model(request.name, changes)))

    @_rpc
    def RenameModel(self, request: pb.RenameModelRequest, context: grpc.ServicerContext) -> pb.RenameModelResponse:
        return pb.RenameModelResponse(model=convert.model(self.store.rename_model(request.name, request.new_name)))

    @_rpc
    def UpdateModelMetadata(
        self, request: pb.UpdateModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.UpdateModelMetadataResponse:
        merge = convert.from_struct(request.merge, "merge")
        row = self.store.update_model_metadata(request.name, merge, list(request.remove_keys))
        return pb.UpdateModelMetadataResponse(model=convert.model(row))

    @_rpc
    def ArchiveModel(self, request: pb.ArchiveModelRequest, context: grpc.ServicerContext) -> pb.ArchiveModelResponse:
        return pb.ArchiveModelResponse(model=convert.model(self.store.set_archived(request.name, True)))

    @_rpc
    def UnarchiveModel(
        self, request: pb.UnarchiveModelRequest, context: grpc.ServicerContext
    ) -> pb.UnarchiveModelResponse:
        return pb.UnarchiveModelResponse(model=convert.model(self.store.set_archived(request.name, False)))

    @_rpc
    def DeleteModel(self, request: pb.DeleteModelRequest, context: grpc.ServicerContext) -> pb.DeleteModelResponse:
        self.store.delete_model(request.name, only_owner=self._only_owner(context))
        return pb.DeleteModelResponse()

    @_rpc
    def ListModelLabels(
        self, request: pb.ListModelLabelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelLabelsResponse:
        return pb.ListModelLabelsResponse(labels=self.store.list_model_labels())

    # Model versions

    @_rpc
    def CreateModelVersion(
        self, request: pb.CreateModelVersionRequest, context: grpc.ServicerContext
    ) -> pb.CreateModelVersionResponse:
        row = self.store.create_version(
            request.model_name,
            request.checkpoint_uuid,
            name=request.name,
            comment=request.comment,
            labels=list(request.labels),
            metadata=convert.from_struct(request.metadata, "metadata"),
            notes=request.notes,
            owner=self._owner(context),
        )
        return pb.CreateModelVersionResponse(model_version=convert.model_version(row))

    @_rpc
    def GetModelVersion(
        self, request: pb.GetModelVersionRequest, context: grpc.ServicerContext
    ) -> pb.GetModelVersionResponse:
        row = self.store.get_version(request.model_name, request.version)
        return pb.GetModelVersionResponse(model_version=convert.model_version(row))

    @_rpc
    def ListModelVersions(
        self, request: pb.ListModelVersionsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelVersionsResponse:
        order = _enum(request.order_by, model_pb2.OrderBy.values(), "order_by")
        page = self.store.list_versions(
            request.model_name, request.page_size, request.page_token, descending=order != model_pb2.ORDER_BY_ASC
        )
        return pb.ListModelVersionsResponse(
            model_versions=[convert.model_version(row) for row in page.rows],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    @_rpc
    def UpdateModelVersion(
        self, request: pb.UpdateModelVersionRequest, context: grpc.ServicerContext
    ) -> pb.UpdateModelVersionResponse:
        changes = _changes(
            list(request.update_mask.paths), request.model_version, ("name", "comment", "labels", "metadata", "notes")
        )
        row = self.store.update_version(request.model_name, request.version, changes)
        return pb.UpdateModelVersionResponse(model_version=convert.model_version(row))

    @_rpc
    def DeleteModelVersion(
        self, request: pb.DeleteModelVersionRequest, context: grpc.ServicerContext
    ) -> pb.DeleteModelVersionResponse:
        self.store.delete_version(request.model_name, request.version, only_owner=self._only_owner(context))
        return pb.DeleteModelVersionResponse()

    # Checkpoints

    @_rpc
    def CreateCheckpoint(
        self, request: pb.CreateCheckpointRequest, context: grpc.ServicerContext
    ) -> pb.CreateCheckpointResponse:
        _enum(request.checkpoint.state, checkpoint_pb2.CheckpointState.values(), "checkpoint.state")
        row = self.store.create_checkpoint(convert.checkpoint_values(request.checkpoint))
        return pb.CreateCheckpointResponse(checkpoint=convert.checkpoint(row))

    @_rpc
    def GetCheckpoint(self, request: pb.GetCheckpointRequest, context: grpc.ServicerContext) -> pb.GetCheckpointResponse:
        return pb.GetCheckpointResponse(checkpoint=convert.checkpoint(self.store.get_checkpoint(request.uuid)))

    @_rpc
    def ListCheckpoints(
        self, request: pb.ListCheckpointsRequest, context: grpc.ServicerContext
    ) -> pb.ListCheckpointsResponse:
        query = CheckpointQuery(
            experiment_id=request.experiment_id if request.HasField("experiment_id") else None,
            trial_id=request.trial_id if request.HasField("trial_id") else None,
            sort_by_metric=request.sort_by_metric,
            smaller_is_better=request.smaller_is_better,
        )
        page = self.store.list_checkpoints(query, request.page_size, request.page_token)
        return pb.ListCheckpointsResponse(
            checkpoints=[convert.checkpoint(row) for row in page.rows],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    @_rpc
    def DeleteCheckpoint(
        self, request: pb.DeleteCheckpointRequest, context: grpc.ServicerContext
    ) -> pb.DeleteCheckpointResponse:
        self.store.delete_checkpoint(request.uuid)
        return pb.DeleteCheckpointResponse()
