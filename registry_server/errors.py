"""Domain errors raised by the store; the servicer maps each kind to one gRPC status code."""

from __future__ import annotations


class RegistryError(Exception):
    """A request the registry refuses. `reason` is UPPER_SNAKE; `metadata` names the offending values."""

    def __init__(self, reason: str, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = {key: str(value) for key, value in metadata.items()}


class NotFound(RegistryError):
    """The named object does not exist."""


class AlreadyExists(RegistryError):
    """The object to create exists already."""


class InvalidArgument(RegistryError):
    """A value of the request is malformed or out of bounds."""


class FailedPrecondition(RegistryError):
    """The request is well formed but the registry's state forbids it now."""


class Unauthenticated(RegistryError):
    """The caller sent no credentials, or ones the registry does not know."""


class PermissionDenied(RegistryError):
    """The caller is known but its role or ownership does not allow the request."""


class Unavailable(RegistryError):
    """The database cannot be reached or is busy; the request may be retried."""


class Aborted(RegistryError):
    """The transaction conflicted with another one; the request may be retried."""


class ResourceExhausted(RegistryError):
    """A limit is reached: one the server sets itself (e.g. concurrent streams), or one of its
    resources (e.g. its file storage is full)."""


class Internal(RegistryError):
    """A fault of the server itself (a bug): logged in full, answered without its details."""


class OutOfRange(RegistryError):
    """A value is valid but outside what exists (e.g. an HTTP Range past the end of a file)."""


class Unimplemented(RegistryError):
    """The server does not do this (e.g. an HTTP method a route does not take)."""


class DataLoss(RegistryError):
    """Stored data is missing or damaged (e.g. a checkpoint file gone from storage): retrying will not help."""


def model_not_found(name: str) -> NotFound:
    return NotFound("MODEL_NOT_FOUND", f"model {name!r} not found", model_name=name)


def version_not_found(name: str, version: int) -> NotFound:
    what = f"no version {version}" if version else "no version yet"
    return NotFound(
        "MODEL_VERSION_NOT_FOUND",
        f"model {name!r} has {what}",
        model_name=name,
        version=version,
    )


def checkpoint_not_found(uuid: str) -> NotFound:
    return NotFound("CHECKPOINT_NOT_FOUND", f"checkpoint {uuid!r} not found", checkpoint_uuid=uuid)


def invalid(reason: str, message: str, **metadata: object) -> InvalidArgument:
    return InvalidArgument(reason, message, **metadata)
