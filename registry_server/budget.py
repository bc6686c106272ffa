"""Capacity: how many calls of each kind may run at once, per process and per caller, on which thread
pool, and the end of streams that stop making progress.

A sync gRPC server runs every call on a pool thread for the call's whole life, a stream included. So
that idle or slow streams can never take the threads of unary calls, every kind of stream runs on a
pool of its own, sized to its cap, and a call over its kind's cap (or over its caller's share of it)
is refused RESOURCE_EXHAUSTED at once, before it takes anything. A stream blocked on its peer (a
download whose client stopped reading, an upload whose client stopped sending) for longer than the
idle timeout is ended DEADLINE_EXCEEDED by a watchdog thread.

Admission happens in the interceptor, on gRPC's serving thread; the pool that runs the call releases
its ticket when the call's work ends, whatever happens (the handler may never run: a client can cancel
before its request arrives), see CallPool."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

UNARY = "unary"
WATCH = "watch"
UPLOAD = "upload"
DOWNLOAD = "download"
REFLECTION = "reflection"
HEALTH_WATCH = "health_watch"


@dataclass(frozen=True)
class Limit:
    """At most `total` calls of a kind at once in this process, and `per_caller` of them per caller."""

    total: int
    per_caller: int


class Ticket:
    """One admitted call: counted against its kind and caller until released (by its pool)."""

    __slots__ = ("budget", "kind", "caller", "credential", "principal", "context", "waiting_since", "_released")

    def __init__(self, budget: CallBudget, kind: str, caller: str, credential: bytes | None, principal: Any) -> None:
        self.budget = budget
        self.kind = kind
        self.caller = caller
        # The digest of the token it came with and whom it named, to end the call if it is revoked.
        self.credential = credential
        self.principal = principal
        self.context: grpc.ServicerContext | None = None
        self.waiting_since: float | None = None  # blocked on the peer since then (monotonic seconds)
        self._released = False

    def release(self) -> None:
        self.budget._release(self)

    def end(self, code: grpc.StatusCode, details: str) -> None:
        """Ends the call now, from any thread (the handler's pending send or receive then fails)."""
        context = self.context
        if context is not None:
            end_call(context, code, details)


def end_call(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """Cancels a server call with a status, from any thread. grpcio's public ServicerContext.cancel()
    ends it CANCELLED without a word; the call object underneath takes a code and details. (An HTTP
    call's context, gateway.HttpContext, has an `end` of its own.)"""
    end = getattr(context, "end", None)
    if callable(end):
        end(code, details)
        return
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        from grpc._cython import cygrpc  # type: ignore[attr-defined]

        call.cancel(getattr(cygrpc.StatusCode, code.name.lower()), details)  # type: ignore[union-attr]
    except Exception:  # another grpcio: the public way, without the reason
        context.cancel()


class CallPool(futures.ThreadPoolExecutor):
    """A thread pool that releases the ticket of each call it runs once the call's work ends.

    gRPC submits `(context.run, _*_in_pool, rpc_event, state, behavior, ...)`: the behavior is the
    handler the interceptor made for this one call, carrying its ticket. Releasing here rather than in
    the handler covers calls whose handler never runs (cancelled before their request arrived)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        ticket = next((t for t in (getattr(a, "ticket", None) for a in args) if isinstance(t, Ticket)), None)
        if ticket is None:
            return super().submit(fn, *args, **kwargs)

        def run() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                ticket.release()

        return super().submit(run)


class CallBudget:
    """The caps of every kind of call, their pools, and the watchdog of idle streams."""

    def __init__(self, limits: dict[str, Limit], *, idle_timeout: float, unary_threads: int) -> None:
        self.limits = limits
        self.idle_timeout = idle_timeout
        self.pools = {
            kind: CallPool(max_workers=unary_threads if kind == UNARY else limit.total, thread_name_prefix=kind)
            for kind, limit in limits.items()
        }
        # Refusals answer at once on a pool of their own, even when every other pool is busy.
        self.refusals = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="refuse")
        self._lock = threading.Lock()
        self._active = dict.fromkeys(limits, 0)
        self._by_caller: dict[tuple[str, str], int] = {}
        self._streams: set[Ticket] = set()
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch_idle_streams, name="stream-watchdog", daemon=True)
        self._watchdog.start()

    def admit(
        self, kind: str, caller: str = "", credential: bytes | None = None, principal: Any = None
    ) -> Ticket | None:
        """A ticket for one more call of `kind` by `caller`, or None when a cap is reached. Callers
        without a name (servers without tokens: everyone) share the kind's whole cap."""
        limit = self.limits[kind]
        key = (kind, caller)
        with self._lock:
            if self._active[kind] >= limit.total or (caller and self._by_caller.get(key, 0) >= limit.per_caller):
                return None
            self._active[kind] += 1
            self._by_caller[key] = self._by_caller.get(key, 0) + 1
            ticket = Ticket(self, kind, caller, credential, principal)
            if kind != UNARY:
                self._streams.add(ticket)
        return ticket

    def _release(self, ticket: Ticket) -> None:
        key = (ticket.kind, ticket.caller)
        with self._lock:
            if ticket._released:
                return
            ticket._released = True
            self._active[ticket.kind] -= 1
            left = self._by_caller[key] - 1
            if left:
                self._by_caller[key] = left
            else:
                del self._by_caller[key]
            self._streams.discard(ticket)
        ticket.context = None

    def active(self, kind: str) -> int:
        return self._active[kind]

    def streams(self) -> list[Ticket]:
        with self._lock:
            return list(self._streams)

    def _watch_idle_streams(self) -> None:
        interval = min(1.0, self.idle_timeout / 4)
        while not self._stopping.wait(interval):
            now = time.monotonic()
            for ticket in self.streams():
                since = ticket.waiting_since
                if since is not None and now - since > self.idle_timeout:
                    log.info("ending an idle %s stream of %r: no progress for %.0fs", ticket.kind, ticket.caller, now - since)
                    ticket.end(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"STREAM_IDLE: the stream made no progress for {self.idle_timeout:g} seconds",
                    )

    def shutdown(self) -> None:
        self._stopping.set()
        for pool in (*self.pools.values(), self.refusals):
            pool.shutdown(wait=False, cancel_futures=True)


def track_responses(ticket: Ticket, responses: Iterator[Any]) -> Generator[Any, None, None]:
    """The responses of a stream; while one is being sent (between yield and the next request for
    one), the stream waits on its client."""
    for response in responses:
        ticket.waiting_since = time.monotonic()
        yield response
        ticket.waiting_since = None


def track_requests(ticket: Ticket, requests: Iterator[Any]) -> Iterator[Any]:
    """The requests of a client stream; while the next one has not arrived, the stream waits on its client."""
    while True:
        ticket.waiting_since = time.monotonic()
        try:
            request = next(requests)
        except StopIteration:
            return
        finally:
            ticket.waiting_since = None
        yield request
