"""Python client of the model registry: Registry, its Model/ModelVersion/Checkpoint objects and errors."""

from .client import Registry
from .errors import (
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
from .objects import (
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
    "UnauthenticatedError",
    "UnavailableError",
]
