"""Registry: the Python entry point to a model registry server over gRPC."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from modelregistry.v1 import checkpoint_pb2, registry_service_pb2 as pb, registry_service_pb2_grpc

from .errors import from_rpc_error
from .objects import (
    Checkpoint,
    CheckpointState,
    Model,
    ModelOrderBy,
    ModelSortBy,
    dict_to_struct,
)

DEFAULT_TARGET = "localhost:50051"
TARGET_ENV = "MODEL_REGISTRY_TARGET"
TOKEN_ENV = "MODEL_REGISTRY_TOKEN"

_SERVICE = pb.DESCRIPTOR.services_by_name["ModelRegistryService"]
# Retrying is safe only where a repeated call cannot do something twice: reads, and updates that
# set absolute values. Create*, Delete* and RenameModel could fail or duplicate on a second attempt.
_IDEMPOTENT_WRITES = {
    "UpdateModel",
    "UpdateModelMetadata",
    "UpdateModelVersion",
    "ArchiveModel",
    "UnarchiveModel",
}
_RETRYABLE_METHODS = sorted(
    m.name for m in _SERVICE.methods if m.name.startswith(("Get", "List")) or m.name in _IDEMPOTENT_WRITES
)
SERVICE_CONFIG = json.dumps(
    {
        # Spread calls over every address the target resolves to (several replicas behind one DNS
        # name, or "ipv4:host1:port,host2:port"), skipping those that are down.
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": _SERVICE.full_name, "method": m} for m in _RETRYABLE_METHODS],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def default_target() -> str:
    """The server address: $MODEL_REGISTRY_TARGET, else localhost:50051."""
    return os.environ.get(TARGET_ENV) or DEFAULT_TARGET


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


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
        """Connect to target (host:port); a given channel is used as is, without the retry config.

        `token` (default $MODEL_REGISTRY_TOKEN) is sent as `authorization: Bearer TOKEN` with every call.
        TLS is used when `tls` is true or any of the PEM file paths is given: `tls_ca` the CA that signed
        the server's certificate (default: the system's roots), `tls_cert`/`tls_key` this client's
        certificate and key for a server that asks for one (mutual TLS)."""
        self.target = target or default_target()
        self.timeout = timeout
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._owns_channel = channel is None
        options = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]
        if channel is None and (tls or tls_ca or tls_cert or tls_key):
            if bool(tls_cert) != bool(tls_key):
                raise ValueError("tls_cert and tls_key go together")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca), private_key=_read(tls_key), certificate_chain=_read(tls_cert)
            )
            channel = grpc.secure_channel(self.target, credentials, options=options)
        self._channel = channel or grpc.insecure_channel(self.target, options=options)
        self._stub = registry_service_pb2_grpc.ModelRegistryServiceStub(self._channel)

    def _call(self, rpc: str, request: Message) -> Any:
        """Invoke one RPC with the default deadline, turning failures into RegistryError."""
        try:
            return getattr(self._stub, rpc)(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    def _list_all(self, rpc: str, request: Message, items_field: str, limit: int | None) -> list[Any]:
        """Collect items_field over every page of a list RPC, stopping early at limit."""
        items: list[Any] = []
        while limit is None or len(items) < limit:
            request.page_size = self.page_size if limit is None else min(self.page_size, limit - len(items))
            response = self._call(rpc, request)
            items.extend(getattr(response, items_field))
            if not response.next_page_token:
                break
            request.page_token = response.next_page_token
        return items if limit is None else items[:limit]

    # Models

    def create_model(
        self,
        name: str,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        labels: Iterable[str] | None = None,
        notes: str = "",
    ) -> Model:
        """Create a model with no versions; AlreadyExistsError when the name is taken."""
        response = self._call(
            "CreateModel",
            pb.CreateModelRequest(
                name=name,
                description=description,
                metadata=dict_to_struct(metadata),
                labels=list(labels or []),
                notes=notes,
            ),
        )
        return Model.from_proto(response.model, self)

    def get_model(self, name: str) -> Model:
        """Return the model called name; NotFoundError when absent."""
        return Model.from_proto(self._call("GetModel", pb.GetModelRequest(name=name)).model, self)

    def get_models(
        self,
        sort_by: ModelSortBy | None = None,
        order_by: ModelOrderBy | None = None,
        name: str = "",
        description: str = "",
        labels: Iterable[str] | None = None,
        archived: bool | None = None,
        owner: str = "",
        limit: int | None = None,
    ) -> list[Model]:
        """Return models matching every filter given (name/description: case-insensitive substrings)."""
        request = pb.ListModelsRequest(
            sort_by=sort_by or 0,
            order_by=order_by or 0,
            name=name,
            description=description,
            labels=list(labels or []),
            owner=owner,
        )
        if archived is not None:
            request.archived = archived
        return [Model.from_proto(m, self) for m in self._list_all("ListModels", request, "models", limit)]

    def delete_model(self, name: str) -> None:
        """Delete a model and all its versions; the checkpoints stay."""
        self._call("DeleteModel", pb.DeleteModelRequest(name=name))

    def get_model_labels(self) -> list[str]:
        """Every label in use on models, most used first."""
        return list(self._call("ListModelLabels", pb.ListModelLabelsRequest()).labels)

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
        state: CheckpointState | None = None,
        storage_uri: str = "",
        report_time: datetime.datetime | None = None,
    ) -> Checkpoint:
        """Record a checkpoint; the server generates the uuid when None and stores COMPLETED when no state."""
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
            timestamp = timestamp_pb2.Timestamp()
            timestamp.FromDatetime(report_time)  # naive datetimes are taken as UTC
            checkpoint.report_time.CopyFrom(timestamp)
        response = self._call("CreateCheckpoint", pb.CreateCheckpointRequest(checkpoint=checkpoint))
        return Checkpoint.from_proto(response.checkpoint, self)

    def get_checkpoint(self, uuid: str) -> Checkpoint:
        """Return one checkpoint by uuid; NotFoundError when absent."""
        response = self._call("GetCheckpoint", pb.GetCheckpointRequest(uuid=uuid))
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
        request = pb.ListCheckpointsRequest(
            sort_by_metric=sort_by_metric, smaller_is_better=smaller_is_better
        )
        if experiment_id is not None:
            request.experiment_id = experiment_id
        if trial_id is not None:
            request.trial_id = trial_id
        protos = self._list_all("ListCheckpoints", request, "checkpoints", limit)
        return [Checkpoint.from_proto(c, self) for c in protos]

    def delete_checkpoint(self, uuid: str) -> None:
        """Delete a checkpoint; FailedPreconditionError (CHECKPOINT_IN_USE) while a version uses it."""
        self._call("DeleteCheckpoint", pb.DeleteCheckpointRequest(uuid=uuid))

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
