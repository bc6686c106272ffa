"""The gRPC servicer: translates requests into store calls and rows into responses; maps errors to
status codes in one place (`_rpc`)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import peewee as pw
from google.protobuf.message import Message
from modelregistry.v1 import checkpoint_pb2, event_pb2, model_pb2
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from . import __version__, auth, contract, convert, errors, paging, status, validation
from . import db as database
from .errors import invalid
from .files import DEFAULT_MAX_UPLOAD_BYTES, CheckpointFiles
from .storage import Storage
from .store import CheckpointQuery, ModelQuery, RegistryStore
from .transactions import RequestKey

log = logging.getLogger(__name__)

# A page of a List* answer stops before its items exceed this many bytes (with a next_page_token),
# though it always holds one item: the field limits keep any one item well under gRPC's 4 MiB.
PAGE_BYTES = 2 * 1024 * 1024
SORT_KEYS: dict[int, str] = {
    model_pb2.MODEL_SORT_BY_UNSPECIFIED: "name",
    model_pb2.MODEL_SORT_BY_NAME: "name",
    model_pb2.MODEL_SORT_BY_DESCRIPTION: "description",
    model_pb2.MODEL_SORT_BY_CREATION_TIME: "creation_time",
    model_pb2.MODEL_SORT_BY_LAST_UPDATED_TIME: "last_updated_time",
    model_pb2.MODEL_SORT_BY_NUM_VERSIONS: "num_versions",
}


def _rpc(method: Callable[..., Any], *, hold_connection: bool = True) -> Callable[..., Any]:
    """Runs a handler with its writes attributed to the caller, on one pooled database connection, with
    refusals mapped by _refusals. Without `hold_connection` the handler takes a connection only around
    its store calls, so that a slow transfer holds none; a server-streaming handler (a generator) never
    holds one."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: ModelRegistryServicer, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with status.refusals(self.store.db, context, method.__name__), self.store.acting_as(*_actor()):
                validation.check_request(request)
                yield from method(self, request, context)

        return stream
    response_type = getattr(pb, method.__name__ + "Response")

    @functools.wraps(method)
    def handler(self: ModelRegistryServicer, request: Any, context: grpc.ServicerContext) -> Any:
        with status.refusals(self.store.db, context, method.__name__), self.store.acting_as(*_actor()):
            if isinstance(request, Message):  # a client stream is checked message by message
                validation.check_request(request)
            with self.store.db.connection_context() if hold_connection else contextlib.nullcontext():
                return method(self, request, context)
        return response_type()

    return handler


def _actor() -> tuple[str, bool]:
    """The principal making the call (empty on servers that do not authenticate callers, where
    everyone is an admin), and whether it is an admin: what the store checks ownership against."""
    principal = auth.current()
    return principal.name, principal.role == auth.ADMIN


def _request_key(method: str, request: Any) -> RequestKey | None:
    """The idempotency key of a create: its request_id, and a hash of everything else it asks for."""
    if not request.request_id:
        return None
    rest = type(request)()
    rest.CopyFrom(request)
    rest.request_id = ""
    fingerprint = hashlib.sha256(rest.SerializeToString(deterministic=True)).hexdigest()
    return RequestKey(request.request_id, method, fingerprint)


def _paged(page: paging.Page[Any], to_message: Callable[[Any], Message]) -> tuple[list[Any], str]:
    """The messages of a page's rows and the token to go on with: the page ends early, before its
    messages exceed PAGE_BYTES, so that a page of large items stays readable for every caller."""
    messages: list[Any] = []
    size = 0
    for index, row in enumerate(page.rows):
        message = to_message(row)
        size += message.ByteSize()
        if messages and size > PAGE_BYTES:
            return messages, page.token_after(index - 1)
        messages.append(message)
    return messages, page.next_page_token


def _checkpoint_values(message: checkpoint_pb2.Checkpoint, field: str) -> dict[str, Any]:
    return convert.checkpoint_values(message)
def _transfer(method: Callable[..., Any]) -> Callable[..., Any]:
    """A streaming handler: _rpc without a database connection held for the whole call."""
    return _rpc(method, hold_connection=False)


def _enum(value: int, allowed: Any, field: str) -> int:
    if value not in allowed:
        raise invalid("INVALID_ENUM_VALUE", f"unknown {field} value {value}", field=field, value=value)
    return value


def _changes(mask_paths: list[str], message: Message) -> dict[str, Any]:
    """The values of the masked fields of `message`, as the store takes them; the store says which
    fields may be updated (a path naming no field at all is passed on for it to refuse)."""
    changes: dict[str, Any] = {}
    fields = message.DESCRIPTOR.fields_by_name
    for path in mask_paths:
        if path not in fields:
            changes[path] = None  # names no field at all: the store refuses it
            continue
        value = getattr(message, path)
        if path == "metadata":
            value = convert.from_struct(value, path)
        elif path in ("labels", "editors"):
            value = list(value)
        changes[path] = value
    return changes


class ModelRegistryServicer(pb_grpc.ModelRegistryServiceServicer):
    """ModelRegistryService over a RegistryStore."""

    def __init__(
        self, store: RegistryStore, storage: Storage, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    ) -> None:
        self.store = store
        self.files = CheckpointFiles(store, storage, max_upload_bytes)
        self.started = time.time()  # for GetServerInfo
        self._started_monotonic = time.monotonic()

    # The server

    @_rpc
    def GetServerInfo(self, request: pb.GetServerInfoRequest, context: grpc.ServicerContext) -> pb.GetServerInfoResponse:
        number, name = database.schema_version(self.store.db)
        caller = auth.current()
        response = pb.GetServerInfoResponse(
            version=__version__,
            schema_version=number,
            schema_migration=name,
            database_kind=database.kind(self.store.db),
            uptime_seconds=time.monotonic() - self._started_monotonic,
            pid=os.getpid(),
            caller=caller.name,
            caller_role=contract.ROLE_NUMBERS[caller.role],
        )
        response.start_time.FromMicroseconds(int(self.started * 1_000_000))
        return response

    # Models

    @_rpc
    def CreateModel(self, request: pb.CreateModelRequest, context: grpc.ServicerContext) -> pb.CreateModelResponse:
        row = self.store.create_model(
            request.name,
            request.description,
            convert.from_struct(request.metadata, "metadata"),
            list(request.labels),
            request.notes,
            request=_request_key("CreateModel", request),
            editors=list(request.editors),
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
        models, token = _paged(page, convert.model)
        return pb.ListModelsResponse(models=models, next_page_token=token, total_size=page.total_size)

    @_rpc
    def UpdateModel(self, request: pb.UpdateModelRequest, context: grpc.ServicerContext) -> pb.UpdateModelResponse:
        changes = _changes(list(request.update_mask.paths), request.model)
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
            metadata=convert.from_struct(request.metadata, "metadata"),
            notes=request.notes,
            checkpoint=_checkpoint_values(request.checkpoint, "checkpoint") if request.HasField("checkpoint") else None,
            create_model_if_missing=request.create_model_if_missing,
            aliases=list(request.aliases),
            request=_request_key("CreateModelVersion", request),
        )
        return pb.CreateModelVersionResponse(model_version=convert.model_version(row))

    @_rpc
    def GetModelVersion(
        self, request: pb.GetModelVersionRequest, context: grpc.ServicerContext
    ) -> pb.GetModelVersionResponse:
        row = self.store.get_version(request.model_name, request.version, request.alias)
        return pb.GetModelVersionResponse(model_version=convert.model_version(row))

    @_rpc
    def ListModelVersions(
        self, request: pb.ListModelVersionsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelVersionsResponse:
        order = _enum(request.order_by, model_pb2.OrderBy.values(), "order_by")
        page = self.store.list_versions(
            request.model_name, request.page_size, request.page_token, descending=order != model_pb2.ORDER_BY_ASC
        )
        versions, token = _paged(page, convert.model_version)
        return pb.ListModelVersionsResponse(model_versions=versions, next_page_token=token, total_size=page.total_size)

    @_rpc
    def UpdateModelVersion(
        self, request: pb.UpdateModelVersionRequest, context: grpc.ServicerContext
    ) -> pb.UpdateModelVersionResponse:
        changes = _changes(list(request.update_mask.paths), request.model_version)
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
        row = self.store.create_checkpoint(
            _checkpoint_values(request.checkpoint, "checkpoint"), _request_key("CreateCheckpoint", request)
        )
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
        checkpoints, token = _paged(page, convert.checkpoint)
        return pb.ListCheckpointsResponse(checkpoints=checkpoints, next_page_token=token, total_size=page.total_size)

    @_rpc
    def DeleteCheckpoint(
        self, request: pb.DeleteCheckpointRequest, context: grpc.ServicerContext
    ) -> pb.DeleteCheckpointResponse:
        self.files.delete_checkpoint(request.uuid)
        return pb.DeleteCheckpointResponse()

    # Aliases

    @_rpc
    def SetModelAlias(self, request: pb.SetModelAliasRequest, context: grpc.ServicerContext) -> pb.SetModelAliasResponse:
        row = self.store.set_alias(request.model_name, request.alias, request.version)
        return pb.SetModelAliasResponse(model_version=convert.model_version(row))

    @_rpc
    def DeleteModelAlias(
        self, request: pb.DeleteModelAliasRequest, context: grpc.ServicerContext
    ) -> pb.DeleteModelAliasResponse:
        self.store.delete_alias(request.model_name, request.alias)
        return pb.DeleteModelAliasResponse()

    @_rpc
    def ListAliasHistory(
        self, request: pb.ListAliasHistoryRequest, context: grpc.ServicerContext
    ) -> pb.ListAliasHistoryResponse:
        page = self.store.list_alias_history(request.model_name, request.alias, request.page_size, request.page_token)
        changes, token = _paged(page, convert.alias_change)
        return pb.ListAliasHistoryResponse(changes=changes, next_page_token=token, total_size=page.total_size)

    # Events

    @staticmethod
    def watch_filters(request: pb.WatchEventsRequest) -> tuple[list[str], list[int]]:
        """The model names and event kinds a watch follows; raises the refusal of a request that is
        not valid (the HTTP gateway asks before it answers with a stream)."""
        validation.check_request(request)
        kind_numbers = event_pb2.EventKind.values()[1:]
        kinds = [_enum(kind, kind_numbers, "kinds") for kind in dict.fromkeys(request.kinds)]
        names = list(dict.fromkeys(request.model_names))
        for name in names:
            validation.text(name, "model_names", validation.MAX_NAME_LENGTH)
        if request.after_sequence < 0:
            raise invalid("INVALID_SEQUENCE", "after_sequence must not be negative", after_sequence=request.after_sequence)
        return names, kinds

    def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchEventsResponse]:
        """Stored events after after_sequence, then new ones, until the client cancels or the server
        stops (events.EventLog.follow)."""
        try:
            names, kinds = self.watch_filters(request)
        except errors.RegistryError as error:
            status.abort(context, error)
            return
        log = self.store.events
        try:
            context.add_callback(log.committed)  # a cancelled stream stops waiting at once
            followed = log.follow(request.after_sequence, names, kinds, context.is_active, stop_at_end=request.stop_at_end)
            for row in followed:
                yield pb.WatchEventsResponse(event=convert.event(row))
            if log.stopped:
                status.abort(context, errors.Unavailable("SERVER_STOPPING", "the server is stopping; resume the watch"))
        except pw.PeeweeException as error:
            status.abort(context, status.refusal(self.store.db, "WatchEvents", error))

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
        with upload:  # discards what was not published, also when the client went away mid-stream
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
        return pb.UploadCheckpointFilesResponse(checkpoint=convert.checkpoint(row))

    @_transfer
    def DownloadCheckpointFiles(
        self, request: pb.DownloadCheckpointFilesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadCheckpointFilesResponse]:
        if request.path and request.paths:
            raise invalid("PATH_WITH_PATHS", "give either path (one file) or paths, not both")
        paths = [request.path] if request.path else list(dict.fromkeys(request.paths))
        with self.store.db.connection_context():
            uuid, headers = self.files.stored_files(request.checkpoint_uuid, paths)
        for header in headers:
            yield pb.DownloadCheckpointFilesResponse(
                file=checkpoint_pb2.CheckpointFile(path=header.path, size=header.size, sha256=header.sha256)
            )
            for chunk in self.files.read(uuid, header):
                yield pb.DownloadCheckpointFilesResponse(chunk=chunk)
