"""The standard health service (grpc.health.v1.Health), written so that no client can wedge it.

grpcio-health-checking's servicer calls a Watch stream's send callback while holding its lock; that
callback waits until gRPC's polling thread completes the send, and the polling thread, closing a
cancelled Watch, waits for that same lock. Two clients opening and cancelling Watch streams in a loop
deadlock the whole process within seconds (every call then times out, and SIGTERM no longer ends it).
Here Watch is a plain generator: it reads the status under a condition, and sends (yields) with no
lock held. Watch streams run on their own capped thread pool (see streams.py), so they never take the
threads of other calls."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
# How often a Watch stream looks whether its client went away while no status changed (it is also
# woken at once when its call ends).
_WATCH_RECHECK_S = 1.0


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Statuses by service name ("" for the whole server); Check answers from them, Watch streams them."""

    def __init__(self) -> None:
        # NOT_SERVING until the server has migrated its database and seen it answer (set_serving).
        self._statuses: dict[str, int] = {"": _NOT_SERVING}
        self._changed = threading.Condition()
        self._shutting_down = False

    def set(self, service: str, status: int) -> None:
        """Sets a service's status; ignored once the server is shutting down."""
        with self._changed:
            if not self._shutting_down:
                self._statuses[service] = status
                self._changed.notify_all()

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, for good: Watch streams send it and end, so that a stopping
        server does not wait out its grace period for them."""
        with self._changed:
            self._statuses = dict.fromkeys(self._statuses, _NOT_SERVING)
            self._shutting_down = True
            self._changed.notify_all()

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details(f"unknown service {request.service[:256]!r}")
            return health_pb2.HealthCheckResponse()
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        sent = None
        context.add_callback(self._wake)  # a cancelled stream ends (and frees its thread) at once
        while context.is_active():
            with self._changed:
                status = self._statuses.get(request.service, _SERVICE_UNKNOWN)
                if status == sent:
                    if self._shutting_down:
                        return
                    self._changed.wait(_WATCH_RECHECK_S)
                    continue
            sent = status
            yield health_pb2.HealthCheckResponse(status=status)  # no lock is held while it is sent
