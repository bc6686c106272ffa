"""The HTTP/JSON face of the registry service, in the server's own process: an ASGI app, served by
uvicorn on `--http-port`, that transcodes each call (transcode.py, from the protos' google.api.http
annotations) and runs it through the same gate as gRPC (interceptor.admit, gate, serve: token,
capacity, role, audit) and the same servicer method. Also serves the OpenAPI document and the web UI's
static files.

A call runs on the pool of its kind (budget.py), like a gRPC call; the event loop only moves bytes.
Streams cross between the two through a bounded queue, so a slow client holds back its stream's
thread (which then counts as waiting on its peer, and is ended after the idle timeout).

Upload over HTTP: one file per request, `POST /api/v1/checkpoints/{uuid}/files?path=P&sha256=HEX`
with the file's raw bytes as the body (Content-Length is its size); it is checked and published as
atomically as a gRPC upload of that one file."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import json
import logging
import mimetypes
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import grpc
from google.protobuf import json_format
from google.rpc import status_pb2
from grpc_status import rpc_status
from modelregistry.v1 import checkpoint_pb2, event_pb2
from modelregistry.v1 import registry_service_pb2 as pb

from . import auth, budget, contract, errors, metrics, tracing, transcode
from .interceptor import RegistryInterceptor, gate, outcome, serve_call
from .status import rich_status

log = logging.getLogger(__name__)

UI_DIR = Path(__file__).resolve().parent / "ui"
# gRPC code -> HTTP status (routes.md, the standard mapping).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Refusals of the HTTP layer itself whose HTTP status is more precise than their code's.
_REASON_STATUS = {"REQUEST_TOO_LARGE": 413, "METHOD_NOT_ALLOWED": 405, "RANGE_NOT_SATISFIABLE": 416}
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
_JSON = b"application/json"
PROTOCOL = "http"  # the protocol label of this gateway's calls in metrics and spans
_PUT_TIMEOUT_S = 0.5  # how often a blocked stream thread looks whether its client went away


class Cancelled(Exception):
    """The HTTP client went away, or the call was ended (idle, token revoked)."""


class HttpContext:
    """What the servicer and the gate use of a grpc.ServicerContext, for one HTTP call: the status it
    ends with, whether the client is still there, and callbacks for when it goes away."""

    def __init__(self) -> None:
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, Any], ...] = ()
        self._active = True
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._trailing = tuple(metadata)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing

    def abort_with_status(self, status: grpc.Status) -> None:
        self.set_code(status.code)
        self.set_details(status.details)
        self.set_trailing_metadata(status.trailing_metadata)
        raise Cancelled(status.details)

    def is_active(self) -> bool:
        return self._active

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if self._active:
                self._callbacks.append(callback)
                return True
        return False

    def end(self, code: grpc.StatusCode, details: str) -> None:
        """budget.Ticket.end: the call is ended with this status (idle, token revoked)."""
        if self._code is None:
            self._code, self._details = code, details
        self.cancel()

    def cancel(self) -> None:
        """The client went away, or budget.Ticket.end: the call stops at its next look."""
        with self._lock:
            if not self._active:
                return
            self._active = False
            callbacks, self._callbacks = self._callbacks, []
        if self._code is None:
            self._code = grpc.StatusCode.CANCELLED
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a cancellation callback failed")

    def status(self) -> status_pb2.Status:
        """The google.rpc.Status the call ended with (OK when nothing was set)."""
        for key, value in self._trailing:
            if key == rpc_status.GRPC_DETAILS_METADATA_KEY:
                return status_pb2.Status.FromString(value)
        code = self._code or grpc.StatusCode.OK
        return status_pb2.Status(code=code.value[0], message=self._details or "")


def status_of(error: errors.RegistryError) -> status_pb2.Status:
    status = rich_status(error)
    return status_pb2.Status.FromString(dict(status.trailing_metadata)[rpc_status.GRPC_DETAILS_METADATA_KEY])


def error_body(status: status_pb2.Status) -> tuple[int, bytes]:
    """The HTTP status and the JSON body of a google.rpc.Status."""
    reason = ""
    for detail in status.details:
        if detail.type_url.endswith("google.rpc.ErrorInfo"):
            reason = json_format.MessageToDict(status).get("details", [{}])[0].get("reason", "")
    http = _REASON_STATUS.get(reason) or HTTP_STATUS.get(_CODES.get(status.code, grpc.StatusCode.UNKNOWN), 500)
    return http, json.dumps(json_format.MessageToDict(status), ensure_ascii=False, separators=(",", ":")).encode()


class Response:
    """A whole answer: status, headers, body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []

    @classmethod
    def error(cls, error: errors.RegistryError | status_pb2.Status, extra: list[tuple[bytes, bytes]] | None = None) -> Response:
        status = status_of(error) if isinstance(error, errors.RegistryError) else error
        http, body = error_body(status)
        return cls(http, body, [(b"content-type", _JSON), *(extra or [])])

    async def send(self, send: Callable[[dict[str, Any]], Awaitable[None]], head_only: bool = False) -> None:
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head_only else self.body})


class _Pipe:
    """Items from a pool thread to the event loop, at most `size` waiting: the thread blocks while
    the client is slow, and gives up (Cancelled) once the call is no longer active."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: HttpContext, size: int = 8) -> None:
        self.loop = loop
        self.context = context
        self.queue: asyncio.Queue[Any] = asyncio.Queue(size)

    def put(self, item: Any) -> None:
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                future.result(timeout=_PUT_TIMEOUT_S)
                return
            except concurrent.futures.TimeoutError:
                if not self.context.is_active():
                    future.cancel()
                    raise Cancelled("the client went away") from None
            except (concurrent.futures.CancelledError, RuntimeError):  # the loop is gone
                raise Cancelled("the server stopped") from None

    def put_last(self, item: Any) -> None:
        """The stream's last item (how it ended), even once the call is no longer active; dropped
        when the client does not take it within a moment."""
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        try:
            future.result(timeout=_PUT_TIMEOUT_S * 4)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            future.cancel()

    def get_from_thread(self) -> Any:
        """The next item, for a thread reading what the event loop puts (an upload's body)."""
        future = asyncio.run_coroutine_threadsafe(self.queue.get(), self.loop)
        while True:
            try:
                return future.result(timeout=_PUT_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                if not self.context.is_active():
                    future.cancel()
                    raise Cancelled("the client went away") from None
            except (concurrent.futures.CancelledError, RuntimeError):
                raise Cancelled("the server stopped") from None


_END = object()


class Gateway:
    """The ASGI app."""

    def __init__(
        self,
        servicer: Any,
        interceptor: RegistryInterceptor,
        *,
        max_request_bytes: int,
        openapi: bytes,
        ui_dir: Path = UI_DIR,
    ) -> None:
        self.servicer = servicer
        self.interceptor = interceptor
        self.calls = interceptor.calls
        self.max_request_bytes = max_request_bytes
        self.routes = transcode.routes(contract.SERVICE)
        self.openapi = openapi
        self.ui_dir = ui_dir

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._serve(scope, receive, tracked_send)
        except (Cancelled, OSError):  # the client went away: nobody to answer
            pass
        except Exception:
            log.exception("HTTP %s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                error = errors.Internal("INTERNAL_ERROR", "the server failed on this request; the failure is logged")
                await Response.error(error).send(send)

    async def _serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        method = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        headers = _headers(scope)
        if path == "/" or path.startswith("/ui/"):
            return await self._static(method, path, headers).send(send, method == "HEAD")
        if path == "/metrics":
            return await self._metrics(method, headers).send(send, method == "HEAD")
        if path == "/api/v1/openapi.json":
            if method not in ("GET", "HEAD"):
                return await _not_allowed(["GET", "HEAD"]).send(send)
            return await Response(200, self.openapi, [(b"content-type", _JSON), (b"cache-control", b"no-cache")]).send(send, method == "HEAD")
        route, bound, allowed = self._route(method, path)
        if route is None:
            if allowed:
                return await _not_allowed(allowed).send(send)
            error = errors.NotFound("ROUTE_NOT_FOUND", f"no route {path[:200]!r} in this API (see /api/v1/openapi.json)")
            return await Response.error(error).send(send)
        if isinstance(bound, errors.RegistryError):
            return await Response.error(bound).send(send)
        try:
            params = transcode.parse_query(scope.get("query_string", b""))
        except errors.RegistryError as error:
            return await Response.error(error).send(send)
        if route.rpc == "UploadCheckpointFiles":
            return await self._upload(route, bound, params, headers, receive, send)
        body = await self._body(headers, receive)
        if isinstance(body, Response):
            return await body.send(send)
        try:
            principal, ticket = self.interceptor.admit(route.rpc, headers.get("authorization"), PROTOCOL)
        except errors.RegistryError as error:
            return await Response.error(error).send(send)
        context = HttpContext()
        ticket.context = context  # type: ignore[assignment]  # ended by budget.Ticket.end like a gRPC call

        def parse() -> Any:
            request = transcode.request(route, bound, params, body)
            if request.ByteSize() > self.max_request_bytes:
                raise errors.ResourceExhausted(
                    "REQUEST_TOO_LARGE", f"the request is larger than {self.max_request_bytes} bytes", limit=self.max_request_bytes
                )
            return request

        if route.rpc == "WatchEvents":
            return await self._watch(principal, ticket, context, parse, headers, receive, send)
        if route.rpc == "DownloadCheckpointFiles":
            return await self._download(principal, ticket, context, parse, headers, receive, send, method == "HEAD")
        handler = getattr(self.servicer, route.rpc)

        def call() -> Response:
            # The call's metrics and span, as the gRPC interceptor records them, with protocol "http".
            timer = metrics.start_call(route.rpc, PROTOCOL)
            span = tracing.start_call(contract.SERVICE.full_name, route.rpc, PROTOCOL, headers)
            failed = True
            try:
                if timer is not None:
                    timer.received(len(body))
                try:
                    request = gate(principal, route.rpc, parse)
                except errors.RegistryError as error:
                    status = rich_status(error)  # for the metrics and the span, as gRPC's abort records it
                    context.set_code(status.code)
                    context.set_trailing_metadata(status.trailing_metadata)
                    failed = False
                    return Response.error(error)
                response = serve_call(principal, route.rpc, lambda: handler(request, context), request, context)
                failed = False
                if context.code() not in (None, grpc.StatusCode.OK):
                    return Response.error(context.status())
                data = transcode.to_json(response)
                sent = metrics.response_counter(route.rpc, PROTOCOL)
                if sent is not None:
                    sent(len(data))
                return Response(200, data, [(b"content-type", _JSON)])
            finally:
                code, reason = outcome(context, failed)
                if timer is not None:
                    timer.end(code, reason)
                if span is not None:
                    span.end(code, reason)

        response = await self._run(ticket, call)
        await response.send(send, method == "HEAD")

    async def _run(self, ticket: budget.Ticket, call: Callable[[], Any]) -> Any:
        """call() on the pool of the ticket's kind; the ticket is released when it ends, whatever
        becomes of the HTTP request meanwhile."""

        def run() -> Any:
            try:
                return call()
            finally:
                ticket.release()

        try:
            future = self.calls.pools[ticket.kind].submit(run)
        except RuntimeError:  # the pool is shut down: the server is stopping
            ticket.release()
            return Response.error(errors.Unavailable("SERVER_STOPPING", "the server is stopping; retry"))
        return await asyncio.shield(asyncio.wrap_future(future))

    def _route(self, method: str, path: str) -> tuple[transcode.Route | None, Any, list[str]]:
        allowed: list[str] = []
        for route in self.routes:
            try:
                bound = route.match(path)
            except UnicodeDecodeError:
                bound = None
                if route.method == method or (method == "HEAD" and route.method == "GET"):
                    return route, errors.invalid("MALFORMED_REQUEST", "a path segment is not UTF-8 once decoded"), []
            if bound is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, bound, []
            allowed.append(route.method)
        return None, None, sorted(set(allowed))

    async def _body(self, headers: dict[str, str], receive: Any) -> bytes | Response:
        """The whole body, or the refusal of one larger than --max-request-bytes (before reading it
        when Content-Length says so)."""
        limit = self.max_request_bytes
        too_large = Response.error(
            errors.ResourceExhausted("REQUEST_TOO_LARGE", f"the request body is larger than {limit} bytes", limit=limit),
            [(b"connection", b"close")],
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Cancelled("the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _watch_disconnect(self, receive: Any, context: HttpContext) -> None:
        """Cancels the call once the client disconnects."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                context.cancel()
                return

    async def _stream(
        self,
        principal: auth.Principal,
        ticket: budget.Ticket,
        context: HttpContext,
        receive: Any,
        produce: Callable[[_Pipe], None],
        start: Callable[[Any], Awaitable[bool]],
        each: Callable[[Any], Awaitable[None]],
    ) -> None:
        """Runs produce(pipe) on the ticket's pool; the first item it puts decides the answer
        (start returns False when it was the whole answer), the others go out one by one."""
        pipe = _Pipe(asyncio.get_running_loop(), context)

        def run() -> None:
            token = auth.set_current(principal)
            try:
                produce(pipe)
            except Cancelled:
                pass
            finally:
                auth.reset_current(token)
                context.cancel()  # nothing more will come; also ends a put the loop no longer takes
                try:
                    asyncio.run_coroutine_threadsafe(pipe.queue.put(_END), pipe.loop)
                except RuntimeError:
                    pass

        disconnect = asyncio.ensure_future(self._watch_disconnect(receive, context))
        future = asyncio.wrap_future(self.calls.pools[ticket.kind].submit(_released(ticket, run)))
        try:
            first = await pipe.queue.get()
            if first is _END or not await start(first):
                return
            while (item := await pipe.queue.get()) is not _END:
                await each(item)
        finally:
            context.cancel()
            disconnect.cancel()
            while not pipe.queue.empty():  # unblock a put that raced with the end
                pipe.queue.get_nowait()
            await asyncio.shield(future)

    async def _watch(self, principal: Any, ticket: budget.Ticket, context: HttpContext, parse: Callable[[], Any],
                     headers: dict[str, str], receive: Any, send: Any) -> None:
        sse = "text/event-stream" in headers.get("accept", "")
        last_id = headers.get("last-event-id", "").strip()

        def produce(pipe: _Pipe) -> None:
            try:
                request = gate(principal, "WatchEvents", parse)
                if last_id:
                    if not last_id.isdigit():
                        raise errors.invalid("INVALID_SEQUENCE", "Last-Event-ID must be an event sequence number")
                    request.after_sequence = int(last_id)
                self.servicer.watch_filters(request)
            except errors.RegistryError as error:
                return pipe.put(Response.error(error))
            pipe.put(None)  # the answer starts
            for response in budget.track_responses(ticket, self.servicer.WatchEvents(request, context)):
                pipe.put(response)
            if context.code() not in (None, grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
                pipe.put_last(context.status())

        async def start(first: Any) -> bool:
            if isinstance(first, Response):
                await first.send(send)
                return False
            content_type = b"text/event-stream" if sse else b"application/x-ndjson"
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", content_type), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]})
            await send({"type": "http.response.body", "body": b": watching\n\n" if sse else b"", "more_body": True})
            return True

        async def each(item: Any) -> None:
            if isinstance(item, status_pb2.Status):  # how the stream ended (e.g. SERVER_STOPPING)
                body = error_body(item)[1]
                line = b"event: error\ndata: " + body + b"\n\n" if sse else b'{"error":' + body + b"}\n"
            else:
                data = transcode.to_json(item)
                if sse:
                    kind = event_pb2.EventKind.Name(item.event.kind).encode()
                    line = b"id: %d\nevent: %s\ndata: %s\n\n" % (item.event.sequence, kind, data)
                else:
                    line = data + b"\n"
            await send({"type": "http.response.body", "body": line, "more_body": True})

        try:
            await self._stream(principal, ticket, context, receive, produce, start, each)
        finally:
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except Exception:
                pass

    async def _download(self, principal: Any, ticket: budget.Ticket, context: HttpContext, parse: Callable[[], Any],
                        headers: dict[str, str], receive: Any, send: Any, head_only: bool) -> None:
        """One stored file as raw bytes, with ETag (its SHA-256) and Range."""
        range_header = headers.get("range", "")
        if_none_match = headers.get("if-none-match", "")
        state: dict[str, Any] = {}

        def produce(pipe: _Pipe) -> None:
            try:
                request = gate(principal, "DownloadCheckpointFiles", parse)
                if not request.path:
                    raise errors.invalid("INVALID_FILE_PATH", "name the file: .../files/PATH")
            except errors.RegistryError as error:
                return pipe.put(Response.error(error))
            messages = budget.track_responses(ticket, self.servicer.DownloadCheckpointFiles(request, context))
            header = next(messages, None)
            if header is None or header.WhichOneof("content") != "file":
                return pipe.put(Response.error(context.status()))
            size, sha = header.file.size, header.file.sha256
            etag = f'"{sha}"'
            name = request.path.rsplit("/", 1)[-1]
            common = [
                (b"etag", etag.encode()),
                (b"accept-ranges", b"bytes"),
                (b"content-disposition", _disposition(name)),
                (b"cache-control", b"private, no-cache"),
            ]
            if if_none_match and etag in [t.strip() for t in if_none_match.split(",")] or if_none_match.strip() == "*":
                return pipe.put(Response(304, b"", common))
            first, last = 0, size - 1
            status = 200
            if range_header and headers.get("if-range", etag) == etag:
                wanted = _byte_range(range_header, size)
                if wanted is None:
                    unsatisfiable = errors.OutOfRange(
                        "RANGE_NOT_SATISFIABLE", f"the range {range_header[:64]!r} names no byte of this {size}-byte file", size=size
                    )
                    return pipe.put(Response.error(unsatisfiable, [(b"content-range", f"bytes */{size}".encode())]))
                first, last = wanted
                status = 206
                common.append((b"content-range", f"bytes {first}-{last}/{size}".encode()))
            length = max(0, last - first + 1)
            chunks: Iterator[Any] = messages
            if length and not head_only:  # the first bytes before the answer: a blob gone from storage is a clean error
                opening = next(messages, None)
                if opening is None or opening.WhichOneof("content") != "chunk":
                    return pipe.put(Response.error(context.status()))
                chunks = itertools.chain([opening], messages)
            pipe.put(Response(status, b"", [(b"content-type", b"application/octet-stream"), (b"content-length", str(length).encode()), *common]))
            if head_only or length == 0:
                return
            offset = 0
            for message in chunks:
                if message.WhichOneof("content") != "chunk":
                    break
                chunk = message.chunk
                start, end = max(first - offset, 0), min(last + 1 - offset, len(chunk))
                offset += len(chunk)
                if start < end:
                    pipe.put(chunk[start:end])
                if offset > last:
                    break
            messages.close()
            if context.code() not in (None, grpc.StatusCode.OK) or offset <= last:
                state["failed"] = True  # the file went missing mid-way: the client sees a short body

        async def start(first: Response) -> bool:
            if first.status not in (200, 206):
                await first.send(send)
                return False
            await send({"type": "http.response.start", "status": first.status, "headers": first.headers})
            state["streaming"] = True
            return True

        async def each(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await self._stream(principal, ticket, context, receive, produce, start, each)
        if state.get("failed"):
            raise Cancelled("the download failed mid-way")
        if state.get("streaming"):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _upload(self, route: transcode.Route, bound: dict[str, str], params: dict[str, list[str]],
                      headers: dict[str, str], receive: Any, send: Any) -> None:
        """One file, its raw bytes as the body: POST .../checkpoints/{uuid}/files?path=P&sha256=HEX."""
        try:
            principal, ticket = self.interceptor.admit(route.rpc, headers.get("authorization"), PROTOCOL)
        except errors.RegistryError as error:
            return await Response.error(error).send(send)
        context = HttpContext()
        ticket.context = context  # type: ignore[assignment]
        pipe = _Pipe(asyncio.get_running_loop(), context, size=4)
        uuid = bound.get("checkpoint_uuid", "")
        first = pb.UploadCheckpointFilesRequest(checkpoint_uuid=uuid)

        def header() -> pb.UploadCheckpointFilesRequest:
            unknown = set(params) - {"path", "sha256", "size"}
            if unknown:
                raise errors.invalid("MALFORMED_REQUEST", f"unknown query parameter {sorted(unknown)[0][:64]!r}: an upload takes path, sha256 and size")
            path, sha = params.get("path", [""])[-1], params.get("sha256", [""])[-1]
            size = params.get("size", [headers.get("content-length", "")])[-1]
            if not path:
                raise errors.invalid("INVALID_FILE_PATH", "name the file: ?path=PATH")
            if not size.isdigit():
                raise errors.invalid("INVALID_FILE_SIZE", "send the file's size as Content-Length (or ?size=N)")
            return pb.UploadCheckpointFilesRequest(file=checkpoint_pb2.CheckpointFile(path=path, size=int(size), sha256=sha))

        def requests() -> Iterator[pb.UploadCheckpointFilesRequest]:
            yield first
            yield header()
            try:
                while (chunk := pipe.get_from_thread()) is not _END:
                    yield pb.UploadCheckpointFilesRequest(chunk=chunk)
            except Cancelled:  # the client went away (or the call was ended): the servicer sees it inactive
                return

        def call() -> Response:
            try:
                gate(principal, route.rpc, lambda: None)
                file_header = header()
            except errors.RegistryError as error:
                return Response.error(error, [(b"connection", b"close")])
            del file_header
            messages = budget.track_requests(ticket, requests())
            response = serve_call(principal, route.rpc, lambda: self.servicer.UploadCheckpointFiles(messages, context), [first], context)
            if context.code() not in (None, grpc.StatusCode.OK):
                return Response.error(context.status(), [(b"connection", b"close")])
            return Response(200, transcode.to_json(response), [(b"content-type", _JSON)])

        async def feed() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    context.cancel()
                    return
                body = message.get("body", b"")
                for at in range(0, len(body), 1024 * 1024):
                    await pipe.queue.put(body[at : at + 1024 * 1024])
                if not message.get("more_body"):
                    await pipe.queue.put(_END)
                    return

        feeding = asyncio.ensure_future(feed())
        try:
            response = await self._run(ticket, call)
        finally:
            feeding.cancel()
        await response.send(send)

    def _metrics(self, method: str, headers: dict[str, str]) -> Response:
        """Prometheus' scrape of this server (every worker's, with --workers). With a token file, any
        valid token may scrape (Prometheus sends it as `authorization: Bearer`); 404 with --no-metrics."""
        if method not in ("GET", "HEAD"):
            return _not_allowed(["GET", "HEAD"])
        if not metrics.enabled():
            return Response.error(errors.NotFound("ROUTE_NOT_FOUND", "metrics are off on this server (--no-metrics)"))
        if self.interceptor.tokens is not None:
            try:
                self.interceptor.tokens.authenticate(headers.get("authorization"))
            except errors.RegistryError as error:
                return Response.error(error)
        body, content_type = metrics.exposition()
        return Response(200, body, [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")])

    def _static(self, method: str, path: str, headers: dict[str, str]) -> Response:
        """`/` is ui/index.html, `/ui/NAME` is ui/NAME: files only, never outside ui/, no listing."""
        if method not in ("GET", "HEAD"):
            return _not_allowed(["GET", "HEAD"])
        relative = "index.html" if path == "/" else path[len("/ui/") :]
        not_found = Response.error(errors.NotFound("ROUTE_NOT_FOUND", "no such file of the web UI"))
        try:
            relative = unquote(relative, errors="strict")
        except UnicodeDecodeError:
            return not_found
        parts = relative.split("/")
        if not relative or any(p in ("", ".", "..") or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
            return not_found
        root = self.ui_dir.resolve()
        try:
            file = (root / relative).resolve()
            if root not in file.parents or not file.is_file():
                return not_found
            content = file.read_bytes()
        except (OSError, ValueError):
            return not_found
        etag = f'"{hashlib.sha256(content).hexdigest()[:32]}"'.encode()
        common = [
            (b"etag", etag),
            (b"cache-control", b"no-cache"),
            (b"content-security-policy", _CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]
        if headers.get("if-none-match", "").encode() == etag:
            return Response(304, b"", common)
        return Response(200, content, [(b"content-type", _content_type(file.name)), *common])


def _released(ticket: budget.Ticket, run: Callable[[], None]) -> Callable[[], None]:
    def released() -> None:
        try:
            run()
        finally:
            ticket.release()

    return released


_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}


def _content_type(name: str) -> bytes:
    suffix = Path(name).suffix.lower()
    return (_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream").encode()


def _disposition(name: str) -> bytes:
    ascii_name = re.sub(r'[^A-Za-z0-9._-]', "_", name) or "file"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}".encode()


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The first range of a `bytes=` Range header, inclusive, within the file; None when it names no byte."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    first_spec = spec.split(",")[0].strip()
    start, dash, end = first_spec.partition("-")
    if not dash:
        return None
    start, end = start.strip(), end.strip()
    if not start:  # the last N bytes
        if not end.isdigit() or int(end) == 0 or size == 0:
            return None
        return max(0, size - int(end)), size - 1
    if not start.isdigit() or (end and not end.isdigit()):
        return None
    first, last = int(start), int(end) if end else size - 1
    if first >= size or last < first:
        return None
    return first, min(last, size - 1)


def _not_allowed(allowed: list[str]) -> Response:
    error = errors.Unimplemented("METHOD_NOT_ALLOWED", f"this path takes {', '.join(allowed)}", allowed=",".join(allowed))
    return Response.error(error, [(b"allow", ", ".join(allowed).encode())])


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        headers[name.decode("latin-1").lower()] = value.decode("latin-1")
    return headers


class HttpServer:
    """uvicorn serving the gateway on a socket of our own (SO_REUSEPORT with --workers), on a thread."""

    def __init__(self, app: Gateway, host: str, port: int, *, reuse_port: bool, tls: Any = None) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP (an answer
        # goes out in two writes, head and body: with Nagle, the second waits for a delayed ACK, 40 ms).
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            self.socket.bind((host.strip("[]"), port))
        except OSError as error:
            self.socket.close()
            raise OSError(f"cannot bind HTTP {host}:{port}: {error.strerror}") from None
        self.port = self.socket.getsockname()[1]
        self.tls = tls is not None
        options: dict[str, Any] = {}
        if tls is not None:
            options = {"ssl_certfile": tls.cert, "ssl_keyfile": tls.key}
            if tls.client_ca:
                options.update(ssl_ca_certs=tls.client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, server_header=False, date_header=True,
            http="httptools", loop="asyncio", timeout_keep_alive=30, timeout_graceful_shutdown=None, **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        except BaseException:
            log.exception("the HTTP server failed")

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError("the HTTP server did not start")
            time.sleep(0.01)

    def stop(self, grace: float | None) -> None:
        """Stops listening, closes idle connections, waits up to `grace` seconds for calls in flight,
        then cuts the rest."""
        self.server.config.timeout_graceful_shutdown = grace or 0  # type: ignore[assignment]  # uvicorn takes seconds as a float
        self.server.should_exit = True
        self.thread.join((grace or 0) + 5)
        self.socket.close()
