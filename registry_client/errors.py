"""Typed exceptions for registry failures, built from gRPC status codes and google.rpc.ErrorInfo."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class RegistryError(Exception):
    """A failed registry call: its status code, ErrorInfo reason and metadata, and message."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code.name} {reason}: {message}" if reason else f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})


class NotFoundError(RegistryError):
    """NOT_FOUND: the model, version or checkpoint does not exist."""


class AlreadyExistsError(RegistryError):
    """ALREADY_EXISTS: the name or uuid is taken."""


class InvalidArgumentError(RegistryError):
    """INVALID_ARGUMENT: the request itself is malformed or over a limit."""


class FailedPreconditionError(RegistryError):
    """FAILED_PRECONDITION: the resource is in the wrong state (archived, in use, not completed)."""


class UnauthenticatedError(RegistryError):
    """UNAUTHENTICATED: no valid credentials."""


class PermissionDeniedError(RegistryError):
    """PERMISSION_DENIED: the caller may not do this."""


class UnavailableError(RegistryError):
    """UNAVAILABLE: the server could not be reached (after retries, for safe calls)."""


class ResourceExhaustedError(RegistryError):
    """RESOURCE_EXHAUSTED: a quota or message size limit was hit."""


class AbortedError(RegistryError):
    """ABORTED: a concurrency conflict; the call may be retried."""


class DataLossError(RegistryError):
    """DATA_LOSS: file bytes did not match their SHA-256 digest."""


class DeadlineExceededError(RegistryError):
    """DEADLINE_EXCEEDED: the call did not finish within the client's timeout."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[RegistryError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
}


def _error_info(err: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """Return the ErrorInfo reason and metadata carried by err, or ("", {}) when it has none."""
    if not isinstance(err, grpc.Call):  # an error that is not a call carries no status details
        return "", {}
    try:
        status = rpc_status.from_call(err)
    except ValueError:  # a status detail whose code disagrees with the call's
        return "", {}
    if status is None:
        return "", {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, dict(info.metadata)
    return "", {}


def from_rpc_error(err: grpc.RpcError) -> RegistryError:
    """Convert a failed gRPC call into the RegistryError subclass matching its status code."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    reason, metadata = _error_info(err)
    cls = _ERROR_BY_CODE.get(code, RegistryError)
    return cls(code, message or "", reason, metadata)
