"""The gate of the registry service on a real server: who calls (bearer token), whether their role
allows the RPC, requests that do not even parse, and an audit line for every mutation. Health and
reflection pass untouched."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from modelregistry.v1 import registry_service_pb2 as pb

from . import auth, budget, contract, errors, metrics, tracing
from .status import STATUS_CODES, rich_status

log = logging.getLogger(__name__)
audit_log = logging.getLogger("registry_server.audit")


def _is_mutation(rpc: str) -> bool:
    """Mutations are audited: every RPC not declared NO_SIDE_EFFECTS in the protos."""
    return not contract.RPCS[rpc].reads_only


def _object(request: Any, response: Any) -> str:
    """The object a mutation is about, as a path: models/NAME[/versions/N|/aliases/ALIAS] or
    checkpoints/UUID."""
    if hasattr(request, "model_name"):
        created = getattr(response, "model_version", None)
        version = (created.version if created is not None else 0) or getattr(request, "version", 0)
        alias = getattr(request, "alias", "")
        return f"models/{request.model_name}" + (
            f"/aliases/{alias}" if alias and not version else f"/versions/{version}" if version else ""
        )
    if hasattr(request, "uuid"):
        return f"checkpoints/{request.uuid}"
    if isinstance(request, pb.UploadCheckpointFilesRequest):  # an upload's first message names its checkpoint
        return f"checkpoints/{request.checkpoint_uuid}"
    if hasattr(request, "checkpoint"):
        created = getattr(response, "checkpoint", None)
        return f"checkpoints/{(created.uuid if created is not None else '') or request.checkpoint.uuid}"
    return f"models/{getattr(request, 'name', '')}" if request is not None else ""


def _reason(context: grpc.ServicerContext) -> str:
    """The ErrorInfo reason the call ends with, if any."""
    for key, value in context.trailing_metadata() or ():
        if key == rpc_status.GRPC_DETAILS_METADATA_KEY:
            status = rpc_status.status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


# Characters that end a line for some log readers but that JSON leaves as they are: C1 controls
# (NEL...) and the Unicode line and paragraph separators. One audit record must stay one line.
_LINE_BREAKERS = {c: f"\\u{c:04x}" for c in (*range(0x80, 0xA0), 0x2028, 0x2029)}


def _audit(principal: str, rpc: str, obj: str, outcome: str, reason: str) -> None:
    """One JSON object a line, so that log tools can filter by any field (with --log-format json, the
    fields are those of the line's object)."""
    record = {"principal": principal, "rpc": rpc, "object": obj, "outcome": outcome, "reason": reason}
    audit_log.info(json.dumps(record, ensure_ascii=False).translate(_LINE_BREAKERS), extra={"audit": record})


PROTOCOL = "grpc"
_AUTH_CODES = ("UNAUTHENTICATED", "PERMISSION_DENIED")


def outcome(context: Any, failed: bool) -> tuple[str, str]:
    """The status code name and ErrorInfo reason a call ends with, as the servicer or the gate set them
    (`context`: a grpc.ServicerContext or the HTTP gateway's)."""
    code = context.code()
    if code is None:
        name = "UNKNOWN" if failed else "OK" if context.is_active() else "CANCELLED"
    else:
        name = code.name
    return name, (_reason(context) if name != "OK" else "")


def _ended(rpc: str, context: grpc.ServicerContext, failed: bool, timer: Any, span: Any) -> None:
    """Records the end of a call of the registry service: its metrics, its span's status."""
    code, reason = outcome(context, failed)
    if timer is not None:
        timer.end(code, reason)
    if span is not None:
        span.end(code, reason)
    if code in _AUTH_CODES:
        metrics.auth_refused(reason)


def _counting(serialize: Callable[[Any], bytes], sent: Callable[[int], None]) -> Callable[[Any], bytes]:
    def counted(message: Any) -> bytes:
        data = serialize(message)
        sent(len(data))
        return data

    return counted


# The kind of each streaming RPC, by method path; every unary call is budget.UNARY.
STREAM_KINDS = {
    "WatchEvents": budget.WATCH,
    "UploadCheckpointFiles": budget.UPLOAD,
    "DownloadCheckpointFiles": budget.DOWNLOAD,
    "/grpc.health.v1.Health/Watch": budget.HEALTH_WATCH,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": budget.REFLECTION,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": budget.REFLECTION,
}


def _too_many(kind: str) -> errors.ResourceExhausted:
    if kind == budget.UNARY:
        return errors.ResourceExhausted(
            "TOO_MANY_CALLS", "this server has as many calls in progress as it takes; retry later", kind=kind
        )
    return errors.ResourceExhausted(
        "TOO_MANY_STREAMS",
        f"this server, or your share of it, has as many {kind} streams open as it takes; close one or retry later",
        kind=kind,
    )


class RegistryInterceptor(grpc.ServerInterceptor):
    """Admits every call of the server (capacity, see budget.py) and, for calls of `service`,
    authenticates and authorizes them, parses their requests and audits mutations.

    With `tokens` None nobody is asked for a token: every call runs as auth.ANONYMOUS."""

    def __init__(self, service: str, tokens: auth.TokenFile | None, calls: budget.CallBudget) -> None:
        self._prefix = f"/{service}/"
        self.tokens = tokens
        self.calls = calls

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        try:
            return self._intercept(handler, details)
        except Exception:  # gRPC's serving thread must never see an exception: it would end the call UNKNOWN
            log.exception("admitting %s failed", details.method)
            return self._refuse(handler, errors.Unavailable("ADMISSION_FAILED", "the server could not admit the call; retry"))

    def _intercept(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        if not method.startswith(self._prefix):  # health and reflection: open to all, but capped
            kind = STREAM_KINDS.get(method, budget.UNARY)
            ticket = self.calls.admit(kind)
            return _tracked(handler, ticket) if ticket is not None else self._refuse(handler, _too_many(kind))
        rpc = method[len(self._prefix) :]
        metadata = dict(details.invocation_metadata or ())
        try:
            authorization = metadata.get("authorization")
            principal, ticket = self.admit(rpc, authorization if isinstance(authorization, str) else None, PROTOCOL)
        except errors.RegistryError as refusal:
            return self._refuse(handler, refusal)
        return self._registry_handler(handler, rpc, principal, ticket, metadata)

    def admit(self, rpc: str, authorization: str | None, protocol: str) -> tuple[auth.Principal, budget.Ticket]:
        """Admission of one call of the registry service, over gRPC or HTTP (`protocol`): the caller's
        token, then a ticket of the call's kind (capacity). Raises the refusal, audited when the RPC is
        a mutation and counted in the metrics."""
        kind = STREAM_KINDS.get(rpc, budget.UNARY)
        principal = auth.ANONYMOUS
        try:
            principal, credential = self._principal(authorization)
            ticket = self.calls.admit(kind, principal.name if credential else "", credential, principal)
            if ticket is None:
                raise _too_many(kind)
        except errors.RegistryError as refusal:
            code = STATUS_CODES[type(refusal)].name
            if _is_mutation(rpc):
                _audit(principal.name, rpc, "", code, refusal.reason)
            metrics.refused(rpc, protocol, code, refusal.reason)
            if code in _AUTH_CODES:
                metrics.auth_refused(refusal.reason)
            raise
        return principal, ticket

    def _registry_handler(
        self,
        handler: grpc.RpcMethodHandler,
        rpc: str,
        principal: auth.Principal,
        ticket: budget.Ticket,
        metadata: dict[str, Any],
    ) -> Any:
        parse, serialize = handler.request_deserializer, handler.response_serializer
        sent = metrics.response_counter(rpc, PROTOCOL)
        if sent is not None and serialize is not None:
            serialize = _counting(serialize, sent)
        service = self._prefix[1:-1]

        def begin() -> tuple[Any, Any]:
            """The call's metrics and span, on the thread that serves it."""
            return metrics.start_call(rpc, PROTOCOL), tracing.start_call(service, rpc, PROTOCOL, metadata)

        def admit(raw: bytes | None, context: grpc.ServicerContext) -> Any:
            """The parsed request (None for a client stream), if the role allows the call; aborts otherwise."""
            ticket.context = context
            try:
                return gate(principal, rpc, lambda: _parse(parse, raw) if raw is not None else None)
            except errors.RegistryError as refusal:
                context.abort_with_status(rich_status(refusal))

        def serve_as(call: Callable[[], Any], request: Any, context: grpc.ServicerContext) -> Any:
            return serve_call(principal, rpc, call, request, context)

        if handler.unary_unary is not None:
            serve = handler.unary_unary

            def unary(raw: bytes, context: grpc.ServicerContext) -> Any:
                timer, span = begin()
                failed = True
                try:
                    if timer is not None:
                        timer.received(len(raw))
                    request = admit(raw, context)
                    response = serve_as(lambda: serve(request, context), request, context)
                    failed = False
                    return response
                finally:
                    _ended(rpc, context, failed, timer, span)

            return _handler(grpc.unary_unary_rpc_method_handler, unary, serialize, ticket)
        if handler.unary_stream is not None:  # WatchEvents, DownloadCheckpointFiles: reads
            stream = handler.unary_stream

            def unary_stream(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
                timer, span = begin()
                failed = True
                try:
                    if timer is not None:
                        timer.received(len(raw))
                    request = admit(raw, context)
                    token = auth.set_current(principal)
                    try:
                        yield from budget.track_responses(ticket, stream(request, context))
                    finally:
                        auth.reset_current(token)
                    failed = False
                finally:
                    _ended(rpc, context, failed, timer, span)

            return _handler(grpc.unary_stream_rpc_method_handler, unary_stream, serialize, ticket)
        if handler.stream_unary is not None:  # UploadCheckpointFiles
            upload = handler.stream_unary

            def stream_unary(raw_requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
                timer, span = begin()
                failed = True
                try:
                    admit(None, context)
                    first: list[Any] = []  # the first message names the checkpoint, for the audit line

                    def requests() -> Iterator[Any]:
                        # Refused as the handler reads them; each wait for the next one counts as idle.
                        for raw in budget.track_requests(ticket, raw_requests):
                            if timer is not None:
                                timer.received(len(raw))
                            request = _parse(parse, raw)
                            if not first:
                                first.append(request)
                            yield request

                    response = serve_as(lambda: upload(requests(), context), first, context)
                    failed = False
                    return response
                finally:
                    _ended(rpc, context, failed, timer, span)

            return _handler(grpc.stream_unary_rpc_method_handler, stream_unary, serialize, ticket)
        raise ValueError(f"{rpc} has no handler this interceptor knows how to wrap")

    def _refuse(self, handler: grpc.RpcMethodHandler, refusal: errors.RegistryError) -> Any:
        """A handler of the call's shape that only ends it with `refusal`, on the refusals' own pool."""
        status = rich_status(refusal)

        def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
            context.abort_with_status(status)

        refuse.experimental_thread_pool = self.calls.refusals  # type: ignore[attr-defined]
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return make(refuse, response_serializer=handler.response_serializer)

    def _principal(self, authorization: str | None) -> tuple[auth.Principal, bytes | None]:
        """The caller and the digest of its token (None without a token file)."""
        if self.tokens is None:
            return auth.ANONYMOUS, None
        return self.tokens.authenticate(authorization)


def gate(principal: auth.Principal, rpc: str, parse: Callable[[], Any]) -> Any:
    """The request of an admitted call (`parse()`; None for a client stream), once the caller's role
    allows the RPC. Raises the refusal, audited when the RPC is a mutation. gRPC and HTTP both pass here."""
    request = None
    try:
        request = parse()
        auth.authorize(principal, rpc)
    except errors.RegistryError as refusal:
        if _is_mutation(rpc):
            _audit(principal.name, rpc, _object(request, None), STATUS_CODES[type(refusal)].name, refusal.reason)
        raise
    return request


def serve_call(principal: auth.Principal, rpc: str, call: Callable[[], Any], request: Any, context: Any) -> Any:
    """call() as the principal, then the audit line of a mutation with the status the call ended with
    (read from `context`, a grpc.ServicerContext or the HTTP gateway's). `request` is a list for a
    client stream: its first message, once one came."""
    token = auth.set_current(principal)
    response = None
    try:
        response = call()
        return response
    finally:
        auth.reset_current(token)
        if _is_mutation(rpc):
            code = context.code() or grpc.StatusCode.OK
            if isinstance(request, list):
                request = request[0] if request else None
            _audit(principal.name, rpc, _object(request, response), code.name, _reason(context))


def _handler(make: Callable[..., Any], behavior: Any, serialize: Any, ticket: budget.Ticket, deserialize: Any = None) -> Any:
    """A method handler whose behavior carries its ticket (released by the pool that runs it), on the
    pool of its kind."""
    behavior.ticket = ticket
    behavior.experimental_thread_pool = ticket.budget.pools[ticket.kind]
    return make(behavior, request_deserializer=deserialize, response_serializer=serialize)


def _tracked(handler: grpc.RpcMethodHandler, ticket: budget.Ticket) -> Any:
    """A handler of another service (health, reflection) as it is, on its kind's pool, with the idle
    waits of its streams tracked."""
    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    behavior: Callable[..., Any]
    if handler.unary_unary is not None:
        inner_unary = handler.unary_unary

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            return inner_unary(request, context)

        behavior, make = unary, grpc.unary_unary_rpc_method_handler
    elif handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            ticket.context = context
            yield from budget.track_responses(ticket, inner_stream(request, context))

        behavior, make = unary_stream, grpc.unary_stream_rpc_method_handler
    elif handler.stream_stream is not None:
        inner_bidi = handler.stream_stream

        def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            ticket.context = context
            yield from budget.track_responses(ticket, inner_bidi(budget.track_requests(ticket, requests), context))

        behavior, make = stream_stream, grpc.stream_stream_rpc_method_handler
    else:
        inner_upload = handler.stream_unary
        assert inner_upload is not None, "a handler has one of the four shapes"

        def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            ticket.context = context
            return inner_upload(budget.track_requests(ticket, requests), context)

        behavior, make = stream_unary, grpc.stream_unary_rpc_method_handler
    return _handler(make, behavior, serialize, ticket, deserialize)


def _parse(parse: Callable[[bytes], Any] | None, raw: bytes) -> Any:
    """grpc would answer INTERNAL to bytes that are not the request message; they are the caller's error."""
    if parse is None:  # a handler without a deserializer takes the bytes as they are
        return raw
    try:
        return parse(raw)
    except DecodeError as error:
        raise errors.invalid("MALFORMED_REQUEST", f"the request is not a valid message: {error}") from None


