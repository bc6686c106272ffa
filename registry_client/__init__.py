"""Python client of the model registry: Registry, its Model/ModelVersion/Checkpoint objects and errors."""

import os

# gRPC's core writes log lines of its own to stderr (e.g. one per failed TLS handshake, at INFO) unless
# GRPC_VERBOSITY says otherwise, and reads it once, when grpc is first imported. ERROR is the level
# gRPC documents as its default; the failures themselves reach the caller as exceptions. Set
# GRPC_VERBOSITY (or import grpc first) to choose another level.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from .client import Registry, ServerInfo  # noqa: E402 (after the environment above)
from .errors import (  # noqa: E402
    AbortedError,
    AlreadyExistsError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RegistryError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from .objects import (  # noqa: E402
    AliasChange,
    Checkpoint,
    CheckpointState,
    Event,
    EventKind,
    Model,
    ModelOrderBy,
    ModelSortBy,
    ModelVersion,
)

__all__ = [
    "AbortedError",
    "AliasChange",
    "AlreadyExistsError",
    "Checkpoint",
    "CheckpointState",
    "DataLossError",
    "DeadlineExceededError",
    "Event",
    "EventKind",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "Model",
    "ModelOrderBy",
    "ModelSortBy",
    "ModelVersion",
    "NotFoundError",
    "PermissionDeniedError",
    "Registry",
    "RegistryError",
    "ResourceExhaustedError",
    "ServerInfo",
    "UnauthenticatedError",
    "UnavailableError",
]
