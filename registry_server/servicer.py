"""The gRPC servicer: translates requests into store calls and rows into responses; maps errors to
status codes in one place (`_rpc`)."""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import logging
from typing import Any, Callable, Iterator

import grpc
import peewee as pw
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from modelregistry.v1 import checkpoint_pb2, model_pb2, registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from . import convert, errors
from . import db as database
from .errors import invalid
from .files import CheckpointFiles
from .storage import Storage
from .store import CheckpointQuery, ModelQuery, RegistryStore

log = logging.getLogger(__name__)

ERROR_DOMAIN = "modelregistry.v1"
STATUS_CODES: dict[type[errors.RegistryError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
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


def _abort(context: grpc.ServicerContext, error: errors.RegistryError) -> None:
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    code = STATUS_CODES[type(error)]
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=error.message, details=[detail]))
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def _storage_error(error: OSError) -> errors.RegistryError:
    """What a failure of the file storage means to the caller: full, or unavailable for now."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.ResourceExhausted("STORAGE_FULL", "the registry's file storage is full")
    return errors.Unavailable("STORAGE_UNAVAILABLE", "the registry's file storage failed; retry later")


@contextlib.contextmanager
def _refusals(store: RegistryStore, context: grpc.ServicerContext, name: str) -> Iterator[None]:
    """Turns every refusal into a status with an ErrorInfo detail, in one place. (abort_with_status
    would end the call UNKNOWN under grpcio-testing.)"""
    try:
        yield
    except errors.RegistryError as error:
        _abort(context, error)
    except pw.PeeweeException as error:
        log.warning("%s: database error: %s", name, error)
        if isinstance(error, (pw.OperationalError, pw.InterfaceError)):
            database.discard_idle_connections(store.db)
        _abort(context, _database_error(error))
    except OSError as error:
        log.warning("%s: storage error: %s", name, error)
        _abort(context, _storage_error(error))


def _rpc(method: Callable[..., Any], *, hold_connection: bool = True) -> Callable[..., Any]:
    """Runs a handler on one pooled database connection, with refusals mapped by _refusals. Without
    `hold_connection` the handler takes a connection only around its store calls, so that a slow
    transfer holds none; a server-streaming handler (a generator) never holds one."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: "ModelRegistryServicer", request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with _refusals(self.store, context, method.__name__):
                yield from method(self, request, context)

        return stream
    response_type = getattr(pb, method.__name__ + "Response")

    @functools.wraps(method)
    def handler(self: "ModelRegistryServicer", request: Any, context: grpc.ServicerContext) -> Any:
        with _refusals(self.store, context, method.__name__):
            with self.store.db.connection_context() if hold_connection else contextlib.nullcontext():
                return method(self, request, context)
        return response_type()

    return handler


def _transfer(method: Callable[..., Any]) -> Callable[..., Any]:
    """A streaming handler: _rpc without a database connection held for the whole call."""
    return _rpc(method, hold_connection=False)


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
            value = convert.from_struct(value)
        elif path == "labels":
            value = list(value)
        changes[path] = value
    return changes


class ModelRegistryServicer(pb_grpc.ModelRegistryServiceServicer):
    """ModelRegistryService over a RegistryStore."""

    def __init__(self, store: RegistryStore, storage: Storage) -> None:
        self.store = store
        self.files = CheckpointFiles(store, storage)

    def _owner(self, context: grpc.ServicerContext) -> str:
        """The principal making the call; empty until the server authenticates callers."""
        return ""

    # Models

    @_rpc
    def CreateModel(self, request: pb.CreateModelRequest, context: grpc.ServicerContext) -> pb.CreateModelResponse:
        row = self.store.create_model(
            request.name,
            request.description,
            convert.from_struct(request.metadata),
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
        row = self.store.update_model_metadata(request.name, convert.from_struct(request.merge), list(request.remove_keys))
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
        self.store.delete_model(request.name)
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
            metadata=convert.from_struct(request.metadata),
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
        self.store.delete_version(request.model_name, request.version)
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
        self.files.delete_checkpoint(request.uuid)
        return pb.DeleteCheckpointResponse()

    # Checkpoint files

    @_transfer
    def UploadCheckpointFiles(
        self, requests: Iterator[pb.UploadCheckpointFilesRequest], context: grpc.ServicerContext
    ) -> pb.UploadCheckpointFilesResponse:
        first = next(requests, None)
        if first is None or first.WhichOneof("content") != "checkpoint_uuid":
            raise invalid("CHECKPOINT_UUID_REQUIRED", "the first message of an upload names the checkpoint_uuid")
        with self.store.db.connection_context():
            upload = self.files.begin_upload(first.checkpoint_uuid)
        try:
            for message in requests:
                content = message.WhichOneof("content")
                if content == "file":
                    upload.start_file(message.file.path, message.file.size, message.file.sha256)
                elif content == "chunk":
                    upload.write(message.chunk)
                else:
                    raise invalid(
                        "UNEXPECTED_UPLOAD_MESSAGE",
                        "after the first message an upload carries only file headers and chunks",
                        content=content or "",
                    )
            if not context.is_active():  # cancelled: whatever arrived is not the whole upload
                raise errors.Aborted("UPLOAD_CANCELLED", "the upload was cancelled")
            with self.store.db.connection_context():
                row = upload.commit()
        finally:
            upload.discard()  # what was not published, also when the client went away mid-stream
        return pb.UploadCheckpointFilesResponse(checkpoint=convert.checkpoint(row))

    @_transfer
    def DownloadCheckpointFiles(
        self, request: pb.DownloadCheckpointFilesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadCheckpointFilesResponse]:
        with self.store.db.connection_context():
            uuid, headers = self.files.stored_files(request.checkpoint_uuid, list(request.paths))
        for header in headers:
            yield pb.DownloadCheckpointFilesResponse(
                file=checkpoint_pb2.CheckpointFile(path=header.path, size=header.size, sha256=header.sha256)
            )
            for chunk in self.files.read(uuid, header.path):
                yield pb.DownloadCheckpointFilesResponse(chunk=chunk)
