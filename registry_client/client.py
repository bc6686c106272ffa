"""Registry: the Python entry point to a model registry server over gRPC."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import time
import uuid as uuidlib
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from modelregistry.v1 import options_pb2, registry_service_pb2_grpc
from modelregistry.v1 import registry_service_pb2 as pb

from .connection import TOKEN_ENV, default_target, open_channel, unreachable, wait_for_connection, with_default_port
from .errors import NotFoundError, RegistryError, UnavailableError, from_rpc_error
from .objects import (
    Checkpoint,
    CheckpointState,
    Event,
    EventKind,
    Model,
    ModelOrderBy,
    ModelSortBy,
    ModelVersion,
    checkpoint_message,
    dict_to_struct,
    request,
)
from .transfer import Progress, UploadStream, local_files, receive_files

HEALTH_CHECK = "/grpc.health.v1.Health/Check"

# First and longest pause before a lost watch stream is resumed.
_WATCH_BACKOFF_S = (0.1, 5.0)


def _request_id(given: str | None) -> str:
    """The caller's request_id, or a new one: every create this client sends can be retried safely."""
    return given or str(uuidlib.uuid4())


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """The server process that answered GetServerInfo."""

    version: str
    schema_version: int
    schema_migration: str
    database_kind: str
    start_time: datetime.datetime
    uptime_seconds: float
    pid: int
    caller: str = ""  # the principal the caller's token names; "" on a server without tokens
    caller_role: str = ""  # "viewer", "editor" or "admin": what the caller may do

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "start_time": self.start_time.isoformat()}


class Registry:
    """A connection to a model registry: creates and finds models and checkpoints."""

    # Rows asked for per list call; lists follow next_page_token until the last page.
    page_size: int = 100

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float = 30.0,
        channel: grpc.Channel | None = None,
        token: str | None = None,
        tls: bool = False,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        """Connect to target (host:port; "localhost" alone means localhost:50051); a given channel is
        used as is, without the retry config. `timeout` is every call's deadline, in seconds.

        `token` (default $MODEL_REGISTRY_TOKEN) is sent as `authorization: Bearer TOKEN` with every call:
        it is attached to the channel (call credentials on TLS, an interceptor otherwise, and on a given
        channel), so that no call, stream or not, goes without it.
        TLS is used when `tls` is true or any of the PEM file paths is given: `tls_ca` the CA that signed
        the server's certificate (default: the system's roots), `tls_cert`/`tls_key` this client's
        certificate and key for a server that asks for one (mutual TLS)."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout: expected a number of seconds, got {type(timeout).__name__} {timeout!r}")
        if not (0 < timeout < math.inf):
            raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        self.target = with_default_port(target) if target else default_target()
        self.timeout = timeout
        self._tls = bool(tls or tls_ca or tls_cert or tls_key)
        self._owns_channel = channel is None
        self._channel = open_channel(
            self.target,
            token=token if token is not None else os.environ.get(TOKEN_ENV),
            tls=self._tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            channel=channel,
        )
        self._stub = registry_service_pb2_grpc.ModelRegistryServiceStub(self._channel)

    def _error(self, err: grpc.RpcError) -> RegistryError:
        """The RegistryError of a failed call; a failure to connect says why, and what to do."""
        error = from_rpc_error(err)
        if isinstance(error, UnavailableError) and not error.reason:
            explained = unreachable(self.target, self._tls, error.message)
            if explained:
                return UnavailableError(error.code, explained)
        return error

    def _call(self, rpc: str, **fields: Any) -> Any:
        """Invoke one RPC with the request of these fields and the default deadline, turning failures
        into RegistryError (and fields of the wrong type into TypeError/ValueError naming them)."""
        message = request(getattr(pb, f"{rpc}Request"), **fields)
        try:
            return getattr(self._stub, rpc)(message, timeout=self.timeout)
        except grpc.RpcError as err:
            raise self._error(err) from err

    def check_connection(self) -> None:
        """Connect now, and raise UnavailableError saying why the registry cannot be reached (nothing
        listening, an unknown host, TLS on one side only, an untrusted certificate) at the first failed
        attempt, rather than after the retries of a call. The command line runs it before each command."""
        state = wait_for_connection(self._channel, self.timeout)
        if state == grpc.ChannelConnectivity.READY:
            return
        if state is None:
            raise UnavailableError(
                grpc.StatusCode.UNAVAILABLE,
                f"cannot reach the registry at {self.target}: no connection within {self.timeout:g} s "
                "(is the address right? set --target or MODEL_REGISTRY_TARGET)",
            )
        # The channel has failed: one call that is never retried (health) fetches gRPC's reason.
        check = self._channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            check(health_pb2.HealthCheckRequest(), timeout=self.timeout)
        except grpc.RpcError as err:
            error = self._error(err)
            if isinstance(error, UnavailableError):
                raise error from err
        # Anything else came from a server that answered: connected after all.

    def _list_all(self, rpc: str, items_field: str, limit: int | None, **fields: Any) -> list[Any]:
        """Collect items_field over every page of a list RPC, stopping early at limit."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit: expected a number of items (0 or more) or None, got {limit!r}")
        items: list[Any] = []
        while limit is None or len(items) < limit:
            fields["page_size"] = self.page_size if limit is None else min(self.page_size, limit - len(items))
            response = self._call(rpc, **fields)
            items.extend(getattr(response, items_field))
            if not response.next_page_token:
                break
            fields["page_token"] = response.next_page_token
        return items if limit is None else items[:limit]

    # Models

    def create_model(
        self,
        name: str,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        labels: Iterable[str] | None = None,
        notes: str = "",
        request_id: str | None = None,
    ) -> Model:
        """Create a model with no versions; AlreadyExistsError when the name is taken.

        request_id (a new UUID when None) makes the call safe to retry: the same id with the same
        arguments returns the model the first call created."""
        response = self._call(
            "CreateModel",
            name=name,
            description=description,
            metadata=dict_to_struct(metadata, "metadata"),
            labels=labels,
            notes=notes,
            request_id=_request_id(request_id),
        )
        return Model.from_proto(response.model, self)

    def get_model(self, name: str) -> Model:
        """Return the model called name; NotFoundError when absent."""
        return Model.from_proto(self._call("GetModel", name=name).model, self)

    def get_models(
        self,
        sort_by: ModelSortBy | str | None = None,
        order_by: ModelOrderBy | str | None = None,
        name: str = "",
        description: str = "",
        labels: Iterable[str] | None = None,
        archived: bool | None = None,
        owner: str = "",
        limit: int | None = None,
    ) -> list[Model]:
        """Return models matching every filter given (name/description: case-insensitive substrings).
        sort_by and order_by take the enums or their names in any case (e.g. "creation_time")."""
        models = self._list_all(
            "ListModels",
            "models",
            limit,
            sort_by=ModelSortBy.coerce(sort_by, "sort_by") if sort_by is not None else None,
            order_by=ModelOrderBy.coerce(order_by, "order_by") if order_by is not None else None,
            name=name,
            description=description,
            labels=labels,
            archived=archived,
            owner=owner,
        )
        return [Model.from_proto(m, self) for m in models]

    def get_version(
        self, model_name: str, version: int | None = None, alias: str | None = None
    ) -> ModelVersion | None:
        """Return a version of a model: number `version`, the one `alias` points at, or the latest when
        neither is given (None if the model has no version yet; a missing model, version or alias raises
        NotFoundError)."""
        try:
            response = self._call("GetModelVersion", model_name=model_name, version=version, alias=alias)
        except NotFoundError as err:
            if not version and not alias and err.reason == "MODEL_VERSION_NOT_FOUND":
                return None
            raise
        return ModelVersion.from_proto(response.model_version, self)

    def delete_model(self, name: str) -> None:
        """Delete a model and all its versions; the checkpoints stay."""
        self._call("DeleteModel", name=name)

    def server_info(self) -> ServerInfo:
        """What the server process that answers is: its release, database kind and schema level, uptime,
        pid; and who the caller is to it: its principal and role."""
        reply = self._call("GetServerInfo")
        return ServerInfo(
            version=reply.version,
            schema_version=reply.schema_version,
            schema_migration=reply.schema_migration,
            database_kind=reply.database_kind,
            start_time=reply.start_time.ToDatetime(tzinfo=datetime.timezone.utc),
            uptime_seconds=reply.uptime_seconds,
            pid=reply.pid,
            caller=reply.caller,
            caller_role=options_pb2.Role.Name(reply.caller_role).removeprefix("ROLE_").lower()
            if reply.caller_role else "",
        )

    def get_model_labels(self) -> list[str]:
        """Every label in use on models, most used first."""
        return list(self._call("ListModelLabels").labels)

    # Checkpoints

    def create_checkpoint(
        self,
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
        request_id: str | None = None,
    ) -> Checkpoint:
        """Record a checkpoint; the server generates the uuid when None and stores COMPLETED when no state.

        request_id (a new UUID when None) makes the call safe to retry, as in create_model."""
        checkpoint = checkpoint_message(
            uuid, experiment_id, trial_id, batch_number, experiment_config, hparams, resources, metadata,
            framework, format, metrics, state, storage_uri, report_time,
        )
        response = self._call("CreateCheckpoint", checkpoint=checkpoint, request_id=_request_id(request_id))
        return Checkpoint.from_proto(response.checkpoint, self)

    def get_checkpoint(self, uuid: str) -> Checkpoint:
        """Return one checkpoint by uuid; NotFoundError when absent."""
        response = self._call("GetCheckpoint", uuid=uuid)
        return Checkpoint.from_proto(response.checkpoint, self)

    def get_checkpoints(
        self,
        experiment_id: int | None = None,
        trial_id: int | None = None,
        sort_by_metric: str = "",
        smaller_is_better: bool = False,
        limit: int | None = None,
    ) -> list[Checkpoint]:
        """Return checkpoints of an experiment/trial; with sort_by_metric, best first."""
        checkpoints = self._list_all(
            "ListCheckpoints",
            "checkpoints",
            limit,
            experiment_id=experiment_id,
            trial_id=trial_id,
            sort_by_metric=sort_by_metric,
            smaller_is_better=smaller_is_better,
        )
        return [Checkpoint.from_proto(c, self) for c in checkpoints]

    def top_checkpoint(
        self,
        experiment_id: int | None = None,
        *,
        metric: str,
        smaller_is_better: bool = False,
        trial_id: int | None = None,
    ) -> Checkpoint:
        """The checkpoint with the best value of `metric` (of one experiment, or trial, when given): the
        seed's get_experiment(id).top_checkpoint(). When no checkpoint reports a number for `metric`,
        NotFoundError with reason METRIC_NOT_REPORTED, never an arbitrary checkpoint."""
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric: expected the name of a metric, e.g. 'loss', got {metric!r}")
        found = self.get_checkpoints(experiment_id, trial_id, metric, smaller_is_better, limit=1)
        value = found[0].metrics.get(metric) if found else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return found[0]
        scope = {key: str(number) for key, number in [("experiment_id", experiment_id), ("trial_id", trial_id)]
                 if number is not None}
        where = "".join(f" of {key.removesuffix('_id')} {number}" for key, number in scope.items())
        raise NotFoundError(
            grpc.StatusCode.NOT_FOUND,
            f"no checkpoint{where} reports the metric {metric!r} as a number",
            "METRIC_NOT_REPORTED",
            {"metric": metric, **scope},
        )

    def delete_checkpoint(self, uuid: str) -> None:
        """Delete a checkpoint and its stored files; FailedPreconditionError (CHECKPOINT_IN_USE) while a
        version uses it."""
        self._call("DeleteCheckpoint", uuid=uuid)

    # Registration and events

    def register_version(
        self,
        model_name: str,
        checkpoint_uuid: str | None = None,
        *,
        checkpoint: Mapping[str, Any] | None = None,
        create_model_if_missing: bool = False,
        aliases: Iterable[str] = (),
        name: str = "",
        comment: str = "",
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        notes: str = "",
        request_id: str | None = None,
    ) -> ModelVersion:
        """Register a model version in one transaction, all of it or nothing.

        Give checkpoint_uuid (an existing COMPLETED checkpoint) or `checkpoint`, the arguments of
        create_checkpoint as a dict, to record it in the same step. create_model_if_missing creates
        the model; `aliases` (e.g. ["production"]) are pointed at the new version. request_id (a new
        UUID when None) makes the call safe to retry: it is retried on UNAVAILABLE, and a repeat with
        the same id returns the first call's version instead of registering another."""
        if checkpoint is not None and not isinstance(checkpoint, Mapping):
            raise TypeError(f"checkpoint: expected a dict of create_checkpoint's arguments, got {type(checkpoint).__name__}")
        response = self._call(
            "CreateModelVersion",
            model_name=model_name,
            checkpoint_uuid=checkpoint_uuid,
            checkpoint=checkpoint_message(**checkpoint) if checkpoint is not None else None,
            name=name,
            comment=comment,
            labels=labels,
            metadata=dict_to_struct(metadata, "metadata"),
            notes=notes,
            create_model_if_missing=create_model_if_missing,
            aliases=aliases,
            request_id=_request_id(request_id),
        )
        return ModelVersion.from_proto(response.model_version, self)

    def watch(
        self,
        models: Iterable[str] | None = None,
        kinds: Iterable[EventKind | str] | EventKind | str | None = None,
        after: int = 0,
        *,
        follow: bool = True,
        reconnect: bool = True,
    ) -> Generator[Event, None, None]:
        """Yield the registry's events numbered after `after` (0: from the first), then new ones as
        they happen, in order, forever; with follow=False, stop at the end of the stored history instead.
        With `reconnect`, a stream lost to UNAVAILABLE or cut by the server with CANCELLED (a server
        stopping or unreachable) is resumed after the last event yielded, with no gap or duplicate.
        Stop by breaking out of the loop (the stream is cancelled)."""
        kinds = [kinds] if isinstance(kinds, (str, EventKind)) else kinds
        message = request(
            pb.WatchEventsRequest,
            model_names=models,
            kinds=[EventKind.coerce(kind, "kinds") for kind in kinds or []],
            after_sequence=after,
            stop_at_end=not follow,
        )
        backoff = _WATCH_BACKOFF_S[0]
        while True:
            message.after_sequence = after
            call = self._stub.WatchEvents(message)
            try:
                for response in call:
                    event = Event.from_proto(response.event)
                    after = event.sequence
                    backoff = _WATCH_BACKOFF_S[0]
                    yield event
                if not follow:
                    return  # the server says this was the end of the history
            except grpc.RpcError as err:
                error = self._error(err)
                # CANCELLED here came from the server (one shutting down cuts streams that way): this
                # loop never cancels its own call before the finally below.
                lost = isinstance(error, UnavailableError) or error.code == grpc.StatusCode.CANCELLED
                if not (reconnect and lost):
                    raise error from err
            finally:
                call.cancel()
            time.sleep(backoff)
            backoff = min(backoff * 2, _WATCH_BACKOFF_S[1])

    # Checkpoint files. Transfers have no deadline: a large checkpoint takes as long as it takes.

    def upload_checkpoint(
        self, local_dir: str | os.PathLike[str], *, progress: Progress | None = None, **fields: Any
    ) -> Checkpoint:
        """Create a checkpoint (fields as for create_checkpoint) and upload every file under local_dir.

        The checkpoint is created ACTIVE unless a state is given, and becomes COMPLETED when its files
        are stored; resources and storage_uri are set by the registry. If the upload fails, the
        checkpoint is deleted again and the error raised: nothing of it stays visible.
        """
        if "resources" in fields or "storage_uri" in fields:
            raise TypeError("resources and storage_uri are set by the registry from the uploaded files")
        files = local_files(local_dir)  # a missing directory or a link fails before anything is created
        fields.setdefault("state", CheckpointState.ACTIVE)
        checkpoint = self.create_checkpoint(**fields)
        try:
            return self._upload(checkpoint.uuid, files, progress)
        except BaseException:
            with contextlib.suppress(RegistryError):
                self.delete_checkpoint(checkpoint.uuid)
            raise

    def upload_checkpoint_files(
        self, uuid: str, local_dir: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Checkpoint:
        """Upload every file under local_dir to an existing checkpoint (replacing files of the same
        path); all of them are stored, or none. Returns the checkpoint as updated."""
        return self._upload(uuid, local_files(local_dir), progress)

    def _upload(self, uuid: str, files: list[tuple[str, Path]], progress: Progress | None) -> Checkpoint:
        stream = UploadStream(uuid, files, progress)
        try:
            response = self._stub.UploadCheckpointFiles(iter(stream))
        except grpc.RpcError as err:
            if stream.error is not None:  # reading a local file failed: that, not CANCELLED, is the news
                raise stream.error from None
            raise self._error(err) from err
        return Checkpoint.from_proto(response.checkpoint, self)

    def download_checkpoint(
        self,
        uuid: str,
        directory: str | os.PathLike[str],
        paths: Iterable[str] | None = None,
        *,
        progress: Progress | None = None,
    ) -> Path:
        """Download the stored files of a checkpoint (or only those named in paths) into directory,
        checking every file's SHA-256; a file appears under its name only once it checked out."""
        message = request(pb.DownloadCheckpointFilesRequest, checkpoint_uuid=uuid, paths=paths)
        sizes = self.get_checkpoint(uuid).resources
        total = sum(sizes.get(p, 0) for p in message.paths) if message.paths else sum(sizes.values())
        responses = self._stub.DownloadCheckpointFiles(message)
        try:
            receive_files(responses, Path(directory), total, progress)
        except grpc.RpcError as err:
            raise self._error(err) from err
        finally:
            responses.cancel()  # a no-op once the stream has ended; stops it after a local failure
        return Path(directory)

    # Lifetime

    def close(self) -> None:
        """Close the channel, unless it was handed in by the caller."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self.target!r})"
