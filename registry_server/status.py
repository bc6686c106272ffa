"""Refusals and failures as gRPC statuses, in one place: the status code of each domain error, the
google.rpc.ErrorInfo detail every refusal carries, and what database and storage failures mean to
callers. The servicer, the interceptor and the HTTP gateway all answer through here."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator

import grpc
import peewee as pw
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from . import db as database
from . import errors, metrics
from .errors import invalid

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
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
    errors.Internal: grpc.StatusCode.INTERNAL,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}
def database_error(error: pw.PeeweeException) -> errors.RegistryError:
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


def abort(context: grpc.ServicerContext, error: errors.RegistryError) -> None:
    status = rich_status(error)
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def storage_error(error: OSError) -> errors.RegistryError:
    """What a failure of the file storage means to the caller: full, or unavailable for now."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.ResourceExhausted("STORAGE_FULL", "the registry's file storage is full")
    return errors.Unavailable("STORAGE_UNAVAILABLE", "the registry's file storage failed; retry later")


def refusal(db: pw.Database, rpc: str, error: errors.RegistryError | pw.PeeweeException | OSError) -> errors.RegistryError:
    """The registry error to answer with, for a refusal, a database failure or a storage failure."""
    if isinstance(error, errors.RegistryError):
        return error
    if isinstance(error, OSError):
        log.warning("%s: storage error: %s", rpc, error)
        answer = storage_error(error)
        metrics.storage_error(answer.reason)
        return answer
    log.warning("%s: database error: %s", rpc, error)
    if isinstance(error, (pw.OperationalError, pw.InterfaceError)):
        database.discard_idle_connections(db)
    answer = database_error(error)
    metrics.database_error(answer.reason)
    return answer


@contextlib.contextmanager
def refusals(db: pw.Database, context: grpc.ServicerContext, rpc: str) -> Iterator[None]:
    """Turns every refusal into a status with an ErrorInfo detail, in one place. (abort_with_status
    would end the call UNKNOWN under grpcio-testing.)"""
    try:
        yield
    except (errors.RegistryError, pw.PeeweeException, OSError) as error:
        abort(context, refusal(db, rpc, error))
    except Exception:  # a bug: its text (SQL, paths, values) is for the log, never for the caller
        log.exception("%s failed", rpc)
        abort(context, errors.Internal("INTERNAL_ERROR", "the server failed on this request; the failure is logged"))


